"""Non-maximum suppression as SSD's Caffe does it (ApplyNMS, ApplyNMSFast).

Greedy NMS: candidates in descending score order (ties: the lower index first, Caffe's
stable sort), a candidate is kept when its overlap with every box kept before it is at
most the threshold. ApplyNMSFast first drops scores not above `score_threshold`, keeps
the `top_k` best, and may lower the threshold after each kept box (`eta` < 1, while the
threshold is above 0.5). ApplyNMS (used by hard-example mining) instead removes boxes
smaller than 1e-5 before suppressing.

The fixed-threshold case runs on the engine's compiled kernel (nms_kernel.c, offset 0:
normalised widths) for CPU tensors, all groups in one call; on torchvision's compiled NMS
for CUDA tensors and when the kernel is not built, given our order as scores (so that its
sort cannot reorder ties). Both compute Caffe's float IoU and compare it with the
threshold rounded to the boxes' precision, as Caffe's float `nms_threshold`. The adaptive
case runs a batched greedy pass over all groups at once, one round per kept box, on the
groups' overlap matrices.
"""
from __future__ import annotations

import numpy as np
import torch

from . import nms_kernel
from .boxes import bbox_size, jaccard_overlap

# ApplyNMS drops boxes smaller than this (normalised area).
MIN_BOX_SIZE = 1e-5
# SSD's boxes are normalised: a box from xmin to xmax is xmax - xmin wide (no +1 pixel).
NORMALISED_OFFSET = 0


def _descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices that sort `scores` descending, equal scores keeping their order."""
    return torch.sort(scores, descending=True, stable=True).indices


def _nms_device(t: torch.Tensor) -> torch.Tensor:
    # torchvision ships NMS kernels for the CPU and CUDA; elsewhere (MPS) run it on the CPU.
    return t if t.device.type in ('cpu', 'cuda') else t.cpu()


def _threshold(threshold: float, dtype: torch.dtype) -> float:
    """The threshold as the boxes' precision holds it (Caffe's float for float32 boxes)."""
    return float(np.float32(threshold)) if dtype != torch.float64 else float(threshold)


def _kernel_boxes(boxes: torch.Tensor) -> np.ndarray | None:
    """`boxes` as a NumPy array the compiled kernel can read (a view of a contiguous
    float32/float64 CPU tensor, no copy), or None when torchvision must do the work (CUDA
    and other devices, or no kernel built)."""
    if boxes.device.type != 'cpu' or not nms_kernel.available():
        return None
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.to(torch.float32)
    return boxes.detach().contiguous().numpy()


def _torchvision_greedy(boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions kept by torchvision's greedy NMS of `boxes` taken in the given order."""
    import torchvision   # on first use: its import costs seconds of every process's start-up
    b = _nms_device(boxes)
    rank = -torch.arange(b.shape[0], dtype=b.dtype, device=b.device)
    keep = torchvision.ops.nms(b, rank, _threshold(threshold, b.dtype))
    return keep.to(boxes.device)


def _descending_key(scores: torch.Tensor) -> torch.Tensor | None:
    """int64 keys in [0, 2**32) whose ascending order is the float32 `scores`' descending
    order, equal scores (-0.0 and 0.0 included) giving equal keys; None for scores that
    float32 does not hold exactly (float64)."""
    if scores.dtype == torch.float64:
        return None
    bits = (scores.to(torch.float32) + 0.0).view(torch.int32)    # + 0.0: -0.0 becomes 0.0
    # IEEE floats order as sign-magnitude integers: flip the magnitude of negative ones.
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return (2 ** 31 - 1) - ordered


def group_order(scores: torch.Tensor, groups: torch.Tensor, top_k: int = -1) -> torch.Tensor:
    """Indices of the candidates ordered by group, then by descending score (equal scores
    keep their order), at most `top_k` per group (all for -1).

    float32 scores and their groups pack into one int64 key (group in the high 32 bits),
    so one stable integer sort does what a stable float sort followed by a stable sort by
    group would, several times faster (DetectionOutput of a random net ranks 20 classes x
    6375 priors per image)."""
    # index_select rather than tensor[index]: the same gather, several times faster on
    # the CPU for these sizes.
    key = _descending_key(scores)
    if key is not None and (groups.numel() == 0 or int(groups.max()) < 2 ** 31):
        keys, order = torch.sort(groups.to(torch.int64) * 2 ** 32 + key, stable=True)
        g = keys >> 32                                   # the groups, in order, no gather
    else:
        order = _descending(scores)
        order = order.index_select(0, torch.argsort(groups.index_select(0, order), stable=True))
        g = groups.index_select(0, order)
    if top_k > -1 and order.numel():
        counts = torch.bincount(g)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(g.numel(), device=g.device) - starts.index_select(0, g)
        order = order[rank < top_k]
    return order


def select_candidates(scores: torch.Tensor, groups: torch.Tensor, score_threshold: float,
                      top_k: int = -1) -> torch.Tensor:
    """ApplyNMSFast's candidates (GetMaxScoreIndex) for many groups at once: scores above
    the threshold, ordered by group and descending score, `top_k` per group."""
    cand = torch.nonzero(scores > score_threshold).reshape(-1)
    return cand[group_order(scores[cand], groups[cand], top_k)]


def _per_group(boxes: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS of each group of consecutive boxes: one compiled call for all groups
    (CPU), or one torchvision call per group (a class of an image), never one per box."""
    ends = torch.cumsum(torch.bincount(groups), 0)
    array = _kernel_boxes(boxes)
    if array is not None:
        keep = nms_kernel.greedy_nms_groups(array, ends.numpy(), _threshold(threshold, boxes.dtype),
                                            NORMALISED_OFFSET)
        return torch.from_numpy(keep)
    begin, out = 0, []
    for end in ends.tolist():
        if end > begin:
            out.append(_torchvision_greedy(boxes[begin:end], threshold) + begin)
        begin = end
    return torch.cat(out)


def nms_ordered_groups(boxes: torch.Tensor, groups: torch.Tensor, nms_threshold: float,
                       eta: float = 1.0) -> torch.Tensor:
    """Greedy NMS (with Caffe's adaptive threshold when eta < 1) of boxes already ordered
    by group and priority; returns the kept positions in order."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if eta >= 1:
        return _per_group(boxes, groups, nms_threshold)
    return _adaptive_groups(boxes, groups, nms_threshold, eta)


def _adaptive_groups(boxes: torch.Tensor, groups: torch.Tensor, nms_threshold: float,
                     eta: float) -> torch.Tensor:
    """Greedy NMS with Caffe's adaptive threshold, all groups in one pass.

    `boxes` are ordered by group, then by priority. A candidate is kept when its largest
    overlap with the boxes already kept in its group is at most the group's threshold at
    the time it is looked at; after each kept box the threshold is multiplied by eta while
    it is above 0.5. Each round keeps, in every group, the first candidate after the last
    kept one that passes; the running maximum overlap with kept boxes makes that a
    vectorised test. Returns the kept positions, in order.
    """
    n = boxes.shape[0]
    dev = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    counts = torch.bincount(groups)
    gid = torch.nonzero(counts).reshape(-1)
    counts = counts[gid]
    dense = torch.zeros(int(groups.max()) + 1, dtype=torch.long, device=dev)
    dense[gid] = torch.arange(gid.numel(), device=dev)
    gi = dense[groups]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=dev) - starts[gi]
    ng, width = gid.numel(), int(counts.max())
    padded = torch.zeros((ng, width, 4), dtype=boxes.dtype, device=dev)
    padded[gi, slot] = boxes
    valid = torch.zeros((ng, width), dtype=torch.bool, device=dev)
    valid[gi, slot] = True
    iou = jaccard_overlap(padded, padded)                      # (ng, width, width)
    running = torch.full((ng, width), -1.0, dtype=boxes.dtype, device=dev)
    thr = torch.full((ng,), float(np.float32(nms_threshold)), dtype=torch.float32, device=dev)
    eta32 = float(np.float32(eta))
    last = torch.full((ng,), -1, dtype=torch.long, device=dev)
    kept = torch.zeros((ng, width), dtype=torch.bool, device=dev)
    pos = torch.arange(width, device=dev)
    rows = torch.arange(ng, device=dev)
    while True:
        ok = valid & (pos[None, :] > last[:, None]) & (running <= thr[:, None].to(boxes.dtype))
        has = ok.any(dim=1)
        if not bool(has.any()):
            break
        first = torch.where(ok, pos[None, :], torch.full_like(ok, width, dtype=torch.long)).min(dim=1).values
        r, c = rows[has], first[has]
        kept[r, c] = True
        last[has] = c
        running[has] = torch.maximum(running[has], iou[r, c])
        if eta32 < 1:
            shrink = has & (thr > 0.5)
            thr = torch.where(shrink, thr * eta32, thr)
        # Groups with no candidate left stop advancing.
        last = torch.where(has, last, torch.full_like(last, width))
    return torch.nonzero(kept[gi, slot]).reshape(-1)


def apply_nms_fast_grouped(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                           score_threshold: float, nms_threshold: float, eta: float = 1.0,
                           top_k: int = -1) -> torch.Tensor:
    """Caffe's ApplyNMSFast run on several independent sets at once.

    boxes (M, 4), scores (M,), groups (M,) int64 (e.g. image * classes + class). Returns
    the indices kept, ordered by group and, within a group, in Caffe's order (descending
    score, ties by index).
    """
    idx = select_candidates(scores, groups, score_threshold, top_k)
    return idx[nms_ordered_groups(boxes[idx], groups[idx], nms_threshold, eta)]


def apply_nms_fast(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
                   nms_threshold: float, eta: float = 1.0, top_k: int = -1) -> torch.Tensor:
    """Caffe's ApplyNMSFast on one set of boxes (K, 4) with scores (K,): kept indices."""
    groups = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return apply_nms_fast_grouped(boxes, scores, groups, score_threshold, nms_threshold, eta, top_k)


def apply_nms_grouped(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                      threshold: float, top_k: int = -1) -> torch.Tensor:
    """Caffe's ApplyNMS (hard-example mining) on several sets at once: the `top_k` best
    of each group (stable), boxes smaller than 1e-5 dropped, then greedy suppression of
    overlaps above `threshold`. Returns kept indices ordered by group, then priority."""
    order = group_order(scores, groups, top_k)
    order = order[bbox_size(boxes[order]) >= MIN_BOX_SIZE]
    if order.numel() == 0:
        return order
    return order[_per_group(boxes[order], groups[order], threshold)]


def apply_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float,
              top_k: int = -1) -> torch.Tensor:
    """Caffe's ApplyNMS on one set of boxes: kept indices in descending score order."""
    groups = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return apply_nms_grouped(boxes, scores, groups, threshold, top_k)
