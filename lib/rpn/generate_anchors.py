"""Reference anchors of the RPN: one window per (aspect ratio, scale) pair around a cell.

Anchors are centred on the base window [0, 0, base_size-1, base_size-1]. For each aspect
ratio r (height / width) the base area is kept and the width becomes round(sqrt(area/r)),
the height round(width * r); each such window is then scaled by every scale. The result
is ordered ratio-major (all scales of the first ratio first), which is the channel layout
the RPN's prototxts assume.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _centred(widths: np.ndarray, heights: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Boxes (x1, y1, x2, y2), +1 convention, of the given sizes around (cx, cy)."""
    half_w = 0.5 * (widths - 1)
    half_h = 0.5 * (heights - 1)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def generate_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1, 2),
                     scales: Sequence[float] = 2 ** np.arange(3, 6)) -> np.ndarray:
    """(len(ratios) * len(scales), 4) float anchors; defaults give py-faster-rcnn's nine."""
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    side = float(base_size)
    cx = cy = 0.5 * (side - 1)
    area = side * side
    ws = np.round(np.sqrt(area / ratios))
    hs = np.round(ws * ratios)
    # Every (ratio, scale) pair, ratio-major.
    all_w = (ws[:, None] * scales[None, :]).ravel()
    all_h = (hs[:, None] * scales[None, :]).ravel()
    return _centred(all_w, all_h, cx, cy)


def shifted_anchors(anchors: np.ndarray, height: int, width: int, feat_stride: int) -> np.ndarray:
    """All anchors of a height x width feature map, (height*width*A, 4), cell-major.

    Row k*A + a is anchor a at cell k = y*width + x, shifted by (x, y) * feat_stride; this
    is the order in which the RPN's (1, A*4, H, W) outputs are read after a
    transpose to (H, W, A*4).
    """
    sx = np.arange(width) * feat_stride
    sy = np.arange(height) * feat_stride
    gx, gy = np.meshgrid(sx, sy)
    shifts = np.stack([gx.ravel(), gy.ravel(), gx.ravel(), gy.ravel()], axis=1)
    return (shifts[:, None, :] + anchors[None, :, :]).reshape(-1, 4)
