"""The compiled NMS kernel (nms_kernel.c), loaded with ctypes.

`make` builds `_nms_kernel.so` next to this file with the system C compiler; if it is
missing (no compiler), `build()` tries once at import, and callers fall back to
torchvision's kernel when that fails too (same answer, slower on the CPU).
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from typing import Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, 'nms_kernel.c')
LIBRARY = os.path.join(HERE, '_nms_kernel.so')
CFLAGS = ['-O3', '-ffp-contract=off', '-fno-fast-math', '-shared', '-fPIC', '-std=c99']

_lib = None


def build(quiet: bool = True) -> bool:
    """Compile nms_kernel.c into _nms_kernel.so; True on success."""
    cc = os.environ.get('CC', 'cc')
    tmp = LIBRARY + '.%d.tmp' % os.getpid()
    # Tuned for this machine's vector units when the compiler allows it (the library is
    # built where it runs); the portable flags give the same answers, a bit slower.
    for extra in (['-march=native'], []):
        try:
            subprocess.run([cc] + CFLAGS + extra + ['-o', tmp, SOURCE], check=True,
                           stdout=subprocess.DEVNULL if quiet else None,
                           stderr=subprocess.DEVNULL if quiet else None)
            os.replace(tmp, LIBRARY)
            return True
        except (OSError, subprocess.CalledProcessError):
            continue
    return False


def _load():
    global _lib
    if _lib is not None:
        return _lib if _lib else None
    stale = (not os.path.exists(LIBRARY) or
             os.path.getmtime(LIBRARY) < os.path.getmtime(SOURCE))
    if stale and not build():
        _lib = False
        return None
    try:
        lib = ctypes.CDLL(LIBRARY)
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
        raise RuntimeError('the compiled NMS kernel is not available (run `make` to build it)')
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


if __name__ == '__main__':
    ok = build(quiet=False)
    print('built %s' % LIBRARY if ok else 'could not build %s' % LIBRARY)
    sys.exit(0 if ok else 1)
