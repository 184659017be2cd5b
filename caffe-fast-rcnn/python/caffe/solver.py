"""Caffe's solvers: SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam, as pycaffe offers them.

A solver owns a training net and its test nets (built from a SolverParameter exactly as
Caffe's Solver::Init builds them), and trains with Caffe's loop, update for update:

    Step:  clear param diffs; test every `test_interval` (and at iteration 0 unless
           `test_initialization: false`); `iter_size` forward/backward passes whose
           gradients accumulate; smooth the loss over `average_loss` iterations; display;
           ApplyUpdate; ++iter; snapshot every `snapshot` iterations.
    ApplyUpdate (SGDSolver and its subclasses):  learning rate from `lr_policy`; clip the
           accumulated gradient by its global L2 norm; then per parameter Normalize
           (divide by iter_size), Regularize (add decay*w, or decay*sign(w) for L1) and
           ComputeUpdateValue (the solver's own formula, leaving the step in the diff);
           finally w -= diff for every learnable parameter.

Each step works on all parameters at once with torch's fused `_foreach_*` kernels on the
blobs' own tensors, so the solver's overhead stays a small fraction of a forward/backward
even for VGG16's 138M weights.

Snapshots are Caffe's files (`<prefix>_iter_N.caffemodel` + `.solverstate`, or the HDF5
pair), which a real Caffe reads and which are read from a real Caffe. Unlike Caffe they
are written through a temporary file and a rename, so a kill never leaves half a
snapshot, and training refuses to go on (or to snapshot) once the loss or the weights
stop being finite, so the last good snapshot is never replaced by NaN weights.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from . import _config, _log, protoio, upgrade
from . import pycaffe as _pycaffe  # noqa: F401  (Net's pycaffe methods)
from . import weights as _weights
from .errors import CaffeError, ParseError
from .net import Net, read_net_param
from .proto import caffe_pb2

__all__ = ['Solver', 'SGDSolver', 'NesterovSolver', 'AdaGradSolver', 'RMSPropSolver',
           'AdaDeltaSolver', 'AdamSolver', 'get_solver', 'get_solver_from_file',
           'get_solver_from_string', 'read_solver_param', 'SolverError', 'TrainingDivergedError',
           'SolverAction']

_SOLVER_CPP = 'solver.cpp'
_FUSED_SGD = getattr(torch, '_fused_sgd_', None)
_FUSED_ADAM = getattr(torch, '_fused_adam_', None)
_SGD_CPP = 'sgd_solver.cpp'


class SolverError(CaffeError):
    """A SolverParameter Caffe would reject (missing net, bad lr policy, bad state file...)."""


class TrainingDivergedError(CaffeError):
    """The loss (or the weights) became NaN or infinite; training stopped before using them."""

    def __init__(self, message: str, iteration: int, blob: Optional[str] = None):
        super().__init__(message)
        self.iteration = iteration
        self.blob = blob


class SolverAction:
    """What an external request (a signal, in `caffe train`) asks the solver to do."""
    NONE = 0
    STOP = 1
    SNAPSHOT = 2


def _g(x: float) -> str:
    """A number as C++'s ostream prints a float by default (6 significant digits)."""
    return '%g' % x


def _f32(x: float) -> float:
    """Round to float32, as Caffe keeps rates and scalars in Dtype."""
    return float(np.float32(x))


# ---- reading solver parameters -----------------------------------------------------------------

def read_solver_param(path: Union[str, os.PathLike]) -> caffe_pb2.SolverParameter:
    """A solver prototxt as an upgraded SolverParameter (legacy `solver_type` -> `type`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SolverError('solver file not found: %s' % path)
    param = protoio.read_text(path, caffe_pb2.SolverParameter)
    try:
        return upgrade.upgrade_solver(param)
    except CaffeError as e:
        raise SolverError('%s: %s' % (path, e)) from None


def _as_solver_param(spec) -> tuple:
    """(SolverParameter, source file or None) from a path, a SolverParameter or prototxt text."""
    if isinstance(spec, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(spec)
        return upgrade.upgrade_solver(param), None
    if isinstance(spec, (str, bytes, os.PathLike)):
        path = os.fsdecode(spec)
        return read_solver_param(path), path
    raise TypeError('a solver takes a solver prototxt path or a caffe_pb2.SolverParameter, '
                    'got %r' % type(spec).__name__)


class _Callback:
    """pycaffe's add_callback(on_start, on_gradients_ready) pair."""

    def __init__(self, on_start: Optional[Callable] = None,
                 on_gradients_ready: Optional[Callable] = None):
        self.on_start = on_start or (lambda: None)
        self.on_gradients_ready = on_gradients_ready or (lambda: None)


# ---- the solver loop ---------------------------------------------------------------------------

class Solver:
    """Caffe's Solver: nets, the training loop, testing, snapshots. Subclasses update weights."""

    type = ''
    # Caffe trains on through a NaN loss and snapshots NaN weights; we stop (see _diverged).
    stop_on_nonfinite_loss = True

    def __init__(self, spec, *_ignored):
        param, source = _as_solver_param(spec)
        self._source = source
        if self.type and param.type != self.type:
            _log.warning(_SOLVER_CPP + ':44', 'Solver file asks for type "%s"; building a %sSolver as '
                         'requested (use caffe.get_solver to follow the file)'
                         % (param.type, self.type))
        self._init(param)

    # ---- construction ------------------------------------------------------------------------
    def _init(self, param: caffe_pb2.SolverParameter) -> None:
        from google.protobuf import text_format
        if self._source:
            # As BVLC master reads solver files: no prefix means the solver file's path
            # without extension; a prefix naming a folder gets the file's stem appended.
            stem = os.path.splitext(self._source)[0]
            if not param.HasField('snapshot_prefix'):
                param.snapshot_prefix = stem
            elif os.path.isdir(param.snapshot_prefix):
                param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        _log.info(_SOLVER_CPP + ':48', 'Initializing solver from parameters: \n'
                  + text_format.MessageToString(param).rstrip('\n'))
        self._param = param
        if param.average_loss < 1:
            raise SolverError('average_loss should be non-negative.')
        if param.iter_size < 1:
            raise SolverError('iter_size must be at least 1, got %d' % param.iter_size)
        self._check_snapshot_write_permissions()
        if param.random_seed >= 0:
            _config.set_random_seed(param.random_seed)
        self._callbacks: List[_Callback] = []
        self._action_function: Optional[Callable[[], int]] = None
        self._requested_early_exit = False
        self._losses: List[float] = []
        self._smoothed_loss = 0.0
        self._learning_rate = 0.0
        self._last_snapshot: Optional[tuple] = None
        self._display_clock: Optional[tuple] = None
        self._net = self._init_train_net()
        self._test_nets = self._init_test_nets()
        for w in param.weights:   # BVLC master: weights to start from, listed in the solver
            _log.info(_SOLVER_CPP + ':129', 'Loading weights from ' + w)
            for net in [self._net] + self._test_nets:
                net.copy_from(w)
        _log.info(_SOLVER_CPP + ':60', 'Solver scaffolding done.')
        self._iter = 0
        self._current_step = 0
        self._mean_scores: List[List[float]] = [[] for _ in self._test_nets]
        self._pre_solve()

    def _resolve_net_file(self, path: str) -> str:
        """Caffe opens net files relative to the working directory; so do we. Where that
        file is missing but one sits beside the solver file, use it (Caffe would abort)."""
        if os.path.isfile(path) or os.path.isabs(path) or not self._source:
            return path
        beside = os.path.join(os.path.dirname(os.path.abspath(self._source)), path)
        if os.path.isfile(beside):
            _log.warning(_SOLVER_CPP + ':88', 'Net file %s not found relative to the working directory; '
                         'using %s (beside the solver file)' % (path, beside))
            return beside
        return path

    def _read_net(self, path: str) -> caffe_pb2.NetParameter:
        return read_net_param(self._resolve_net_file(path))

    def _init_train_net(self) -> Net:
        p = self._param
        fields = ('net', 'net_param', 'train_net', 'train_net_param')
        n = sum(p.HasField(f) for f in fields)
        if n < 1:
            raise SolverError('SolverParameter must specify a train net using one of these '
                              'fields: net, net_param, train_net, train_net_param')
        if n > 1:
            raise SolverError('SolverParameter must not contain more than one of these fields '
                              'specifying a train_net: net, net_param, train_net, train_net_param')
        where = _SOLVER_CPP + ':91'
        if p.HasField('train_net_param'):
            _log.info(where, 'Creating training net specified in train_net_param.')
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.train_net_param)
        elif p.HasField('train_net'):
            _log.info(where, 'Creating training net from train_net file: ' + p.train_net)
            net_param = self._read_net(p.train_net)
        elif p.HasField('net_param'):
            _log.info(where, 'Creating training net specified in net_param.')
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.net_param)
        else:
            _log.info(where, 'Creating training net from net file: ' + p.net)
            net_param = self._read_net(p.net)
        # Solver defaults, then the net's own state, then train_state (highest precedence).
        state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        return Net(net_param, int(state.phase), level=state.level)

    def _init_test_nets(self) -> List[Net]:
        p = self._param
        has_net_param, has_net_file = p.HasField('net_param'), p.HasField('net')
        if has_net_param and has_net_file:
            raise SolverError('Both net_param and net_file may not be specified.')
        num_test_nets = len(p.test_net_param) + len(p.test_net)
        if has_net_param or has_net_file:
            if len(p.test_iter) < num_test_nets:
                raise SolverError('test_iter must be specified for each test network.')
        elif len(p.test_iter) != num_test_nets:
            raise SolverError('test_iter must be specified for each test network.')
        instances = len(p.test_iter)
        if instances < num_test_nets:
            instances = num_test_nets
        if len(p.test_state) and len(p.test_state) != instances:
            raise SolverError('test_state must be unspecified or specified once per test net.')
        if instances and p.test_interval <= 0:
            raise SolverError('test_interval must be positive when test nets are given '
                              '(test_iter has %d entries)' % len(p.test_iter))
        sources, params = [], []
        for tp in p.test_net_param:
            sources.append('test_net_param')
            q = caffe_pb2.NetParameter()
            q.CopyFrom(tp)
            params.append(q)
        for f in p.test_net:
            sources.append('test_net file: ' + f)
            params.append(self._read_net(f))
        remaining = len(p.test_iter) - len(params)
        for _ in range(max(remaining, 0)):
            if has_net_param:
                sources.append('net_param')
                q = caffe_pb2.NetParameter()
                q.CopyFrom(p.net_param)
                params.append(q)
            elif has_net_file:
                sources.append('net file: ' + p.net)
                params.append(self._read_net(p.net))
        nets = []
        for i, (src, q) in enumerate(zip(sources, params)):
            state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
            state.MergeFrom(q.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            q.state.CopyFrom(state)
            _log.info(_SOLVER_CPP + ':181', 'Creating test net (#%d) specified by %s' % (i, src))
            nets.append(Net(q, int(state.phase), level=state.level))
        return nets

    def _snapshot_filename(self, extension: str) -> str:
        """`<snapshot_prefix>_iter_<N><extension>`, as Caffe's SnapshotFilename."""
        return self._snapshot_filename_for(self._iter, extension)

    def _check_snapshot_write_permissions(self) -> None:
        """Fail before training, not at the first snapshot, if snapshots cannot be written."""
        p = self._param
        if not p.snapshot:
            return
        if not p.HasField('snapshot_prefix'):
            raise SolverError('In solver params, snapshot is specified but snapshot_prefix is not')
        folder = os.path.dirname(os.path.abspath(self._snapshot_filename_for(0, '')))
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, '.caffe_write_probe_%d' % os.getpid())
            with open(probe, 'wb'):
                pass
            os.remove(probe)
        except OSError:
            raise SolverError("Cannot write to snapshot prefix '%s'.  Make sure that the "
                              "directory exists and is writeable." % p.snapshot_prefix) from None

    def _snapshot_filename_for(self, it: int, extension: str) -> str:
        return '%s_iter_%d%s' % (self._param.snapshot_prefix, it, extension)

    # ---- pycaffe surface ---------------------------------------------------------------------
    @property
    def net(self) -> Net:
        """The training net."""
        return self._net

    @property
    def test_nets(self) -> List[Net]:
        """The test nets, in the order Caffe numbers them (#0, #1, ...)."""
        return list(self._test_nets)

    @property
    def iter(self) -> int:
        """How many times the weights have been updated."""
        return self._iter

    @property
    def param(self) -> caffe_pb2.SolverParameter:
        return self._param

    @property
    def smoothed_loss(self) -> float:
        return self._smoothed_loss

    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """Call `on_start()` before each iteration's passes and `on_gradients_ready()` before
        its update (pycaffe's add_callback; an object with both methods also works)."""
        if on_gradients_ready is None and hasattr(on_start, 'on_gradients_ready'):
            obj = on_start
            self._callbacks.append(_Callback(getattr(obj, 'on_start', None), obj.on_gradients_ready))
        else:
            self._callbacks.append(_Callback(on_start, on_gradients_ready))

    def set_action_function(self, func: Optional[Callable[[], int]]) -> None:
        """A function polled every iteration for a SolverAction (signals in `caffe train`)."""
        self._action_function = func

    def _requested_action(self) -> int:
        return self._action_function() if self._action_function else SolverAction.NONE

    # ---- training ----------------------------------------------------------------------------
    def step(self, iters: int) -> None:
        """Run `iters` training iterations (Caffe's Solver::Step)."""
        p = self._param
        start_iter = self._iter
        stop_iter = self._iter + int(iters)
        average_loss = p.average_loss
        self._losses = []
        self._smoothed_loss = 0.0
        self._learning_rate = 0.0
        if self._display_clock is None:
            # Kept across step() calls: py-faster-rcnn drives training with step(1).
            self._display_clock = (time.perf_counter(), self._iter)
        net = self._net
        while self._iter < stop_iter:
            net.clear_param_diffs()
            if (p.test_interval and self._iter % p.test_interval == 0
                    and (self._iter > 0 or p.test_initialization)):
                self.test_all()
                if self._requested_early_exit:
                    break
            for cb in self._callbacks:
                cb.on_start()
            display = bool(p.display) and self._iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                loss += net.forward_backward()
            loss /= p.iter_size
            self._update_smoothed_loss(loss, start_iter, average_loss)
            if display:
                since, iterations_last = self._display_clock
                lapse = time.perf_counter() - since
                if _iter_speed_style():
                    per_s = (self._iter - iterations_last) / (lapse or 1.0)
                    _log.info(_SOLVER_CPP + ':243', 'Iteration %d (%s iter/s, %ss/%d iters), loss = %s'
                              % (self._iter, _g(per_s), _g(lapse), p.display,
                                 _g(self._smoothed_loss)))
                else:
                    _log.info(_SOLVER_CPP + ':229', 'Iteration %d, loss = %s'
                              % (self._iter, _g(self._smoothed_loss)))
                self._display_clock = (time.perf_counter(), self._iter)
                self._log_outputs(net, 'Train', _SOLVER_CPP + ':245', None)
            if not math.isfinite(loss) and self.stop_on_nonfinite_loss:
                self._diverged(loss)
            for cb in self._callbacks:
                cb.on_gradients_ready()
            self.apply_update()
            self._iter += 1
            request = self._requested_action()
            if (p.snapshot and self._iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT:
                self.snapshot()
            if request == SolverAction.STOP:
                self._requested_early_exit = True
                break

    def solve(self, resume_file: Optional[str] = None) -> None:
        """Train to `max_iter` (Caffe's Solver::Solve), optionally resuming a .solverstate."""
        p = self._param
        _log.info(_SOLVER_CPP + ':280', 'Solving ' + self._net.name)
        _log.info(_SOLVER_CPP + ':281', 'Learning Rate Policy: ' + p.lr_policy)
        self._requested_early_exit = False
        if resume_file:
            _log.info(_SOLVER_CPP + ':289', 'Restoring previous solver status from %s' % resume_file)
            self.restore(resume_file)
        start_iter = self._iter
        self.step(p.max_iter - self._iter)
        if p.snapshot_after_train and (not p.snapshot or self._iter % p.snapshot != 0):
            self.snapshot()
        if self._requested_early_exit:
            _log.info(_SOLVER_CPP + ':309', 'Optimization stopped early.')
            return
        if p.display and self._iter % p.display == 0:
            with torch.no_grad():
                loss = self._net._forward(0, len(self._net.layers) - 1)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            _log.info(_SOLVER_CPP + ':318', 'Iteration %d, loss = %s'
                      % (self._iter, _g(self._smoothed_loss)))
        if p.test_interval and self._iter % p.test_interval == 0:
            self.test_all()
        _log.info(_SOLVER_CPP + ':323', 'Optimization Done.')

    def _update_smoothed_loss(self, loss: float, start_iter: int, average_loss: int) -> None:
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self._smoothed_loss = (self._smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self._iter - start_iter) % average_loss
            self._smoothed_loss += (loss - self._losses[idx]) / average_loss
            self._losses[idx] = loss

    def _log_outputs(self, net: Net, kind: str, where: str, values: Optional[List[float]]) -> None:
        """`    Train net output #k: name = v (* w = v loss)` lines, as Caffe prints them."""
        weights = net.blob_loss_weights
        k = 0
        for name in net.outputs:
            w = weights[name]
            vals = net.blobs[name].data.reshape(-1) if values is None else None
            count = net.blobs[name].count
            for j in range(count):
                v = float(vals[j]) if values is None else values[k]
                extra = ' (* %s = %s loss)' % (_g(w), _g(_f32(w * v))) if w else ''
                _log.info(where, '    %s net output #%d: %s = %s%s' % (kind, k, name, _g(v), extra))
                k += 1

    def _diverged(self, loss: float) -> None:
        """Stop before a NaN/inf loss reaches the weights; name the iteration and the blob."""
        bad = []
        weights = self._net.blob_loss_weights
        for name, w in weights.items():
            if w:
                arr = self._net.blobs[name].data
                if not np.all(np.isfinite(arr)):
                    bad.append(name)
        blob = bad[0] if bad else None
        which = ('loss blob %s' % ', '.join("'%s'" % b for b in bad)) if bad else 'the loss'
        kept = ('; the last snapshot, %s, is kept' % self._last_snapshot[0]
                if self._last_snapshot else '; no snapshot was written by this run')
        msg = ('Iteration %d: %s is %s; training stopped before applying this update%s'
               % (self._iter, which, _g(loss), kept))
        _log.error(_SOLVER_CPP + ':232', msg)
        raise TrainingDivergedError(msg, self._iter, blob)

    # ---- testing -----------------------------------------------------------------------------
    def test_all(self) -> None:
        for i in range(len(self._test_nets)):
            if self._requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0) -> List[float]:
        """Run test net `test_net_id` for its test_iter batches; log and return mean outputs."""
        p = self._param
        _log.info(_SOLVER_CPP + ':338', 'Iteration %d, Testing net (#%d)' % (self._iter, test_net_id))
        test_net = self._test_nets[test_net_id]
        test_net.share_with(self._net)
        scores: Optional[np.ndarray] = None
        loss = 0.0
        n = p.test_iter[test_net_id]
        last = len(test_net.layers) - 1
        for _ in range(n):
            request = self._requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self._requested_early_exit = True
                request = self._requested_action()
            if self._requested_early_exit:
                break
            with torch.no_grad():
                iter_loss = test_net._forward(0, last) if last >= 0 else 0.0
            if p.test_compute_loss:
                loss += iter_loss
            result = np.concatenate([test_net.blobs[o].data.reshape(-1).astype(np.float64)
                                     for o in test_net.outputs]) if test_net.outputs else np.zeros(0)
            scores = result.copy() if scores is None else scores + result
        if self._requested_early_exit:
            _log.info(_SOLVER_CPP + ':374', 'Test interrupted.')
            return []
        if p.test_compute_loss:
            loss /= n
            _log.info(_SOLVER_CPP + ':381', 'Test loss: %s' % _g(loss))
        means = [] if scores is None else [float(_f32(s / n)) for s in scores]
        self._mean_scores[test_net_id] = means
        if means:
            self._log_outputs(test_net, 'Test', _SOLVER_CPP + ':406', means)
        return means

    # ---- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Write `<prefix>_iter_N.caffemodel` (or .caffemodel.h5) and the solver state.

        Refuses (TrainingDivergedError) if any weight is NaN or infinite, so that a good
        snapshot of an earlier iteration is never followed by a poisoned one.
        """
        bad = self._nonfinite_param()
        if bad is not None:
            msg = ('Iteration %d: parameter %s is not finite; not snapshotting%s'
                   % (self._iter, bad, '; the last snapshot, %s, is kept' % self._last_snapshot[0]
                      if self._last_snapshot else ''))
            _log.error(_SOLVER_CPP + ':232', msg)
            raise TrainingDivergedError(msg, self._iter, None)
        p = self._param
        if p.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            model = self._snapshot_filename('.caffemodel.h5')
            _log.info(_SOLVER_CPP + ':466', 'Snapshotting to HDF5 file ' + model)
            _weights.save_hdf5(self._net, model, write_diff=p.snapshot_diff)
            state = self._snapshot_solver_state_hdf5(model)
        else:
            model = self._snapshot_filename('.caffemodel')
            _log.info(_SOLVER_CPP + ':456', 'Snapshotting to binary proto file ' + model)
            if p.snapshot_diff:
                protoio.write_binary(model, _weights.net_to_proto(self._net, True))
            else:
                _weights.save_caffemodel(self._net, model)   # streamed, atomic
            state = self._snapshot_solver_state_binary(model)
        self._last_snapshot = (model, state)

    def _nonfinite_param(self) -> Optional[str]:
        params = self._net._learnable_params
        if not params:
            return None
        flags = [torch.isfinite(b.tensor).all() for b in params]
        ok = torch.stack(flags).cpu().numpy()
        if ok.all():
            return None
        i = int(np.argmin(ok))
        for pid, lid in enumerate(self._net._learnable_param_ids):
            if lid == i and self._net._param_owners[pid] < 0:
                li, pi = self._net._param_layer_indices[pid]
                return "'%s' #%d" % (self._net._layer_names[li], pi)
        return '#%d' % i

    def _snapshot_solver_state_binary(self, model_filename: str) -> str:
        raise NotImplementedError

    def _snapshot_solver_state_hdf5(self, model_filename: str) -> str:
        raise NotImplementedError

    def restore(self, state_file: str) -> None:
        """Continue from a .solverstate (or .solverstate.h5) written by Caffe or by us."""
        state_file = os.fspath(state_file)
        if not os.path.isfile(state_file):
            raise SolverError('solver state file not found: %s' % state_file)
        if state_file.endswith('.h5'):
            self._restore_hdf5(state_file)
        else:
            self._restore_binary(state_file)

    def _restore_binary(self, state_file: str) -> None:
        raise NotImplementedError

    def _restore_hdf5(self, state_file: str) -> None:
        raise NotImplementedError

    def _pre_solve(self) -> None:
        pass

    def apply_update(self) -> None:
        raise NotImplementedError


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _solver_state_chunks(it: int, learned_net: str, current_step: int,
                         history: Sequence[np.ndarray]) -> list:
    """A SolverState message as byte chunks whose large parts are views of the history
    arrays, so VGG16's half a gigabyte of history is written without being copied into a
    protobuf message and then into one bytes object (what SerializeToString would do).

    Wire layout (caffe.proto): iter = 1, learned_net = 2, history = 3 (BlobProto: packed
    data = 5 or double_data = 8, shape = 7), current_step = 4.
    """
    head = caffe_pb2.SolverState(iter=it, learned_net=learned_net).SerializeToString()
    chunks: list = [head]
    for arr in history:
        double = arr.dtype == np.float64
        flat = np.ascontiguousarray(arr, dtype='<f8' if double else '<f4').reshape(-1)
        shape = caffe_pb2.BlobShape(dim=list(arr.shape)).SerializeToString()
        parts = [b'\x3a' + _varint(len(shape)) + shape]      # shape (7)
        body = []
        if flat.size:
            body = [_varint(((8 if double else 5) << 3) | 2) + _varint(flat.nbytes),
                    memoryview(flat).cast('B')]
        size = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in body + parts)
        chunks.append(b'\x1a' + _varint(size))                # history (3)
        chunks.extend(body + parts)
    chunks.append(caffe_pb2.SolverState(current_step=current_step).SerializeToString()
                  if current_step else b'')
    return chunks


_FUSED_SGD_OK: Dict[tuple, bool] = {}


def _fused_sgd_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused SGD kernel exists for this device and float type and computes
    buf = m*buf + (1-dampening)*(g + wd*w); w -= lr*buf (checked once on a tiny example)."""
    key = (str(device), dtype)
    ok = _FUSED_SGD_OK.get(key)
    if ok is None:
        ok = False
        if _FUSED_SGD is not None:
            try:
                w = torch.tensor([1.0, -2.0], dtype=dtype, device=device)
                g = torch.tensor([0.5, 0.25], dtype=dtype, device=device)
                h = torch.tensor([0.1, 0.2], dtype=dtype, device=device)
                _FUSED_SGD([w], [g], [h], weight_decay=0.5, momentum=0.9, lr=1.0, dampening=0.75,
                           nesterov=False, maximize=False, is_first_step=False)
                want_h = torch.tensor([0.09 + 0.25 * 1.0, 0.18 + 0.25 * -0.75], dtype=torch.float64)
                ok = (torch.allclose(h.double().cpu(), want_h, atol=1e-6)
                      and torch.allclose(w.double().cpu(), torch.tensor([1.0, -2.0]).double() - want_h,
                                         atol=1e-6)
                      and torch.equal(g.cpu(), torch.tensor([0.5, 0.25], dtype=dtype)))
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _FUSED_SGD_OK[key] = ok
    return ok


def _fused_adam_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused Adam kernel exists here and computes, with grad_scale s and
    t = state step: g' = g/s + wd*w; m = lerp(m, g', 1-b1); v = b2*v + (1-b2)*g'^2;
    w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) (checked once on a tiny example)."""
    key = ('adam', str(device), dtype)
    ok = _FUSED_SGD_OK.get(key)
    if ok is None:
        ok = False
        if _FUSED_ADAM is not None:
            try:
                mk = lambda *v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
                w, g, m, v = mk(1.0, -2.0), mk(0.5, 0.25), mk(0.1, 0.2), mk(0.01, 0.02)
                step = torch.tensor(3.0, device=device)
                scale = torch.tensor(2.0, device=device)
                _FUSED_ADAM([w], [g], [m], [v], [], [step], lr=0.1, beta1=0.9, beta2=0.999,
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
        _FUSED_SGD_OK[key] = ok
    return ok


def _iter_speed_style() -> bool:
    """BVLC master prints `Iteration N (x iter/s, ys/M iters), loss = v`; the fork (and by
    default, we) print `Iteration N, loss = v`. CAFFE_LOG_ITER_SPEED=1 selects the former."""
    return os.environ.get('CAFFE_LOG_ITER_SPEED', '') not in ('', '0')


def _find_learned_net(path: str, state_file: str) -> str:
    """The weights a solver state names: as written (Caffe opens it relative to the working
    directory), else beside the state file, so a moved snapshot folder still resumes."""
    if os.path.isfile(path):
        return path
    folder = os.path.dirname(os.path.abspath(state_file))
    for cand in (os.path.join(folder, path), os.path.join(folder, os.path.basename(path))):
        if os.path.isfile(cand):
            _log.info(_SGD_CPP + ':312', 'learned_net %s not found; using %s' % (path, cand))
            return cand
    raise SolverError('%s: learned_net %s not found (nor beside the state file)' % (state_file, path))


# ---- SGD and its family ------------------------------------------------------------------------

class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: v = momentum*v + lr*(g + decay); w -= v."""

    type = 'SGD'
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

    # ---- learning rate ---------------------------------------------------------------------
    def get_learning_rate(self) -> float:
        """Caffe's SGDSolver::GetLearningRate for the current iteration."""
        p = self._param
        policy = p.lr_policy
        it = self._iter
        base = p.base_lr
        if policy == 'fixed':
            rate = base
        elif policy == 'step':
            if p.stepsize <= 0:
                raise SolverError('lr_policy "step" needs stepsize > 0 (got %d)' % p.stepsize)
            self._current_step = it // p.stepsize
            if p.gamma < 0:
                raise SolverError('lr_policy "step" needs gamma >= 0')
            rate = base * math.pow(p.gamma, self._current_step)
        elif policy == 'exp':
            if p.gamma < 0:
                raise SolverError('lr_policy "exp" needs gamma >= 0')
            rate = base * math.pow(p.gamma, it)
        elif policy == 'inv':
            if p.gamma < 0:
                raise SolverError('lr_policy "inv" needs gamma >= 0')
            rate = base * math.pow(1.0 + _f32(p.gamma * it), -p.power)
        elif policy == 'multistep':
            if self._current_step < len(p.stepvalue) and it >= p.stepvalue[self._current_step]:
                self._current_step += 1
                _log.info(_SGD_CPP + ':46', 'MultiStep Status: Iteration %d, step = %d'
                          % (it, self._current_step))
            if p.gamma < 0:
                raise SolverError('lr_policy "multistep" needs gamma >= 0')
            rate = base * math.pow(p.gamma, self._current_step)
        elif policy == 'poly':
            if p.max_iter <= 0:
                raise SolverError('lr_policy "poly" needs max_iter > 0')
            rate = base * math.pow(1.0 - _f32(float(it) / p.max_iter), p.power)
        elif policy == 'sigmoid':
            if p.gamma < 0:
                raise SolverError('lr_policy "sigmoid" needs gamma >= 0')
            if p.stepsize <= 0:
                raise SolverError('lr_policy "sigmoid" needs stepsize > 0')
            rate = base * (1.0 / (1.0 + math.exp(-p.gamma * (float(it) - float(p.stepsize)))))
        else:
            raise SolverError('Unknown learning rate policy: %s' % policy)
        return _f32(rate)

    # ---- the update ------------------------------------------------------------------------
    def apply_update(self) -> None:
        """One weight update from the gradients in the param diffs (SGDSolver::ApplyUpdate)."""
        p = self._param
        rate = self.get_learning_rate()
        self._learning_rate = rate
        if p.display and self._iter % p.display == 0:
            _log.info(_SGD_CPP + ':106', 'Iteration %d, lr = %s' % (self._iter, _g(rate)))
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
            torch._foreach_mul_(g_act, _f32(1.0 / p.iter_size))
        self._regularize(active, ws, gs)
        self._compute_update_value(active, w_act, g_act, rate)
        torch._foreach_sub_(w_act, g_act)

    # Set False to always run the step-by-step path (whose diffs end up holding the update,
    # as Caffe's do); the fused paths (SGD, Adam) leave the gradient in the diffs instead.
    use_fused_update = True

    def _fused_update(self, active: List[int], ws, gs, rate: float) -> bool:
        """Plain SGD in one pass per tensor with torch's fused SGD kernel.

        Caffe's update h = m*h + lr*(g/k + d*w); w -= h (k = iter_size, d the local decay)
        is torch's SGD with dampening 1 - lr/k, weight decay d*k and step size 1:
        buf = m*buf + (lr/k)*(g + d*k*w); w -= buf. That reads w, g and h once and writes w
        and h once, instead of Caffe's five separate passes. Used for type SGD with momentum
        and L2 (or no) regularisation; anything else takes the step-by-step path.
        """
        p = self._param
        if (type(self) is not SGDSolver or not self.use_fused_update or p.momentum == 0
                or _FUSED_SGD is None or any(ws[i].device != ws[active[0]].device
                                             or ws[i].dtype != ws[active[0]].dtype for i in active)):
            return False
        k = p.iter_size
        groups: Dict[tuple, List[int]] = {}
        for i in active:
            local_decay = _f32(p.weight_decay * self._decay_mults[i])
            if local_decay and p.regularization_type != 'L2':
                return False
            groups.setdefault((_f32(rate * self._lr_mults[i]), local_decay), []).append(i)
        if not _fused_sgd_works(ws[active[0]].device, ws[active[0]].dtype):
            return False
        for (local_rate, local_decay), idx in groups.items():
            _FUSED_SGD([ws[i] for i in idx], [gs[i] for i in idx],
                       [self._history[i] for i in idx], weight_decay=local_decay * k,
                       momentum=p.momentum, lr=1.0, dampening=1.0 - local_rate / k,
                       nesterov=False, maximize=False, is_first_step=False)
        for i in active:
            self._hist_zero[i] = False
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
            scale = _f32(clip / l2)
            _log.info(_SGD_CPP + ':94', 'Gradient clipping: scaling down gradients (L2 norm %s > %s) by '
                      'scale factor %s' % (_g(l2), _g(clip), _g(scale)))
            torch._foreach_mul_(gs, scale)

    def _regularize(self, active: List[int], ws, gs) -> None:
        p = self._param
        groups: Dict[float, List[int]] = {}
        for i in active:
            local_decay = _f32(p.weight_decay * self._decay_mults[i])
            if local_decay:
                groups.setdefault(local_decay, []).append(i)
        if not groups:
            return
        kind = p.regularization_type
        if kind not in ('L2', 'L1'):
            raise SolverError('Unknown regularization type: %s' % kind)
        for decay, idx in groups.items():
            g = [gs[i] for i in idx]
            w = [ws[i] for i in idx]
            if kind == 'L2':
                torch._foreach_add_(g, w, alpha=decay)
            else:
                torch._foreach_add_(g, torch._foreach_sign(w), alpha=decay)

    def _local_rates(self, active: List[int], rate: float) -> List[float]:
        return [_f32(rate * self._lr_mults[i]) for i in active]

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        momentum = self._param.momentum
        h = [self._history[i] for i in active]
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        torch._foreach_mul_(h, momentum)
        torch._foreach_add_(h, gs)
        torch._foreach_copy_(gs, h)
        for i in active:
            self._hist_zero[i] = False

    # ---- state files ---------------------------------------------------------------------
    def _snapshot_solver_state_binary(self, model_filename: str) -> str:
        path = self._snapshot_filename('.solverstate')
        _log.info(_SGD_CPP + ':273', 'Snapshotting solver state to binary proto file ' + path)
        chunks = _solver_state_chunks(self._iter, model_filename, self._current_step,
                                      [h.detach().cpu().numpy() for h in self._history])
        write_chunks = getattr(protoio, 'atomic_write_chunks', None)
        if write_chunks is not None:
            write_chunks(path, chunks)
        else:
            protoio.atomic_write(path, b''.join(bytes(c) for c in chunks))
        return path

    def _snapshot_solver_state_hdf5(self, model_filename: str) -> str:
        import h5py
        path = self._snapshot_filename('.solverstate.h5')
        _log.info(_SGD_CPP + ':290', 'Snapshotting solver state to HDF5 file ' + path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, '.%s.%d.tmp' % (os.path.basename(path), os.getpid()))
        try:
            with h5py.File(tmp, 'w') as f:
                f.create_dataset('iter', data=np.array([self._iter], np.int32))
                f.create_dataset('learned_net', data=np.bytes_(model_filename.encode('utf-8')))
                f.create_dataset('current_step', data=np.array([self._current_step], np.int32))
                g = f.create_group('history')
                for i, h in enumerate(self._history):
                    g.create_dataset(str(i), data=h.detach().cpu().numpy())
            with open(tmp, 'rb') as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def _set_history(self, arrays: List[np.ndarray], state_file: str) -> None:
        if len(arrays) != len(self._history):
            raise SolverError('%s: Incorrect length of history blobs: the state has %d, a %s '
                              'solver for this net needs %d' % (state_file, len(arrays),
                                                                self.type, len(self._history)))
        _log.info(_SGD_CPP + ':325', 'SGDSolver: restoring history')
        for i, arr in enumerate(arrays):
            h = self._history[i]
            if arr.size != h.numel():
                raise SolverError('%s: history blob %d has %d values; parameter %d of the net '
                                  'has %d' % (state_file, i, arr.size, i % len(
                                      self._net._learnable_params), h.numel()))
            h.copy_(torch.from_numpy(np.ascontiguousarray(arr).reshape(h.shape)).to(h.dtype))
            self._hist_zero[i] = not bool(np.any(arr))

    def _restore_binary(self, state_file: str) -> None:
        state = protoio.read_binary(state_file, caffe_pb2.SolverState)
        self._iter = state.iter
        if state.HasField('learned_net') and state.learned_net:
            self._net.copy_from(_find_learned_net(state.learned_net, state_file))
        self._current_step = state.current_step
        arrays = [_weights.proto_to_array(bp) for bp in state.history]
        self._set_history(arrays, state_file)

    def _restore_hdf5(self, state_file: str) -> None:
        import h5py
        try:
            f = h5py.File(state_file, 'r')
        except OSError as e:
            raise ParseError(state_file, 'cannot open solver state: %s' % e) from None
        with f:
            self._iter = int(np.asarray(f['iter']).reshape(-1)[0])
            if 'learned_net' in f:
                raw = f['learned_net'][()]
                name = raw.decode('utf-8') if isinstance(raw, bytes) else str(np.asarray(raw).reshape(-1)[0])
                if isinstance(name, bytes):
                    name = name.decode('utf-8')
                name = name.rstrip('\x00')
                if name:
                    self._net.copy_from(_find_learned_net(name, state_file))
            self._current_step = int(np.asarray(f['current_step']).reshape(-1)[0]) \
                if 'current_step' in f else 0
            hist = f['history']
            arrays = [np.asarray(hist[str(i)]) for i in range(len(hist))]
        self._set_history(arrays, state_file)


class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient: v' = m*v + lr*g; step = (1+m)*v' - m*v."""

    type = 'Nesterov'

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        momentum = self._param.momentum
        h = [self._history[i] for i in active]
        old = torch._foreach_mul(h, -momentum)           # -m * v (the step back)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        torch._foreach_mul_(h, momentum)
        torch._foreach_add_(h, gs)                        # v' = m*v + lr*g
        torch._foreach_copy_(gs, old)
        torch._foreach_add_(gs, h, alpha=_f32(1.0 + momentum))
        for i in active:
            self._hist_zero[i] = False


class AdaGradSolver(SGDSolver):
    """AdaGrad: h += g^2; step = lr * g / (sqrt(h) + delta)."""

    type = 'AdaGrad'
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
        for i in active:
            self._hist_zero[i] = False


class RMSPropSolver(SGDSolver):
    """RMSProp: h = d*h + (1-d)*g^2; step = lr * g / (sqrt(h) + delta)."""

    type = 'RMSProp'
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
        torch._foreach_addcmul_(h, gs, gs, value=_f32(1.0 - d))
        denom = torch._foreach_sqrt(h)
        torch._foreach_add_(denom, p.delta)
        torch._foreach_div_(gs, denom)
        torch._foreach_mul_(gs, self._local_rates(active, rate))
        for i in active:
            self._hist_zero[i] = False


class AdaDeltaSolver(SGDSolver):
    """AdaDelta: h_g = m*h_g + (1-m)*g^2; s = g*sqrt((h_u+delta)/(h_g+delta));
    h_u = m*h_u + (1-m)*s^2; step = lr * s. History: N gradient then N update buffers."""

    type = 'AdaDelta'
    _history_per_param = 2
    _skips_frozen = False

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        p = self._param
        m, delta = p.momentum, p.delta
        n = len(self._net._learnable_params)
        hg = [self._history[i] for i in active]
        hu = [self._history[n + i] for i in active]
        one_minus = _f32(1.0 - m)
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
        for i in active:
            self._hist_zero[i] = self._hist_zero[n + i] = False


class AdamSolver(SGDSolver):
    """Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    step = lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), t = iter + 1.
    History: N first-moment then N second-moment buffers."""

    type = 'Adam'
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
        if not self.use_fused_update or _FUSED_ADAM is None:
            return False
        dev, dt = ws[active[0]].device, ws[active[0]].dtype
        groups: Dict[tuple, List[int]] = {}
        for i in active:
            local_decay = _f32(p.weight_decay * self._decay_mults[i])
            if local_decay and p.regularization_type != 'L2':
                return False
            if ws[i].device != dev or ws[i].dtype != dt:
                return False
            groups.setdefault((_f32(rate * self._lr_mults[i]), local_decay), []).append(i)
        if not _fused_adam_works(dev, dt):
            return False
        n = len(self._net._learnable_params)
        t = self._iter + 1
        eps = p.delta / math.sqrt(1.0 - math.pow(p.momentum2, t))
        step = torch.tensor(float(t), device=dev)
        scale = torch.tensor(float(p.iter_size), device=dev) if p.iter_size > 1 else None
        for (local_rate, local_decay), idx in groups.items():
            _FUSED_ADAM([ws[i] for i in idx], [gs[i] for i in idx],
                        [self._history[i] for i in idx], [self._history[n + i] for i in idx],
                        [], [step] * len(idx), lr=local_rate, beta1=p.momentum,
                        beta2=p.momentum2, weight_decay=local_decay, eps=eps, amsgrad=False,
                        maximize=False, grad_scale=scale, found_inf=None)
        for i in active:
            self._hist_zero[i] = self._hist_zero[n + i] = False
        return True

    def _compute_update_value(self, active, ws, gs, rate) -> None:
        p = self._param
        b1, b2, eps = p.momentum, p.momentum2, p.delta
        n = len(self._net._learnable_params)
        t = self._iter + 1
        correction = _f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
        ms = [self._history[i] for i in active]
        vs = [self._history[n + i] for i in active]
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, gs, alpha=_f32(1.0 - b1))
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=_f32(1.0 - b2))
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps)
        torch._foreach_zero_(gs)
        torch._foreach_addcdiv_(gs, ms, denom, [_f32(r * correction)
                                                for r in self._local_rates(active, rate)])
        for i in active:
            self._hist_zero[i] = self._hist_zero[n + i] = False


SOLVER_CLASSES = {c.type: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                      AdaDeltaSolver, AdamSolver)}


def _create(param: caffe_pb2.SolverParameter, source: Optional[str]) -> Solver:
    cls = SOLVER_CLASSES.get(param.type)
    if cls is None:
        raise SolverError('Unknown solver type: %s (known types: %s)'
                          % (param.type, ', '.join(sorted(SOLVER_CLASSES))))
    solver = cls.__new__(cls)
    solver._source = source
    solver._init(param)
    return solver


def get_solver(spec) -> Solver:
    """A solver of the class the file's `type` (or legacy `solver_type`) names."""
    param, source = _as_solver_param(spec)
    return _create(param, source)


def get_solver_from_file(path: str) -> Solver:
    return get_solver(path)


def get_solver_from_string(text: str) -> Solver:
    """A solver from prototxt text (relative net paths are taken from the working directory)."""
    param = protoio.parse_text(text, caffe_pb2.SolverParameter(), '<solver string>')
    return _create(upgrade.upgrade_solver(param), None)
