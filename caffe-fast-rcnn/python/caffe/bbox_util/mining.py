"""The losses hard-example mining ranks by, and the mining itself (Caffe's ComputeConfLoss,
ComputeLocLoss and MineHardExamples).

MAX_NEGATIVE keeps, per image, the unmatched priors (overlap below `neg_overlap`) with
the largest confidence loss, `neg_pos_ratio` times as many as the image has matches.
HARD_EXAMPLE ranks every prior by confidence plus localisation loss, keeps `sample_size`
of them (optionally after NMS over the loss) and drops the matches that were not kept.
RefineDet's ODM loss also leaves out priors whose ARM objectness is below
`objectness_score`. Losses are ranked as float32 values, as Caffe stores them; equal
losses go to the lower prior index (Caffe's std::sort leaves their order unspecified).

One deliberate difference: with both an ARM objectness filter and NMS over the loss,
Caffe runs NMS over the unfiltered candidates but reads the result through the filtered
list (indices that point at other priors, or past its end); here NMS runs over the
filtered candidates. Without the filter (SSD's 4 bottoms) the two are the same.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from ..proto import caffe_pb2
from .nms import apply_nms_grouped

_MB = caffe_pb2.MultiBoxLossParameter
FLT_MIN = float(np.finfo(np.float32).tiny)


def logistic_terms(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element sigmoid cross-entropy, computed stably from the logits (Caffe's form)."""
    pos = (x >= 0).to(x.dtype)
    return -(x * (target - pos) - torch.log1p(torch.exp(x - 2 * x * pos)))


def conf_loss(conf: torch.Tensor, labels: torch.Tensor, loss_type: int) -> torch.Tensor:
    """Caffe's ComputeConfLoss: the confidence loss of each prior for its label.

    conf (..., C) scores, labels (...) int64 -> (...). SOFTMAX: -log(max(p_label, FLT_MIN));
    LOGISTIC: the sigmoid cross-entropy summed over classes against a one-hot target (all
    zeros for a label outside 0..C-1).
    """
    if int(loss_type) == _MB.SOFTMAX:
        # -log(max(p, FLT_MIN)) = min(logsumexp(x) - x_label, -log(FLT_MIN)), without the
        # whole probability tensor.
        x = conf.gather(-1, labels.clamp(0, conf.shape[-1] - 1)[..., None])[..., 0]
        return (torch.logsumexp(conf, dim=-1) - x).clamp_(max=-float(np.log(FLT_MIN)))
    if int(loss_type) == _MB.LOGISTIC:
        classes = torch.arange(conf.shape[-1], device=conf.device)
        target = (labels[..., None] == classes).to(conf.dtype)
        return logistic_terms(conf, target).sum(dim=-1)
    raise ValueError('Unknown conf loss type %r' % (loss_type,))


def loc_loss(diff: torch.Tensor, loss_type: int) -> torch.Tensor:
    """Caffe's ComputeLocLoss for rows of 4 differences (..., 4) -> (...): smooth L1
    (0.5 d^2 below 1, |d| - 0.5 above) or 0.5 d^2, summed over the 4 coordinates."""
    if int(loss_type) == _MB.SMOOTH_L1:
        a = diff.abs()
        return torch.where(a < 1, 0.5 * diff * diff, a - 0.5).sum(dim=-1)
    if int(loss_type) == _MB.L2:
        return (0.5 * diff * diff).sum(dim=-1)
    raise ValueError('Unknown loc loss type %r' % (loss_type,))


def loc_loss_grad(diff: torch.Tensor, loss_type: int) -> torch.Tensor:
    """d(loc_loss)/d(diff) as Caffe's SmoothL1Loss / EuclideanLoss backward writes it."""
    if int(loss_type) == _MB.SMOOTH_L1:
        return torch.where(diff.abs() < 1, diff, torch.sign(diff))
    if int(loss_type) == _MB.L2:
        return diff
    raise ValueError('Unknown loc loss type %r' % (loss_type,))


class Mined(NamedTuple):
    """What mining decided: `positive` (N, P) the matches kept, `negative` (N, P) the
    priors trained as background."""
    positive: torch.Tensor
    negative: torch.Tensor


def eligible_for_mining(mining_type: int, match: torch.Tensor, overlap: torch.Tensor,
                        neg_overlap: float) -> torch.Tensor:
    """Caffe's IsEligibleMining: MAX_NEGATIVE takes unmatched priors whose best overlap is
    below neg_overlap; HARD_EXAMPLE takes every prior; NONE none."""
    if int(mining_type) == _MB.MAX_NEGATIVE:
        return (match == -1) & (overlap < neg_overlap)
    if int(mining_type) == _MB.HARD_EXAMPLE:
        return torch.ones_like(match, dtype=torch.bool)
    return torch.zeros_like(match, dtype=torch.bool)


def _top_per_row(loss: torch.Tensor, eligible: torch.Tensor, num_sel: torch.Tensor
                 ) -> torch.Tensor:
    """Per row, the `num_sel` eligible entries of largest loss; among equal losses the
    lower index first (Caffe sorts stably). (N, P) bool."""
    n, p = loss.shape
    k = int(num_sel.max()) if n else 0
    if k == 0:
        return torch.zeros_like(eligible)
    key = torch.where(eligible, loss, torch.full_like(loss, -float('inf')))
    top = key.topk(k, dim=1).values                                   # (N, k) descending
    kth = top.gather(1, (num_sel - 1).clamp_min(0)[:, None])           # num_sel-th largest
    above = eligible & (key > kth)
    tied = eligible & (key == kth)
    need = num_sel[:, None] - above.sum(dim=1, keepdim=True)
    take_tied = tied & (torch.cumsum(tied.long(), dim=1) <= need)
    return (above | take_tied) & (num_sel[:, None] > 0)


def mine_hard_examples(loss: torch.Tensor, match: torch.Tensor, eligible: torch.Tensor,
                       mining_type: int, neg_pos_ratio: float, sample_size: int,
                       nms_boxes: Optional[torch.Tensor] = None, nms_threshold: float = 0.0,
                       top_k: int = -1) -> Mined:
    """Caffe's MineHardExamples after the losses are known, for a whole batch.

    loss (N, P) float32 ranking loss, match (N, P) matched ground-truth index (-1 none, -2
    ignored), eligible (N, P) the priors mining may pick. With `nms_boxes` (N, P, 4) the
    candidates go through ApplyNMS over the loss first (has nms_param, threshold > 0).
    """
    n, p = match.shape
    matched = match > -1
    count = eligible.sum(dim=1)
    if int(mining_type) == _MB.MAX_NEGATIVE:
        num_pos = matched.sum(dim=1).to(torch.float32)
        want = torch.trunc(num_pos * float(np.float32(neg_pos_ratio))).long()
        num_sel = torch.minimum(want, count)
    elif int(mining_type) == _MB.HARD_EXAMPLE:
        num_sel = count.clamp_max(int(sample_size))
    else:
        return Mined(matched, torch.zeros_like(matched))
    if nms_boxes is not None:
        img, prior = torch.nonzero(eligible, as_tuple=True)
        kept = apply_nms_grouped(nms_boxes[img, prior], loss[img, prior], img,
                                 nms_threshold, top_k)
        ki, kp = img[kept], prior[kept]
        # Position of each kept prior within its image's NMS output.
        counts = torch.bincount(ki, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(ki.numel(), device=ki.device) - starts[ki]
        take = pos < num_sel[ki]
        selected = torch.zeros((n, p), dtype=torch.bool, device=match.device)
        selected[ki[take], kp[take]] = True
    else:
        selected = _top_per_row(loss, eligible, num_sel)
    positive = matched
    if int(mining_type) == _MB.HARD_EXAMPLE:
        positive = matched & selected
    negative = (match == -1) & selected
    return Mined(positive, negative)
