"""Loss layers: SmoothL1Loss (caffe-fast-rcnn), EuclideanLoss, SigmoidCrossEntropyLoss,
HingeLoss, InfogainLoss, MultinomialLogisticLoss, ContrastiveLoss (BVLC master).

Each writes Caffe's own backward rather than the derivative of its forward: Caffe's
gradients differ from the true ones where a loss clamps (log thresholds), ignores labels,
or sends a gradient to its target, and nets trained with Caffe relied on exactly those.
All output a scalar loss (weight 1 unless the prototxt says otherwise) and scale their
gradient by the top's diff, which the net fills with the loss weight.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .. import protoio, weights
from ..errors import NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from .softmax_loss import normalizer
from .vision import canonical_axis
from . import register

_NORM = caffe_pb2.LossParameter
# Caffe's kLOG_THRESHOLD: probabilities are clamped to this before the log.
LOG_THRESHOLD = 1e-20


def _legacy(shape: Sequence[int], i: int) -> int:
    """Caffe's legacy num/channels/height/width accessor: axis i, or 1 past the last axis."""
    return int(shape[i]) if i < len(shape) else 1


class _Loss(Layer):
    """Common ground of Caffe's LossLayer: a scalar top and matching first dimensions."""
    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True
    # Bottoms (besides 1, the labels) that never take a gradient even with force_backward.
    no_force: Sequence[int] = (1,)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index not in self.no_force

    def _check_num(self, bottom) -> None:
        a, b = bottom[0].shape, bottom[1].shape
        if (a[0] if a else 1) != (b[0] if b else 1):
            raise ShapeError('layer %r: The data and label should have the same first dimension '
                             '(%s vs %s)' % (self.layer_param.name, a, b))

    def reshape(self, bottom, top):
        self._check_num(bottom)
        top[0].reshape()

    def _refuse(self, propagate_down, indices, what: str = 'label') -> None:
        for i in indices:
            if i < len(propagate_down) and propagate_down[i]:
                raise NetError('layer %r: %s Layer cannot backpropagate to %s inputs.'
                               % (self.layer_param.name, self.type, what))

    def _labels(self, blob, count: int, classes: int, ignore: Optional[int] = None) -> torch.Tensor:
        """Labels as int64 (C++'s truncating cast), checked against [0, classes)."""
        lab = torch.trunc(blob.tensor.reshape(-1)[:count]).long()
        bad = (lab < 0) | (lab >= classes)
        if ignore is not None:
            bad &= lab != ignore
        if bool(bad.any()):
            raise ShapeError('layer %r: label %d out of range [0, %d)'
                             % (self.layer_param.name, int(lab[bad][0]), classes))
        return lab


def _resolve_mode(lp: caffe_pb2.LossParameter, default: int) -> caffe_pb2.LossParameter:
    """A LossParameter carrying only the normalization mode Caffe would use."""
    if lp.HasField('normalization'):
        mode = lp.normalization
    elif lp.HasField('normalize'):
        mode = _NORM.VALID if lp.normalize else _NORM.BATCH_SIZE
    else:
        mode = default
    return caffe_pb2.LossParameter(normalization=mode)


@register('SmoothL1Loss')
class SmoothL1Loss(_Loss):
    """Fast R-CNN's box loss: sum(w_out * f(w_in * (pred - target))) / num.

    f(d) = 0.5 * sigma^2 * d^2 where |d| < 1/sigma^2, else |d| - 0.5/sigma^2. Bottoms: pred,
    target and optionally the inside and outside weights (both or neither). The gradient
    goes to pred and, with the opposite sign, to target, never to the weights.
    """
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 4
    no_force = ()

    def setup(self, bottom, top):
        self.sigma2 = float(self.layer_param.smooth_l1_loss_param.sigma) ** 2
        self.has_weights = len(bottom) >= 3
        if self.has_weights and len(bottom) != 4:
            raise NetError('layer %r: If weights are used, must specify both inside and outside '
                           'weights (got %d bottoms)' % (self.layer_param.name, len(bottom)))
        self._saved = None

    def reshape(self, bottom, top):
        a = bottom[0].shape
        if (a[0] if a else 1) != (bottom[1].shape[0] if bottom[1].shape else 1):
            raise ShapeError('layer %r: The data and label should have the same number (%s vs %s)'
                             % (self.layer_param.name, a, bottom[1].shape))
        want = bottom[0].count
        for i in range(1, len(bottom)):
            if bottom[i].count != want or any(
                    _legacy(a, j) != _legacy(bottom[i].shape, j) for j in (1, 2, 3)):
                raise ShapeError('layer %r: bottom %d has shape %s, it must match the prediction '
                                 'shape %s' % (self.layer_param.name, i, bottom[i].shape, a))
        top[0].reshape()

    def forward(self, bottom, top):
        d = bottom[0].tensor - bottom[1].tensor.reshape(bottom[0].shape)
        if self.has_weights:
            d = d * bottom[2].tensor.reshape(d.shape)
        ad = d.abs()
        small = ad < 1.0 / self.sigma2
        err = torch.where(small, 0.5 * self.sigma2 * d * d, ad - 0.5 / self.sigma2)
        if self.has_weights:
            err = err * bottom[3].tensor.reshape(d.shape)
        num = _legacy(bottom[0].shape, 0)
        self._saved = (d, small, num)
        top[0].set_tensor((err.sum() / num).reshape(()))

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        d, small, num = self._saved
        g = torch.where(small, self.sigma2 * d, torch.sign(d))
        if self.has_weights:
            g = g * bottom[2].tensor.reshape(d.shape) * bottom[3].tensor.reshape(d.shape)
        scale = top[0].diff_tensor.reshape(()) / num
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].set_diff_tensor((g * (scale * sign)).reshape(bottom[i].shape))


@register('EuclideanLoss')
class EuclideanLoss(_Loss):
    """sum((a - b)^2) / (2 * num); both bottoms get a gradient (b's with the opposite sign)."""
    no_force = ()

    def reshape(self, bottom, top):
        self._check_num(bottom)
        a, b = bottom[0], bottom[1]
        if a.count != b.count:
            raise ShapeError('layer %r: Inputs must have the same dimension (%s vs %s)'
                             % (self.layer_param.name, a.shape, b.shape))
        top[0].reshape()

    def forward(self, bottom, top):
        diff = bottom[0].tensor - bottom[1].tensor.reshape(bottom[0].shape)
        self._diff = diff
        num = _legacy(bottom[0].shape, 0)
        top[0].set_tensor(((diff * diff).sum() / num / 2.0).reshape(()))

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = top[0].diff_tensor.reshape(()) * (sign / _legacy(bottom[i].shape, 0))
                bottom[i].set_diff_tensor((self._diff * alpha).reshape(bottom[i].shape))


@register('SigmoidCrossEntropyLoss')
class SigmoidCrossEntropyLoss(_Loss):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], computed stably from x.

    loss = -sum(x * (t - [x >= 0]) - log(1 + exp(x - 2 * x * [x >= 0]))) / normaliser, over
    targets whose int value is not ignore_label. Normalisation as BVLC master: the
    `normalization` field if set, else the legacy `normalize` (VALID / BATCH_SIZE), else
    BATCH_SIZE. Backward: (sigmoid(x) - t) / normaliser, zero where ignored.
    """

    def setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore = lp.ignore_label if lp.HasField('ignore_label') else None
        self.norm_param = _resolve_mode(lp, _NORM.BATCH_SIZE)

    def reshape(self, bottom, top):
        self._check_num(bottom)
        if bottom[0].count != bottom[1].count:
            raise ShapeError('layer %r: SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same '
                             'count (%s vs %s)' % (self.layer_param.name, bottom[0].shape,
                                                   bottom[1].shape))
        shape = bottom[0].shape
        self.outer = int(shape[0]) if shape else 1
        self.inner = bottom[0].count // max(self.outer, 1) if self.outer else 0
        top[0].reshape()

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(-1)
        t = bottom[1].tensor.reshape(-1)
        pos = (x >= 0).to(x.dtype)
        terms = x * (t - pos) - torch.log1p(torch.exp(x - 2 * x * pos))
        if self.ignore is not None:
            valid = torch.trunc(t).long() != self.ignore
            terms = torch.where(valid, terms, torch.zeros_like(terms))
            count = int(valid.sum())
        else:
            valid = None
            count = x.numel()
        self._norm = normalizer(self.norm_param, self.outer, self.inner, count)
        self._valid = valid
        top[0].set_tensor((-terms.sum() / self._norm).reshape(()))

    def backward(self, top, propagate_down, bottom):
        self._refuse(propagate_down, (1,))
        if not propagate_down[0]:
            return
        x = bottom[0].tensor.reshape(-1)
        g = torch.sigmoid(x) - bottom[1].tensor.reshape(-1)
        if self._valid is not None:
            g = torch.where(self._valid, g, torch.zeros_like(g))
        g = g * (top[0].diff_tensor.reshape(()) / self._norm)
        bottom[0].set_diff_tensor(g.reshape(bottom[0].shape))


@register('HingeLoss')
class HingeLoss(_Loss):
    """One-vs-all hinge: t = max(0, 1 + x * (-1 at the label, +1 elsewhere)); L1 sums t,
    L2 sums t^2; both divided by num. Backward: sign(t)*s (L1) or 2*t*s (L2), with s = -1
    at the label and +1 elsewhere, over num.
    """

    def setup(self, bottom, top):
        self.norm = self.layer_param.hinge_loss_param.norm
        if self.norm not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            raise NetError('layer %r: Unknown Norm' % self.layer_param.name)

    def forward(self, bottom, top):
        num = _legacy(bottom[0].shape, 0)
        x = bottom[0].tensor.reshape(num, -1)
        labels = self._labels(bottom[1], num, x.shape[1])
        sign = torch.ones_like(x)
        sign.scatter_(1, labels[:, None], -1.0)
        margin = torch.clamp(1 + x * sign, min=0)
        self._saved = (margin, sign, num)
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            loss = margin.sum() / num
        else:
            loss = (margin * margin).sum() / num
        top[0].set_tensor(loss.reshape(()))

    def backward(self, top, propagate_down, bottom):
        self._refuse(propagate_down, (1,))
        if not propagate_down[0]:
            return
        margin, sign, num = self._saved
        lw = top[0].diff_tensor.reshape(())
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            g = torch.sign(margin * sign) * (lw / num)
        else:
            g = margin * sign * (lw * 2 / num)
        bottom[0].set_diff_tensor(g.reshape(bottom[0].shape))


@register('MultinomialLogisticLoss')
class MultinomialLogisticLoss(_Loss):
    """-sum(log(max(p[label], 1e-20))) / num on probabilities; backward -1/max(p, 1e-20)/num
    at each label and 0 elsewhere."""

    def reshape(self, bottom, top):
        self._check_num(bottom)
        ls = bottom[1].shape
        if any(_legacy(ls, j) != 1 for j in (1, 2, 3)) or len(ls) > 4:
            raise ShapeError('layer %r: labels must be (num, 1, 1, 1) (one per item), got %s'
                             % (self.layer_param.name, ls))
        top[0].reshape()

    def forward(self, bottom, top):
        num = _legacy(bottom[0].shape, 0)
        p = bottom[0].tensor.reshape(num, -1)
        labels = self._labels(bottom[1], num, p.shape[1])
        picked = torch.clamp(p.gather(1, labels[:, None]).squeeze(1), min=LOG_THRESHOLD)
        self._saved = (labels, picked, num)
        top[0].set_tensor((-torch.log(picked).sum() / num).reshape(()))

    def backward(self, top, propagate_down, bottom):
        self._refuse(propagate_down, (1,))
        if not propagate_down[0]:
            return
        labels, picked, num = self._saved
        scale = -top[0].diff_tensor.reshape(()) / num
        g = torch.zeros((num, bottom[0].count // max(num, 1)), dtype=picked.dtype,
                        device=picked.device)
        g.scatter_(1, labels[:, None], (scale / picked)[:, None])
        bottom[0].set_diff_tensor(g.reshape(bottom[0].shape))


@register('InfogainLoss')
class InfogainLoss(_Loss):
    """Softmax of the scores along `axis`, then -sum_l H[label, l] * log(max(p_l, 1e-20)).

    H comes from infogain_loss_param.source (a binaryproto BlobProto) or a third bottom.
    Normalisation per loss_param.normalization (VALID by default; the deprecated
    `normalize` is refused, as in BVLC master); ignore_label skips items. An optional
    second top holds the probabilities. Backward: (p * rowsum(H)[label] - H[label]) /
    normaliser. The labels and H get no gradient.
    """
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 3
    exact_num_top = None
    min_top = 1
    max_top = 2
    no_force = (1, 2)

    def setup(self, bottom, top):
        lp = self.layer_param
        name = lp.name
        if lp.loss_param.HasField('normalize'):
            raise NetError('layer %r: normalize is deprecated. use "normalization"' % name)
        self.ignore = (lp.loss_param.ignore_label if lp.loss_param.HasField('ignore_label')
                       else None)
        self.norm_param = caffe_pb2.LossParameter(normalization=lp.loss_param.normalization)
        self.H: Optional[torch.Tensor] = None
        if len(bottom) < 3:
            ip = lp.infogain_loss_param
            if not ip.HasField('source'):
                raise NetError('layer %r: Infogain matrix source must be specified.' % name)
            bp = protoio.read_binary(ip.source, caffe_pb2.BlobProto)
            arr = weights.proto_to_array(bp)
            self.H = torch.as_tensor(np.ascontiguousarray(arr), dtype=bottom[0].tensor.dtype,
                                     device=bottom[0].tensor.device)

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape = bottom[0].shape
        self.axis = canonical_axis(self.layer_param.infogain_loss_param.axis, len(shape), name)
        self.outer = int(np.prod(shape[:self.axis], dtype=np.int64))
        self.inner = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        self.classes = int(shape[self.axis])
        if self.outer * self.inner != bottom[1].count:
            raise ShapeError(
                'layer %r: Number of labels must match number of predictions; e.g., if infogain '
                'axis == 1 and prediction shape is (N, C, H, W), label count (number of labels) '
                'must be N*H*W, with integer values in {0, 1, ..., C-1}. Predictions %s, labels %s'
                % (name, shape, bottom[1].shape))
        h_count = bottom[2].count if len(bottom) > 2 else self.H.numel()
        if h_count != self.classes * self.classes:
            raise ShapeError('layer %r: H must be %dx%d, it holds %d values'
                             % (name, self.classes, self.classes, h_count))
        top[0].reshape()
        if len(top) > 1:
            top[1].reshape(*shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        k = self.classes
        prob = torch.softmax(x.reshape(self.outer, k, self.inner), dim=1)
        H = (bottom[2].tensor if len(bottom) > 2 else self.H).reshape(k, k)
        labels = self._labels(bottom[1], self.outer * self.inner, k, self.ignore)
        labels = labels.reshape(self.outer, self.inner)
        if self.ignore is not None:
            valid = labels != self.ignore
            safe = torch.where(valid, labels, torch.zeros_like(labels))
        else:
            valid, safe = None, labels
        rows = H[safe]                                   # (outer, inner, k): H[label, :]
        logp = torch.log(torch.clamp(prob, min=LOG_THRESHOLD)).transpose(1, 2)
        per_item = (rows * logp).sum(dim=2)
        if valid is not None:
            per_item = torch.where(valid, per_item, torch.zeros_like(per_item))
            count = int(valid.sum())
        else:
            count = self.outer * self.inner
        self._norm = normalizer(self.norm_param, self.outer, self.inner, count)
        self._saved = (prob, rows, valid, H)
        top[0].set_tensor((-per_item.sum() / self._norm).reshape(()))
        if len(top) > 1:
            top[1].set_tensor(prob.reshape(x.shape))

    def backward(self, top, propagate_down, bottom):
        self._refuse(propagate_down, (1,))
        self._refuse(propagate_down, (2,), 'infogain')
        if not propagate_down[0]:
            return
        prob, rows, valid, H = self._saved
        row_sums = rows.sum(dim=2)                        # (outer, inner)
        g = prob * row_sums[:, None, :] - rows.transpose(1, 2)
        if valid is not None:
            g = g * valid[:, None, :].to(g.dtype)
        g = g * (top[0].diff_tensor.reshape(()) / self._norm)
        bottom[0].set_diff_tensor(g.reshape(bottom[0].shape))


@register('ContrastiveLoss')
class ContrastiveLoss(_Loss):
    """The siamese-net loss on feature pairs (a, b), both (N, C, 1, 1), and a similarity
    label y, (N, 1, 1, 1), read as int (C++'s truncation: 0.5 is dissimilar):

        loss = sum(similar: d^2, dissimilar: max(margin - d, 0)^2) / (2 N),  d = ||a - b||

    `legacy_version` uses max(margin - d^2, 0) for the dissimilar term instead.

    Backward is Caffe's, not the derivative of the forward: for a dissimilar pair beyond
    the margin it divides by d + 1e-4 rather than d (so that a pair with d = 0 yields a
    finite gradient). a gets the gradient, b the same with the opposite sign, y none.
    """
    exact_num_bottom = 3
    no_force = (2,)

    def setup(self, bottom, top):
        cp = self.layer_param.contrastive_loss_param
        self.margin = float(cp.margin)
        self.legacy_version = bool(cp.legacy_version)
        self._saved = None

    def reshape(self, bottom, top):
        self._check_num(bottom)
        name = self.layer_param.name
        shapes = [b.shape for b in bottom]
        for i, s in enumerate(shapes):
            if len(s) > 4:
                raise ShapeError('layer %r (ContrastiveLoss): bottom %d has shape %s; the layer '
                                 'reads num/channels/height/width, so at most 4 axes'
                                 % (name, i, s))
        a, b, y = shapes
        checks = [
            ('bottom[0]->channels() == bottom[1]->channels()', _legacy(a, 1), _legacy(b, 1)),
            ('bottom[0]->height() == 1', _legacy(a, 2), 1),
            ('bottom[0]->width() == 1', _legacy(a, 3), 1),
            ('bottom[1]->height() == 1', _legacy(b, 2), 1),
            ('bottom[1]->width() == 1', _legacy(b, 3), 1),
            ('bottom[2]->channels() == 1', _legacy(y, 1), 1),
            ('bottom[2]->height() == 1', _legacy(y, 2), 1),
            ('bottom[2]->width() == 1', _legacy(y, 3), 1),
            # Caffe reads one label per pair without checking; a short label blob is refused.
            ('bottom[2]->num() == bottom[0]->num()', _legacy(y, 0), _legacy(a, 0)),
        ]
        for what, got, want in checks:
            if got != want:
                raise ShapeError('layer %r (ContrastiveLoss): Check failed: %s (%d vs. %d); '
                                 'bottoms are %s' % (name, what, got, want, shapes))
        top[0].reshape()

    def forward(self, bottom, top):
        num = _legacy(bottom[0].shape, 0)
        a = bottom[0].tensor.reshape(num, -1)
        diff = a - bottom[1].tensor.reshape(a.shape)
        dist_sq = (diff * diff).sum(dim=1)
        similar = torch.trunc(bottom[2].tensor.reshape(-1)) != 0
        if self.legacy_version:
            apart = torch.clamp(self.margin - dist_sq, min=0)
        else:
            apart = torch.clamp(self.margin - torch.sqrt(dist_sq), min=0) ** 2
        loss = torch.where(similar, dist_sq, apart).sum() / num / 2.0
        self._saved = (diff, dist_sq, similar, num)
        top[0].set_tensor(loss.reshape(()))

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        diff, dist_sq, similar, num = self._saved
        lw = top[0].diff_tensor.reshape(())
        if self.legacy_version:
            beyond = self.margin - dist_sq            # > 0: the pair is inside the margin
            push = -torch.ones_like(dist_sq)
        else:
            dist = torch.sqrt(dist_sq)
            beyond = self.margin - dist
            push = -beyond / (dist + 1e-4)
        # Per pair: the factor of diff in a's gradient, before the loss weight and 1 / num.
        coef = torch.where(similar, torch.ones_like(dist_sq),
                           torch.where(beyond > 0, push, torch.zeros_like(push)))
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                g = diff * (coef * (lw * (sign / num)))[:, None]
                bottom[i].set_diff_tensor(g.reshape(bottom[i].shape))
