"""Images into Datum records and back, as Caffe's util/io.cpp does with OpenCV (with SSD's
min_dim/max_dim resizing), for the data tools: convert_imageset, convert_annoset,
get_image_size and compute_image_mean.

Every image is read and decoded through caffe.image_file, so that a missing, truncated or
undecodable file is an ImageError naming it where OpenCV's imread would give nothing or a
grey-padded picture; the failure is also logged at level E as Caffe's reader logs it.

A raw Datum holds uint8 values in channel x height x width order, channels in OpenCV's
order (BGR for colour, one channel for grey), with `encoded: false` (Caffe's CVMatToDatum).
An encoded Datum holds the bytes of an image file (`encoded: true`) and, as SSD's Caffe
writes them, the image's channels, height and width.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

from . import _log, image_file
from .errors import ImageError
from .proto import caffe_pb2

_IO = 'io.cpp'


class LoadedImage(NamedTuple):
    """An image file read for a Datum."""
    image: np.ndarray           # H x W x C uint8 (BGR or grey), after the requested resizing
    data: np.ndarray            # the file's bytes
    original: Tuple[int, int]   # (height, width) before resizing


def _resize(img: np.ndarray, height: int, width: int, min_dim: int, max_dim: int) -> np.ndarray:
    """ReadImageToCVMat's resizing: min_dim/max_dim scale both sides by one float factor
    (the short side up to min_dim, then the long side down to max_dim); else height x width
    when both are positive. Bilinear, OpenCV's default."""
    if min_dim > 0 or max_dim > 0:
        short, long = min(img.shape[:2]), max(img.shape[:2])
        factor = np.float32(1)
        if min_dim > 0 and short < min_dim:
            factor = np.float32(min_dim) / np.float32(short)
        if max_dim > 0 and int(factor * np.float32(long)) > max_dim:
            factor = np.float32(max_dim) / np.float32(long)
        if factor != 1:
            return cv2.resize(img, None, fx=float(factor), fy=float(factor))
        return img
    if height > 0 and width > 0:
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def load_image(path: str, height: int = 0, width: int = 0, is_color: bool = True,
               min_dim: int = 0, max_dim: int = 0) -> LoadedImage:
    """ReadImageToCVMat: the image at `path` as colour (BGR) or grey, resized as asked (see
    _resize), with the file's bytes and its original size. A file that is missing,
    truncated or not an image raises ImageError naming it, after Caffe's E log line."""
    try:
        data = image_file.read_file(path)
    except ImageError:
        _log.error(_IO, 'Could not open or find file %s' % path)
        raise
    try:
        img = image_file.decode_image(
            data, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE, path)
    except ImageError as e:
        _log.error(_IO, str(e))
        raise
    original = (int(img.shape[0]), int(img.shape[1]))
    img = _resize(img, height, width, min_dim, max_dim)
    return LoadedImage(img if img.ndim == 3 else img[:, :, None], data, original)


def matches_ext(filename: str, encoding: str) -> bool:
    """Caffe's matchExt: is the file's extension `encoding` (jpeg counts as jpg),
    case-insensitively? A name without a dot is compared whole."""
    dot = filename.rfind('.')
    ext = (filename[dot + 1:] if dot >= 0 else filename).lower()
    enc = encoding.lower()
    return ext == enc or (enc == 'jpg' and ext == 'jpeg')


def image_to_datum(img: np.ndarray, label: Optional[int] = None) -> caffe_pb2.Datum:
    """CVMatToDatum: an H x W [x C] uint8 image as a raw Datum (C x H x W bytes)."""
    if img.dtype != np.uint8:
        raise ImageError('Image data type must be unsigned byte, got %s' % img.dtype)
    if img.ndim == 2:
        img = img[:, :, None]
    datum = caffe_pb2.Datum(channels=img.shape[2], height=img.shape[0], width=img.shape[1],
                            encoded=False)
    datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    if label is not None:
        datum.label = int(label)
    return datum


def image_datum(loaded: LoadedImage, path: str, label: int, encoding: str = '',
                is_color: bool = True, resize_asked: bool = False) -> caffe_pb2.Datum:
    """ReadImageToDatum's choice for an image already read: without an `encoding`, raw
    pixels; with one ('png', 'jpg', ...), the file's own bytes when nothing needs changing
    (same colour mode, no resizing asked, the file already of that type), else the image
    encoded so (an encoding that names no type, such as SSD's guessed '.jpg', always
    re-encodes)."""
    img = loaded.image
    if not encoding:
        return image_to_datum(img, label)
    datum = caffe_pb2.Datum(channels=img.shape[2], height=img.shape[0], width=img.shape[1],
                            label=int(label), encoded=True)
    if (img.shape[2] == 3) == is_color and not resize_asked and matches_ext(path, encoding):
        datum.data = loaded.data.tobytes()
        return datum
    try:
        ok, buf = cv2.imencode('.' + encoding, img)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError('%s: cannot encode the image as %r' % (path, encoding))
    datum.data = buf.tobytes()
    return datum


def read_image_to_datum(path: str, label: int, height: int = 0, width: int = 0,
                        is_color: bool = True, encoding: str = '', min_dim: int = 0,
                        max_dim: int = 0) -> caffe_pb2.Datum:
    """ReadImageToDatum: the image at `path` as a Datum (see load_image and image_datum)."""
    loaded = load_image(path, height, width, is_color, min_dim, max_dim)
    return image_datum(loaded, path, label, encoding, is_color,
                       bool(height or width or min_dim or max_dim))


def decode_datum_native(datum: caffe_pb2.Datum) -> caffe_pb2.Datum:
    """DecodeDatumNative: an encoded Datum decoded as stored (grey stays grey, colour is
    BGR, 8 bits) into a raw one with the same label; a raw Datum is returned as it is."""
    if not datum.encoded:
        return datum
    img = image_file.decode_image(np.frombuffer(datum.data, dtype=np.uint8),
                                  cv2.IMREAD_ANYCOLOR, 'in a Datum (label %d)' % datum.label)
    out = image_to_datum(img)
    if datum.HasField('label'):
        out.label = datum.label
    return out
