"""Box maths of SSD and RefineDet (Caffe's util/bbox_util), on tensors.

One home for what the detection layers and the annotated-data augmentation share:
overlaps, sizes, and (as the layers arrive) encoding, decoding, matching, mining, NMS and
average precision. Boxes are rows of [xmin, ymin, xmax, ymax]; SSD works in normalised
image coordinates, where a box's width is xmax - xmin (no "+ 1" as in pixel boxes), which
is what `normalized=True` means below, as in Caffe's BBoxSize/JaccardOverlap.

Everything is vectorised over boxes: functions take (N, 4) and (M, 4) tensors and return
whole matrices, never loop per box.
"""
from __future__ import annotations

import torch


def bbox_size(boxes: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Area of each box (N, 4) -> (N,); 0 for a box with xmax < xmin or ymax < ymin."""
    extra = 0.0 if normalized else 1.0
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    area = (w + extra) * (h + extra)
    return torch.where((w < 0) | (h < 0), torch.zeros_like(area), area)


def jaccard_overlap(a: torch.Tensor, b: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Intersection over union of every box of `a` (N, 4) with every box of `b` (M, 4): (N, M).

    Caffe's JaccardOverlap: boxes that do not intersect have overlap 0; the intersection
    of touching boxes has zero area (normalised) or one pixel's width (pixel boxes).
    """
    extra = 0.0 if normalized else 1.0
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = rb - lt
    disjoint = (wh < 0).any(dim=-1)
    inter = (wh[..., 0] + extra) * (wh[..., 1] + extra)
    union = bbox_size(a, normalized)[:, None] + bbox_size(b, normalized)[None, :] - inter
    iou = inter / union.clamp_min(torch.finfo(inter.dtype).tiny)
    return torch.where(disjoint, torch.zeros_like(iou), iou)
