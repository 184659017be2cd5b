"""Recurrent layers: RNN and LSTM (Caffe's RecurrentLayer family) and LSTMUnit.

Caffe builds RNN and LSTM by unrolling them into an inner net of InnerProduct, Scale,
Eltwise, TanH and LSTMUnit layers, one group per time step, whose parameters are shared
across steps by name. The arithmetic of that net is reproduced here directly: the input
projection of all T steps is one matrix product (it does not depend on the recurrence),
then a Python loop over time applies the recurrent product and the non-linearity to all
N streams at once. Backward is autograd over that recorded loop, which is exactly the
gradient of the unrolled net (backpropagation through time), except in LSTMUnit where
Caffe's own formula is kept (see `_LSTMUnitStep`).

Kept from Caffe, because a model trained there depends on it:

* Learnable blobs are the unrolled net's parameters in the order Caffe lists them, so a
  .caffemodel from Caffe loads unchanged. LSTM: W_xc (4H x I), b_c (4H), [W_xc_static
  (4H x S)], W_hc (4H x H), with the gate blocks in the order i, f, o, g. RNN: W_xh (H x I),
  b_h (H), [W_xh_static (H x S)], W_hh (H x H), W_ho (H x H), b_o (H). I is the product of
  x's axes after the first two, S that of x_static's axes after the first.
* `cont` (T x N) multiplies the previous hidden state before the recurrent product, and
  (LSTM) gates the previous cell inside LSTMUnit: 0 starts a new sequence in that stream.
* Without expose_hidden the state persists between forward passes: each pass starts from
  the previous pass's final h (and c), zero at first, so a stream continues across
  batches unless cont says otherwise. Like Caffe's inner blobs, the stored state is a
  flat buffer that keeps its contents when the number of streams N shrinks (the first
  streams' state is kept) and is zero when it grows past every earlier size.
  No gradient flows from one pass into the previous one.
* With expose_hidden the initial states are bottoms (h_0, then c_0 for LSTM) and the final
  states extra tops (h_T, then c_T). Caffe shares only their data with the inner net, so
  the initial-state bottoms get a zero gradient and the final-state tops' diffs are
  ignored; the same holds here.
* `cont` never gets a gradient (Caffe does not compute one; force_backward skips it).

The state loop runs in the net's float type even under set_precision('bf16'): rounding
would compound over the time steps.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from .. import _config, _log
from ..errors import NetError, ShapeError
from ._shapes import blob_count, shape_string
from .base import TorchLayer
from . import register


# ---- the LSTM cell --------------------------------------------------------------------------

class _LSTMUnitStep(torch.autograd.Function):
    """One LSTM time step with Caffe's LSTMUnit forward and backward.

    Forward, on the last axis of `gates` split into i', f', o', g' (H each):
    i, f, o = sigmoid(i', f', o'), f zeroed where cont is 0 and otherwise scaled by cont,
    g = tanh(g'), c = f * c_prev + i * g, h = o * tanh(c).

    Backward is Caffe's formula, not autograd's: the forget-gate term uses f * (1 - f) with
    the cont-scaled f. For cont in {0, 1} that is the true derivative; for fractional cont
    it is what Caffe computes, and a model trained there followed it.
    """

    @staticmethod
    def forward(ctx, c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor):
        h_dim = c_prev.shape[-1]
        ifo = torch.sigmoid(gates[..., :3 * h_dim])
        i = ifo[..., :h_dim]
        f = ifo[..., h_dim:2 * h_dim]
        o = ifo[..., 2 * h_dim:]
        # Caffe tests cont == 0 explicitly: a reset step ignores c_prev even if f' is not finite.
        f = torch.where(cont != 0, f * cont, torch.zeros((), dtype=f.dtype, device=f.device))
        g = torch.tanh(gates[..., 3 * h_dim:])
        c = torch.addcmul(i * g, f, c_prev)
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx, dc: torch.Tensor, dh: torch.Tensor):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        dc_prev = c_term * f if ctx.needs_input_grad[0] else None
        dgates = None
        if ctx.needs_input_grad[1]:
            dgates = torch.cat([c_term * g * i * (1 - i),
                                c_term * c_prev * f * (1 - f),
                                dh * tanh_c * o * (1 - o),
                                c_term * i * (1 - g * g)], dim=-1)
        return dc_prev, dgates, None


def lstm_unit_step(c_prev: torch.Tensor, gates: torch.Tensor,
                   cont: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(c, h) of one LSTM step; c_prev (..., H), gates (..., 4H), cont broadcastable to
    (..., 1). Differentiable in c_prev and gates with Caffe's LSTMUnit backward."""
    return _LSTMUnitStep.apply(c_prev, gates, cont)


# ---- RNN and LSTM ---------------------------------------------------------------------------

class _Recurrent(TorchLayer):
    """What RNN and LSTM share: bottoms, state handling, shape checks (Caffe's
    RecurrentLayer). Subclasses give the state names, the parameter list and the step loop."""
    allow_in_place = False

    run_in_bf16 = False
    # Names of the recurrent states, in Caffe's order of the exposed bottoms and tops.
    state_names: Tuple[str, ...] = ()

    def __init__(self, param=None, *args, **kwargs):
        super().__init__(param)
        rp = self.layer_param.recurrent_param
        n_exposed = len(self.state_names) if rp.expose_hidden else 0
        # Caffe: 2 bottoms (x, cont) plus the exposed states, plus an optional x_static;
        # one top per output plus the exposed final states.
        self.min_bottom = 2 + n_exposed
        self.max_bottom = 3 + n_exposed
        self.exact_num_top = 1 + n_exposed
        self.non_differentiable = (1,)
        self._carry: List[torch.Tensor] = []
        self._start: List[torch.Tensor] = []

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1  # no gradient to the sequence continuation indicators

    # ---- parameters (subclasses) -------------------------------------------------------------
    def param_specs(self) -> List[Tuple[str, Tuple[int, ...], object]]:
        """(Caffe's param name, shape, filler) of each learnable blob, in Caffe's order."""
        raise NotImplementedError

    # ---- setup and shapes ---------------------------------------------------------------------
    def setup(self, bottom, top):
        name = self.layer_param.name
        rp = self.layer_param.recurrent_param
        if rp.num_output <= 0:
            raise NetError('layer %r (%s): num_output must be positive (recurrent_param '
                           'num_output is %d)' % (name, self.type, rp.num_output))
        self.H = int(rp.num_output)
        self.expose = bool(rp.expose_hidden)
        xs = bottom[0].shape
        self._check_x_axes(xs)
        self.T = int(xs[0])
        self.static = len(bottom) > 2 + (len(self.state_names) if self.expose else 0)
        self.K = self._input_count(xs, 2, 'bottom[0] (x)')
        self.K_static = self._input_count(bottom[2].shape, 1, 'bottom[2] (x_static)') \
            if self.static else 0
        _log.info('recurrent_layer.cpp', 'Initializing recurrent layer: assuming input batch '
                  'contains %d timesteps of %d independent streams.' % (self.T, xs[1]))
        specs = self.param_specs()
        if not self.check_param_shapes(*[s for _, s, _ in specs]):
            for _, shape, filler in specs:
                self.add_param(shape, filler)
        for i, (pname, _, _) in enumerate(specs):
            _log.info('recurrent_layer.cpp', 'Adding parameter %d: %s' % (i, pname))
        self._carry = [torch.zeros(0, dtype=_config.dtype(), device=_config.device())
                       for _ in self.state_names]

    def _check_x_axes(self, xs) -> None:
        if len(xs) < 2:
            raise ShapeError('layer %r: bottom[0] must have at least 2 axes -- (#timesteps, '
                             '#streams, ...); got shape %s' % (self.layer_param.name,
                                                               shape_string(xs)))

    def _input_count(self, shape, axis: int, what: str) -> int:
        """The input size of Caffe's inner InnerProduct over `axis` (count from axis on)."""
        if len(shape) <= axis:
            raise ShapeError('layer %r: %s: axis %d out of range for %d-D Blob with shape %s '
                             '(the inner product runs over axis %d on)'
                             % (self.layer_param.name, what, axis, len(shape),
                                shape_string(shape), axis))
        return blob_count(shape, axis)

    def reshape(self, bottom, top):
        name = self.layer_param.name
        xs, cs = bottom[0].shape, bottom[1].shape
        self._check_x_axes(xs)
        if xs[0] != self.T:
            raise ShapeError('layer %r: input number of timesteps changed (%d at setup, '
                             'bottom[0] now has %d)' % (name, self.T, xs[0]))
        n = int(xs[1])
        if len(cs) != 2:
            raise ShapeError('layer %r: bottom[1] must have exactly 2 axes -- (#timesteps, '
                             '#streams); got shape %s' % (name, shape_string(cs)))
        if cs[0] != self.T:
            raise ShapeError('layer %r: Check failed: T_ == bottom[1]->shape(0) (%d vs. %d): '
                             'cont (bottom[1]) must be T x N like x' % (name, self.T, cs[0]))
        if cs[1] != n:
            raise ShapeError('layer %r: Check failed: N_ == bottom[1]->shape(1) (%d vs. %d): '
                             'cont (bottom[1]) must be T x N like x' % (name, n, cs[1]))
        k = self._input_count(xs, 2, 'bottom[0] (x)')
        if k != self.K:
            raise ShapeError('layer %r: Input size incompatible with inner product parameters: '
                             'x gives %d inputs per step, the weights expect %d'
                             % (name, k, self.K))
        if self.static:
            ss = bottom[2].shape
            if len(ss) < 1 or ss[0] != n:
                raise ShapeError('layer %r: Check failed: N_ == bottom[2]->shape(0) (%d vs. %s): '
                                 'x_static (bottom[2]) must be N x ...'
                                 % (name, n, ss[0] if len(ss) else 'none'))
            ks = self._input_count(ss, 1, 'bottom[2] (x_static)')
            if ks != self.K_static:
                raise ShapeError('layer %r: Input size incompatible with inner product '
                                 'parameters: x_static gives %d inputs per stream, the weights '
                                 'expect %d' % (name, ks, self.K_static))
        state_shape = (1, n, self.H)
        if self.expose:
            first = 2 + int(self.static)
            for j in range(len(self.state_names)):
                bs = bottom[first + j].shape
                if tuple(bs) != state_shape:
                    raise ShapeError('layer %r: bottom[%d] shape must match hidden state input '
                                     'shape: %s (bottom[%d], %s, is %s)'
                                     % (name, first + j, shape_string(state_shape), first + j,
                                        self.state_names[j], shape_string(bs)))
        else:
            count = n * self.H
            for j, buf in enumerate(self._carry):
                if buf.numel() < count:  # Caffe's blob reallocates (zeros) only when it grows
                    self._carry[j] = buf.new_zeros(count)
        self.N = n
        top[0].reshape(self.T, n, self.H)
        for t in top[1:]:
            t.reshape(*state_shape)

    def reset(self) -> None:
        """Zero the state carried between forward passes (Caffe's RecurrentLayer::Reset)."""
        for buf in self._carry:
            buf.zero_()

    # ---- running ---------------------------------------------------------------------------------
    def refresh_for_backward(self, bottom, top):
        """Backward from the current bottoms; with no forward before it, the pass starts from
        the carried state as it is now (zeros after setup or reset)."""
        super().refresh_for_backward(bottom, top)
        if not self.expose and len(self._start) != len(self._carry):
            x, count = bottom[0].tensor, self.N * self.H
            self._start = [buf[:count].reshape(1, self.N, self.H).to(
                dtype=x.dtype, device=x.device, copy=True) for buf in self._carry]

    def run_forward(self, bottom, top):
        if not self.expose:
            x = bottom[0].tensor
            count = self.N * self.H
            # A copy: backward may recompute this pass after the buffer moved on.
            self._start = [buf[:count].reshape(1, self.N, self.H).to(
                dtype=x.dtype, device=x.device, copy=True) for buf in self._carry]
        super().run_forward(bottom, top)
        if not self.expose:
            count = self.N * self.H
            for buf, final in zip(self._carry, self._outs[1:]):
                buf[:count].copy_(final.detach().reshape(-1))

    def _unpack(self, x, cont, rest):
        """(x as T x N x K, cont as T x N x 1, x_static as N x S or None, initial states)."""
        t, n = x.shape[0], x.shape[1]
        x = x.reshape(t, n, self.K)
        cont = cont.to(x.dtype).reshape(t, n, 1)
        static = rest[0].reshape(n, self.K_static) if self.static else None
        if self.expose:
            # Caffe shares only the data of exposed states with its inner net: no gradient.
            init = [s.detach().reshape(n, self.H) for s in rest[int(self.static):]]
        else:
            init = [s.reshape(n, self.H) for s in self._start]
        return x, cont, static, init


@register('LSTM')
class LSTM(_Recurrent):
    """Long short-term memory over T steps of N streams; top h (T x N x num_output).

    Per step (gates in Caffe's order i, f, o, g):
        gate_input_t = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
        c_t, h_t = LSTMUnit(c_{t-1}, gate_input_t, cont_t)
    """
    state_names = ('h_0', 'c_0')

    def param_specs(self):
        rp = self.layer_param.recurrent_param
        g = 4 * self.H
        specs = [('W_xc', (g, self.K), rp.weight_filler), ('b_c', (g,), rp.bias_filler)]
        if self.static:
            specs.append(('W_xc_static', (g, self.K_static), rp.weight_filler))
        specs.append(('W_hc', (g, self.H), rp.weight_filler))
        return specs

    def compute(self, x, cont, *rest):
        x, cont, static, (h, c) = self._unpack(x, cont, rest)
        t_steps, n = x.shape[0], x.shape[1]
        pre = F.linear(x.reshape(t_steps * n, self.K), self.p[0], self.p[1])
        pre = pre.reshape(t_steps, n, 4 * self.H)
        k = 2
        if static is not None:
            pre = pre + F.linear(static, self.p[2]).unsqueeze(0)
            k = 3
        w_hc_t = self.p[k].t()
        hs = []
        for t in range(t_steps):
            gates = torch.addmm(pre[t], cont[t] * h, w_hc_t)
            c, h = lstm_unit_step(c, gates, cont[t])
            hs.append(h)
        return (torch.stack(hs), h.detach().reshape(1, n, self.H),
                c.detach().reshape(1, n, self.H))


@register('RNN')
class RNN(_Recurrent):
    """Elman recurrent net over T steps of N streams; top o (T x N x num_output).

    Per step:
        h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
        o_t = tanh(W_ho h_t + b_o)
    The output projection runs once over all steps after the loop.
    """
    state_names = ('h_0',)

    def param_specs(self):
        rp = self.layer_param.recurrent_param
        h = self.H
        specs = [('W_xh', (h, self.K), rp.weight_filler), ('b_h', (h,), rp.bias_filler)]
        if self.static:
            specs.append(('W_xh_static', (h, self.K_static), rp.weight_filler))
        specs += [('W_hh', (h, h), rp.weight_filler), ('W_ho', (h, h), rp.weight_filler),
                  ('b_o', (h,), rp.bias_filler)]
        return specs

    def compute(self, x, cont, *rest):
        x, cont, static, (h,) = self._unpack(x, cont, rest)
        t_steps, n = x.shape[0], x.shape[1]
        pre = F.linear(x.reshape(t_steps * n, self.K), self.p[0], self.p[1])
        pre = pre.reshape(t_steps, n, self.H)
        k = 2
        if static is not None:
            pre = pre + F.linear(static, self.p[2]).unsqueeze(0)
            k = 3
        w_hh_t, w_ho, b_o = self.p[k].t(), self.p[k + 1], self.p[k + 2]
        hs = []
        for t in range(t_steps):
            h = torch.tanh(torch.addmm(pre[t], cont[t] * h, w_hh_t))
            hs.append(h)
        hidden = torch.stack(hs)
        o = torch.tanh(F.linear(hidden.reshape(t_steps * n, self.H), w_ho, b_o))
        return o.reshape(t_steps, n, self.H), h.detach().reshape(1, n, self.H)


# ---- LSTMUnit -------------------------------------------------------------------------------

@register('LSTMUnit')
class LSTMUnit(TorchLayer):
    """One LSTM step: bottoms c_prev (1 x N x H), gate input (1 x N x 4H, blocks i, f, o, g),
    cont (1 x N); tops c and h (1 x N x H). See `_LSTMUnitStep` for the equations and
    Caffe's backward; cont gets no gradient (Caffe refuses to compute one)."""
    allow_in_place = False
    exact_num_bottom = 3
    exact_num_top = 2
    non_differentiable = (2,)
    run_in_bf16 = False

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shapes = [b.shape for b in bottom]
        n = shapes[0][1] if len(shapes[0]) > 1 else None
        for i, s in enumerate(shapes):
            axes = 2 if i == 2 else 3
            if len(s) != axes:
                raise ShapeError('layer %r: Check failed: %d == bottom[%d]->num_axes() (%d vs. '
                                 '%d): bottom[%d] has shape %s' % (name, axes, i, axes, len(s),
                                                                 i, shape_string(s)))
            if s[0] != 1:
                raise ShapeError('layer %r: Check failed: 1 == bottom[%d]->shape(0) (1 vs. %d): '
                                 'LSTMUnit takes a single timestep' % (name, i, s[0]))
            if s[1] != n:
                raise ShapeError('layer %r: Check failed: num_instances == bottom[%d]->shape(1) '
                                 '(%d vs. %d)' % (name, i, n, s[1]))
        h_dim = shapes[0][2]
        if shapes[1][2] != 4 * h_dim:
            raise ShapeError('layer %r: Check failed: 4 * hidden_dim_ == bottom[1]->shape(2) '
                             '(%d vs. %d): the gate input holds i, f, o, g for %d cells'
                             % (name, 4 * h_dim, shapes[1][2], h_dim))
        top[0].reshape(*shapes[0])
        top[1].reshape(*shapes[0])

    def compute(self, c_prev, gates, cont):
        cont = cont.to(gates.dtype).reshape(1, -1, 1)
        return lstm_unit_step(c_prev, gates, cont)

    def run_backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 2 and propagate_down[2]:
            raise NetError('layer %r: Cannot backpropagate to sequence indicators.'
                           % self.layer_param.name)
        super().run_backward(top, propagate_down, bottom)
