"""Plain NumPy NMS: the readable reference for what the fast paths compute.

Each iteration keeps the best remaining box and removes, in one vectorised step,
every remaining box whose IoU with it (+1 convention) is above ``thresh``.  It
visits boxes in the same order as :mod:`nms.torch_nms` (score descending, ties
by higher index first), so both return the same list.
"""

from __future__ import annotations

from typing import List

import numpy as np

from nms.torch_nms import as_dets, nms_order


def py_cpu_nms(dets: np.ndarray, thresh: float) -> List[int]:
    """Return the indices of the boxes of ``dets`` (N, 5) kept by NMS at ``thresh``."""
    dets = as_dets(dets, 'py_cpu_nms')
    if dets.shape[0] == 0:
        return []
    dtype = np.dtype(dets.dtype if dets.dtype in (np.float32, np.float64) else np.float32)
    zero = dtype.type(0)
    x1 = dets[:, 0].astype(dtype, copy=False)
    y1 = dets[:, 1].astype(dtype, copy=False)
    x2 = dets[:, 2].astype(dtype, copy=False)
    y2 = dets[:, 3].astype(dtype, copy=False)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = nms_order(dets[:, 4])

    keep: List[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(zero, xx2 - xx1 + 1)
        h = np.maximum(zero, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= thresh]
    return keep
