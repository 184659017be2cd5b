"""Ground truth and matching: which prior (or predicted box) is trained towards which
ground-truth box (Caffe's GetGroundTruth and MatchBBox).

Ground truth arrives as SSD's label blob, rows of [item_id, label, instance_id, xmin, ymin,
xmax, ymax, difficult]. `get_ground_truth` groups the rows by image into padded tensors
(images x boxes) so that matching runs for the whole batch at once.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..proto import caffe_pb2

_MATCH = caffe_pb2.MultiBoxLossParameter

# Caffe keeps only overlaps above this for matching (MatchBBox).
MIN_OVERLAP = 1e-6


class GroundTruth(NamedTuple):
    """Ground-truth boxes of a batch, padded to the largest count of one image.

    boxes (N, G, 4), labels (N, G) int64, difficult (N, G) bool, valid (N, G) bool (False
    for padding). Within an image the boxes keep the order of the label blob's rows.
    """
    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor
    valid: torch.Tensor


class GroundTruthError(ValueError):
    """A label blob Caffe refuses (a box labelled as background)."""


def get_ground_truth(rows: torch.Tensor, num: int, background_label_id: int,
                     use_difficult_gt: bool, num_classes: int,
                     stop_at_invalid: bool = False) -> GroundTruth:
    """Caffe's GetGroundTruth: rows (R, 8) -> a GroundTruth for images 0..num-1.

    Rows whose item_id is -1 are skipped (`stop_at_invalid`: the first one ends the list,
    as in the per-label variant DetectionEvaluate uses). With two classes every label from
    2 up becomes 1 (RefineDet's class-agnostic ARM). A background label is an error;
    difficult boxes are dropped unless `use_difficult_gt`. Items outside 0..num-1 are
    dropped (no image of the batch asks for them).
    """
    rows = rows.reshape(-1, 8)
    item = torch.trunc(rows[:, 0]).long()
    present = item != -1
    if stop_at_invalid:
        present = torch.cumprod(present.long(), 0).bool()
    label = torch.trunc(rows[:, 1]).long()
    if num_classes == 2:
        label = torch.where(label >= 2, torch.ones_like(label), label)
    bad = present & (label == background_label_id)
    if bool(bad.any()):
        r = int(torch.nonzero(bad)[0, 0])
        raise GroundTruthError('Found background label in the dataset: ground-truth row %d '
                               '(item %d) has label %d = background_label_id'
                               % (r, int(item[r]), int(label[r])))
    difficult = rows[:, 7] != 0
    keep = present & (item >= 0) & (item < num)
    if not use_difficult_gt:
        keep &= ~difficult
    idx = torch.nonzero(keep).reshape(-1)
    items = item[idx]
    order = torch.argsort(items, stable=True)
    idx, items = idx[order], items[order]
    counts = torch.bincount(items, minlength=num) if idx.numel() else torch.zeros(
        num, dtype=torch.long, device=rows.device)
    g = int(counts.max()) if num else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(idx.numel(), device=rows.device) - starts[items]
    boxes = torch.zeros((num, g, 4), dtype=rows.dtype, device=rows.device)
    labels = torch.zeros((num, g), dtype=torch.long, device=rows.device)
    diff = torch.zeros((num, g), dtype=torch.bool, device=rows.device)
    valid = torch.zeros((num, g), dtype=torch.bool, device=rows.device)
    boxes[items, slot] = rows[idx, 3:7]
    labels[items, slot] = label[idx]
    diff[items, slot] = difficult[idx]
    valid[items, slot] = True
    return GroundTruth(boxes, labels, diff, valid)


def _bipartite_candidates(cand: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """The predictions that greedy bipartite matching can ever pick, (N, K) indices
    ascending (padded with -1).

    A ground-truth box is matched to the best prediction still free when it is picked;
    at most G - 1 predictions are taken before, so its pick is among its G best (ties
    included). Restricting the search to those keeps the result and cuts the work.
    """
    n, p, g = cand.shape
    k = min(g, p)
    kth = cand.topk(k, dim=1).values[:, -1:, :]                     # (N, 1, G)
    useful = ((cand >= kth) & (cand > 0) & gt_valid[:, None, :]).any(dim=2)  # (N, P)
    counts = useful.sum(dim=1)
    width = int(counts.max()) if n else 0
    # Ascending indices of the useful predictions, padded with -1.
    picked = torch.full((n, width), -1, dtype=torch.long, device=cand.device)
    rows, idx = torch.nonzero(useful, as_tuple=True)
    slot = torch.cumsum(useful.long(), dim=1)[rows, idx] - 1
    picked[rows, slot] = idx
    return picked


def match_bbox(overlaps: torch.Tensor, gt_valid: torch.Tensor, match_type: int,
               overlap_threshold: float, ignore: Optional[torch.Tensor] = None):
    """Caffe's MatchBBox for a batch: overlaps (N, P, G) of P predictions with G ground-
    truth boxes (padding marked False in gt_valid (N, G)); `ignore` (N, P) marks
    predictions left out (ignore_cross_boundary_bbox).

    Returns (indices, best) (N, P): the matched ground-truth index, -1 for none, -2 for an
    ignored prediction; and the overlap Caffe records (the matched one, else the largest
    overlap above 1e-6 with any box, else 0).

    BIPARTITE: repeatedly the largest overlap among free predictions and unmatched boxes
    is taken (ties to the lowest prediction, then the lowest box); PER_PREDICTION then
    also gives every still free prediction its best box if that overlap reaches
    `overlap_threshold` (ties to the lowest box).
    """
    n, p, g = overlaps.shape
    dev = overlaps.device
    indices = torch.full((n, p), -1, dtype=torch.long, device=dev)
    best = torch.zeros((n, p), dtype=overlaps.dtype, device=dev)
    if g == 0 or p == 0:
        if ignore is not None:
            indices[ignore & gt_valid.any(dim=1, keepdim=True)] = -2
        return indices, best
    usable = gt_valid[:, None, :].expand(n, p, g)
    if ignore is not None:
        # Caffe marks ignored predictions only when the image has ground truth.
        ignore = ignore & gt_valid.any(dim=1, keepdim=True)
        usable = usable & ~ignore[:, :, None]
        indices[ignore] = -2
    positive = usable & (overlaps > MIN_OVERLAP)
    neg_one = torch.full((), -1.0, dtype=overlaps.dtype, device=dev)
    cand = torch.where(positive, overlaps, neg_one)
    best = cand.max(dim=2).values.clamp_min(0)

    # Bipartite: one ground-truth box per round, all images at once.
    pool = gt_valid.clone()
    sub = _bipartite_candidates(cand, gt_valid)                     # (N, K)
    if sub.shape[1]:
        rows = torch.arange(n, device=dev)[:, None]
        safe = sub.clamp_min(0)
        sub_cand = torch.where((sub >= 0)[:, :, None], cand[rows, safe], neg_one)  # (N, K, G)
        free = sub >= 0
        if ignore is not None:
            free &= ~ignore[rows, safe]
        k = sub.shape[1]
        for _ in range(int(gt_valid.sum(dim=1).max())):
            masked = torch.where(free[:, :, None] & pool[:, None, :], sub_cand, neg_one)
            val, arg = masked.reshape(n, k * g).max(dim=1)
            found = val > 0
            if not bool(found.any()):
                break
            img = torch.nonzero(found).reshape(-1)
            i, j = arg[img] // g, arg[img] % g
            pred = sub[img, i]
            indices[img, pred] = j
            best[img, pred] = val[img]
            free[img, i] = False
            pool[img, j] = False

    if int(match_type) == _MATCH.PER_PREDICTION:
        ok = positive & (overlaps >= overlap_threshold)
        val, j = torch.where(ok, overlaps, neg_one).max(dim=2)
        take = (indices == -1) & (val > neg_one)
        indices = torch.where(take, j, indices)
        best = torch.where(take, val, best)
    elif int(match_type) != _MATCH.BIPARTITE:
        raise ValueError('Unknown matching type %r' % (match_type,))
    return indices, best
