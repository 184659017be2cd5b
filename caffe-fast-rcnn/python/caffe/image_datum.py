"""Images into Datum records and back, as Caffe's util/io.cpp does with OpenCV.

A raw Datum holds uint8 values in channel x height x width order, channels in OpenCV's
order (BGR for colour, one channel for grey). An encoded Datum holds the bytes of an image
file (`encoded: true`, no shape). convert_imageset and compute_image_mean are built on these.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import CaffeError
from .proto import caffe_pb2


class ImageError(CaffeError):
    """An image or Datum that cannot be read or decoded."""


def _cv2():
    import cv2
    return cv2


def read_image(filename: str, height: int = 0, width: int = 0, is_color: bool = True
               ) -> Optional[np.ndarray]:
    """ReadImageToCVMat: the image as H x W x C uint8 (BGR), resized (bilinear) to
    height x width when both are positive; None when OpenCV cannot read the file."""
    cv2 = _cv2()
    img = cv2.imread(filename, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    if height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img if img.ndim == 3 else img[:, :, None]


def matches_ext(filename: str, encoding: str) -> bool:
    """Whether the file's extension is `encoding` (jpeg counts as jpg), case-insensitively."""
    dot = filename.rfind('.')
    ext = (filename[dot + 1:] if dot >= 0 else filename).lower()
    enc = encoding.lower()
    return ext == enc or (enc == 'jpg' and ext == 'jpeg')


def image_to_datum(img: np.ndarray, label: Optional[int] = None) -> caffe_pb2.Datum:
    """CVMatToDatum: an H x W x C uint8 image as a raw Datum (C x H x W bytes)."""
    if img.dtype != np.uint8:
        raise ImageError('Image data type must be unsigned byte, got %s' % img.dtype)
    if img.ndim == 2:
        img = img[:, :, None]
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
    datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    if label is not None:
        datum.label = int(label)
    return datum


def file_to_datum(filename: str, label: int) -> caffe_pb2.Datum:
    """ReadFileToDatum: the file's bytes as an encoded Datum."""
    with open(filename, 'rb') as f:
        data = f.read()
    datum = caffe_pb2.Datum()
    datum.data = data
    datum.label = int(label)
    datum.encoded = True
    return datum


def read_image_to_datum(filename: str, label: int, height: int = 0, width: int = 0,
                        is_color: bool = True, encoding: str = '') -> Optional[caffe_pb2.Datum]:
    """ReadImageToDatum: the image at `filename` as a Datum; None when it cannot be read.

    With an `encoding` ('png', 'jpg', ...) the Datum holds encoded bytes: the file's own
    bytes when nothing needs changing (same colour mode, no resize, the file already of that
    type), else the image re-encoded. Without one it holds raw pixels.
    """
    img = read_image(filename, height, width, is_color)
    if img is None:
        return None
    if encoding:
        if (img.shape[2] == 3) == is_color and not height and not width \
                and matches_ext(filename, encoding):
            return file_to_datum(filename, label)
        ok, buf = _cv2().imencode('.' + encoding, img)
        if not ok:
            raise ImageError('cannot encode %s as %s' % (filename, encoding))
        datum = caffe_pb2.Datum()
        datum.data = buf.tobytes()
        datum.label = int(label)
        datum.encoded = True
        return datum
    return image_to_datum(img, label)


def decode_datum_native(datum: caffe_pb2.Datum) -> caffe_pb2.Datum:
    """DecodeDatumNative: an encoded Datum decoded as stored (grey stays grey, colour is
    BGR, 8 bits) into a raw one with the same label; a raw Datum is returned as it is."""
    if not datum.encoded:
        return datum
    cv2 = _cv2()
    img = cv2.imdecode(np.frombuffer(datum.data, dtype=np.uint8), cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise ImageError('Could not decode datum (label %d)' % datum.label)
    out = image_to_datum(img)
    if datum.HasField('label'):
        out.label = datum.label
    return out


def list_file_entries(path: str):
    """The (filename, label) lines of an image list: the label is after the last space, so
    file names may hold spaces (as in Caffe's convert_imageset)."""
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip('\r\n')
            if not line.strip():
                continue
            pos = line.rfind(' ')
            if pos < 0:
                raise ImageError('%s:%d: expected "<file> <label>", got %r' % (path, n, line))
            try:
                label = int(line[pos + 1:])
            except ValueError:
                raise ImageError('%s:%d: the label %r is not an integer'
                                 % (path, n, line[pos + 1:])) from None
            entries.append((line[:pos], label))
    return entries
