"""Normalisation layers: LRN, BatchNorm, Scale, Bias, MVN, with Caffe's arithmetic.

LRN is on the hot path of the ZF and VGG_CNN_M nets (norm1/norm2 right after the first
convolutions, on the largest feature maps), so its forward and backward are written out
with window sums built from in-place adds of shifted slices (a few element-wise
adds, no pooling kernel and no autograd graph) and with Caffe's closed-form gradient.

BatchNorm and MVN also write their own backward: BatchNorm because its forward updates
the running statistics (recomputing it for a gradient would update them twice), MVN
because Caffe's backward is its own formula (it ignores `eps` in the derivative). Scale
and Bias are plain differentiable expressions and derive their backward from autograd.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import _log
from ..errors import NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from .base import TorchLayer
from .vision import canonical_axis
from . import register

_LRN = caffe_pb2.LRNParameter


# ---- window sums ---------------------------------------------------------------------------

def channel_window_sum(s: torch.Tensor, size: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum of `s` (N, C, H, W) over a window of `size` channels centred on each channel.

    Channels outside [0, C) count as zeros, as in Caffe's padded_square buffer. Built as
    in-place adds of shifted slices: no padded copy, about twice as fast as a pooling
    kernel for the usual sizes (3 to 5). Writes into `out` when given.
    """
    out = s.clone() if out is None else out.copy_(s)
    for off in range(1, (size - 1) // 2 + 1):
        out[:, off:] += s[:, :-off]
        out[:, :-off] += s[:, off:]
    return out


def spatial_window_sum(s: torch.Tensor, size: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum of `s` (N, C, H, W) over a size x size window centred on each pixel, zero-padded.

    This is Caffe's AVE pooling with kernel `size`, stride 1 and pad (size-1)/2 times the
    window area: with stride 1 every window ends inside the padded map, so Caffe always
    divides by size*size, and the sum and the average differ by that constant only. The
    window is separable: a sum over rows, then over columns, of shifted slices. Writes
    into `out` when given.
    """
    half = (size - 1) // 2
    rows = s.clone()
    for off in range(1, half + 1):
        rows[:, :, off:] += s[:, :, :-off]
        rows[:, :, :-off] += s[:, :, off:]
    out = rows.clone() if out is None else out.copy_(rows)
    for off in range(1, half + 1):
        out[..., off:] += rows[..., :-off]
        out[..., :-off] += rows[..., off:]
    return out


# Elements per slab when LRN works block by block: its dozen element-wise passes then run
# on temporaries that stay in the CPU's cache (forward+backward of ZF's norm1 at 600x800,
# (1, 96, 300, 400), takes ~40% less time than on whole tensors; small maps are unchanged).
_BLOCK = 1 << 18


def _neg_pow(base: torch.Tensor, beta: float, out: torch.Tensor) -> torch.Tensor:
    """base ** -beta into `out`. For the usual beta = 0.75, rsqrt(b) * sqrt(rsqrt(b)) is
    about twice as fast as pow on the CPU; otherwise exp(-beta * log(b)) beats pow too."""
    if beta == 0.75:
        torch.rsqrt(base, out=out)
        return out.mul_(torch.sqrt(out))
    if beta == 0.5:
        return torch.rsqrt(base, out=out)
    torch.log(base, out=out)
    return out.mul_(-beta).exp_()


def _wide_dtype(t: torch.Tensor) -> torch.dtype:
    """The type LRN computes in: float32 for bf16/fp16 blobs, the blob's own otherwise."""
    return torch.float32 if t.dtype in (torch.bfloat16, torch.float16) else t.dtype


@register('LRN')
class LRN(Layer):
    """Local response normalisation, ACROSS_CHANNELS or WITHIN_CHANNEL.

    across:  scale = k + alpha/n * sum of x^2 over n neighbouring channels
    within:  scale = 1 + alpha/n^2 * sum of x^2 over an n x n neighbourhood (k unused)
    top = x * scale^-beta;  bottom_diff = top_diff * scale^-beta
          - 2*alpha*beta/n' * x * window_sum(top_diff * top / scale)  (n' = n or n^2)
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1
    # Under bf16 the bottom stays as the convolution left it (bf16, channels-last): each
    # slab is widened to float32 for the arithmetic, and the top keeps the bottom's type
    # and layout, so no whole-map conversion (a transposing copy) is needed either way.
    run_in_bf16 = True

    def setup(self, bottom, top):
        p = self.layer_param.lrn_param
        name = self.layer_param.name
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise NetError('layer %r: LRN only supports odd values for local_size (got %d)'
                           % (name, self.size))
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        region = p.norm_region
        if region not in (_LRN.ACROSS_CHANNELS, _LRN.WITHIN_CHANNEL):
            raise NetError('layer %r: Unknown normalization region.' % name)
        self.within = region == _LRN.WITHIN_CHANNEL
        # alpha is divided by the window's size; WITHIN_CHANNEL's shift is 1, k is unused.
        self.norm = float(self.size * self.size if self.within else self.size)
        self.shift = 1.0 if self.within else self.k
        self._saved = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise ShapeError('layer %r: Input must have 4 axes, corresponding to (num, channels, '
                             'height, width); got shape %s' % (self.layer_param.name, shape))
        top[0].reshape(*shape)

    def _slabs(self, t: torch.Tensor) -> List[tuple]:
        """(out, src, crop) index triples cutting a map into ~_BLOCK-element slabs.

        A slab is a range of channels (WITHIN_CHANNEL) or of rows (ACROSS_CHANNELS): an
        axis the window does not cross, so src = out and crop is None. A channels-last
        map (what a bf16 convolution leaves) keeps a channel range scattered over the
        whole tensor; there WITHIN_CHANNEL slabs are row ranges too, read with the
        (size-1)/2 rows of halo their windows need (src), whose results `crop` drops.
        """
        n, c, h, w = t.shape
        rows = not self.within or _channels_last(t)
        axis, length, per = (2, h, n * c * w) if rows else (1, c, n * h * w)
        step = max(1, _BLOCK // max(per, 1))
        halo = (self.size - 1) // 2 if self.within and rows else 0
        lead = (slice(None),) * axis
        out = []
        for i in range(0, max(length, 1), step):
            j = min(length, i + step)
            lo, hi = max(0, i - halo), min(length, j + halo)
            crop = lead + (slice(i - lo, i - lo + j - i),) if (lo, hi) != (i, j) else None
            out.append((lead + (slice(i, j),), lead + (slice(lo, hi),), crop))
        return out

    def _window(self, t: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.within:
            return spatial_window_sum(t, self.size, out)
        return channel_window_sum(t, self.size, out)

    def _window_into(self, t: torch.Tensor, crop, out: torch.Tensor) -> torch.Tensor:
        """The window sums of `t` (a slab with its halo) for the rows `crop` keeps."""
        if crop is None:
            return self._window(t, out)
        return out.copy_(self._window(t)[crop])

    def forward(self, bottom, top):
        x = _standard_layout(bottom[0].tensor)
        wide = _wide_dtype(x)
        y = torch.empty_like(x)
        scale, mult = torch.empty_like(x, dtype=wide), torch.empty_like(x, dtype=wide)
        for out, src, crop in self._slabs(x):
            xs = x[src].to(wide)
            s, m = scale[out], mult[out]
            self._window_into(xs * xs, crop, s).mul_(self.alpha / self.norm).add_(self.shift)
            _neg_pow(s, self.beta, m)
            xs = xs if crop is None else xs[crop]
            if y.dtype == wide:
                torch.mul(xs, m, out=y[out])
            else:
                y[out].copy_(xs * m)
        self._saved = (x, scale, mult, y)
        top[0].set_tensor(y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self._saved is None:
            raise NetError('layer %r: backward before forward' % self.layer_param.name)
        x, scale, mult, y = self._saved
        dy = top[0].diff_tensor
        if _channels_last(dy) != _channels_last(x):
            dy = dy.contiguous(memory_format=torch.channels_last if _channels_last(x)
                               else torch.contiguous_format)
        wide = scale.dtype
        coeff = 2.0 * self.alpha * self.beta / self.norm
        dx = torch.empty_like(x)
        for out, src, crop in self._slabs(x):
            ratio = dy[src].to(wide) * y[src].to(wide)
            ratio /= scale[src]
            acc = self._window(ratio)
            acc = acc if crop is None else acc[crop]
            dys = dy[out].to(wide)   # may be a view of the top's diff: no in-place updates
            if dx.dtype == wide:
                d = torch.mul(dys, mult[out], out=dx[out])
                d.addcmul_(x[out], acc, value=-coeff)
            else:
                dx[out].copy_(torch.mul(dys, mult[out]).addcmul_(x[out].to(wide), acc,
                                                                  value=-coeff))
        bottom[0].set_diff_tensor(dx)


def _channels_last(t: torch.Tensor) -> bool:
    return (t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def _standard_layout(t: torch.Tensor) -> torch.Tensor:
    """The map as it is if it is contiguous or channels-last, else a contiguous copy."""
    return t if t.is_contiguous() or _channels_last(t) else t.contiguous()


# ---- BatchNorm -------------------------------------------------------------------------------

@register('BatchNorm')
class BatchNorm(Layer):
    """Caffe's BatchNorm: normalisation only (a Scale layer after it learns gamma/beta).

    Blobs: running mean sum, running variance sum, and the scale factor s; the statistics
    in use are blob/s (0 when s is 0). TRAIN uses the batch's statistics and updates
    s = s*f + 1, mean = batch_mean + f*mean, var = m/(m-1)*batch_var + f*var (m = values
    per channel, f = moving_average_fraction); TEST (or use_global_stats) uses the stored
    ones. The blobs are never learned: like Caffe, setup appends `param { lr_mult: 0 }`
    for each blob the prototxt did not configure and rejects a non-zero lr_mult.
    """
    allow_in_place = True
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.batch_norm_param
        self.fraction = float(p.moving_average_fraction)
        self.use_global = self.phase == caffe_pb2.TEST
        if p.HasField('use_global_stats'):
            self.use_global = bool(p.use_global_stats)
        shape = bottom[0].shape
        self.channels = 1 if len(shape) == 1 else int(shape[1])
        self.eps = float(p.eps)
        if len(self.blobs):
            _log.info('batch_norm_layer.cpp:23', 'Skipping parameter initialization')
            want = [(self.channels,), (self.channels,), (1,)]
            if len(self.blobs) != 3 or any(b.count != int(np.prod(s)) for b, s in zip(self.blobs, want)):
                raise ShapeError('layer %r: BatchNorm needs 3 blobs of %d, %d and 1 values, got %s'
                                 % (lp.name, self.channels, self.channels,
                                    [b.shape for b in self.blobs]))
        else:
            from ..blob import Blob
            for s in ((self.channels,), (self.channels,), (1,)):
                self.blobs.append(Blob(s))
        for i in range(len(self.blobs)):
            if len(lp.param) == i:
                lp.param.add().lr_mult = 0.0
            elif lp.param[i].lr_mult != 0:
                raise NetError('layer %r: Cannot configure batch normalization statistics as '
                               'layer parameters (param %d has lr_mult %g; it must be 0).'
                               % (lp.name, i, lp.param[i].lr_mult))
        self._saved = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 1 and shape[1] != self.channels:
            raise ShapeError('layer %r: bottom has %d channels, BatchNorm was set up for %d'
                             % (self.layer_param.name, shape[1], self.channels))
        top[0].reshape(*shape)

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0] if x.dim() else 1, self.channels, -1)

    def forward(self, bottom, top):
        top[0].set_tensor(self._normalise(bottom[0].tensor, update_stats=True))

    def refresh_for_backward(self, bottom, top):
        """Backward's state from the current bottom, without counting it in the statistics."""
        self._normalise(bottom[0].tensor, update_stats=False)

    def _normalise(self, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
        x3 = self._view(x)
        if self.use_global:
            s = float(self.blobs[2].tensor.reshape(-1)[0])
            factor = 0.0 if s == 0 else 1.0 / s
            mean = self.blobs[0].tensor.reshape(-1) * factor
            var = self.blobs[1].tensor.reshape(-1) * factor
            centred = x3 - mean[None, :, None]
        else:
            mean = x3.mean(dim=(0, 2))
            centred = x3 - mean[None, :, None]
            var = (centred * centred).mean(dim=(0, 2))
        if update_stats and not self.use_global:
            f = self.fraction
            m = x.numel() // self.channels
            correction = m / (m - 1.0) if m > 1 else 1.0
            # In place, as Caffe: NumPy views of the blobs held by Python stay current;
            # set_tensor on the same tensor marks the device copy as the newest.
            for blob, stat in zip(self.blobs, (mean, var * correction, None)):
                t = blob.tensor
                t.mul_(f).add_(1.0 if stat is None else stat.reshape(t.shape))
                blob.set_tensor(t)
        std = torch.sqrt(var + self.eps)
        y = centred / std[None, :, None]
        self._saved = (y, std)
        return y.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, std = self._saved
        dy = self._view(top[0].diff_tensor)
        if self.use_global:
            dx = dy / std[None, :, None]
        else:
            mean_dy = dy.mean(dim=(0, 2), keepdim=True)
            mean_dyy = (dy * y).mean(dim=(0, 2), keepdim=True)
            dx = (dy - mean_dy - y * mean_dyy) / std[None, :, None]
        bottom[0].set_diff_tensor(dx.reshape(bottom[0].shape))


# ---- Scale and Bias ----------------------------------------------------------------------------

def _param_span(shape: Sequence[int], axis: int, num_axes: int, what: str, layer: str) -> List[int]:
    """The part of a bottom's shape that a learned scale/bias blob covers."""
    if num_axes < -1:
        raise NetError('layer %r: num_axes must be non-negative, or -1 to extend to the end of '
                       'bottom[0]' % layer)
    if num_axes >= 0 and len(shape) < axis + num_axes:
        raise ShapeError("layer %r: %s blob's shape extends past bottom[0]'s shape when applied "
                         'starting with bottom[0] axis = %d' % (layer, what, axis))
    end = len(shape) if num_axes == -1 else axis + num_axes
    return [int(d) for d in shape[axis:end]]


def _broadcast_axis(x_shape, p_shape, axis_param: int, what: str, layer: str) -> int:
    """Caffe's Reshape checks; returns the axis where the blob starts (0 for a scalar)."""
    axis = 0 if len(p_shape) == 0 else canonical_axis(axis_param, len(x_shape), layer)
    if len(x_shape) < axis + len(p_shape):
        raise ShapeError("layer %r: %s blob's shape extends past bottom[0]'s shape when applied "
                         'starting with bottom[0] axis = %d' % (layer, what, axis))
    for i, d in enumerate(p_shape):
        if x_shape[axis + i] != d:
            raise ShapeError('layer %r: dimension mismatch between bottom[0]->shape(%d) and '
                             '%s->shape(%d): %d vs %d'
                             % (layer, axis + i, what, i, x_shape[axis + i], d))
    return axis


def _expand(p: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """View `p` so it broadcasts against a blob of `ndim` axes from `axis` on."""
    return p.reshape((1,) * axis + tuple(p.shape) + (1,) * (ndim - axis - p.dim()))


@register('Bias')
class Bias(TorchLayer):
    """top = bottom[0] + b, b learned (one bottom) or given as bottom[1], broadcast from `axis`."""
    allow_in_place = True
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.bias_param
        if len(bottom) == 1:
            axis = canonical_axis(p.axis, len(bottom[0].shape), lp.name)
            shape = _param_span(bottom[0].shape, axis, p.num_axes, 'bias', lp.name)
            if len(self.blobs):
                _log.info('bias_layer.cpp:13', 'Skipping parameter initialization')
            else:
                self.add_param(shape, p.filler)

    def reshape(self, bottom, top):
        b_shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        self.axis = _broadcast_axis(bottom[0].shape, b_shape, self.layer_param.bias_param.axis,
                                    'bias', self.layer_param.name)
        top[0].reshape(*bottom[0].shape)

    def compute(self, x, b=None):
        b = self.p[0] if b is None else b
        return x + _expand(b, self.axis, x.dim())


@register('Scale')
class Scale(TorchLayer):
    """top = bottom[0] * s (+ b), s learned (one bottom) or bottom[1], broadcast from `axis`.

    The learned scale defaults to ones; with bias_term a bias blob of the same span (from
    bias_filler, zeros by default) is the last parameter, as in Caffe's inner Bias layer.
    """
    allow_in_place = True
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.scale_param
        x_shape = bottom[0].shape
        self.bias_term = bool(p.bias_term)
        if len(bottom) == 1:
            axis = canonical_axis(p.axis, len(x_shape), lp.name)
            span = _param_span(x_shape, axis, p.num_axes, 'scale', lp.name)
            bias_span = span
        else:
            axis = canonical_axis(p.axis, len(x_shape), lp.name) if len(bottom[1].shape) else 0
            bias_span = _param_span(x_shape, axis, len(bottom[1].shape), 'bias', lp.name)
        n_want = (1 if len(bottom) == 1 else 0) + (1 if self.bias_term else 0)
        if len(self.blobs):
            _log.info('scale_layer.cpp:16', 'Skipping parameter initialization')
            if len(self.blobs) != n_want:
                raise ShapeError('layer %r: %d parameter blobs given, Scale with these settings '
                                 'needs %d' % (lp.name, len(self.blobs), n_want))
            return
        if len(bottom) == 1:
            filler = caffe_pb2.FillerParameter()
            if p.HasField('filler'):
                filler.CopyFrom(p.filler)
            else:
                filler.type = 'constant'
                filler.value = 1.0
            self.add_param(span, filler)
        if self.bias_term:
            self.add_param(bias_span, p.bias_filler)

    def reshape(self, bottom, top):
        lp = self.layer_param
        s_shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        x_shape = bottom[0].shape
        self.axis = _broadcast_axis(x_shape, s_shape, lp.scale_param.axis, 'scale', lp.name)
        if self.bias_term:
            self.bias_axis = _broadcast_axis(x_shape, self.blobs[-1].shape, lp.scale_param.axis,
                                             'bias', lp.name)
        top[0].reshape(*x_shape)

    def compute(self, x, s=None):
        s = self.p[0] if s is None else s
        y = x * _expand(s, self.axis, x.dim())
        if self.bias_term:
            y = y + _expand(self.p[-1], self.bias_axis, x.dim())
        return y


# ---- MVN -----------------------------------------------------------------------------------

def _legacy_dims(shape: Sequence[int], layer: str) -> Tuple[int, int, int, int]:
    """Caffe's num/channels/height/width: the first four axes, missing ones as 1."""
    if len(shape) > 4:
        raise ShapeError('layer %r: Cannot use legacy accessors on Blobs with > 4 axes (shape %s)'
                         % (layer, tuple(shape)))
    dims = list(shape) + [1] * (4 - len(shape))
    return tuple(int(d) for d in dims)


@register('MVN')
class MVN(Layer):
    """Mean-variance normalisation per (num, channel) or per num (across_channels).

    y = (x - mean) / (sqrt(var) + eps) with the biased variance; Caffe adds eps to the
    standard deviation, not to the variance. The top is shaped (num, channels, height,
    width) as Caffe's Reshape does. Backward is Caffe's:
    (dy - mean(dy) - y * mean(dy * y)) / (sqrt(var) + eps), or dy - mean(dy).
    """
    allow_in_place = True
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across = bool(p.across_channels)
        self.eps = float(p.eps)
        self._saved = None

    def reshape(self, bottom, top):
        dims = _legacy_dims(bottom[0].shape, self.layer_param.name)
        self.groups = dims[0] if self.across else dims[0] * dims[1]
        top[0].reshape(*dims)

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.groups, -1)
        y = x - x.mean(dim=1, keepdim=True)
        std = None
        if self.normalize_variance:
            std = torch.sqrt((y * y).mean(dim=1, keepdim=True)) + self.eps
            y = y / std
        self._saved = (y, std)
        top[0].set_tensor(y.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, std = self._saved
        dy = top[0].diff_tensor.reshape(self.groups, -1)
        dx = dy - dy.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            dx = (dx - y * (dy * y).mean(dim=1, keepdim=True)) / std
        bottom[0].set_diff_tensor(dx.reshape(bottom[0].shape))
