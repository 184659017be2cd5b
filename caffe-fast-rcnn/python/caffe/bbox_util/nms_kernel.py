"""The compiled greedy NMS kernel (nms_kernel.c next to this file), loaded with ctypes.

setup.py builds it as a setuptools extension of this package (`pip install -e .`, which
`make setup` runs, copies it here; `pip install .` installs it with the package):
`_nms_kernel<Python's extension suffix>`, e.g. _nms_kernel.cpython-311-x86_64-linux-gnu.so.
It is a plain C library, not a Python module, hence ctypes. One kernel serves both
conventions: `offset` 0 for SSD/RefineDet's normalised boxes (bbox_util.nms), 1 for
py-faster-rcnn's pixel boxes (lib/nms). When the library is missing, older than its
source in this directory or built from another version of it, `available()` is False
(with a warning for a stale one) and callers use torchvision's kernel instead: the same
answer, slower on the CPU.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import warnings
from typing import Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, 'nms_kernel.c')
NAME = '_nms_kernel'
ABI_VERSION = 2          # greedy_nms_abi_version() of the nms_kernel.c this loader expects
REBUILD = '`pip install --no-build-isolation --no-deps -e .` (make setup)'

_lib = None              # None: not looked at yet; False: unusable; else the CDLL


def library_path() -> Optional[str]:
    """The built kernel next to this file, if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + ['.so']:
        path = os.path.join(HERE, NAME + suffix)
        if os.path.isfile(path):
            return path
    return None


def _stale(path: str) -> bool:
    # An installed package may not ship the source: then there is nothing to compare with.
    return os.path.isfile(SOURCE) and os.path.getmtime(path) < os.path.getmtime(SOURCE)


def _declare(lib: ctypes.CDLL) -> None:
    for suffix, real in (('f32', ctypes.c_float), ('f64', ctypes.c_double)):
        one = getattr(lib, 'greedy_nms_' + suffix)
        one.restype = ctypes.c_int64
        one.argtypes = [ctypes.c_void_p, ctypes.c_int64, real, real, ctypes.c_int64,
                        ctypes.c_void_p]
        grouped = getattr(lib, 'greedy_nms_groups_' + suffix)
        grouped.restype = ctypes.c_int64
        grouped.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, real, real,
                            ctypes.c_void_p]


def _load() -> Optional[ctypes.CDLL]:
    global _lib
    if _lib is not None:
        return _lib or None
    _lib = False
    path = library_path()
    if path is None:
        return None
    if _stale(path):
        warnings.warn('%s is older than %s: rebuild it with %s; using torchvision\'s NMS '
                      'meanwhile' % (path, SOURCE, REBUILD))
        return None
    try:
        lib = ctypes.CDLL(path)
        version = lib.greedy_nms_abi_version
        version.restype = ctypes.c_int64
        if version() != ABI_VERSION:
            raise AttributeError('built from version %d of nms_kernel.c, not %d'
                                 % (version(), ABI_VERSION))
        _declare(lib)
    except (OSError, AttributeError) as exc:
        warnings.warn('cannot use the NMS kernel %s (%s): rebuild it with %s; using '
                      'torchvision\'s NMS meanwhile' % (path, exc, REBUILD))
        return None
    _lib = lib
    return lib


def available() -> bool:
    """Whether the compiled kernel can be used (else: torchvision's NMS)."""
    return _load() is not None


def _require() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError('the compiled NMS kernel is not available: build it with ' + REBUILD)
    return lib


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) C-contiguous float32 or float64 (no copy when it already is)."""
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError('NMS boxes must be an (N, 4) array, got shape %s' % (boxes.shape,))
    if boxes.dtype not in (np.float32, np.float64):
        boxes = boxes.astype(np.float32)
    return np.ascontiguousarray(boxes[:, :4])


def _real(boxes: np.ndarray):
    return ctypes.c_float if boxes.dtype == np.float32 else ctypes.c_double


def greedy_nms(boxes: np.ndarray, threshold: float, offset: int,
               max_keep: Optional[int] = None) -> np.ndarray:
    """Positions (int64) kept by greedy NMS of `boxes` (N, 4), taken in the given order.

    `offset` is added to every width and height (1: pixel boxes, 0: normalised boxes);
    a box goes when its IoU with a kept one is above `threshold`. The arithmetic runs in
    the boxes' precision (float32 or float64; other types as float32). `max_keep` stops
    after that many kept boxes (None or negative: all).
    """
    lib = _require()
    boxes = _as_boxes(boxes)
    n = boxes.shape[0]
    limit = n if max_keep is None or max_keep < 0 else min(int(max_keep), n)
    keep = np.empty(max(limit, 1), dtype=np.int64)
    real = _real(boxes)
    fn = lib.greedy_nms_f32 if real is ctypes.c_float else lib.greedy_nms_f64
    got = fn(boxes.ctypes.data, n, real(threshold), real(offset), limit, keep.ctypes.data)
    if got < 0:
        raise MemoryError('the NMS kernel could not allocate memory for %d boxes' % n)
    return keep[:got]


def greedy_nms_groups(boxes: np.ndarray, ends: Sequence[int] | np.ndarray, threshold: float,
                      offset: int) -> np.ndarray:
    """greedy_nms of each group of consecutive boxes on its own, in one call: group g is
    boxes[ends[g-1]:ends[g]] (ends ascending, the last one N). Returns the kept positions
    in the whole array, group after group."""
    lib = _require()
    boxes = _as_boxes(boxes)
    n = boxes.shape[0]
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    if ends.ndim != 1 or (ends[-1] if ends.size else 0) != n or \
            (ends.size and (ends[0] < 0 or bool((np.diff(ends) < 0).any()))):
        raise ValueError('NMS group ends must ascend to the number of boxes (%d), got %s'
                         % (n, ends))
    keep = np.empty(max(n, 1), dtype=np.int64)
    real = _real(boxes)
    fn = lib.greedy_nms_groups_f32 if real is ctypes.c_float else lib.greedy_nms_groups_f64
    got = fn(boxes.ctypes.data, ends.ctypes.data, ends.size, real(threshold), real(offset),
             keep.ctypes.data)
    if got < 0:
        raise MemoryError('the NMS kernel could not allocate memory for %d boxes' % n)
    return keep[:got]
