"""py-faster-rcnn's NMS on the engine's compiled kernel (caffe/bbox_util/nms_kernel.c).

The kernel serves the engine's SSD/RefineDet NMS and this package; here it runs with
py-faster-rcnn's +1 pixel convention (widths x2 - x1 + 1, as py_cpu_nms). setup.py
builds it (`pip install -e .`, which `make setup` runs); when it is missing or older
than its source, `available()` is False (with a warning for a stale one) and
nms.torch_nms falls back to torchvision's kernel (same answer, slower on the CPU).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffe.bbox_util import nms_kernel

# py-faster-rcnn's boxes are pixel indices: a box from x1 to x2 is x2 - x1 + 1 wide.
PIXEL_OFFSET = 1
SOURCE = nms_kernel.SOURCE


def library_path() -> Optional[str]:
    """The built kernel, if any (it lives in the engine's bbox_util package)."""
    return nms_kernel.library_path()


def available() -> bool:
    return nms_kernel.available()


def nms_sorted(boxes: np.ndarray, thresh: float, max_keep: Optional[int] = None) -> np.ndarray:
    """Kept positions of boxes (N, 4) already in visiting order (float32 or float64), with
    py-faster-rcnn's +1 widths; at most `max_keep` of them (None: all)."""
    return nms_kernel.greedy_nms(boxes, thresh, PIXEL_OFFSET, max_keep)
