"""Convolution, Deconvolution, Pooling, SPP and Im2col: the spatial layers, on torch's
kernels.

Shapes follow Caffe. Convolution: out = (in + 2*pad - dilation*(k-1) - 1) / stride + 1,
rounded down; weights are (num_output, channels/group, k...). Pooling rounds up by
default (`round_mode: CEIL`), dropping a last window that would start inside the padding;
torch's ceil_mode has the same rule, and its average pooling divides by the window's size
clipped to the padded input, as Caffe does.

SPP (spatial pyramid pooling) pools each level of a pyramid with Caffe's own kernel and
padding rule and concatenates the flattened results; Im2col lays every receptive field
out as a column, in Caffe's channel-major order, and its backward is col2im.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .. import _config
from ..errors import NetError, ShapeError
from ..phase import Phase
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


def positive(layer: str, what: str, values) -> None:
    """Caffe's CHECK_GT(x, 0) on layer parameters, as a NetError naming the layer (instead
    of a ZeroDivisionError from a filler or a shape computation later)."""
    vals = list(values) if isinstance(values, (list, tuple)) else [values]
    if any(v <= 0 for v in vals):
        raise NetError('layer %r: %s must be positive, got %s'
                       % (layer, what, vals[0] if len(vals) == 1 else vals))


def _check_out_size(layer: str, sizes, outs, what: str) -> None:
    """A window larger than its (padded) input leaves no output: say so, naming the layer."""
    for i, (size, o) in enumerate(zip(sizes, outs)):
        if o <= 0:
            raise ShapeError('layer %r: spatial axis %d of the bottom has size %d, too small for '
                             'the %s (output size would be %d)' % (layer, i, size, what, o))


def canonical_axis(axis: int, num_axes: int, layer: str) -> int:
    if not -num_axes <= axis < num_axes:
        raise ShapeError('layer %r: axis %d out of range for a %d-axis blob' % (layer, axis, num_axes))
    return axis % num_axes


@register('Convolution')
class Convolution(TorchLayer):
    allow_in_place = False
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
        positive(name, 'stride', self.stride)
        positive(name, 'dilation', self.dilation)
        positive(name, 'num_output', cp.num_output)
        positive(name, 'group', cp.group)
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
            _check_out_size(self.layer_param.name, shape[self.axis + 1:], spatial,
                            'kernel %s (dilation %s) with pad %s' % (self.kernel, self.dilation,
                                                                     self.pad))
            t.reshape(*(tuple(shape[:self.axis]) + (self.num_output,) + tuple(spatial)))

    def compute(self, *xs):
        w = self.p[0]
        b = self.p[1] if self.bias_term else None
        return [self._conv(x, w, b) for x in xs]

    def _conv(self, x, w, b):
        lead = x.shape[:self.axis]
        x2 = x.reshape((-1,) + tuple(x.shape[self.axis:])) if self.axis != 1 else x
        if self.transposed:
            y = _DECONV[self.n](x2, w, b, self.stride, self.pad, 0, self.group, self.dilation)
        else:
            y = _CONV[self.n](x2, w, b, self.stride, self.pad, self.dilation, self.group)
        if self.axis != 1:
            y = y.reshape(tuple(lead) + tuple(y.shape[1:]))
        return y

    # ---- forward and backward written out (one bottom) ---------------------------------------
    # A convolution's backward needs its input and weights only, which forward keeps; calling
    # ATen's convolution_backward with them is what autograd's ConvolutionBackward does (the
    # same call, so float32 gradients are bit for bit autograd's), without the per-layer
    # graph. Under bf16 the bottom is cast and laid out channels-last in one pass, the
    # weights are cast once and kept, and the bf16 weight gradient is cast into the float32
    # diff in one pass (through autograd it became a float32 channels-last tensor first,
    # then was copied or added into the diff: two passes over every weight).

    def run_forward(self, bottom, top):
        if len(bottom) != 1:
            self._w = None
            return super().run_forward(bottom, top)
        x, w, b = self._operands(bottom)
        with torch.no_grad():
            y = self._conv(x, w, b)
        self._inputs, self._outs, self._leaves, self._params = [x], None, None, None
        self._w = w
        top[0].set_tensor(y)

    def _operands(self, bottom):
        """The bottom, weights and bias as the convolution computes with them: under bf16,
        the bottom cast and laid out channels-last in one pass, the parameters cast."""
        lowp = _config.low_precision() if self.run_in_bf16 else None
        x = bottom[0].tensor
        w = self.blobs[0].tensor
        b = self.blobs[1].tensor if self.bias_term else None
        if lowp is not None:
            if x.is_floating_point():
                fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
                x = x.to(dtype=lowp, memory_format=fmt)
            w = w.to(lowp)
            b = b.to(lowp) if b is not None else None
        return x, w, b

    def refresh_for_backward(self, bottom, top):
        """Backward from the bottom and weights as they are now (Caffe reads the blobs),
        cast as forward casts them, so that a bf16 backward stays in one type."""
        if len(bottom) != 1 or getattr(self, '_w', None) is None:
            return super().refresh_for_backward(bottom, top)
        x, self._w, _ = self._operands(bottom)
        self._inputs, self._outs = [x], None

    def run_backward(self, top, propagate_down, bottom):
        if self._inputs is None or len(bottom) != 1 or getattr(self, '_w', None) is None:
            return super().run_backward(top, propagate_down, bottom)
        want_w = bool(self.param_propagate_down[0])
        want_b = bool(self.bias_term and self.param_propagate_down[1])
        want_x = bool(propagate_down[0])
        if not (want_x or want_w or want_b):
            return
        x, w = self._inputs[0], self._w
        dy = top[0].diff_tensor.to(w.dtype)
        x2 = x.reshape((-1,) + tuple(x.shape[self.axis:])) if self.axis != 1 else x
        dy2 = dy.reshape((-1,) + tuple(dy.shape[self.axis:])) if self.axis != 1 else dy
        gx, gw, gb = torch.ops.aten.convolution_backward(
            dy2, x2, w, [self.num_output] if self.bias_term else None, self.stride, self.pad,
            self.dilation, self.transposed, [0] * self.n, self.group, [want_x, want_w, want_b])
        if want_w:
            self.blobs[0].accumulate_diff(gw, take=True)
        if want_b:
            self.blobs[1].accumulate_diff(gb, take=True)
        if want_x:
            bottom[0].set_diff_tensor(gx.reshape(x.shape))


@register('Deconvolution')
class Deconvolution(Convolution):
    transposed = True


@register('Pooling')
class Pooling(TorchLayer):
    allow_in_place = False
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
        positive(name, 'kernel size', self.kernel)
        positive(name, 'stride', self.stride)
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
        _check_out_size(self.layer_param.name, bottom[0].shape[2:], shape[2:],
                        'kernel %s with pad %s' % (self.kernel, self.pad))
        for t in top:
            t.reshape(*shape)

    def compute(self, x):
        if self.method == caffe_pb2.PoolingParameter.MAX:
            if not self.want_mask:
                # Without the mask top, torch's max_pool2d keeps argmax indices only when it
                # records a graph for backward: a TEST net's pooling runs ATen's vectorised
                # kernel that writes none (7x faster on VGG16's pool1), same values.
                return (F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil),)
            y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil,
                                  return_indices=True)
            # Caffe's mask top holds flat indices: float32 under bf16 (bf16 has 8 bits).
            low = x.dtype in (torch.bfloat16, torch.float16)
            return (y, idx.to(torch.float32 if low else x.dtype))
        return (F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil,
                             count_include_pad=True),)

    def run_forward(self, bottom, top):
        self.want_mask = len(top) > 1
        super().run_forward(bottom, top)


# ---- SPP -------------------------------------------------------------------------------------

_SPP = caffe_pb2.SPPParameter


def _caffe_pooled_size(size: int, k: int, pad: int, stride: int) -> int:
    """Caffe's PoolingLayer output length (round_mode CEIL, the default): ceil((size + 2 pad
    - k) / stride) + 1, less one when the last window would start inside the padding."""
    out = -(-(size + 2 * pad - k) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class _SPPLevel:
    """One pyramid level: Caffe's square-ish pooling whose windows tile the whole image.

    For 2^level bins along an axis of length L: kernel = stride = ceil(L / bins), and the
    shortfall kernel * bins - L is padded, half (rounded up) on each side.
    """

    def __init__(self, level: int, height: int, width: int):
        bins = 2 ** level
        self.kernel: List[int] = []
        self.pad: List[int] = []
        self.out: List[int] = []
        for size in (height, width):
            k = -(-size // bins)
            pad = (k * bins - size + 1) // 2
            self.kernel.append(k)
            self.pad.append(pad)
            self.out.append(_caffe_pooled_size(size, k, pad, k))
        self.size = (height, width)

    def windows(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        """(N, C, out_h, out_w, k_h * k_w): every pooling window, padding cells set to `fill`.

        The windows do not overlap (stride = kernel), so padding to out * kernel and a
        reshape lays them out; the pad on the far side may be negative (a crop)."""
        (kh, kw), (ph, pw), (oh, ow) = self.kernel, self.pad, self.out
        h, w = self.size
        xp = F.pad(x, (pw, ow * kw - pw - w, ph, oh * kh - ph - h), value=fill)
        n, c = x.shape[:2]
        return xp.reshape(n, c, oh, kh, ow, kw).permute(0, 1, 2, 4, 3, 5).reshape(
            n, c, oh, ow, kh * kw)

    def window_sizes(self, like: torch.Tensor) -> torch.Tensor:
        """Caffe's AVE divisor per output cell: the window clipped to the padded image."""
        sizes = []
        for k, pad, out, size in zip(self.kernel, self.pad, self.out, self.size):
            start = torch.arange(out, device=like.device, dtype=like.dtype) * k - pad
            sizes.append(torch.clamp(start + k, max=size + pad) - start)
        return sizes[0][:, None] * sizes[1][None, :]


@register('SPP')
class SPP(TorchLayer):
    """Spatial pyramid pooling: level i pools the (N, C, H, W) bottom into 2^i x 2^i bins
    (Caffe's kernel/pad rule, see _SPPLevel), each level is flattened to (N, C * bins) and
    the levels are concatenated along axis 1. With pyramid_height 1 the top is the single
    pooling's (N, C, 1, 1), as Caffe then runs its pooling layer alone.

    MAX takes the first maximum of each window (padding never wins), AVE divides the window
    sum by the window clipped to the padded image, as Caffe's pooling. STOCHASTIC (Caffe
    has it on the GPU only) samples in TRAIN one cell of each window with probability
    proportional to its value and passes the gradient to it; in TEST it outputs
    sum(x^2) / sum(x) (0 where the sum is not positive). Caffe's pooling refuses padding
    for STOCHASTIC, so every level must tile the image exactly (H and W divisible by
    2^(pyramid_height - 1)).
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        sp = self.layer_param.spp_param
        self.pyramid_height = int(sp.pyramid_height)
        if self.pyramid_height < 1:
            raise NetError('layer %r (SPP): spp_param.pyramid_height must be at least 1 (got %d)'
                           % (self.layer_param.name, self.pyramid_height))
        self.method = sp.pool
        self._draws = None
        self.levels = self._plan(bottom[0].shape)

    def _plan(self, shape: Sequence[int]) -> List[_SPPLevel]:
        """The pyramid's levels for this bottom shape, with the checks of Caffe's SPP and
        pooling set-ups."""
        name = self.layer_param.name
        if len(shape) != 4:
            raise ShapeError('layer %r (SPP): Input must have 4 axes, corresponding to (num, '
                             'channels, height, width); got %s' % (name, tuple(shape)))
        height, width = int(shape[2]), int(shape[3])
        if height <= 0 or width <= 0:
            raise ShapeError('layer %r (SPP): Input dimensions cannot be zero. (height %d, '
                             'width %d)' % (name, height, width))
        levels = []
        for i in range(self.pyramid_height):
            lvl = _SPPLevel(i, height, width)
            if any(lvl.pad) and self.method == _SPP.STOCHASTIC:
                raise NetError('layer %r (SPP): pyramid level %d pads the %dx%d input by %s: '
                               'Padding implemented only for average and max pooling.'
                               % (name, i, height, width, lvl.pad))
            for axis, (p, k) in zip('hw', zip(lvl.pad, lvl.kernel)):
                if p >= k:
                    raise ShapeError('layer %r (SPP): pyramid level %d cannot pool a %dx%d input: '
                                     'Check failed: pad_%s_ < kernel_%s_ (%d vs. %d)'
                                     % (name, i, height, width, axis, axis, p, k))
            levels.append(lvl)
        return levels

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.levels = self._plan(shape)
        n, c = shape[0], shape[1]
        if self.pyramid_height == 1:
            top[0].reshape(n, c, *self.levels[0].out)
        else:
            top[0].reshape(n, c * sum(l.out[0] * l.out[1] for l in self.levels))

    def run_forward(self, bottom, top):
        # STOCHASTIC in TRAIN: draw the uniforms here, so that a recomputing backward
        # samples the same cells as forward did.
        if self.method == _SPP.STOCHASTIC and self.phase == Phase.TRAIN:
            self._draw(bottom[0].tensor)
        super().run_forward(bottom, top)

    def refresh_for_backward(self, bottom, top):
        """Keeps forward's draws (they do not depend on the data) unless there are none for
        this shape yet."""
        super().refresh_for_backward(bottom, top)
        x = bottom[0].tensor
        if self.method == _SPP.STOCHASTIC and self.phase == Phase.TRAIN and (
                self._draws is None or self._draws[0].shape[:2] != x.shape[:2]):
            self._draw(x)

    def _draw(self, x: torch.Tensor) -> None:
        gen = _config.generator(x.device)
        self._draws = [torch.rand(tuple(x.shape[:2]) + tuple(l.out) + (1,), generator=gen,
                                  dtype=x.dtype, device=x.device) for l in self.levels]

    def _pool(self, x: torch.Tensor, i: int, lvl: _SPPLevel) -> torch.Tensor:
        if self.method == _SPP.MAX:
            win = lvl.windows(x, float('-inf'))
            return win.gather(-1, win.argmax(dim=-1, keepdim=True)).squeeze(-1)
        if self.method == _SPP.AVE:
            return lvl.windows(x, 0.0).sum(dim=-1) / lvl.window_sizes(x)
        win = lvl.windows(x, 0.0)  # STOCHASTIC: no padding (refused in _plan)
        total = win.sum(dim=-1, keepdim=True)
        if self.phase == Phase.TRAIN:
            with torch.no_grad():
                # Caffe: the first cell whose running sum reaches u * window sum.
                below = win.cumsum(dim=-1) < self._draws[i] * total
                pick = below.sum(dim=-1, keepdim=True).clamp_(max=win.shape[-1] - 1)
            return win.gather(-1, pick).squeeze(-1)
        total = total.squeeze(-1)
        positive = total > 0
        safe = torch.where(positive, total, torch.ones_like(total))
        return torch.where(positive, (win * win).sum(dim=-1) / safe, torch.zeros_like(total))

    def compute(self, x):
        pooled = [self._pool(x, i, lvl) for i, lvl in enumerate(self.levels)]
        if self.pyramid_height == 1:
            return pooled[0]
        return torch.cat([p.reshape(p.shape[0], -1) for p in pooled], dim=1)


# ---- Im2col ----------------------------------------------------------------------------------

def _conv_dims(cp, field: str, list_name: str, n: int, default, layer: str) -> List[int]:
    """A per-spatial-axis ConvolutionParameter value as Caffe's Im2col reads it: from the
    field_h/field_w pair (2-D only, and not with the repeated field), else the repeated
    field given once, once per spatial axis, or (not for the kernel) not at all."""
    values = [int(v) for v in getattr(cp, list_name)]
    if field != 'dilation' and (cp.HasField(field + '_h') or cp.HasField(field + '_w')):
        if n != 2:
            raise NetError('layer %r (Im2col): %s_h & %s_w can only be used for 2D convolution.'
                           % (layer, field, field))
        if values:
            raise NetError('layer %r (Im2col): Either %s or %s_h/w should be specified; not '
                           'both.' % (layer, list_name, field))
        return [int(getattr(cp, field + '_h')), int(getattr(cp, field + '_w'))]
    allowed = (1, n) if default is None else (0, 1, n)
    if len(values) not in allowed:
        # (Caffe ends this message with ');' for kernel_size, stride and pad, '.' for dilation.)
        raise NetError('layer %r (Im2col): %s must be specified once, or once per spatial '
                       'dimension (%s specified %d times; %d spatial dims)%s'
                       % (layer, list_name, list_name, len(values), n,
                          '.' if field == 'dilation' else ';'))
    if not values:
        return [default] * n
    return values * n if len(values) == 1 else values


def _trunc_div(a: int, b: int) -> int:
    """C++ integer division (rounds toward zero)."""
    q = abs(a) // b
    return q if a >= 0 else -q


@register('Im2col')
class Im2col(TorchLayer):
    """Every receptive field of convolution_param's kernel as a column: the top is the
    bottom with its channel axis (convolution_param.axis, default 1) multiplied by the
    kernel size and its spatial axes replaced by the output positions, (in + 2 pad -
    dilation (k - 1) - 1) / stride + 1 each. Channel c_col = c * prod(kernel) + the kernel
    offset (last spatial axis fastest), as Caffe's im2col and im2col_nd; cells outside the
    image are 0. Backward (col2im) sums each column's diff back into the image.
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        cp = self.layer_param.convolution_param
        name = self.layer_param.name
        shape = bottom[0].shape
        self.axis = canonical_axis(int(cp.axis), len(shape), name)
        n = len(shape) - self.axis - 1
        if n < 1:
            raise ShapeError('layer %r (Im2col): no spatial axes after channel axis %d of a %s '
                             'bottom: Check failed: num_spatial_axes_ >= 1 (%d vs. 1)'
                             % (name, self.axis, tuple(shape), n))
        self.n = n
        self.kernel = _conv_dims(cp, 'kernel', 'kernel_size', n, None, name)
        if any(k <= 0 for k in self.kernel):
            raise NetError('layer %r (Im2col): Filter dimensions must be nonzero. (kernel %s)'
                           % (name, self.kernel))
        self.stride = _conv_dims(cp, 'stride', 'stride', n, 1, name)
        if any(s <= 0 for s in self.stride):
            raise NetError('layer %r (Im2col): Stride dimensions must be nonzero. (stride %s)'
                           % (name, self.stride))
        self.pad = _conv_dims(cp, 'pad', 'pad', n, 0, name)
        self.dilation = _conv_dims(cp, 'dilation', 'dilation', n, 1, name)
        if any(d <= 0 for d in self.dilation):
            raise NetError('layer %r (Im2col): dilation must be positive, got %s'
                           % (name, self.dilation))
        self.extent = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel)]

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape = tuple(bottom[0].shape)
        if len(shape) != self.axis + 1 + self.n:
            raise ShapeError('layer %r (Im2col): set up for %d spatial axes after axis %d, got a '
                             '%s bottom' % (name, self.n, self.axis, shape))
        spatial = shape[self.axis + 1:]
        self.out = [_trunc_div(size + 2 * p - e, s) + 1 for size, p, e, s in
                    zip(spatial, self.pad, self.extent, self.stride)]
        if any(o < 0 for o in self.out):
            raise ShapeError('layer %r (Im2col): a %s input is too small for kernel %s (dilation '
                             '%s, pad %s): output size %s'
                             % (name, shape, self.kernel, self.dilation, self.pad, self.out))
        channels = shape[self.axis] * math.prod(self.kernel)
        top[0].reshape(*(shape[:self.axis] + (channels,) + tuple(self.out)))

    def compute(self, x):
        lead = tuple(x.shape[:self.axis])
        c = x.shape[self.axis]
        spatial = tuple(x.shape[self.axis + 1:])
        x = x.reshape((-1, c) + spatial)
        num = x.shape[0]
        cols = c * math.prod(self.kernel)
        if 0 in self.out or x.numel() == 0:
            return x.new_zeros(lead + (cols,) + tuple(self.out))
        # Far-side padding that yields exactly Caffe's output count (equal to `pad` unless
        # the sizes do not divide evenly; negative crops what no window reaches).
        far = [(o - 1) * s + e - size - p for o, s, e, size, p in
               zip(self.out, self.stride, self.extent, spatial, self.pad)]
        if self.n == 2 and far == self.pad:
            y = F.unfold(x, self.kernel, self.dilation, self.pad, self.stride)
            return y.reshape(lead + (cols,) + tuple(self.out))
        widths = []
        for p, q in zip(reversed(self.pad), reversed(far)):
            widths += [p, q]
        x = F.pad(x, widths)
        for d in range(self.n):
            # unfold appends the window axis last; the dilation keeps every d-th cell of it.
            x = x.unfold(2 + d, self.extent[d], self.stride[d])[..., ::self.dilation[d]]
        n = self.n
        order = (0, 1) + tuple(range(2 + n, 2 + 2 * n)) + tuple(range(2, 2 + n))
        y = x.permute(order).reshape((num, cols) + tuple(self.out))
        return y.reshape(lead + (cols,) + tuple(self.out))
