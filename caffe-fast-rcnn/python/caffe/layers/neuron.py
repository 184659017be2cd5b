"""Element-wise layers (Caffe's "neuron" layers): the top has the bottom's shape.

Most are one differentiable torch expression and the engine derives their backward from
it; where Caffe's derivative at a kink differs from PyTorch's, the expression is chosen
so that autograd gives Caffe's value (AbsVal: 0 at 0, ELU: alpha at 0, PReLU: the slope
at 0, Clip: 1 on the bounds, BNLL: Caffe's clamp at 50). Two layers cannot be written
that way and keep their own forward/backward on `Layer`:

* Dropout draws a random mask in TRAIN; backward must reuse that mask, not redraw it.
* Threshold is a step function; Caffe has no backward for it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _config
from ..errors import LayerError, NetError, ShapeError
from ..layer import Layer
from ..phase import Phase
from ..proto import caffe_pb2
from .base import TorchLayer
from . import register


class Neuron(TorchLayer):
    """One bottom, one top of the same shape (in place allowed unless a subclass says no)."""
    exact_num_bottom = 1
    exact_num_top = 1
    # Caffe refuses in-place computation for a few neuron layers (AbsVal).
    allow_in_place = True

    def setup(self, bottom, top):
        if not self.allow_in_place and bottom[0] is top[0]:
            raise NetError('layer %r: %s Layer does not allow in-place computation.'
                           % (self.layer_param.name, self.type))
        self.read_param()

    def read_param(self) -> None:
        """Read the layer's own *_param (subclasses with parameters override this)."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)


@register('ReLU')
class ReLU(Neuron):
    def read_param(self):
        self.slope = self.layer_param.relu_param.negative_slope

    def compute(self, x):
        if self.slope:
            return F.leaky_relu(x, self.slope)
        return F.relu(x)

    def compute_inplace(self, x):
        """Caffe's in-place ReLU (top is bottom): overwrite the bottom, no second buffer."""
        return F.leaky_relu_(x, self.slope) if self.slope else F.relu_(x)

    def backward_inplace(self, dy, y):
        """Caffe's backward from the output: dy where y > 0, else negative_slope * dy.

        ATen's own ReLU backward kernels do exactly that in one vectorised pass that keeps
        the layout (3-10x faster than a mask and masked_fill, which also turned a bf16
        channels-last gradient into NCHW); torch refuses a negative slope there."""
        if self.slope > 0:
            return torch.ops.aten.leaky_relu_backward(dy, y, self.slope, True)
        if self.slope:
            return torch.where(y > 0, dy, dy * self.slope)
        return torch.ops.aten.threshold_backward(dy, y, 0)


@register('Sigmoid')
class Sigmoid(Neuron):
    def compute(self, x):
        return torch.sigmoid(x)


@register('TanH')
class TanH(Neuron):
    def compute(self, x):
        return torch.tanh(x)


@register('AbsVal')
class AbsVal(Neuron):
    """|x|; the gradient is sign(x), 0 at 0 (torch.abs agrees). Not in place, as in Caffe."""
    allow_in_place = False

    def compute(self, x):
        return torch.abs(x)


@register('Power')
class Power(Neuron):
    """y = (shift + scale * x) ^ power.

    When power * scale is 0 the output ignores x (1 if power is 0, else shift^power) and
    Caffe's gradient is exactly 0, so the output is a constant without a graph.
    """

    def read_param(self):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def compute(self, x):
        if self.diff_scale == 0:
            if self.power == 0:
                value = 1.0
            else:  # C's pow: NaN for a negative base and a fractional power
                value = float(torch.tensor(self.shift, dtype=torch.float64).pow(self.power))
            return torch.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = y.pow(self.power)
        elif y is x:
            y = x.clone()
        return y


def _log_base(layer: Layer, base: float) -> float:
    """ln(base) for Exp/Log; base -1 means e. Caffe refuses a base <= 0 (other than -1)."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise NetError('layer %r (%s): base must be strictly positive, got %g'
                       % (layer.layer_param.name, layer.type, base))
    return math.log(base)


@register('Exp')
class Exp(Neuron):
    """y = base ^ (shift + scale * x), computed as Caffe does: outer * exp(inner * x)."""

    def read_param(self):
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        self.inner = _log_base(self, base) * scale
        if shift == 0:
            self.outer = 1.0
        else:
            self.outer = math.exp(shift) if base == -1 else math.pow(base, shift)

    def compute(self, x):
        y = x * self.inner if self.inner != 1 else x
        y = torch.exp(y)
        return y * self.outer if self.outer != 1 else y


@register('Log')
class Log(Neuron):
    """y = log_base(shift + scale * x); base -1 means the natural logarithm."""

    def read_param(self):
        p = self.layer_param.log_param
        self.scale, self.shift = float(p.scale), float(p.shift)
        log_base = _log_base(self, float(p.base))
        self.base_scale = 1.0 / log_base if log_base != 0 else math.inf

    def compute(self, x):
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        y = torch.log(y)
        return y * self.base_scale if self.base_scale != 1 else y


# Caffe clamps the exponent of BNLL's derivative at this value.
BNLL_THRESHOLD = 50.0


@register('BNLL')
class BNLL(Neuron):
    """log(1 + exp(x)), the binomial normal log likelihood.

    torch's softplus with threshold 50 has Caffe's forward (to float precision) and
    Caffe's backward, sigmoid(min(x, 50)), including 1/2 at 0.
    """

    def compute(self, x):
        return F.softplus(x, beta=1.0, threshold=BNLL_THRESHOLD)


@register('ELU')
class ELU(Neuron):
    """x if x > 0 else alpha * (exp(x) - 1); the gradient at 0 is alpha, as in Caffe."""

    def read_param(self):
        self.alpha = float(self.layer_param.elu_param.alpha)

    def compute(self, x):
        return F.elu(x, alpha=self.alpha)


@register('Clip')
class Clip(Neuron):
    """min(max(x, min), max); the gradient passes where min <= x <= max (bounds included)."""

    def read_param(self):
        p = self.layer_param.clip_param
        if not (p.HasField('min') and p.HasField('max')):
            raise NetError('layer %r (Clip): clip_param needs both min and max'
                           % self.layer_param.name)
        self.lo, self.hi = float(p.min), float(p.max)

    def compute(self, x):
        # torch.clamp's gradient is 0 on the bounds; Caffe's is 1, so select instead. Outside
        # the range the value is a constant bound (a NaN input gives min, as std::max/min do).
        inside = (x >= self.lo) & (x <= self.hi)
        bound = torch.where(x > self.hi, self.hi, self.lo).to(x.dtype)
        return torch.where(inside, x, bound)


@register('Swish')
class Swish(Neuron):
    """x * sigmoid(beta * x)."""

    def read_param(self):
        self.beta = float(self.layer_param.swish_param.beta)

    def compute(self, x):
        return x * torch.sigmoid(x * self.beta if self.beta != 1 else x)


@register('PReLU')
class PReLU(Neuron):
    """max(0, x) + a * min(0, x) with a learnable slope a per channel (axis 1) or shared.

    The slope blob has shape (channels,), or no axes with `channel_shared`; it starts
    at 0.25 unless prelu_param.filler says otherwise. Where x <= 0 the input gradient
    is the slope and the slope's gradient collects top_diff * x, as in Caffe.
    """

    def setup(self, bottom, top):
        name = self.layer_param.name
        if len(bottom[0].shape) < 2:
            raise ShapeError('layer %r (PReLU): Number of axes of bottom blob must be >=2, '
                             'got shape %s' % (name, bottom[0].shape))
        p = self.layer_param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        channels = bottom[0].shape[1]
        if not len(self.blobs):
            filler = p.filler if p.HasField('filler') else caffe_pb2.FillerParameter(
                type='constant', value=0.25)
            self.add_param(() if self.channel_shared else (channels,), filler)
        if len(self.blobs) != 1:
            raise ShapeError('layer %r (PReLU): expected 1 parameter blob, got %d'
                             % (name, len(self.blobs)))
        want = 1 if self.channel_shared else channels
        if self.blobs[0].count != want:
            raise ShapeError('layer %r (PReLU): Negative slope size is inconsistent with '
                             'prototxt config: the slope has %d values, %s needs %d'
                             % (name, self.blobs[0].count,
                                'channel_shared' if self.channel_shared else 'the channel count',
                                want))

    def reshape(self, bottom, top):
        if len(bottom[0].shape) < 2:
            raise ShapeError('layer %r (PReLU): Number of axes of bottom blob must be >=2, '
                             'got shape %s' % (self.layer_param.name, bottom[0].shape))
        top[0].reshape(*bottom[0].shape)

    def compute(self, x):
        slope = self.p[0].reshape(-1)
        if self.channel_shared:
            slope = slope[0]
        else:
            slope = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * slope)


class _ExplicitNeuron(Layer):
    """Neuron layers with a hand-written backward (see the module docstring)."""
    allow_in_place = True
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)


@register('Threshold')
class Threshold(_ExplicitNeuron):
    """y = 1 if x > threshold else 0. Caffe has no backward for it, so neither do we."""

    backward_uses_forward_state = False

    def setup(self, bottom, top):
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def forward(self, bottom, top):
        x = bottom[0].tensor
        top[0].set_tensor((x > self.threshold).to(x.dtype))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise LayerError('layer %r (Threshold): the Threshold layer has no backward (a step '
                             'function); set propagate_down: false or stop the gradient before it'
                             % self.layer_param.name)


@register('Dropout')
class Dropout(_ExplicitNeuron):
    """Caffe-fast-rcnn's dropout: zero each value with probability `dropout_ratio` in TRAIN.

    With `scale_train` (the default) TRAIN scales the kept values by 1 / (1 - ratio) and
    TEST is the identity; without it TRAIN keeps them unscaled and TEST multiplies by
    (1 - ratio). The mask is drawn from the engine's seeded generator for the blob's
    device and kept for backward, which multiplies the top diff by the same mask and scale.
    Under bf16 a bf16 bottom stays bf16 (no conversion to float32 and back around it).
    """
    run_in_bf16 = True

    def setup(self, bottom, top):
        p = self.layer_param.dropout_param
        self.ratio = float(p.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise NetError('layer %r (Dropout): dropout_ratio must be in [0, 1), got %g'
                           % (self.layer_param.name, self.ratio))
        self.scale = 1.0 / (1.0 - self.ratio)
        self.scale_train = bool(p.scale_train)
        self._mask = None

    def _factor(self, x: torch.Tensor) -> torch.Tensor:
        """What forward multiplies by: the scaled mask in TRAIN (or None when TEST). It is
        drawn in float32 for a bf16 bottom, so both precisions draw the same mask."""
        if self.phase != Phase.TRAIN:
            return None
        wide = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
        mask = torch.empty_like(x, dtype=wide).bernoulli_(1.0 - self.ratio,
                                                          generator=_config.generator(x.device))
        return mask.mul_(self.scale) if self.scale_train else mask

    def forward(self, bottom, top):
        x = bottom[0].tensor
        self._mask = self._factor(x)
        if self._mask is not None:
            top[0].set_tensor(_times(x, self._mask))
        elif self.scale_train:
            if top[0] is not bottom[0]:
                top[0].set_tensor(x.clone())
        else:
            top[0].set_tensor(x * (1.0 - self.ratio))

    def refresh_for_backward(self, bottom, top):
        """The mask does not depend on the data: as in Caffe, backward keeps the one the last
        forward drew. Before any forward (or after a reshape) one is drawn as forward would
        (Caffe's would be its zero-filled buffer, a gradient of zeros)."""
        x = bottom[0].tensor
        if self._mask is None or self._mask.shape != x.shape:
            self._mask = self._factor(x)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor
        if self.phase == Phase.TRAIN:
            if self._mask is None or self._mask.shape != dy.shape:
                raise LayerError('layer %r (Dropout): no mask for a top diff of shape %s (the '
                                 'last forward saw another shape)'
                                 % (self.layer_param.name, tuple(dy.shape)))
            bottom[0].set_diff_tensor(_times(dy, self._mask))
        elif self.scale_train:
            bottom[0].set_diff_tensor(dy.clone())
        else:
            bottom[0].set_diff_tensor(dy * (1.0 - self.ratio))


def _times(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x * factor in x's own float type and layout: a bf16 value times a float32 mask is
    computed in float32 and rounded once into bf16, in one pass."""
    if factor.dtype == x.dtype:
        return x * factor
    return torch.mul(x, factor, out=torch.empty_like(x))
