"""The compiled NMS kernel (nms_kernel.c), loaded with ctypes.

setup.py builds it next to this file as a setuptools extension (`pip install -e .`, which
`make setup` runs): `_nms_kernel<Python's extension suffix>`, e.g.
_nms_kernel.cpython-311-x86_64-linux-gnu.so. When it is missing, or older than its
source, callers fall back to torchvision's kernel (same answer, slower on the CPU).
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import warnings
from typing import Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, 'nms_kernel.c')
NAME = '_nms_kernel'

_lib = None


def library_path() -> Optional[str]:
    """The built kernel next to this file, if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + ['.so']:
        path = os.path.join(HERE, NAME + suffix)
        if os.path.isfile(path):
            return path
    return None


def _load():
    global _lib
    if _lib is not None:
        return _lib if _lib else None
    path = library_path()
    if path is None or os.path.getmtime(path) < os.path.getmtime(SOURCE):
        if path is not None:
            warnings.warn('%s is older than nms_kernel.c: rebuild it with `pip install -e .` '
                          '(make setup); using torchvision\'s NMS meanwhile' % path)
        _lib = False
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        _lib = False
        return None
    for name, ctype in (('nms_sorted_f32', ctypes.c_float), ('nms_sorted_f64', ctypes.c_double)):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctype, ctypes.c_int64, ctypes.c_void_p]
    _lib = lib
    return lib


def available() -> bool:
    return _load() is not None


def nms_sorted(boxes: np.ndarray, thresh: float, max_keep: Optional[int] = None) -> np.ndarray:
    """Kept positions of boxes (N, 4) already in visiting order (float32 or float64)."""
    lib = _load()
    if lib is None:
        raise RuntimeError('the compiled NMS kernel is not available (build it with `pip install -e .` '
                           'or `make setup`)')
    if boxes.dtype not in (np.float32, np.float64):
        boxes = boxes.astype(np.float32)
    boxes = np.ascontiguousarray(boxes[:, :4])
    n = boxes.shape[0]
    limit = n if max_keep is None or max_keep < 0 else min(int(max_keep), n)
    keep = np.empty(max(limit, 1), dtype=np.int64)
    if boxes.dtype == np.float32:
        got = lib.nms_sorted_f32(boxes.ctypes.data, n, ctypes.c_float(thresh), limit, keep.ctypes.data)
    else:
        got = lib.nms_sorted_f64(boxes.ctypes.data, n, ctypes.c_double(thresh), limit, keep.ctypes.data)
    if got < 0:
        raise MemoryError('NMS kernel could not allocate memory for %d boxes' % n)
    return keep[:got]

