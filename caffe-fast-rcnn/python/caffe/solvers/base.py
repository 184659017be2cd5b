"""Caffe's Solver: the nets, the training loop, testing, display and snapshots.

    Step:  clear param diffs; test every `test_interval` (and at iteration 0 unless
           `test_initialization: false`); `iter_size` forward/backward passes whose
           gradients accumulate; smooth the loss over `average_loss` iterations; display;
           ApplyUpdate (the subclass's); ++iter; snapshot every `snapshot` iterations.

Unlike Caffe, training refuses to go on (or to snapshot) once the loss or the weights stop
being finite, so the last good snapshot is never replaced by NaN weights.

Data-parallel training (caffe.parallel): as in Caffe, rank r seeds its random streams with
random_seed + r, and only the root solver (rank 0) builds test nets, tests, snapshots and
logs. A DataParallel callback averages the gradients before the update; it also returns
what the ranks agreed on (the mean loss, stop/snapshot requests, non-finite losses), which
the loop then uses instead of this rank's own values, so every rank takes the same
decisions at the same iteration.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Callable, List, Optional

import numpy as np
import torch

from .. import _config, _log
from .. import parallel as _parallel
from .. import pycaffe as _pycaffe  # noqa: F401  (Net's pycaffe methods)
from ..net import Net
from ..proto import caffe_pb2
from . import snapshot as _snapshot
from ._numbers import SOLVER_CPP, f32, g
from .detection_eval import DetectionAccumulator, DetectionEvalError
from .errors import SolverError, TrainingDivergedError
from .nets import build_test_nets, build_train_net
from .params import as_solver_param


# eval_type -> the test method (Caffe's TestAll dispatch; SSD adds "detection").
EVAL_TYPES = {'classification': 'test', 'detection': 'test_detection'}


class SolverAction:
    """What an external request (a signal, in `caffe train`) asks the solver to do."""
    NONE = 0
    STOP = 1
    SNAPSHOT = 2


class _Callback:
    """pycaffe's add_callback(on_start, on_gradients_ready) pair."""

    def __init__(self, on_start: Optional[Callable] = None,
                 on_gradients_ready: Optional[Callable] = None):
        self.on_start = on_start or (lambda: None)
        self.on_gradients_ready = on_gradients_ready or (lambda: None)


def _iter_speed_style() -> bool:
    """BVLC master prints `Iteration N (x iter/s, ys/M iters), loss = v`; the fork (and by
    default, we) print `Iteration N, loss = v`. CAFFE_LOG_ITER_SPEED=1 selects the former."""
    return os.environ.get('CAFFE_LOG_ITER_SPEED', '') not in ('', '0')


class Solver:
    """Caffe's Solver: nets, the training loop, testing, snapshots. Subclasses update weights."""

    type = ''
    # Caffe trains on through a NaN loss and snapshots NaN weights; we stop (see _diverged).
    stop_on_nonfinite_loss = True

    def __init__(self, spec, *_ignored):
        param, source = as_solver_param(spec)
        self._source = source
        if self.type and param.type != self.type:
            _log.warning(SOLVER_CPP + ':44', 'Solver file asks for type "%s"; building a %sSolver as '
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
        _log.info(SOLVER_CPP + ':48', 'Initializing solver from parameters: \n'
                  + text_format.MessageToString(param).rstrip('\n'))
        self._param = param
        if param.average_loss < 1:
            raise SolverError('average_loss should be non-negative.')
        if param.iter_size < 1:
            raise SolverError('iter_size must be at least 1, got %d' % param.iter_size)
        if param.eval_type not in EVAL_TYPES:
            raise SolverError('Unknown evaluation type: %s (use %s)' % (
                param.eval_type, ' or '.join('"%s"' % t for t in EVAL_TYPES)))
        rank = _parallel.solver_rank()
        if rank == 0:
            self._check_snapshot_write_permissions()
        if param.random_seed >= 0:
            _config.set_random_seed(param.random_seed + rank)
        self._data_parallel = None   # set by caffe.parallel.DataParallel
        self._last_pass = True       # whether the running forward/backward is the last of iter_size
        self._iter_loss = 0.0
        self._callbacks: List[_Callback] = []
        self._action_function: Optional[Callable[[], int]] = None
        self._requested_early_exit = False
        self._losses: List[float] = []
        self._smoothed_loss = 0.0
        self._learning_rate = 0.0
        self._last_snapshot: Optional[tuple] = None
        self._display_clock: Optional[tuple] = None
        self._net = build_train_net(param, self._source)
        # As Caffe: only the root solver tests.
        self._test_nets = build_test_nets(param, self._source) if rank == 0 else []
        for w in param.weights:   # BVLC master: weights to start from, listed in the solver
            _log.info(SOLVER_CPP + ':129', 'Loading weights from ' + w)
            for net in [self._net] + self._test_nets:
                net.copy_from(w)
        _log.info(SOLVER_CPP + ':60', 'Solver scaffolding done.')
        self._iter = 0
        self._current_step = 0
        self._mean_scores: List[List[float]] = [[] for _ in self._test_nets]
        self._pre_solve()

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
            # An unnamed file where the system allows (O_TMPFILE): nothing to leave behind.
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            raise SolverError("Cannot write to snapshot prefix '%s'.  Make sure that the "
                              "directory exists and is writeable." % p.snapshot_prefix) from None
        _snapshot.remove_stale_temps(p.snapshot_prefix)   # debris of a killed earlier run

    def _snapshot_filename(self, extension: str) -> str:
        """`<snapshot_prefix>_iter_<N><extension>`, as Caffe's SnapshotFilename."""
        return self._snapshot_filename_for(self._iter, extension)

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

    def _local_votes(self) -> tuple:
        """(stop, snapshot) this rank asks for at the end of an iteration; data-parallel
        training sums the votes of all ranks (see caffe.parallel.sync)."""
        request = self._requested_action()
        stop = request == SolverAction.STOP or self._requested_early_exit
        return stop, request == SolverAction.SNAPSHOT

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
            dp = self._data_parallel
            net.clear_param_diffs(lazy=True)
            if (p.test_interval and self._iter % p.test_interval == 0
                    and (self._iter > 0 or p.test_initialization)):
                self.test_all()
                # With several ranks a stop asked for during the test is voted on at the end
                # of this iteration, so that all ranks stop together.
                if self._requested_early_exit and dp is None:
                    break
            for cb in self._callbacks:
                cb.on_start()
            display = bool(p.display) and self._iter % p.display == 0
            loss = 0.0
            for i in range(p.iter_size):
                self._last_pass = i == p.iter_size - 1
                loss += net.forward_backward()
            self._last_pass = True
            loss /= p.iter_size
            self._iter_loss = loss
            if dp is None:
                self._after_passes(loss, display, start_iter, average_loss, None)
                for cb in self._callbacks:
                    cb.on_gradients_ready()
            else:
                for cb in self._callbacks:
                    cb.on_gradients_ready()
                agreed = dp.agreed
                self._after_passes(agreed.loss, display, start_iter, average_loss,
                                   agreed.nonfinite_ranks)
            self.apply_update()
            self._iter += 1
            if dp is None:
                request = self._requested_action()
                snap, stop = request == SolverAction.SNAPSHOT, request == SolverAction.STOP
            else:
                snap, stop = dp.agreed.snapshot, dp.agreed.stop
            if (p.snapshot and self._iter % p.snapshot == 0) or snap:
                self.snapshot()
            if stop:
                self._requested_early_exit = True
                break

    def _after_passes(self, loss: float, display: bool, start_iter: int, average_loss: int,
                      nonfinite_ranks: Optional[List[int]]) -> None:
        """Smooth and display the iteration's loss; stop before a non-finite one is applied."""
        self._update_smoothed_loss(loss, start_iter, average_loss)
        if display and _parallel.root_solver():
            self._display(self._net)
        if nonfinite_ranks and self.stop_on_nonfinite_loss:
            self._diverged(loss, nonfinite_ranks)
        elif not math.isfinite(loss) and self.stop_on_nonfinite_loss:
            self._diverged(loss)

    def solve(self, resume_file: Optional[str] = None) -> None:
        """Train to `max_iter` (Caffe's Solver::Solve), optionally resuming a .solverstate."""
        p = self._param
        _log.info(SOLVER_CPP + ':280', 'Solving ' + self._net.name)
        _log.info(SOLVER_CPP + ':281', 'Learning Rate Policy: ' + p.lr_policy)
        self._requested_early_exit = False
        if resume_file:
            _log.info(SOLVER_CPP + ':289', 'Restoring previous solver status from %s' % resume_file)
            self.restore(resume_file)
        start_iter = self._iter
        self.step(p.max_iter - self._iter)
        if p.snapshot_after_train and (not p.snapshot or self._iter % p.snapshot != 0):
            self.snapshot()
        if self._requested_early_exit:
            _log.info(SOLVER_CPP + ':309', 'Optimization stopped early.')
            return
        if p.display and self._iter % p.display == 0 and _parallel.root_solver():
            with torch.no_grad():
                loss = self._net._forward(0, len(self._net.layers) - 1)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            _log.info(SOLVER_CPP + ':318', 'Iteration %d, loss = %s'
                      % (self._iter, g(self._smoothed_loss)))
        if p.test_interval and self._iter % p.test_interval == 0:
            self.test_all()
        _log.info(SOLVER_CPP + ':323', 'Optimization Done.')

    def _update_smoothed_loss(self, loss: float, start_iter: int, average_loss: int) -> None:
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self._smoothed_loss = (self._smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self._iter - start_iter) % average_loss
            self._smoothed_loss += (loss - self._losses[idx]) / average_loss
            self._losses[idx] = loss

    # ---- display -----------------------------------------------------------------------------
    def _display(self, net: Net) -> None:
        """The `Iteration N, loss = v` line (with the speed, in BVLC's style) and the outputs."""
        p = self._param
        since, iterations_last = self._display_clock
        lapse = time.perf_counter() - since
        if _iter_speed_style():
            per_s = (self._iter - iterations_last) / (lapse or 1.0)
            _log.info(SOLVER_CPP + ':243', 'Iteration %d (%s iter/s, %ss/%d iters), loss = %s'
                      % (self._iter, g(per_s), g(lapse), p.display, g(self._smoothed_loss)))
        else:
            _log.info(SOLVER_CPP + ':229', 'Iteration %d, loss = %s'
                      % (self._iter, g(self._smoothed_loss)))
        self._display_clock = (time.perf_counter(), self._iter)
        self._log_outputs(net, 'Train', SOLVER_CPP + ':245', None)

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
                extra = ' (* %s = %s loss)' % (g(w), g(f32(w * v))) if w else ''
                _log.info(where, '    %s net output #%d: %s = %s%s' % (kind, k, name, g(v), extra))
                k += 1

    # ---- non-finite losses -------------------------------------------------------------------
    def _diverged(self, loss: float, ranks: Optional[List[int]] = None) -> None:
        """Stop before a NaN/inf loss reaches the weights; name the iteration and the blob
        (and, in data-parallel training, the ranks whose loss it was)."""
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
        if ranks:
            which += ' of rank%s %s' % ('s' if len(ranks) > 1 else '', ', '.join(map(str, ranks)))
        msg = ('Iteration %d: %s is %s; training stopped before applying this update%s'
               % (self._iter, which, g(loss), kept))
        _log.error(SOLVER_CPP + ':232', msg)
        raise TrainingDivergedError(msg, self._iter, blob)

    # ---- testing -----------------------------------------------------------------------------
    def test_all(self) -> None:
        """Test every test net with the solver's eval_type ("classification": mean outputs;
        "detection": mAP of DetectionEvaluate rows, SSD's TestDetection)."""
        run = getattr(self, EVAL_TYPES[self._param.eval_type])
        for i in range(len(self._test_nets)):
            if self._requested_early_exit:
                break
            run(i)

    def _test_iterations(self, test_net_id: int, consume: Callable[[Net], None]) -> bool:
        """Run test net `test_net_id` for its test_iter batches, handing each forward's
        net to `consume`; logs the test loss. False if a stop was requested."""
        p = self._param
        test_net = self._test_nets[test_net_id]
        test_net.share_with(self._net)
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
            consume(test_net)
        if self._requested_early_exit:
            _log.info(SOLVER_CPP + ':374', 'Test interrupted.')
            return False
        if p.test_compute_loss:
            loss /= n
            _log.info(SOLVER_CPP + ':381', 'Test loss: %s' % g(loss))
        return True

    def test_detection(self, test_net_id: int = 0) -> List[float]:
        """SSD's TestDetection: mAP per test net output from DetectionEvaluate rows, with
        the solver's ap_version; logged as `Test net output #i: <blob> = <mAP>` (and
        `class<label>: <AP>` lines with show_per_class_result). Returns the mAPs."""
        p = self._param
        _log.info(SOLVER_CPP + ':451', 'Iteration %d, Testing net (#%d)' % (self._iter, test_net_id))
        test_net = self._test_nets[test_net_id]
        acc = DetectionAccumulator()

        def consume(net: Net) -> None:
            for j, name in enumerate(net.outputs):
                try:
                    acc.add(j, net.blobs[name].data, name)
                except DetectionEvalError as e:
                    raise SolverError(str(e)) from None

        if not self._test_iterations(test_net_id, consume):
            return []
        try:
            results = acc.results(p.ap_version,
                                  lambda msg: _log.warning(SOLVER_CPP + ':540', msg))
        except (DetectionEvalError, ValueError) as e:
            raise SolverError('eval_type "detection": %s' % e) from None
        maps = []
        for i, m, aps in results:
            if p.show_per_class_result:
                for label, ap in aps.items():
                    _log.info(SOLVER_CPP + ':549', 'class%d: %s' % (label, g(f32(ap))))
            _log.info(SOLVER_CPP + ':559', '    Test net output #%d: %s = %s'
                      % (i, test_net.outputs[i], g(m)))
            maps.append(m)
        self._mean_scores[test_net_id] = maps
        return maps

    def test(self, test_net_id: int = 0) -> List[float]:
        """Run test net `test_net_id` for its test_iter batches; log and return mean outputs."""
        p = self._param
        _log.info(SOLVER_CPP + ':338', 'Iteration %d, Testing net (#%d)' % (self._iter, test_net_id))
        test_net = self._test_nets[test_net_id]
        total: List[Optional[np.ndarray]] = [None]

        def consume(net: Net) -> None:
            result = np.concatenate([net.blobs[o].data.reshape(-1).astype(np.float64)
                                     for o in net.outputs]) if net.outputs else np.zeros(0)
            total[0] = result.copy() if total[0] is None else total[0] + result

        if not self._test_iterations(test_net_id, consume):
            return []
        n = p.test_iter[test_net_id]
        means = [] if total[0] is None else [float(f32(s / n)) for s in total[0]]
        self._mean_scores[test_net_id] = means
        if means:
            self._log_outputs(test_net, 'Test', SOLVER_CPP + ':406', means)
        return means

    # ---- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Write `<prefix>_iter_N.caffemodel` (or .caffemodel.h5) and the solver state.

        Refuses (TrainingDivergedError) if any weight is NaN or infinite, so that a good
        snapshot of an earlier iteration is never followed by a poisoned one. In data-parallel
        training only rank 0 writes (the weights are the same on every rank); elsewhere this
        does nothing.
        """
        if not _parallel.root_solver():
            return
        bad = _snapshot.nonfinite_param(self._net)
        if bad is not None:
            msg = ('Iteration %d: parameter %s is not finite; not snapshotting%s'
                   % (self._iter, bad, '; the last snapshot, %s, is kept' % self._last_snapshot[0]
                      if self._last_snapshot else ''))
            _log.error(SOLVER_CPP + ':232', msg)
            raise TrainingDivergedError(msg, self._iter, None)
        p = self._param
        _snapshot.remove_stale_temps(p.snapshot_prefix)
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self._snapshot_filename('.caffemodel.h5' if hdf5 else '.caffemodel')
        _snapshot.write_model(self._net, model, hdf5, p.snapshot_diff)
        if hdf5:
            state = self._snapshot_solver_state_hdf5(model)
        else:
            state = self._snapshot_solver_state_binary(model)
        self._last_snapshot = (model, state)

    def restore(self, state_file: str) -> None:
        """Continue from a .solverstate (or .solverstate.h5) written by Caffe or by us."""
        state_file = os.fspath(state_file)
        self._restore_state(_snapshot.read_state(state_file), state_file)

    # ---- what a subclass provides ------------------------------------------------------------
    def _snapshot_solver_state_binary(self, model_filename: str) -> str:
        raise NotImplementedError

    def _snapshot_solver_state_hdf5(self, model_filename: str) -> str:
        raise NotImplementedError

    def _restore_state(self, state: _snapshot.SavedState, state_file: str) -> None:
        raise NotImplementedError

    def _pre_solve(self) -> None:
        pass

    def apply_update(self) -> None:
        raise NotImplementedError
