"""The adaptive-rate solvers: AdaGrad, RMSProp, AdaDelta and Adam.

Each rescales the (normalised, regularised) gradient by statistics of past gradients kept
in its history buffers; they share SGDSolver's loop, clipping, regularisation and state
files and differ only in ComputeUpdateValue (and Adam, also in a fused one-pass path).
Unlike SGD they never skip frozen parameters: Caffe updates their history too.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch

from ._numbers import f32
from .errors import SolverError
from .fused import FUSED_ADAM, fused_adam_works
from .registry import register_solver
from .sgd import SGDSolver


def _adam_step(m: torch.Tensor, v: torch.Tensor, scale: float, eps: float):
    """A Blob.defer_diff fill writing what Caffe's Adam leaves in the diff, the step
    scale * m / (sqrt(v) + eps), from the moments the update just wrote."""
    def fill(t: torch.Tensor) -> None:
        torch.div(m, v.sqrt().add_(eps), out=t.view(m.shape)).mul_(scale)
    return fill


@register_solver('AdaGrad')
class AdaGradSolver(SGDSolver):
    """AdaGrad: h += g^2; step = lr * g / (sqrt(h) + delta)."""

    _skips_frozen = False

    def _pre_solve(self) -> None:
        if self._param.momentum != 0:
            raise SolverError('Momentum cannot be used with AdaGrad.')
        super()._pre_solve()

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        delta = self._param.delta
        h = [self._history[i] for i in active]
        torch._foreach_addcmul_(h, gs, gs)
        denom = torch._foreach_sqrt(h)
        torch._foreach_add_(denom, delta)
        torch._foreach_div_(gs, denom)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        self._mark_history_moved(active)


@register_solver('RMSProp')
class RMSPropSolver(SGDSolver):
    """RMSProp: h = d*h + (1-d)*g^2; step = lr * g / (sqrt(h) + delta)."""

    _skips_frozen = False

    def _pre_solve(self) -> None:
        p = self._param
        if p.momentum != 0:
            raise SolverError('Momentum cannot be used with RMSProp.')
        if not (0 <= p.rms_decay < 1):
            raise SolverError('rms_decay should lie between 0 and 1.')
        super()._pre_solve()

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        p = self._param
        d = p.rms_decay
        h = [self._history[i] for i in active]
        torch._foreach_mul_(h, d)
        torch._foreach_addcmul_(h, gs, gs, value=f32(1.0 - d))
        denom = torch._foreach_sqrt(h)
        torch._foreach_add_(denom, p.delta)
        torch._foreach_div_(gs, denom)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        self._mark_history_moved(active)


@register_solver('AdaDelta')
class AdaDeltaSolver(SGDSolver):
    """AdaDelta: h_g = m*h_g + (1-m)*g^2; s = g*sqrt((h_u+delta)/(h_g+delta));
    h_u = m*h_u + (1-m)*s^2; step = lr * s. History: N gradient then N update buffers."""

    _history_per_param = 2
    _skips_frozen = False

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        p = self._param
        m, delta = p.momentum, p.delta
        n = len(self._net._learnable_params)
        hg = [self._history[i] for i in active]
        hu = [self._history[n + i] for i in active]
        one_minus = f32(1.0 - m)
        torch._foreach_mul_(hg, m)
        torch._foreach_addcmul_(hg, gs, gs, value=one_minus)
        num = torch._foreach_add(hu, delta)
        den = torch._foreach_add(hg, delta)
        torch._foreach_div_(num, den)
        torch._foreach_sqrt_(num)
        torch._foreach_mul_(gs, num)
        torch._foreach_mul_(hu, m)
        torch._foreach_addcmul_(hu, gs, gs, value=one_minus)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        self._mark_history_moved(active)


@register_solver('Adam')
class AdamSolver(SGDSolver):
    """Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    step = lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), t = iter + 1.
    History: N first-moment then N second-moment buffers."""

    _history_per_param = 2
    _skips_frozen = False

    def _fused_update(self, active: List[int], ws, gs, rate: float) -> bool:
        """Caffe's Adam with torch's fused Adam kernel, one pass per tensor.

        torch divides by sqrt(v)/sqrt(1-b2^t) + eps where Caffe divides by sqrt(v) + eps
        after scaling by sqrt(1-b2^t); the two agree when torch's eps is Caffe's delta
        / sqrt(1-b2^t). Caffe's normalisation by iter_size is the kernel's grad_scale and
        its L2 regularisation the kernel's (non-decoupled) weight decay.
        """
        p = self._param
        if not self.use_fused_update or FUSED_ADAM is None:
            return False
        dev, dt = ws[active[0]].device, ws[active[0]].dtype
        groups: Dict[tuple, List[int]] = {}
        for i in active:
            local_decay = f32(p.weight_decay * self._decay_mults[i])
            if local_decay and p.regularization_type != 'L2':
                return False
            if ws[i].device != dev or ws[i].dtype != dt:
                return False
            groups.setdefault((f32(rate * self._lr_mults[i]), local_decay), []).append(i)
        if not fused_adam_works(dev, dt):
            return False
        n = len(self._net._learnable_params)
        t = self._iter + 1
        eps = p.delta / math.sqrt(1.0 - math.pow(p.momentum2, t))
        step = torch.tensor(float(t), device=dev)
        scale = torch.tensor(float(p.iter_size), device=dev) if p.iter_size > 1 else None
        for (local_rate, local_decay), idx in groups.items():
            FUSED_ADAM([ws[i] for i in idx], [gs[i] for i in idx],
                       [self._history[i] for i in idx], [self._history[n + i] for i in idx],
                       [], [step] * len(idx), lr=local_rate, beta1=p.momentum,
                       beta2=p.momentum2, weight_decay=local_decay, eps=eps, amsgrad=False,
                       maximize=False, grad_scale=scale, found_inf=None)
        self._mark_history_moved(active)
        correction = f32(math.sqrt(1.0 - math.pow(p.momentum2, t))
                         / (1.0 - math.pow(p.momentum, t)))
        params = self._net._learnable_params
        for i in active:
            params[i].defer_diff(_adam_step(self._history[i], self._history[n + i],
                                            f32(f32(rate * self._lr_mults[i]) * correction),
                                            p.delta))
        return True

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        p = self._param
        b1, b2, eps = p.momentum, p.momentum2, p.delta
        n = len(self._net._learnable_params)
        t = self._iter + 1
        correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
        ms = [self._history[i] for i in active]
        vs = [self._history[n + i] for i in active]
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, gs, alpha=f32(1.0 - b1))
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=f32(1.0 - b2))
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps)
        torch._foreach_zero_(gs)
        torch._foreach_addcdiv_(gs, ms, denom, [f32(r * correction)
                                                for r in self._local_rates(active, rate)])
        self._mark_history_moved(active)
