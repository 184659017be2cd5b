"""Convolution, Deconvolution and Pooling: the spatial layers, on torch's kernels.

Shapes follow Caffe. Convolution: out = (in + 2*pad - dilation*(k-1) - 1) / stride + 1,
rounded down; weights are (num_output, channels/group, k...). Pooling rounds up by
default (`round_mode: CEIL`), dropping a last window that would start inside the padding;
torch's ceil_mode has the same rule, and its average pooling divides by the window's size
clipped to the padded input, as Caffe does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import NetError, ShapeError
from ..proto import caffe_pb2
from .base import TorchLayer
from . import register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _spatial(values, h, w, default, n, what, layer):
    """Per-axis values from Caffe's repeated field or its _h/_w pair."""
    if h is not None:
        if n != 2:
            raise NetError('layer %r: %s_h/%s_w need 2 spatial axes' % (layer, what, what))
        return [int(h), int(w)]
    values = list(values)
    if not values:
        return [default] * n
    if len(values) == 1:
        return [int(values[0])] * n
    if len(values) != n:
        raise NetError('layer %r: %d %s values for %d spatial axes' % (layer, len(values), what, n))
    return [int(v) for v in values]


def canonical_axis(axis: int, num_axes: int, layer: str) -> int:
    if not -num_axes <= axis < num_axes:
        raise ShapeError('layer %r: axis %d out of range for a %d-axis blob' % (layer, axis, num_axes))
    return axis % num_axes


@register('Convolution')
class Convolution(TorchLayer):
    exact_num_top = None
    min_bottom = 1
    transposed = False
    channels_last_in_bf16 = True

    def setup(self, bottom, top):
        cp = self.layer_param.convolution_param
        name = self.layer_param.name
        if len(bottom) != len(top):
            raise NetError('layer %r: Convolution needs as many tops as bottoms' % name)
        shape = bottom[0].shape
        self.axis = canonical_axis(cp.axis, len(shape), name)
        n = len(shape) - self.axis - 1
        if n not in _CONV:
            raise NetError('layer %r: %d spatial axes; supported are 1, 2 and 3' % (name, n))
        self.n = n
        kh = cp.kernel_h if cp.HasField('kernel_h') else None
        sh = cp.stride_h if cp.HasField('stride_h') else None
        ph = cp.pad_h if cp.HasField('pad_h') else None
        self.kernel = _spatial(cp.kernel_size, kh, cp.kernel_w, 0, n, 'kernel', name)
        self.stride = _spatial(cp.stride, sh, cp.stride_w, 1, n, 'stride', name)
        self.pad = _spatial(cp.pad, ph, cp.pad_w, 0, n, 'pad', name)
        self.dilation = _spatial(cp.dilation, None, None, 1, n, 'dilation', name)
        if any(k <= 0 for k in self.kernel):
            raise NetError('layer %r: kernel size must be given and positive' % name)
        channels = shape[self.axis]
        self.group = cp.group
        if channels % self.group or cp.num_output % self.group:
            raise ShapeError('layer %r: channels (%d) and num_output (%d) must be multiples of '
                             'group (%d)' % (name, channels, cp.num_output, self.group))
        if self.transposed:
            wshape = [channels, cp.num_output // self.group] + self.kernel
        else:
            wshape = [cp.num_output, channels // self.group] + self.kernel
        shapes = [wshape] + ([[cp.num_output]] if cp.bias_term else [])
        if not self.check_param_shapes(*shapes):
            self.add_param(wshape, cp.weight_filler)
            if cp.bias_term:
                self.add_param([cp.num_output], cp.bias_filler)
        self.channels = channels
        self.num_output = cp.num_output
        self.bias_term = cp.bias_term

    def _out_size(self, i, size):
        k = self.dilation[i] * (self.kernel[i] - 1) + 1
        if self.transposed:
            return self.stride[i] * (size - 1) + k - 2 * self.pad[i]
        return (size + 2 * self.pad[i] - k) // self.stride[i] + 1

    def reshape(self, bottom, top):
        for b, t in zip(bottom, top):
            shape = b.shape
            if shape[self.axis] != self.channels:
                raise ShapeError('layer %r: bottom %s has %d channels, the weights expect %d'
                                 % (self.layer_param.name, shape, shape[self.axis], self.channels))
            spatial = [self._out_size(i, s) for i, s in enumerate(shape[self.axis + 1:])]
            t.reshape(*(tuple(shape[:self.axis]) + (self.num_output,) + tuple(spatial)))

    def compute(self, *xs):
        w = self.p[0]
        b = self.p[1] if self.bias_term else None
        outs = []
        for x in xs:
            lead = x.shape[:self.axis]
            x2 = x.reshape((-1,) + tuple(x.shape[self.axis:])) if self.axis != 1 else x
            if self.transposed:
                y = _DECONV[self.n](x2, w, b, self.stride, self.pad, 0, self.group, self.dilation)
            else:
                y = _CONV[self.n](x2, w, b, self.stride, self.pad, self.dilation, self.group)
            if self.axis != 1:
                y = y.reshape(tuple(lead) + tuple(y.shape[1:]))
            outs.append(y)
        return outs


@register('Deconvolution')
class Deconvolution(Convolution):
    transposed = True


@register('Pooling')
class Pooling(TorchLayer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 2  # a second top (MAX only) holds the argmax mask, as in Caffe

    def setup(self, bottom, top):
        pp = self.layer_param.pooling_param
        name = self.layer_param.name
        if len(bottom[0].shape) != 4:
            raise ShapeError('layer %r: Pooling needs a 4-axis (N, C, H, W) bottom, got %s'
                             % (name, bottom[0].shape))
        self.method = pp.pool
        self.global_pooling = pp.global_pooling
        if pp.global_pooling:
            if pp.HasField('kernel_size') or pp.HasField('kernel_h'):
                raise NetError('layer %r: with global_pooling the kernel size is the bottom size; '
                               'do not give kernel_size' % name)
            self.kernel = list(bottom[0].shape[2:])
        elif pp.HasField('kernel_h'):
            self.kernel = [pp.kernel_h, pp.kernel_w]
        elif pp.HasField('kernel_size'):
            self.kernel = [pp.kernel_size] * 2
        else:
            raise NetError('layer %r: Pooling needs kernel_size (or kernel_h and kernel_w)' % name)
        self.pad = [pp.pad_h, pp.pad_w] if pp.HasField('pad_h') else [pp.pad] * 2
        self.stride = [pp.stride_h, pp.stride_w] if pp.HasField('stride_h') else [pp.stride] * 2
        if pp.global_pooling:
            self.pad, self.stride = [0, 0], [1, 1]
        if any(p >= k for p, k in zip(self.pad, self.kernel)):
            raise NetError('layer %r: pad (%s) must be smaller than the kernel (%s)'
                           % (name, self.pad, self.kernel))
        self.ceil = pp.round_mode == caffe_pb2.PoolingParameter.CEIL
        self.want_mask = len(top) > 1
        if self.method == caffe_pb2.PoolingParameter.STOCHASTIC:
            raise NetError('layer %r: STOCHASTIC pooling is not supported' % name)
        if len(top) > 1 and self.method != caffe_pb2.PoolingParameter.MAX:
            raise NetError('layer %r: only MAX pooling has a mask top' % name)

    def out_shape(self, shape):
        n, c, h, w = shape
        if self.global_pooling:
            return (n, c, 1, 1)
        out = []
        for size, k, s, p in zip((h, w), self.kernel, self.stride, self.pad):
            span = size + 2 * p - k
            o = (-(-span // s) if self.ceil else span // s) + 1
            if p and (o - 1) * s >= size + p:
                o -= 1  # the last window would start in the padding
            out.append(o)
        return (n, c, out[0], out[1])

    def reshape(self, bottom, top):
        if self.global_pooling:
            self.kernel = list(bottom[0].shape[2:])
        shape = self.out_shape(bottom[0].shape)
        for t in top:
            t.reshape(*shape)

    def compute(self, x):
        if self.method == caffe_pb2.PoolingParameter.MAX:
            y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil,
                                  return_indices=True)
            return (y, idx.to(x.dtype)) if self.want_mask else (y,)
        return (F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil,
                             count_include_pad=True),)

    def run_forward(self, bottom, top):
        self.want_mask = len(top) > 1
        super().run_forward(bottom, top)
