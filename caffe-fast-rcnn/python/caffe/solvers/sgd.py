"""SGDSolver, the update machinery every Caffe solver shares, and Nesterov's variant.

    ApplyUpdate:  learning rate from `lr_policy`; clip the accumulated gradient by its
           global L2 norm; then per parameter Normalize (divide by iter_size), Regularize
           (add decay*w, or decay*sign(w) for L1) and ComputeUpdateValue (the solver's own
           formula, leaving the step in the diff); finally w -= diff for every learnable
           parameter.

Each step works on all parameters at once with torch's fused `_foreach_*` kernels on the
blobs' own tensors, so the solver's overhead stays a small fraction of a forward/backward
even for VGG16's 138M weights. The history buffers (momentum, or the adaptive rules'
moments) are what .solverstate files save and restore.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from .. import _log
from . import snapshot as _snapshot
from ._numbers import SGD_CPP, f32, g
from .base import Solver
from .errors import SolverError
from .fused import FUSED_SGD, fused_sgd_works
from .lr_policy import learning_rate
from .registry import register_solver


def _copy_of(src: torch.Tensor):
    """A Blob.defer_diff fill that copies `src` (Caffe's diff after an SGD update is h)."""
    return lambda t: t.copy_(src.reshape(t.shape))


@register_solver('SGD')
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: v = momentum*v + lr*(g + decay); w -= v."""

    # How many history buffers per parameter the solver keeps in its state (Adam: m, v).
    _history_per_param = 1

    def _pre_solve(self) -> None:
        params = self._net._learnable_params
        self._history: List[torch.Tensor] = []
        for _ in range(self._history_per_param):
            for b in params:
                self._history.append(torch.zeros_like(b.tensor))
        self._hist_zero = [True] * len(self._history)
        net = self._net
        self._lr_mults = [float(x) for x in net._params_lr]
        self._decay_mults = [float(x) for x in net._params_weight_decay]

    @property
    def history(self) -> List[np.ndarray]:
        """The history buffers (as in a .solverstate), as NumPy views."""
        return [h.cpu().numpy() if h.device.type != 'cpu' else h.numpy() for h in self._history]

    def get_learning_rate(self) -> float:
        """Caffe's SGDSolver::GetLearningRate for the current iteration (see lr_policy)."""
        rate, self._current_step = learning_rate(self._param, self._iter, self._current_step)
        return rate

    # ---- the update ------------------------------------------------------------------------
    def apply_update(self) -> None:
        """One weight update from the gradients in the param diffs (SGDSolver::ApplyUpdate)."""
        p = self._param
        rate = self.get_learning_rate()
        self._learning_rate = rate
        if p.display and self._iter % p.display == 0:
            _log.info(SGD_CPP + ':106', 'Iteration %d, lr = %s' % (self._iter, g(rate)))
        params = self._net._learnable_params
        if not params:
            return
        ws = [b.tensor for b in params]
        gs = [b.diff_tensor for b in params]
        self._sync_history_devices(ws)
        self._clip_gradients(gs)
        active = self._active_indices()
        if not active:
            return
        if self._fused_update(active, ws, gs, rate):
            return
        w_act = [ws[i] for i in active]
        g_act = [gs[i] for i in active]
        if p.iter_size > 1:
            torch._foreach_mul_(g_act, f32(1.0 / p.iter_size))
        self._regularize(active, ws, gs)
        self._compute_update_value(active, w_act, g_act, rate)
        torch._foreach_sub_(w_act, g_act)

    # Set False to always run the step-by-step path. Both leave the update step in the
    # diffs, as Caffe does; the fused paths (SGD, Adam) compute it only if it is read.
    use_fused_update = True

    def _fused_update(self, active: List[int], ws, gs, rate: float) -> bool:
        """Plain SGD in one pass per tensor with torch's fused SGD kernel.

        Caffe's update h = m*h + lr*(g/k + d*w); w -= h (k = iter_size, d the local decay)
        is torch's SGD with dampening 1 - lr/k, weight decay d*k and step size 1:
        buf = m*buf + (lr/k)*(g + d*k*w); w -= buf. That reads w, g and h once and writes w
        and h once, instead of Caffe's five separate passes. Used for type SGD with momentum
        and L2 (or no) regularisation; anything else takes the step-by-step path. Caffe
        leaves h in the diff; here the diff becomes a copy of h only if somebody reads it.
        """
        p = self._param
        if (type(self) is not SGDSolver or not self.use_fused_update or p.momentum == 0
                or FUSED_SGD is None or any(ws[i].device != ws[active[0]].device
                                            or ws[i].dtype != ws[active[0]].dtype for i in active)):
            return False
        k = p.iter_size
        groups: Dict[tuple, List[int]] = {}
        for i in active:
            local_decay = f32(p.weight_decay * self._decay_mults[i])
            if local_decay and p.regularization_type != 'L2':
                return False
            groups.setdefault((f32(rate * self._lr_mults[i]), local_decay), []).append(i)
        if not fused_sgd_works(ws[active[0]].device, ws[active[0]].dtype):
            return False
        for (local_rate, local_decay), idx in groups.items():
            FUSED_SGD([ws[i] for i in idx], [gs[i] for i in idx],
                      [self._history[i] for i in idx], weight_decay=local_decay * k,
                      momentum=p.momentum, lr=1.0, dampening=1.0 - local_rate / k,
                      nesterov=False, maximize=False, is_first_step=False)
        params = self._net._learnable_params
        for i in active:
            self._hist_zero[i] = False
            params[i].defer_diff(_copy_of(self._history[i]))
        return True

    def _sync_history_devices(self, ws: Sequence[torch.Tensor]) -> None:
        n = len(ws)
        for k, h in enumerate(self._history):
            w = ws[k % n]
            if h.device != w.device or h.dtype != w.dtype or h.shape != w.shape:
                if h.numel() != w.numel():
                    raise SolverError('history buffer %d has %d values but its parameter has %d'
                                      % (k, h.numel(), w.numel()))
                self._history[k] = h.to(device=w.device, dtype=w.dtype).reshape(w.shape)

    def _active_indices(self) -> List[int]:
        """Parameters the update can change. For SGD and Nesterov a frozen parameter
        (lr_mult 0) whose history is zero provably keeps its value and history, so it is
        skipped (py-faster-rcnn freezes VGG16's first layers); the adaptive solvers keep
        Caffe's full computation, whose history does move."""
        n = len(self._net._learnable_params)
        if not self._skips_frozen:
            return list(range(n))
        return [i for i in range(n) if self._lr_mults[i] != 0 or not self._hist_zero[i]]

    _skips_frozen = True

    def _clip_gradients(self, gs: List[torch.Tensor]) -> None:
        clip = self._param.clip_gradients
        if clip < 0:
            return
        norms = torch._foreach_norm(gs)
        l2 = float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))
        if l2 > clip:
            scale = f32(clip / l2)
            _log.info(SGD_CPP + ':94', 'Gradient clipping: scaling down gradients (L2 norm %s > %s) by '
                      'scale factor %s' % (g(l2), g(clip), g(scale)))
            torch._foreach_mul_(gs, scale)

    def _regularize(self, active: List[int], ws, gs) -> None:
        p = self._param
        groups: Dict[float, List[int]] = {}
        for i in active:
            local_decay = f32(p.weight_decay * self._decay_mults[i])
            if local_decay:
                groups.setdefault(local_decay, []).append(i)
        if not groups:
            return
        kind = p.regularization_type
        if kind not in ('L2', 'L1'):
            raise SolverError('Unknown regularization type: %s' % kind)
        for decay, idx in groups.items():
            gd = [gs[i] for i in idx]
            w = [ws[i] for i in idx]
            if kind == 'L2':
                torch._foreach_add_(gd, w, alpha=decay)
            else:
                torch._foreach_add_(gd, torch._foreach_sign(w), alpha=decay)

    def _local_rates(self, active: List[int], rate: float) -> List[float]:
        return [f32(rate * self._lr_mults[i]) for i in active]

    def _mark_history_moved(self, active: List[int]) -> None:
        """The history of these parameters is no longer known to be zero (every buffer of
        each, for the rules that keep two per parameter)."""
        n = len(self._net._learnable_params)
        for i in active:
            for k in range(self._history_per_param):
                self._hist_zero[k * n + i] = False

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        momentum = self._param.momentum
        h = [self._history[i] for i in active]
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        torch._foreach_mul_(h, momentum)
        torch._foreach_add_(h, gs)
        torch._foreach_copy_(gs, h)
        self._mark_history_moved(active)

    # ---- state files ---------------------------------------------------------------------
    def _snapshot_solver_state_binary(self, model_filename: str) -> str:
        path = self._snapshot_filename('.solverstate')
        _log.info(SGD_CPP + ':273', 'Snapshotting solver state to binary proto file ' + path)
        _snapshot.write_state_binary(path, self._iter, model_filename, self._current_step,
                                     self._history)
        return path

    def _snapshot_solver_state_hdf5(self, model_filename: str) -> str:
        path = self._snapshot_filename('.solverstate.h5')
        _log.info(SGD_CPP + ':290', 'Snapshotting solver state to HDF5 file ' + path)
        _snapshot.write_state_hdf5(path, self._iter, model_filename, self._current_step,
                                   self._history)
        return path

    def _restore_state(self, state: _snapshot.SavedState, state_file: str) -> None:
        """Caffe's RestoreSolverStateFrom*: the iteration, the weights the state names, the
        lr policy's step counter, then the history buffers."""
        self._iter = state.iter
        if state.learned_net:
            self._net.copy_from(_snapshot.find_learned_net(state.learned_net, state_file))
        self._current_step = state.current_step
        self._set_history(state.history(), state_file)

    def _set_history(self, arrays: List[np.ndarray], state_file: str) -> None:
        if len(arrays) != len(self._history):
            raise SolverError('%s: Incorrect length of history blobs: the state has %d, a %s '
                              'solver for this net needs %d' % (state_file, len(arrays),
                                                                self.type, len(self._history)))
        _log.info(SGD_CPP + ':325', 'SGDSolver: restoring history')
        for b in self._net._learnable_params:
            b.diff_tensor   # a diff still to be computed from the old history gets it now
        for i, arr in enumerate(arrays):
            h = self._history[i]
            if arr.size != h.numel():
                raise SolverError('%s: history blob %d has %d values; parameter %d of the net '
                                  'has %d' % (state_file, i, arr.size, i % len(
                                      self._net._learnable_params), h.numel()))
            h.copy_(torch.from_numpy(np.ascontiguousarray(arr).reshape(h.shape)).to(h.dtype))
            self._hist_zero[i] = not bool(np.any(arr))


@register_solver('Nesterov')
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient: v' = m*v + lr*g; step = (1+m)*v' - m*v."""

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        momentum = self._param.momentum
        h = [self._history[i] for i in active]
        old = torch._foreach_mul(h, -momentum)           # -m * v (the step back)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        torch._foreach_mul_(h, momentum)
        torch._foreach_add_(h, gs)                        # v' = m*v + lr*g
        torch._foreach_copy_(gs, old)
        torch._foreach_add_(gs, h, alpha=f32(1.0 + momentum))
        self._mark_history_moved(active)
