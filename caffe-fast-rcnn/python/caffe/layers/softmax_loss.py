"""Softmax and SoftmaxWithLoss.

SoftmaxWithLoss averages -log(p[label]) over the items of the outer and inner axes,
skipping `ignore_label`, and divides by Caffe's normaliser (VALID by default: the number
of labels not ignored; the legacy `normalize: false` means BATCH_SIZE). Probabilities are
clamped at FLT_MIN before the log, and backward is Caffe's (p - onehot) * weight /
normaliser, written out so that it holds even where the clamp bites.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from .base import TorchLayer
from .vision import canonical_axis
from . import register

FLT_MIN = float(np.finfo(np.float32).tiny)
_NORM = caffe_pb2.LossParameter


def normalizer(loss_param, outer: int, inner: int, valid: int) -> float:
    """Caffe's LossLayer normaliser for the configured mode (at least 1)."""
    mode = loss_param.normalization
    if loss_param.HasField('normalize'):
        mode = _NORM.VALID if loss_param.normalize else _NORM.BATCH_SIZE
    if mode == _NORM.FULL:
        n = outer * inner
    elif mode == _NORM.VALID:
        n = valid
    elif mode == _NORM.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return max(1.0, float(n))


@register('Softmax')
class Softmax(TorchLayer):
    allow_in_place = True
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.axis = canonical_axis(self.layer_param.softmax_param.axis, len(bottom[0].shape),
                                   self.layer_param.name)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def compute(self, x):
        if x.dtype in (torch.bfloat16, torch.float16):
            # Probabilities in float32 (CPU autocast would keep bf16): near 1 a bf16
            # probability has 2-3 digits, and its gradient p * (dy - sum(dy * p)) is a
            # difference of near-equal terms (20 % off for a 0.996 class probability).
            return torch.softmax(x, dim=self.axis, dtype=torch.float32)
        return torch.softmax(x, dim=self.axis)


@register('SoftmaxWithLoss')
class SoftmaxWithLoss(Layer):
    allow_in_place = False
    min_bottom = 2
    max_bottom = 2
    min_top = 1
    max_top = 2
    is_loss = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def setup(self, bottom, top):
        lp = self.layer_param
        self.axis = canonical_axis(lp.softmax_param.axis, len(bottom[0].shape), lp.name)
        self.ignore = lp.loss_param.ignore_label if lp.loss_param.HasField('ignore_label') else None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.outer = int(np.prod(shape[:self.axis], dtype=np.int64))
        self.inner = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        if self.outer * self.inner != bottom[1].count:
            raise ShapeError(
                'layer %r: Number of labels must match number of predictions; e.g., if softmax '
                'axis == 1 and prediction shape is (N, C, H, W), label count (number of labels) '
                'must be N*H*W, with integer values in {0, 1, ..., C-1}. Predictions %s give %d, '
                'labels %s hold %d' % (self.layer_param.name, shape, self.outer * self.inner,
                                       bottom[1].shape, bottom[1].count))
        top[0].reshape()
        if len(top) > 1:
            top[1].reshape(*shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        c = x.shape[self.axis]
        scores = x.reshape(self.outer, c, self.inner)
        prob = torch.softmax(scores, dim=1)
        labels = bottom[1].tensor.reshape(self.outer, self.inner).long()
        valid = torch.ones_like(labels, dtype=torch.bool) if self.ignore is None else labels != self.ignore
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        if bool(((safe < 0) | (safe >= c)).any()):
            bad = labels[valid & ((labels < 0) | (labels >= c))]
            raise ShapeError('layer %r: label %d out of range [0, %d)'
                             % (self.layer_param.name, int(bad[0]), c))
        p_label = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = -torch.log(torch.clamp(p_label, min=FLT_MIN))
        nll = torch.where(valid, nll, torch.zeros_like(nll))
        count = int(valid.sum())
        self._norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, count)
        top[0].set_tensor((nll.sum() / self._norm).reshape(()))
        self._prob, self._safe, self._valid = prob, safe, valid
        if len(top) > 1:
            top[1].set_tensor(prob.reshape(x.shape))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        grad = self._prob.clone()
        grad.scatter_add_(1, self._safe.unsqueeze(1),
                          -torch.ones_like(self._safe, dtype=grad.dtype).unsqueeze(1))
        grad *= self._valid.unsqueeze(1).to(grad.dtype)
        scale = top[0].diff_tensor.reshape(()) / self._norm
        bottom[0].set_diff_tensor((grad * scale).reshape(bottom[0].shape))
