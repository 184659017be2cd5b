"""InnerProduct (fully connected) and Embed: matrix products on torch.

InnerProduct flattens the bottom from `axis` on (K = product of those dims) and gives
`bottom.shape[:axis] + (num_output,)`. Weights are (num_output, K), or (K, num_output)
with `transpose: true`, as Caffe stores them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import _config
from ..errors import ShapeError
from .base import TorchLayer
from .vision import canonical_axis, positive
from . import register


@register('InnerProduct')
class InnerProduct(TorchLayer):
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    @property
    def run_in_bf16(self) -> bool:
        """Under bf16, only where bf16 GEMMs are the faster ones (_config explains)."""
        return self._bf16_allowed and _config.low_precision_matmuls_pay(_config.device())

    @run_in_bf16.setter
    def run_in_bf16(self, value: bool) -> None:
        self._bf16_allowed = bool(value)

    _bf16_allowed = True
    _low = None  # forward's bf16 (bottom, weight) casts, kept for backward

    def setup(self, bottom, top):
        ip = self.layer_param.inner_product_param
        shape = bottom[0].shape
        self.axis = canonical_axis(ip.axis, len(shape), self.layer_param.name)
        self.K = int(np.prod(shape[self.axis:], dtype=np.int64))
        self.N = ip.num_output
        positive(self.layer_param.name, 'num_output', self.N)
        self.transpose = ip.transpose
        self.bias_term = ip.bias_term
        wshape = [self.K, self.N] if self.transpose else [self.N, self.K]
        shapes = [wshape] + ([[self.N]] if self.bias_term else [])
        if not self.check_param_shapes(*shapes):
            self.add_param(wshape, ip.weight_filler)
            if self.bias_term:
                self.add_param([self.N], ip.bias_filler)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        k = int(np.prod(shape[self.axis:], dtype=np.int64))
        if k != self.K:
            raise ShapeError('layer %r: Input size incompatible with inner product parameters: '
                             'bottom %s gives %d inputs per item, the weights expect %d'
                             % (self.layer_param.name, shape, k, self.K))
        top[0].reshape(*(tuple(shape[:self.axis]) + (self.N,)))

    def compute(self, x):
        lead = x.shape[:self.axis]
        x2 = x.reshape(-1, self.K)
        w = self.p[0].t() if self.transpose else self.p[0]
        y = F.linear(x2, w, self.p[1] if self.bias_term else None)
        return y.reshape(tuple(lead) + (self.N,))

    def _lowp(self):
        return _config.low_precision() if self.run_in_bf16 else None

    def run_forward(self, bottom, top):
        """No autograd graph: run_backward is written out. Under bf16 (where the layer runs
        in it) the bottom and the parameters are cast here, once, and the casts are kept for
        backward, as autocast's graph keeps them: backward then needs no second weight-sized
        cast (fc6 of VGG16: 103M values)."""
        lowp = self._lowp()
        x = bottom[0].tensor
        self._low = None
        with torch.no_grad():
            if lowp is None:
                self.p = [b.tensor for b in self.blobs]
                y = self.compute(x)
            else:
                x2 = x.reshape(-1, self.K).to(lowp)
                w = self.blobs[0].tensor.to(lowp)
                b = self.blobs[1].tensor.to(lowp) if self.bias_term else None
                y = F.linear(x2, w.t() if self.transpose else w, b)
                y = y.reshape(tuple(x.shape[:self.axis]) + (self.N,))
                if self.record:
                    self._low = (x2, w)
        self._inputs, self._outs, self._leaves, self._params = [x], None, None, None
        top[0].set_tensor(y)

    def refresh_for_backward(self, bottom, top):
        """Backward from the bottom as it is now: forward's bf16 casts are of the old data."""
        super().refresh_for_backward(bottom, top)
        self._low = None

    def run_backward(self, top, propagate_down, bottom):
        """Caffe's backward written out: the weight gradient is accumulated by the GEMM itself
        (beta = 1 into the diff), where autograd would return a fresh weight-sized tensor to be
        added, a 411 MB buffer per iteration for VGG16's fc6. Under bf16 (where the layer runs
        in it) the products run in bf16 on forward's casts, the weight gradient is cast into
        the float32 diff in one pass and the bias gradient is summed in float32."""
        xs = self._inputs
        if xs is None:
            return super().run_backward(top, propagate_down, bottom)
        lowp = self._lowp()
        if lowp is None:
            x, w = xs[0].reshape(-1, self.K), self.blobs[0].tensor
        elif self._low is not None:
            x, w = self._low
        else:
            x, w = xs[0].reshape(-1, self.K).to(lowp), self.blobs[0].tensor.to(lowp)
        dy = top[0].diff_tensor.reshape(-1, self.N).to(x.dtype)
        if self.param_propagate_down[0]:
            if self.transpose:
                self.blobs[0].accumulate_diff_mm(x.t(), dy)
            else:
                self.blobs[0].accumulate_diff_mm(dy.t(), x)
        if self.bias_term and self.param_propagate_down[1]:
            db = dy.sum(0) if lowp is None else dy.sum(0, dtype=torch.float32)
            self.blobs[1].accumulate_diff(db, take=True)
        if propagate_down[0]:
            dx = dy @ (w.t() if self.transpose else w)
            bottom[0].set_diff_tensor(dx.reshape(bottom[0].shape))


@register('Embed')
class Embed(TorchLayer):
    """A lookup table: integer indices in, rows of the (input_dim, num_output) weight out."""
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1
    non_differentiable = (0,)

    def allow_force_backward(self, bottom_index):
        return False

    def setup(self, bottom, top):
        ep = self.layer_param.embed_param
        self.N, self.K, self.bias_term = ep.num_output, ep.input_dim, ep.bias_term
        positive(self.layer_param.name, 'num_output', self.N)
        positive(self.layer_param.name, 'input_dim', self.K)
        shapes = [[self.K, self.N]] + ([[self.N]] if self.bias_term else [])
        if not self.check_param_shapes(*shapes):
            self.add_param([self.K, self.N], ep.weight_filler)
            if self.bias_term:
                self.add_param([self.N], ep.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(*(tuple(bottom[0].shape) + (self.N,)))

    def compute(self, x):
        idx = x.long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.K):
            raise ShapeError('layer %r: embedding index out of range [0, %d)'
                             % (self.layer_param.name, self.K))
        y = F.embedding(idx, self.p[0])
        if self.bias_term:
            y = y + self.p[1]
        return y
