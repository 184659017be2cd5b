"""Gradient averaging across ranks: BVLC's NCCL solver callback, on torch.distributed.

Every rank runs the whole net on its own data. After the iteration's passes (iter_size of
them) each parameter's gradient is replaced by its mean over the ranks, and then every rank
applies the same update, so the weights stay identical everywhere:

    on_start             a new iteration: nothing launched yet
    run(layer)           (net.after_backward, last pass only, with layer_wise_reduce) the
                         gradients this layer completes start their all-reduce now, while
                         the layers below are still computing theirs
    on_gradients_ready   (solver callback, before the update) reduce whatever is left, agree
                         on the loss, stop/snapshot requests and non-finite losses, wait for
                         every reduction, divide by the rank count

A parameter is "complete" after the backward of the lowest layer that computes its gradient
(a shared parameter gets contributions from several layers, and backward runs from the top
down). Small gradients travel together in buckets of `CAFFE_DIST_BUCKET_MB` (8 MB by default)
copied into one flat tensor; a gradient larger than a bucket is reduced where it lies. The
order of the collectives depends on the net alone, so it is the same on every rank.

Besides the gradients, each iteration the ranks sum a small control vector: the loss, a
stop vote, a snapshot vote and one non-finite-loss flag per rank. So a SIGINT that reaches
one rank stops all of them at the same iteration, the logged loss is the mean over ranks (as
one process with iter_size N would log it), and a rank whose loss went NaN stops every rank
with an error naming it, instead of leaving the others waiting.
"""
from __future__ import annotations

import math
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .. import _log
from ..errors import CaffeError
from .group import Group, current, join, solver_count, solver_rank

_TAG = 'parallel.cpp'


def bucket_bytes() -> int:
    """Bucket size for small gradients (CAFFE_DIST_BUCKET_MB, 8 by default)."""
    raw = os.environ.get('CAFFE_DIST_BUCKET_MB', '').strip()
    try:
        mb = float(raw) if raw else 8.0
    except ValueError:
        raise CaffeError('CAFFE_DIST_BUCKET_MB must be a number, got %r' % raw) from None
    return max(1, int(mb * (1 << 20)))


def reduce_plan(net) -> Tuple[Dict[int, List[int]], List[int]]:
    """(layer index -> learnable parameters whose gradient is complete after that layer's
    backward, every reduced parameter in the order backward completes them).

    Parameters no layer computes a gradient for (lr_mult 0, or below every loss) keep a zero
    gradient on every rank and are not reduced.
    """
    lowest: Dict[int, int] = {}
    for pid, (li, pi) in enumerate(net._param_layer_indices):
        if not net._layer_need_backward[li]:
            continue
        ppd = net.layers[li].param_propagate_down
        if pi < len(ppd) and not ppd[pi]:
            continue
        lid = net._learnable_param_ids[pid]
        lowest[lid] = min(li, lowest.get(lid, li))
    ready: Dict[int, List[int]] = {}
    for lid in sorted(lowest):
        ready.setdefault(lowest[lid], []).append(lid)
    order = [lid for li in sorted(ready, reverse=True) for lid in ready[li]]
    return ready, order


@dataclass
class Agreement:
    """What the ranks agreed on at the end of an iteration."""
    loss: float = 0.0                 # mean of the ranks' losses
    stop: bool = False                # some rank was asked to stop
    snapshot: bool = False            # some rank was asked to snapshot
    nonfinite_ranks: List[int] = field(default_factory=list)


@dataclass
class ReduceStats:
    """Where the time of the gradient reduction went (summed over iterations)."""
    iterations: int = 0
    collectives: int = 0
    bytes: int = 0                    # gradient bytes each rank sent into all-reduces
    launch_s: float = 0.0             # spent launching (copying into buckets) during backward
    exposed_s: float = 0.0            # spent in on_gradients_ready waiting: not hidden
    # The last iteration's end of backward and end of the reduction (time.monotonic(), one
    # clock for the processes of a machine: a benchmark tells waiting for a slower rank from
    # waiting for the network).
    backward_end: float = 0.0
    reduced_at: float = 0.0

    def per_iteration(self) -> Dict[str, float]:
        n = max(self.iterations, 1)
        return {'bytes': self.bytes / n, 'collectives': self.collectives / n,
                'launch_ms': 1e3 * self.launch_s / n, 'exposed_ms': 1e3 * self.exposed_s / n}


class DataParallel:
    """Keeps one solver's weights identical to the other ranks' (see the module docstring).

    `attach()` registers it with the solver (and with the net when layer_wise_reduce);
    `bcast()` gives every rank rank 0's weights and solver state.
    """

    def __init__(self, solver, group: Optional[Group] = None, layer_wise: Optional[bool] = None):
        group = group or current()
        if group is None:
            raise CaffeError('data-parallel training needs a process group: join one first '
                             '(caffe.parallel.join_from_env() under torchrun, or caffe.NCCL(solver, '
                             'uid) after set_solver_count/set_solver_rank)')
        self.solver = solver
        self.group = group
        self.net = solver.net
        self.layer_wise = (bool(solver.param.layer_wise_reduce) if layer_wise is None
                           else bool(layer_wise))
        self.bucket_bytes = bucket_bytes()
        self._ready, self._order = reduce_plan(self.net)
        self._avg = group.backend == 'nccl'    # gloo has no AVG: SUM, then a division
        self._armed = False
        self._launched: set = set()
        self._pending: List[Tuple[int, torch.Tensor]] = []
        self._pending_bytes = 0
        self._works: list = []
        self._attached = False
        self.agreed = Agreement()
        self.stats = ReduceStats()
        solver._data_parallel = self

    # ---- set-up ------------------------------------------------------------------------------
    def attach(self) -> 'DataParallel':
        """Register with the solver (on_start / on_gradients_ready) and, with
        layer_wise_reduce, with the net's after_backward; publish progress on every layer."""
        if self._attached:
            return self
        self._attached = True
        self.solver.add_callback(self)
        if self.layer_wise:
            self.net.after_backward(self)
        for net in [self.net] + list(self.solver.test_nets):
            net.before_forward(self._beat)
        return self

    def _beat(self, _layer: int) -> None:
        self.group.beat()

    def bcast(self) -> None:
        """Every rank takes rank 0's weights, iteration, lr-policy step and solver history
        (BVLC's NCCL::Broadcast; the history too, so a resumed run continues identically)."""
        self._check_same_net()
        solver = self.solver
        tensors = [b.tensor for b in self.net._learnable_params]
        history = list(getattr(solver, '_history', []))
        self._broadcast_tensors(tensors + history, 'broadcast of the weights')
        state = torch.tensor([solver._iter, solver._current_step], dtype=torch.int64,
                             device=self.group.device)
        self._broadcast_tensors([state], 'broadcast of the solver state')
        solver._iter, solver._current_step = (int(v) for v in state.cpu().tolist())
        if self.group.device.type != 'cpu':
            # Written in place on the device: a host mirror Python read before is stale.
            for b in self.net._learnable_params:
                b.set_tensor(b.tensor)
        if history and hasattr(solver, '_hist_zero'):
            solver._hist_zero = [not bool(h.any()) for h in history]
        _log.info(_TAG, 'Weights and solver state (iteration %d) broadcast from rank 0 to %d '
                  'ranks; gradients averaged %s' % (solver._iter, self.group.size,
                                                    'layer by layer during backward'
                                                    if self.layer_wise else 'after backward'))

    def _check_same_net(self) -> None:
        """All ranks must train the same net: compare a signature of the parameters."""
        import torch.distributed as dist
        params = self.net._learnable_params
        shapes = ';'.join('x'.join(map(str, b.shape)) for b in params)
        sig = torch.tensor([len(params), sum(b.count for b in params),
                            zlib.crc32(shapes.encode())], dtype=torch.int64, device=self.group.device)
        gathered = [torch.zeros_like(sig) for _ in range(self.group.size)]
        try:
            work = dist.all_gather(gathered, sig, async_op=True)
        except RuntimeError as e:
            raise self.group.failure('comparing the nets of the ranks', e) from None
        self.group.wait(work, 'comparing the nets of the ranks')
        ref = gathered[0].tolist()
        for r, g in enumerate(gathered):
            if g.tolist() != ref:
                n, count, _ = g.tolist()
                raise CaffeError('rank %d trains a different net than rank 0: %d parameter blobs '
                                 'of %d values against %d of %d (every rank must use the same '
                                 'net and solver)' % (r, n, count, ref[0], ref[1]))

    def _broadcast_tensors(self, tensors: List[torch.Tensor], what: str) -> None:
        import torch.distributed as dist
        works = []
        small: List[torch.Tensor] = []

        def send_small():
            if not small:
                return
            flat = torch.cat([t.reshape(-1) for t in small])
            works.append((dist.broadcast(flat, 0, async_op=True), flat, list(small)))
            small.clear()

        size = 0
        try:
            for t in tensors:
                nbytes = t.numel() * t.element_size()
                if nbytes >= self.bucket_bytes and t.is_contiguous():
                    works.append((dist.broadcast(t, 0, async_op=True), None, None))
                    continue
                if small and (small[0].dtype != t.dtype or small[0].device != t.device):
                    send_small()
                    size = 0
                small.append(t)
                size += nbytes
                if size >= self.bucket_bytes:
                    send_small()
                    size = 0
            send_small()
        except RuntimeError as e:
            raise self.group.failure(what, e) from None
        for work, flat, parts in works:
            self.group.wait(work, what)
            if flat is not None and self.group.rank != 0:
                offset = 0
                for t in parts:
                    n = t.numel()
                    t.copy_(flat[offset:offset + n].view(t.shape))
                    offset += n

    # ---- the solver callback -------------------------------------------------------------------
    def on_start(self) -> None:
        self.group.beat()
        self._armed = True
        self._launched = set()
        self._pending = []
        self._pending_bytes = 0
        self._works = []

    def run(self, layer: int) -> None:
        """After layer `layer`'s backward: start reducing the gradients it completed."""
        if not (self._armed and self.layer_wise and getattr(self.solver, '_last_pass', True)):
            return
        lids = self._ready.get(layer)
        if lids:
            t = time.perf_counter()
            for lid in lids:
                self._add(lid)
            self.stats.launch_s += time.perf_counter() - t

    def on_gradients_ready(self) -> None:
        """Finish the reduction (before the update) and agree on the iteration's outcome."""
        import torch.distributed as dist
        t0 = time.perf_counter()
        self.stats.backward_end = time.monotonic()
        if not self._armed:
            self.on_start()
        it = getattr(self.solver, '_iter', 0)
        what = 'gradient all-reduce of iteration %d' % it
        for lid in self._order:       # all of them without layer_wise_reduce
            if lid not in self._launched:
                self._add(lid)
        self._flush()
        control = self._control_vector()
        try:
            self._works.append((dist.all_reduce(control, async_op=True), control, None))
        except RuntimeError as e:
            raise self.group.failure(what, e) from None
        scale = 1.0 / self.group.size
        for work, tensor, parts in self._works:
            self.group.wait(work, what)
            if tensor is control:
                continue
            if parts is None:
                if not self._avg:
                    tensor.mul_(scale)
                continue
            offset = 0
            for d in parts:
                n = d.numel()
                piece = tensor[offset:offset + n].view(d.shape)
                if self._avg:
                    d.copy_(piece)
                else:
                    torch.mul(piece, scale, out=d)
                offset += n
        if self.group.device.type != 'cpu':
            # Reduced in place on the device: a host mirror of .diff is stale now.
            params = self.net._learnable_params
            for lid in self._launched:
                params[lid].set_diff_tensor(params[lid].diff_tensor)
        self.agreed = self._read_control(control)
        self._armed = False
        self._works = []
        self.stats.iterations += 1
        self.stats.exposed_s += time.perf_counter() - t0
        self.stats.reduced_at = time.monotonic()

    # ---- buckets --------------------------------------------------------------------------------
    def _add(self, lid: int) -> None:
        if lid in self._launched:
            return
        self._launched.add(lid)
        d = self.net._learnable_params[lid].diff_tensor
        nbytes = d.numel() * d.element_size()
        self.stats.bytes += nbytes
        if nbytes >= self.bucket_bytes and d.is_contiguous():
            self._launch(d, None)
            return
        if self._pending and (self._pending[0][1].dtype != d.dtype
                              or self._pending[0][1].device != d.device):
            self._flush()
        self._pending.append((lid, d))
        self._pending_bytes += nbytes
        if self._pending_bytes >= self.bucket_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        parts = [d for _, d in self._pending]
        self._pending = []
        self._pending_bytes = 0
        if len(parts) == 1 and parts[0].is_contiguous():
            self._launch(parts[0], None)
        else:
            self._launch(torch.cat([d.reshape(-1) for d in parts]), parts)

    def _launch(self, tensor: torch.Tensor, parts: Optional[List[torch.Tensor]]) -> None:
        import torch.distributed as dist
        op = dist.ReduceOp.AVG if self._avg else dist.ReduceOp.SUM
        try:
            work = dist.all_reduce(tensor, op=op, async_op=True)
        except RuntimeError as e:
            raise self.group.failure('gradient all-reduce of iteration %d'
                                     % getattr(self.solver, '_iter', 0), e) from None
        self._works.append((work, tensor, parts))
        self.stats.collectives += 1

    # ---- agreement --------------------------------------------------------------------------------
    def _control_vector(self) -> torch.Tensor:
        solver = self.solver
        loss = float(getattr(solver, '_iter_loss', 0.0))
        stop, snap = solver._local_votes() if hasattr(solver, '_local_votes') else (False, False)
        v = torch.zeros(3 + self.group.size, dtype=torch.float64)
        v[0] = loss
        v[1] = 1.0 if stop else 0.0
        v[2] = 1.0 if snap else 0.0
        v[3 + self.group.rank] = 0.0 if math.isfinite(loss) else 1.0
        return v.to(self.group.device)

    def _read_control(self, control: torch.Tensor) -> Agreement:
        v = control.cpu().tolist()
        return Agreement(loss=v[0] / self.group.size, stop=v[1] > 0, snapshot=v[2] > 0,
                         nonfinite_ranks=[r for r in range(self.group.size) if v[3 + r] > 0])


class NCCL(DataParallel):
    """pycaffe's `caffe.NCCL(solver, uid)`, as BVLC's python/train.py uses it:

        caffe.set_solver_count(n); caffe.set_solver_rank(r); caffe.set_multiprocess(True)
        solver = caffe.SGDSolver(proto)          # Data layers take their share of records
        nccl = caffe.NCCL(solver, uid)           # uid = caffe.NCCL.new_uid(), made once
        nccl.bcast()                             # rank 0's weights everywhere
        solver.add_callback(nccl)
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(nccl)
        solver.step(solver.param.max_iter)

    It joins the torch.distributed group at `uid` (unless this process already belongs to
    one, e.g. under torchrun) as rank solver_rank() of solver_count().
    """

    def __init__(self, solver, uid: str = ''):
        group = current()
        if group is None:
            if not uid:
                raise CaffeError('caffe.NCCL(solver, uid): no uid given and this process is not '
                                 'in a process group; make one uid with caffe.NCCL.new_uid() and '
                                 'pass it to every rank')
            if solver_count() < 2:
                raise CaffeError('caffe.NCCL: call caffe.set_solver_count(n) and '
                                 'caffe.set_solver_rank(r) before creating the solver')
            group = join(uid, solver_rank(), solver_count())
        super().__init__(solver, group)

    @staticmethod
    def new_uid() -> str:
        """A rendezvous address to hand to every rank (a tcp:// address on this machine)."""
        from .group import new_uid
        return new_uid()
