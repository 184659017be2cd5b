"""``bbox_overlaps``: the IoU matrix between two sets of boxes (+1 convention).

Keeps the import path of py-faster-rcnn's compiled ``utils.cython_bbox`` and its
exact arithmetic: float64, ``w = min(x2) - max(x1) + 1``, IoU 0 unless both the
intersection width and height are positive, union ``area_a + area_b - inter``.
Vectorised with NumPy broadcasting, in row blocks so that an anchors x gt
matrix of any size never needs more than a few tens of MB of temporaries.
"""

from __future__ import annotations

import numpy as np

# Rows of `boxes` processed at once are chosen so a block holds ~1M entries.
_BLOCK_ENTRIES = 1 << 20


def _as_boxes(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ValueError('bbox_overlaps: {} must be an (N, 4) array of '
                         '[x1, y1, x2, y2], got shape {}'.format(name, arr.shape))
    return arr[:, :4].astype(np.float64, copy=False)


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """Return the (N, K) float64 IoU of ``boxes`` (N, 4) against ``query_boxes`` (K, 4)."""
    boxes = _as_boxes('boxes', boxes)
    query_boxes = _as_boxes('query_boxes', query_boxes)
    n, k = boxes.shape[0], query_boxes.shape[0]
    overlaps = np.zeros((n, k), dtype=np.float64)
    if n == 0 or k == 0:
        return overlaps

    qx1, qy1, qx2, qy2 = (query_boxes[:, j][np.newaxis, :] for j in range(4))
    q_area = (qx2 - qx1 + 1) * (qy2 - qy1 + 1)
    b_area = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))[:, np.newaxis]

    step = max(1, _BLOCK_ENTRIES // k)
    for s in range(0, n, step):
        e = min(n, s + step)
        bx1, by1, bx2, by2 = (boxes[s:e, j][:, np.newaxis] for j in range(4))
        # In-place steps keep temporaries few.  Values are the original's:
        # iw = min(x2) - max(x1) + 1, inter = iw * ih, ua = (area_b + area_q) - inter,
        # IoU = inter / ua only where iw > 0 and ih > 0 (clamping makes inter 0 elsewhere).
        iw = np.minimum(bx2, qx2)
        iw -= np.maximum(bx1, qx1)
        iw += 1
        np.maximum(iw, 0, out=iw)
        ih = np.minimum(by2, qy2)
        ih -= np.maximum(by1, qy1)
        ih += 1
        np.maximum(ih, 0, out=ih)
        iw *= ih  # intersection
        ua = b_area[s:e] + q_area
        ua -= iw
        np.divide(iw, ua, out=overlaps[s:e], where=iw > 0)
    return overlaps
