"""Box regression parameterisation of R-CNN, and clipping to the image.

Boxes are ``(x1, y1, x2, y2)`` in pixel indices, inclusive on both ends, so a
box's width is ``x2 - x1 + 1`` (the "+1 convention" used by every part of
py-faster-rcnn).  A regression target ``(dx, dy, dw, dh)`` moves the centre by a
fraction of the box size and scales the size in log space.

The formulas are exactly those of py-faster-rcnn, including one quirk that
trained models depend on: :func:`bbox_transform_inv` puts the right/bottom edge
at ``ctr + 0.5 * w`` (not ``ctr + 0.5 * w - 1``), so
``bbox_transform_inv(ex, bbox_transform(ex, gt))`` is ``gt`` shifted by +1 on
``x2`` and ``y2``.  Changing it would shift every detection of every released
model by one pixel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _check_boxes(name: str, arr: np.ndarray, ncols_multiple_of: int = 4) -> None:
    if arr.ndim != 2 or arr.shape[1] % ncols_multiple_of != 0 or arr.shape[1] == 0:
        raise ValueError('{}: expected an (N, {}k) array of boxes, got shape {}'.format(
            name, ncols_multiple_of, arr.shape))


def bbox_transform(ex_rois: np.ndarray, gt_rois: np.ndarray) -> np.ndarray:
    """Return the (N, 4) regression targets that move ``ex_rois`` onto ``gt_rois``.

    Used to build training targets: row i describes how box i of the examples
    (proposals/anchors) must move and scale to match its assigned ground truth.
    """
    ex_rois = np.asarray(ex_rois)
    gt_rois = np.asarray(gt_rois)
    _check_boxes('bbox_transform(ex_rois)', ex_rois)
    _check_boxes('bbox_transform(gt_rois)', gt_rois)
    if ex_rois.shape[0] != gt_rois.shape[0]:
        raise ValueError('bbox_transform: ex_rois has {} rows but gt_rois has {}'.format(
            ex_rois.shape[0], gt_rois.shape[0]))

    ex_widths = ex_rois[:, 2] - ex_rois[:, 0] + 1.0
    ex_heights = ex_rois[:, 3] - ex_rois[:, 1] + 1.0
    ex_ctr_x = ex_rois[:, 0] + 0.5 * ex_widths
    ex_ctr_y = ex_rois[:, 1] + 0.5 * ex_heights

    gt_widths = gt_rois[:, 2] - gt_rois[:, 0] + 1.0
    gt_heights = gt_rois[:, 3] - gt_rois[:, 1] + 1.0
    gt_ctr_x = gt_rois[:, 0] + 0.5 * gt_widths
    gt_ctr_y = gt_rois[:, 1] + 0.5 * gt_heights

    targets_dx = (gt_ctr_x - ex_ctr_x) / ex_widths
    targets_dy = (gt_ctr_y - ex_ctr_y) / ex_heights
    targets_dw = np.log(gt_widths / ex_widths)
    targets_dh = np.log(gt_heights / ex_heights)

    return np.vstack((targets_dx, targets_dy, targets_dw, targets_dh)).transpose()


def bbox_transform_inv(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply regression ``deltas`` (N, 4K) to ``boxes`` (N, 4); return (N, 4K) boxes.

    Used at test time and in the proposal layer to turn the network's
    per-class regression outputs into boxes.  Column group k of the result is
    the box predicted for class k.  The result has the dtype of ``deltas``.
    """
    deltas = np.asarray(deltas)
    boxes = np.asarray(boxes)
    if boxes.shape[0] == 0:
        ncols = deltas.shape[1] if deltas.ndim == 2 else 4
        return np.zeros((0, ncols), dtype=deltas.dtype)
    _check_boxes('bbox_transform_inv(boxes)', boxes)
    _check_boxes('bbox_transform_inv(deltas)', deltas)
    if boxes.shape[0] != deltas.shape[0]:
        raise ValueError('bbox_transform_inv: {} boxes but {} rows of deltas'.format(
            boxes.shape[0], deltas.shape[0]))

    boxes = boxes.astype(deltas.dtype, copy=False)

    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights

    dx = deltas[:, 0::4]
    dy = deltas[:, 1::4]
    dw = deltas[:, 2::4]
    dh = deltas[:, 3::4]

    pred_ctr_x = dx * widths[:, np.newaxis] + ctr_x[:, np.newaxis]
    pred_ctr_y = dy * heights[:, np.newaxis] + ctr_y[:, np.newaxis]
    pred_w = np.exp(dw) * widths[:, np.newaxis]
    pred_h = np.exp(dh) * heights[:, np.newaxis]

    pred_boxes = np.zeros(deltas.shape, dtype=deltas.dtype)
    pred_boxes[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    pred_boxes[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    pred_boxes[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    pred_boxes[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return pred_boxes


def clip_boxes(boxes: np.ndarray, im_shape: Sequence[int]) -> np.ndarray:
    """Clip (N, 4K) ``boxes`` to an image of shape ``(height, width, ...)``, in place.

    Every coordinate ends up inside ``[0, width - 1]`` / ``[0, height - 1]``.
    The array is modified in place (as the original did) and also returned.
    """
    if boxes.ndim != 2 or boxes.shape[1] % 4 != 0:
        raise ValueError('clip_boxes: expected an (N, 4k) array, got shape {}'.format(
            boxes.shape))
    if len(im_shape) < 2:
        raise ValueError('clip_boxes: im_shape must be (height, width[, ...]), got {}'
                         .format(im_shape))
    h, w = im_shape[0], im_shape[1]
    # x1 >= 0, x1 < width
    boxes[:, 0::4] = np.maximum(np.minimum(boxes[:, 0::4], w - 1), 0)
    # y1 >= 0, y1 < height
    boxes[:, 1::4] = np.maximum(np.minimum(boxes[:, 1::4], h - 1), 0)
    # x2 >= 0, x2 < width
    boxes[:, 2::4] = np.maximum(np.minimum(boxes[:, 2::4], w - 1), 0)
    # y2 >= 0, y2 < height
    boxes[:, 3::4] = np.maximum(np.minimum(boxes[:, 3::4], h - 1), 0)
    return boxes
