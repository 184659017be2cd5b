"""Reading and decoding images so that a damaged file is an error naming it, never a
silently grey-padded picture.

OpenCV's `imread` of a truncated JPEG (an interrupted download or copy, a full disk)
returns an image whose missing rows are grey, after libjpeg prints "Premature end of JPEG
file" naming no file; training then runs on it without a word. Here every image is read
as bytes, checked for completeness, and decoded with `imdecode`; a file that is missing,
truncated or not an image raises ImageError naming it.

Completeness: a JPEG must have its end-of-image marker (FFD9) after its last
start-of-scan marker (FFDA). Inside entropy-coded data an FF byte is always followed by
00 or a restart marker, so neither marker can appear by chance within a scan; an EXIF
thumbnail's markers come before the main image's scans, and bytes after the end marker
(some cameras append data) are allowed, as libjpeg allows them. Other formats fail in
their decoders when cut short (libpng, BMP, TIFF, WebP readers return nothing).
Corrupt-but-complete JPEG data ("Corrupt JPEG data: N extraneous bytes") is what
libjpeg, and Caffe, decode with a warning; real data sets hold such files, so it stays a
warning.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import cv2
import numpy as np

from .errors import ImageError

__all__ = ['read_image', 'read_file', 'decode_image', 'truncation', 'check_complete']

_JPEG_SOI = b'\xff\xd8\xff'


def truncation(data: Union[bytes, bytearray, memoryview, np.ndarray]) -> Optional[str]:
    """Why the encoded image `data` is visibly incomplete, or None if it looks whole."""
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not buf:
        return 'the file is empty'
    if buf.startswith(_JPEG_SOI):
        last_scan = buf.rfind(b'\xff\xda')
        if last_scan < 0:
            return ('JPEG data ends before its first image scan: the file is truncated '
                    '(%d bytes)' % len(buf))
        if buf.rfind(b'\xff\xd9') < last_scan:
            return ('JPEG data ends without its end-of-image marker: the file is truncated '
                    '(%d bytes)' % len(buf))
    return None


def check_complete(path: Union[str, os.PathLike], tail: int = 4096) -> None:
    """Raise ImageError if the image file at `path` is visibly truncated, reading only its
    first and last bytes when they show it whole (an end-of-image marker near the end of a
    JPEG), the whole file otherwise. Cheap enough to run over a data set before training,
    so that a damaged file stops the run at its start, not hours into it."""
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            head = f.read(3)
            if head != _JPEG_SOI:
                return   # other formats fail in their decoders when cut short
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - tail))
            if b'\xff\xd9' in f.read(tail) and size > tail:
                return
            f.seek(0)
            data = f.read()
    except OSError as e:
        raise ImageError('cannot read image %s: %s' % (path, e.strerror or e)) from None
    why = truncation(data)
    if why is not None:
        raise ImageError('cannot use image %s: %s; re-copy or re-download it' % (path, why))


def decode_image(data: Union[bytes, bytearray, memoryview, np.ndarray],
                 flags: int = cv2.IMREAD_COLOR, source: str = '<bytes>') -> np.ndarray:
    """`cv2.imdecode(data, flags)`, refusing truncated or undecodable data; errors name
    `source` (a file, or an LMDB and key)."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), np.uint8)
    why = truncation(arr)
    if why is not None:
        raise ImageError('cannot use image %s: %s; re-copy or re-download it' % (source, why))
    img = cv2.imdecode(arr, flags)
    if img is None:
        raise ImageError('cannot decode image %s (%d bytes): not an image, damaged, or a '
                         'format OpenCV cannot read' % (source, arr.size))
    return img


def read_file(path: Union[str, os.PathLike]) -> np.ndarray:
    """The bytes of the image file at `path` (uint8 array); ImageError naming the file when
    it is missing or unreadable. decode_image checks and decodes them."""
    path = os.fspath(path)
    try:
        return np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError('cannot read image %s: no such file' % path) from None
    except (OSError, ValueError) as e:
        raise ImageError('cannot read image %s: %s' % (path, getattr(e, 'strerror', None) or e)) \
            from None


def read_image(path: Union[str, os.PathLike], flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """`cv2.imread(path, flags)` that raises ImageError naming the file when it is
    missing, unreadable, truncated or not an image (imread returns None or a grey-padded
    picture)."""
    path = os.fspath(path)
    return decode_image(read_file(path), flags, path)
