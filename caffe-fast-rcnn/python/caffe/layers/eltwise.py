"""Element-wise combinations and reductions: Eltwise (PROD, SUM with coefficients, MAX with
Caffe's mask, which decides where ties send the gradient) and Reduction (SUM, ASUM, SUMSQ,
MEAN over the trailing axes).
"""
from __future__ import annotations

import torch

from ..errors import NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from ._shapes import blob_count, shape_string
from .base import TorchLayer
from .vision import canonical_axis
from . import register


_ELT = caffe_pb2.EltwiseParameter


@register('Eltwise')
class Eltwise(Layer):
    """Element-wise PROD, SUM (with one coefficient per bottom) or MAX of equal-shaped bottoms.

    MAX follows Caffe's CPU mask exactly: between bottoms 0 and 1 the second wins unless
    the first is strictly greater (a tie goes to bottom 1); a later bottom takes over
    only where it is strictly greater than the running maximum. Backward sends each
    top diff to the one bottom the mask names. PROD's gradient is the product of the
    other bottoms (`stable_prod_grad`, the default) or top / bottom.
    """
    min_bottom = 2
    exact_num_top = 1
    # Under bf16: bottoms as their producers left them (a bf16 sum of bf16 maps stays bf16).
    run_in_bf16 = True

    def setup(self, bottom, top):
        ep = self.layer_param.eltwise_param
        name = self.layer_param.name
        if len(ep.coeff) and len(ep.coeff) != len(bottom):
            raise NetError('layer %r (Eltwise): Eltwise Layer takes one coefficient per bottom '
                           'blob (%d coefficients, %d bottoms).' % (name, len(ep.coeff), len(bottom)))
        if ep.operation == _ELT.PROD and len(ep.coeff):
            raise NetError('layer %r (Eltwise): Eltwise layer only takes coefficients for '
                           'summation.' % name)
        self.op = ep.operation
        self.coeffs = [float(c) for c in ep.coeff] if len(ep.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = bool(ep.stable_prod_grad)
        self._mask = None

    def reshape(self, bottom, top):
        s0 = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != s0:
                raise ShapeError('layer %r (Eltwise): bottom[0]: %s, bottom[%d]: %s'
                                 % (self.layer_param.name, shape_string(s0), i, shape_string(b.shape)))
        top[0].reshape(*s0)

    def forward(self, bottom, top):
        xs = [b.tensor for b in bottom]
        self._inputs = xs
        if self.op == _ELT.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
        elif self.op == _ELT.SUM:
            y = xs[0] * self.coeffs[0] if self.coeffs[0] != 1 else xs[0].clone()
            for x, c in zip(xs[1:], self.coeffs[1:]):
                y.add_(x, alpha=c)
        elif self.op == _ELT.MAX:
            kind = torch.uint8 if len(xs) <= 256 else torch.int64
            first = xs[0] > xs[1]
            y = torch.where(first, xs[0], xs[1])
            mask = (~first).to(kind)  # 0 where bottom 0 wins, else 1
            for i, x in enumerate(xs[2:], 2):
                take = x > y
                y = torch.where(take, x, y)
                mask = torch.where(take, torch.full((), i, dtype=kind, device=y.device), mask)
            self._mask = mask
        else:
            raise NetError('layer %r (Eltwise): unknown operation %d'
                           % (self.layer_param.name, self.op))
        self._top = y
        top[0].set_tensor(y)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        xs = self._inputs
        for i, (b, pd) in enumerate(zip(bottom, propagate_down)):
            if not pd:
                continue
            if self.op == _ELT.PROD:
                if self.stable_prod_grad:
                    others = [x for j, x in enumerate(xs) if j != i]
                    g = others[0]
                    for x in others[1:]:
                        g = g * x
                    g = g * dy
                else:
                    g = self._top / xs[i] * dy
            elif self.op == _ELT.SUM:
                g = dy * self.coeffs[i] if self.coeffs[i] != 1 else dy.clone()
            else:
                g = torch.where(self._mask == i, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))
            b.set_diff_tensor(g)


_RED = caffe_pb2.ReductionParameter


@register('Reduction')
class Reduction(TorchLayer):
    """Reduces every axis from reduction_param.axis on with SUM, ASUM, SUMSQ or MEAN, times coeff.

    The top keeps the axes before `axis` (axis 0, the default, gives a scalar).
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        rp = self.layer_param.reduction_param
        if rp.operation not in (_RED.SUM, _RED.ASUM, _RED.SUMSQ, _RED.MEAN):
            raise NetError('layer %r (Reduction): unknown reduction operation %d'
                           % (self.layer_param.name, rp.operation))
        self.op = rp.operation
        self.coeff = float(rp.coeff)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(int(self.layer_param.reduction_param.axis), len(shape),
                                   self.layer_param.name)
        self.out_shape = tuple(shape[:self.axis])
        self.num = blob_count(shape, 0, self.axis)
        self.dim = blob_count(shape, self.axis)
        top[0].reshape(*self.out_shape)

    def compute(self, x):
        flat = x.reshape(self.num, self.dim)
        if self.op == _RED.SUM or self.op == _RED.MEAN:
            y = flat.sum(dim=1)
        elif self.op == _RED.ASUM:
            y = flat.abs().sum(dim=1)
        else:
            y = (flat * flat).sum(dim=1)
        coeff = self.coeff / self.dim if self.op == _RED.MEAN else self.coeff
        if coeff != 1:
            y = y * coeff
        return y.reshape(self.out_shape)
