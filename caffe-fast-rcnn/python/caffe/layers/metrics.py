"""Layers that summarise scores: ArgMax (the top-k classes) and Accuracy (top-k accuracy,
overall and per class). Both break ties the way Caffe does, so their outputs match Caffe's
exactly; neither has a backward.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..errors import LayerError, NetError, ShapeError
from ..layer import Layer
from ._shapes import blob_count
from .vision import canonical_axis
from . import register


def _ranked(x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k largest values along the last axis and their indices, in Caffe's order.

    Caffe partially sorts (value, index) pairs with std::greater, so among equal values
    the larger index comes first. A stable descending sort of the reversed axis gives
    exactly that order.
    """
    n = x.shape[-1]
    values, idx = torch.sort(torch.flip(x, dims=(-1,)), dim=-1, descending=True, stable=True)
    return values[..., :k], (n - 1) - idx[..., :k]


@register('ArgMax')
class ArgMax(Layer):
    """The top_k indices (and with out_max_val the values) of the largest scores.

    Without argmax_param.axis each item's scores are flattened and the top is
    (N, 1, top_k) with indices, or (N, 2, top_k) with indices then values (padded with
    1s to the bottom's axis count). With an axis, that axis becomes top_k long and holds
    indices, or values if out_max_val. No backward, as in Caffe.
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom, top):
        ap = self.layer_param.argmax_param
        name = self.layer_param.name
        self.out_max_val = bool(ap.out_max_val)
        self.top_k = int(ap.top_k)
        self.has_axis = ap.HasField('axis')
        if self.top_k < 1:
            raise NetError('layer %r (ArgMax): top k must not be less than 1.' % name)
        shape = bottom[0].shape
        if self.has_axis:
            self.axis = canonical_axis(int(ap.axis), len(shape), name)
            if self.top_k > shape[self.axis]:
                raise ShapeError('layer %r (ArgMax): top_k must be less than or equal to the '
                                 'dimension of the axis (top_k %d, axis %d has %d)'
                                 % (name, self.top_k, self.axis, shape[self.axis]))
        elif self.top_k > blob_count(shape, 1):
            raise ShapeError('layer %r (ArgMax): top_k must be less than or equal to the dimension '
                             'of the flattened bottom blob per instance (top_k %d, %d per instance)'
                             % (name, self.top_k, blob_count(shape, 1)))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            out = list(shape)
            out[self.axis] = self.top_k
        else:
            out = [1] * max(len(shape), 3)
            out[0] = shape[0]
            out[1] = 2 if self.out_max_val else 1
            out[2] = self.top_k
        top[0].reshape(*out)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self.has_axis:
            values, idx = _ranked(x.movedim(self.axis, -1), self.top_k)
            y = values if self.out_max_val else idx.to(x.dtype)
            y = y.movedim(-1, self.axis)
        else:
            values, idx = _ranked(x.reshape(x.shape[0], -1), self.top_k)
            y = idx.to(x.dtype).unsqueeze(1)
            if self.out_max_val:
                y = torch.cat([y, values.unsqueeze(1)], dim=1)
        top[0].set_tensor(y.contiguous().reshape(top[0].shape))


@register('Accuracy')
class Accuracy(Layer):
    """Top-k classification accuracy over the labels not equal to ignore_label.

    Scores are (outer, C, inner) around accuracy_param.axis; one label per outer x inner
    item. A label counts as a hit when fewer than top_k OTHER classes score at least as
    high as it (BVLC's rule: a tie counts against the true class). The first top is a
    scalar (0 when every label is ignored); the optional second top holds each class's
    accuracy (0 for a class without labels). No backward, as in Caffe.
    """
    allow_in_place = False
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom, top):
        ap = self.layer_param.accuracy_param
        self.top_k = int(ap.top_k)
        if self.top_k < 1:   # Caffe would report an accuracy of 0 whatever the scores
            raise NetError('layer %r (Accuracy): top_k must be at least 1, got %d'
                           % (self.layer_param.name, self.top_k))
        self.ignore = int(ap.ignore_label) if ap.HasField('ignore_label') else None

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape = bottom[0].shape
        labels = bottom[1].count
        if labels == 0 or self.top_k > bottom[0].count // labels:
            raise ShapeError('layer %r (Accuracy): top_k must be less than or equal to the number '
                             'of classes (top_k %d, scores %s, %d labels)'
                             % (name, self.top_k, shape, labels))
        self.axis = canonical_axis(int(self.layer_param.accuracy_param.axis), len(shape), name)
        self.outer = blob_count(shape, 0, self.axis)
        self.inner = blob_count(shape, self.axis + 1)
        if self.outer * self.inner != labels:
            raise ShapeError(
                'layer %r (Accuracy): Number of labels must match number of predictions; e.g., if '
                'label axis == 1 and prediction shape is (N, C, H, W), label count (number of '
                'labels) must be N*H*W, with integer values in {0, 1, ..., C-1}. Predictions %s '
                'give %d, labels %s hold %d'
                % (name, shape, self.outer * self.inner, bottom[1].shape, labels))
        top[0].reshape()
        if len(top) > 1:
            top[1].reshape(shape[self.axis])

    def forward(self, bottom, top):
        x = bottom[0].tensor
        c = x.shape[self.axis]
        scores = x.reshape(self.outer, c, self.inner)
        labels = bottom[1].tensor.reshape(self.outer, self.inner).long()
        valid = torch.ones_like(labels, dtype=torch.bool) if self.ignore is None \
            else labels != self.ignore
        bad = valid & ((labels < 0) | (labels >= c))
        if bool(bad.any()):
            raise LayerError('layer %r (Accuracy): label %d out of range [0, %d)'
                             % (self.layer_param.name, int(labels[bad][0]), c))
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = scores.gather(1, safe.unsqueeze(1))
        # Classes scoring at least the true class's score, the true class itself excluded.
        # (A NaN true score is then -1 and counts as a hit, as in Caffe's loop.)
        at_least = (scores >= true_score).sum(dim=1) - 1
        hit = (at_least < self.top_k) & valid
        count = int(valid.sum())
        acc = hit.sum().to(x.dtype) / count if count else torch.zeros((), dtype=x.dtype,
                                                                       device=x.device)
        top[0].set_tensor(acc.reshape(()))
        if len(top) > 1:
            per_label = torch.bincount(labels[valid], minlength=c).to(x.dtype)
            per_hit = torch.bincount(labels[hit], minlength=c).to(x.dtype)
            per_class = torch.where(per_label > 0, per_hit / per_label.clamp(min=1),
                                    torch.zeros_like(per_label))
            top[1].set_tensor(per_class)
