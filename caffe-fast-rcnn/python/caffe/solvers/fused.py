"""torch's fused SGD and Adam kernels, and a one-time check that each computes what the
solvers rely on (the kernels are private torch API, so their arguments could change).

SGDSolver and AdamSolver take their one-pass paths only where the check passed for the
parameters' device and dtype; otherwise they fall back to the step-by-step `_foreach_` path.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

FUSED_SGD = getattr(torch, '_fused_sgd_', None)
FUSED_ADAM = getattr(torch, '_fused_adam_', None)

_WORKS: Dict[tuple, bool] = {}


def fused_sgd_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused SGD kernel exists for this device and float type and computes
    buf = m*buf + (1-dampening)*(g + wd*w); w -= lr*buf (checked once on a tiny example)."""
    key = (str(device), dtype)
    ok = _WORKS.get(key)
    if ok is None:
        ok = False
        if FUSED_SGD is not None:
            try:
                w = torch.tensor([1.0, -2.0], dtype=dtype, device=device)
                g = torch.tensor([0.5, 0.25], dtype=dtype, device=device)
                h = torch.tensor([0.1, 0.2], dtype=dtype, device=device)
                FUSED_SGD([w], [g], [h], weight_decay=0.5, momentum=0.9, lr=1.0, dampening=0.75,
                          nesterov=False, maximize=False, is_first_step=False)
                want_h = torch.tensor([0.09 + 0.25 * 1.0, 0.18 + 0.25 * -0.75], dtype=torch.float64)
                ok = (torch.allclose(h.double().cpu(), want_h, atol=1e-6)
                      and torch.allclose(w.double().cpu(), torch.tensor([1.0, -2.0]).double() - want_h,
                                         atol=1e-6)
                      and torch.equal(g.cpu(), torch.tensor([0.5, 0.25], dtype=dtype)))
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _WORKS[key] = ok
    return ok


def fused_adam_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused Adam kernel exists here and computes, with grad_scale s and
    t = state step: g' = g/s + wd*w; m = lerp(m, g', 1-b1); v = b2*v + (1-b2)*g'^2;
    w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) (checked once on a tiny example)."""
    key = ('adam', str(device), dtype)
    ok = _WORKS.get(key)
    if ok is None:
        ok = False
        if FUSED_ADAM is not None:
            try:
                mk = lambda *v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
                w, g, m, v = mk(1.0, -2.0), mk(0.5, 0.25), mk(0.1, 0.2), mk(0.01, 0.02)
                step = torch.tensor(3.0, device=device)
                scale = torch.tensor(2.0, device=device)
                FUSED_ADAM([w], [g], [m], [v], [], [step], lr=0.1, beta1=0.9, beta2=0.999,
                           weight_decay=0.5, eps=1e-3, amsgrad=False, maximize=False,
                           grad_scale=scale, found_inf=None)
                g2 = torch.tensor([0.25 + 0.5, 0.125 - 1.0], dtype=torch.float64)
                m2 = 0.9 * torch.tensor([0.1, 0.2], dtype=torch.float64) + 0.1 * g2
                v2 = 0.999 * torch.tensor([0.01, 0.02], dtype=torch.float64) + 0.001 * g2 * g2
                c2 = math.sqrt(1 - 0.999 ** 3)
                w2 = torch.tensor([1.0, -2.0], dtype=torch.float64) - \
                    0.1 / (1 - 0.9 ** 3) * m2 / (v2.sqrt() / c2 + 1e-3)
                ok = (torch.allclose(w.double().cpu(), w2, rtol=1e-5, atol=1e-7)
                      and torch.allclose(m.double().cpu(), m2, rtol=1e-5)
                      and torch.allclose(v.double().cpu(), v2, rtol=1e-5)
                      and float(step) == 3.0)
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _WORKS[key] = ok
    return ok
