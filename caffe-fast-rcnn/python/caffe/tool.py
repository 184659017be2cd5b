"""The `caffe` command line: train, test, time and device_query, as Caffe's tools/caffe.cpp.

    python -m caffe train --solver=solver.prototxt [--weights=a.caffemodel,b.caffemodel |
                          --snapshot=x_iter_N.solverstate] [--gpu=0] [--level=0] [--stage=a,b]
    python -m caffe test --model=net.prototxt --weights=w.caffemodel [--iterations=50]
    python -m caffe time --model=net.prototxt [--iterations=50] [--phase=TRAIN|TEST]
    python -m caffe device_query [--gpu=0|all]

Flags are gflags-style (caffe/cli.py, as Caffe's other tools): `-solver x`, `-solver=x`,
`--solver x` and `--solver=x` all work, anywhere on the line; `-help` lists them.
Logs go to stderr in glog's format with Caffe's wording, so scripts that grep Caffe's logs
and tools/extra/parse_log.py read ours. In `train`, SIGINT stops (after a snapshot) and
SIGHUP snapshots, as `--sigint_effect` / `--sighup_effect` (stop, snapshot, none) say.

Data-parallel training: `train --gpu 0,1` (or `--gpu all`) runs this command once per device,
each process a rank of a torch.distributed group (see caffe.parallel); on a machine without
GPUs the ids say how many CPU ranks to run. Under `torchrun` (RANK, WORLD_SIZE, MASTER_ADDR
set) the command joins that group instead, so the same line trains on several machines.
"""
from __future__ import annotations

import os
import signal
import sys
import time as _time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import _config, _log
from . import parallel as _parallel
from .cli import Fatal, Flags, run_tool, split_list
from .phase import TEST, TRAIN

_CAFFE_CPP = 'caffe.cpp'

USAGE = """command line brew
usage: caffe <command> <args>

commands:
  train           train or finetune a model
  test            score a model
  device_query    show GPU diagnostic information
  time            benchmark model execution time"""


def _flags() -> Flags:
    """The command's flags: those of Caffe's tools/caffe.cpp, with its defaults."""
    f = Flags('caffe', USAGE, 'tools/caffe.cpp')
    f.define('gpu', '', "Optional; run in GPU mode on given device IDs separated by ','. Use "
             "'-gpu all' to run on all available GPUs.")
    f.define('solver', '', 'The solver definition protocol buffer text file.')
    f.define('model', '', 'The model definition protocol buffer text file.')
    f.define('phase', '', "Optional; network phase (TRAIN or TEST). Only used for 'time'.")
    f.define('level', 0, 'Optional; network level.')
    f.define('stage', '', "Optional; network stages (not to be confused with phase), separated "
             "by ','.")
    f.define('snapshot', '', 'Optional; the snapshot solver state to resume training.')
    f.define('weights', '', "Optional; the pretrained weights to initialize finetuning, separated "
             "by ','. Cannot be set simultaneously with snapshot.")
    f.define('iterations', 50, 'The number of iterations to run.')
    f.define('sigint_effect', 'stop', 'Optional; action to take when a SIGINT signal is '
             'received: snapshot, stop or none.')
    f.define('sighup_effect', 'snapshot', 'Optional; action to take when a SIGHUP signal is '
             'received: snapshot, stop or none.')
    return f


# ---- devices -------------------------------------------------------------------------------------

def _get_gpus(flag: str) -> List[int]:
    if flag == 'all':
        return list(range(_parallel.gpu_count()))
    if flag:
        try:
            return [int(s) for s in flag.split(',')]
        except ValueError:
            raise Fatal('--gpu must be device ids separated by commas, or all; got %r' % flag) from None
    return []


def _use_devices(gpus: List[int], single: bool) -> None:
    """Set the engine's mode for the chosen devices (Caffe::set_mode / SetDevice)."""
    if single:
        while len(gpus) > 1:
            _log.info(_CAFFE_CPP + ':263', 'Not using GPU #%d for single-GPU function' % gpus.pop())
    if not gpus:
        _log.info(_CAFFE_CPP + ':178', 'Use CPU.')
        _config.set_mode_cpu()
        return
    if _parallel.gpu_count() == 0:
        raise Fatal('Cannot use GPU %s: PyTorch sees no GPU on this machine (run without '
                     '--gpu to use the CPU)' % ', '.join(map(str, gpus)))
    if single:
        _log.info(_CAFFE_CPP + ':270', 'Use GPU with device ID %d' % gpus[0])
    else:
        _log.info(_CAFFE_CPP + ':185', 'Using GPUs %s' % ', '.join(map(str, gpus)))
        if len(gpus) > 1:
            _log.warning(_CAFFE_CPP + ':186', 'Training on one process uses GPU %d only; for '
                         'data-parallel training launch one process per GPU' % gpus[0])
    _config.set_device(gpus[0])
    _config.set_mode_gpu()


def _sync() -> None:
    if torch.cuda.is_available() and _config.device().type == 'cuda':
        torch.cuda.synchronize()


# ---- signals -------------------------------------------------------------------------------------

class _SignalHandler:
    """Turns SIGINT/SIGHUP into solver actions, polled once per iteration (as Caffe's)."""

    def __init__(self, sigint_effect: str, sighup_effect: str):
        from .solvers import SolverAction
        names = {'stop': SolverAction.STOP, 'snapshot': SolverAction.SNAPSHOT,
                 'none': SolverAction.NONE}
        for v in (sigint_effect, sighup_effect):
            if v not in names:
                raise Fatal('Invalid signal effect "%s" was specified' % v)
        self._effects = {signal.SIGINT: names[sigint_effect]}
        if hasattr(signal, 'SIGHUP'):
            self._effects[signal.SIGHUP] = names[sighup_effect]
        self._pending: List[int] = []
        self._old: Dict[int, object] = {}
        self._none = SolverAction.NONE

    def __enter__(self) -> '_SignalHandler':
        for sig in self._effects:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        self._pending.append(signum)

    def action(self) -> int:
        while self._pending:
            effect = self._effects.get(self._pending.pop(0), self._none)
            if effect != self._none:
                return effect
        return self._none


# ---- commands ------------------------------------------------------------------------------------

def train(flags: Flags, argv: List[str]) -> int:
    from . import solvers as _solvers
    from .proto import caffe_pb2
    if not flags.solver:
        raise Fatal('Check failed: FLAGS_solver.size() > 0 (0 vs. 0) Need a solver definition '
                     'to train.')
    if flags.snapshot and flags.weights:
        raise Fatal('Check failed: !FLAGS_snapshot.size() || !FLAGS_weights.size() Give a '
                     'snapshot to resume training or weights to finetune but not both.')
    param = _solvers.read_solver_param(flags.solver)
    if flags.given('level'):   # else as py-faster-rcnn's Caffe (no -level): the file's train_state
        param.train_state.level = flags.level
    for s in split_list(flags.stage):
        param.train_state.stage.append(s)
    gpu_flag = flags.gpu
    if not gpu_flag and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if _parallel.gpu_count():
            gpu_flag = str(param.device_id)
        else:
            _log.warning(_CAFFE_CPP + ':170', 'solver_mode is GPU but PyTorch sees no GPU on this '
                         'machine; training on the CPU')
    gpus = _get_gpus(gpu_flag)
    group = None
    if _parallel.env_has_group():
        # A rank of a data-parallel job (started by the branch below, or by torchrun).
        _parallel.die_with_parent()
        group = _parallel.join_from_env(_parallel.use_rank_device(gpus))
        if _config.device().type != 'cpu':
            param.device_id = _config.device().index or 0
    elif len(gpus) > 1:
        _log.info(_CAFFE_CPP + ':185', 'Using GPUs %s' % ', '.join(map(str, gpus)))
        if not _parallel.gpu_count():
            _log.warning(_CAFFE_CPP + ':186', 'PyTorch sees no GPU on this machine: training '
                         'with %d CPU ranks' % len(gpus))
        return _parallel.spawn_command([sys.executable, '-m', 'caffe'] + argv,
                                       len(gpus), env=_child_environment())
    else:
        _use_devices(gpus, single=False)
        if gpus:
            param.device_id = gpus[0]
    root = _parallel.root_solver()
    with _SignalHandler(flags.sigint_effect, flags.sighup_effect) as handler:
        solver = _solvers.create_solver(param, flags.solver)
        solver.set_action_function(handler.action)
        if root and flags.snapshot:      # other ranks get the state from rank 0 (bcast)
            _log.info(_CAFFE_CPP + ':205', 'Resuming from ' + flags.snapshot)
            solver.restore(flags.snapshot)
        elif root and flags.weights:
            for name in split_list(flags.weights):
                _log.info(_CAFFE_CPP + ':155', 'Finetuning from ' + name)
                solver.net.copy_from(name)
                for tn in solver.test_nets:
                    tn.copy_from(name)
        if group is not None:
            _parallel.DataParallel(solver, group).attach().bcast()
        _log.info(_CAFFE_CPP + ':219', 'Starting Optimization')
        solver.solve()
    if group is not None:
        # Only after success: tearing the group down waits for every rank, and after a
        # failure some rank is dead or hung (the process just exits then).
        _parallel.leave()
    _log.info(_CAFFE_CPP + ':222', 'Optimization Done.')
    return 0


def _child_environment() -> Dict[str, str]:
    """The environment of spawned ranks: this process's, with its module search path, so
    that they import the same `caffe` and find the same Python layers."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in paths:
        paths.insert(0, here)
    env['PYTHONPATH'] = os.pathsep.join(paths)
    return env


def test(flags: Flags, argv: List[str]) -> int:
    from .net import Net
    from . import pycaffe  # noqa: F401
    if not flags.model:
        raise Fatal('Check failed: FLAGS_model.size() > 0 (0 vs. 0) Need a model definition '
                     'to score.')
    if not flags.weights:
        raise Fatal('Check failed: FLAGS_weights.size() > 0 (0 vs. 0) Need model weights to '
                     'score.')
    _use_devices(_get_gpus(flags.gpu), single=True)
    net = Net(flags.model, TEST, level=flags.level, stages=split_list(flags.stage))
    net.copy_from(flags.weights)
    n = flags.iterations
    _log.info(_CAFFE_CPP + ':290', 'Running for %d iterations.' % n)
    scores: List[float] = []
    owners: List[str] = []
    loss = 0.0
    last = len(net.layers) - 1
    for i in range(n):
        with torch.no_grad():
            loss += net._forward(0, last)
        idx = 0
        for name in net.outputs:
            for v in net.blobs[name].data.reshape(-1):
                v = float(v)
                if i == 0:
                    scores.append(v)
                    owners.append(name)
                else:
                    scores[idx] += v
                idx += 1
                _log.info(_CAFFE_CPP + ':313', 'Batch %d, %s = %g' % (i, name, v))
    loss /= max(n, 1)
    _log.info(_CAFFE_CPP + ':318', 'Loss: %g' % loss)
    weights = net.blob_loss_weights
    for s, name in zip(scores, owners):
        mean = s / n
        w = weights[name]
        extra = ' (* %g = %g loss)' % (w, w * mean) if w else ''
        _log.info(_CAFFE_CPP + ':330', '%s = %g%s' % (name, mean, extra))
    return 0


def time(flags: Flags, argv: List[str]) -> int:
    """Per-layer forward and backward times, as `caffe time` prints them."""
    from .net import Net
    from . import pycaffe  # noqa: F401
    if not flags.model:
        raise Fatal('Check failed: FLAGS_model.size() > 0 (0 vs. 0) Need a model definition '
                     'to time.')
    if flags.phase not in ('', 'TRAIN', 'TEST'):
        raise Fatal('phase must be "TRAIN" or "TEST"')
    phase = TEST if flags.phase == 'TEST' else TRAIN
    _use_devices(_get_gpus(flags.gpu), single=True)
    net = Net(flags.model, phase, level=flags.level, stages=split_list(flags.stage))
    nl = len(net.layers)
    _log.info(_CAFFE_CPP + ':352', 'Performing Forward')
    initial_loss = net._forward(0, nl - 1)
    _log.info(_CAFFE_CPP + ':354', 'Initial loss: %g' % initial_loss)
    _log.info(_CAFFE_CPP + ':355', 'Performing Backward')
    net._backward(nl - 1, 0)
    n = flags.iterations
    _log.info(_CAFFE_CPP + ':363', '*** Benchmark begins ***')
    _log.info(_CAFFE_CPP + ':364', 'Testing for %d iterations.' % n)
    fwd = [0.0] * nl
    bwd = [0.0] * nl
    forward_time = backward_time = 0.0
    total_start = _time.perf_counter()
    clock = _time.perf_counter
    for j in range(n):
        iter_start = clock()
        f0 = clock()
        for i in range(nl):
            t = clock()
            net._forward(i, i)
            _sync()
            fwd[i] += clock() - t
        forward_time += clock() - f0
        b0 = clock()
        for i in range(nl - 1, -1, -1):
            t = clock()
            net._backward(i, i)
            _sync()
            bwd[i] += clock() - t
        backward_time += clock() - b0
        _log.info(_CAFFE_CPP + ':392', 'Iteration: %d forward-backward time: %g ms.'
                  % (j + 1, (clock() - iter_start) * 1000))
    total = clock() - total_start
    n = max(n, 1)
    _log.info(_CAFFE_CPP + ':395', 'Average time per layer: ')
    for i, name in enumerate(net._layer_names):
        _log.info(_CAFFE_CPP + ':398', '%10s\tforward: %g ms.' % (name, fwd[i] * 1000 / n))
        _log.info(_CAFFE_CPP + ':401', '%10s\tbackward: %g ms.' % (name, bwd[i] * 1000 / n))
    _log.info(_CAFFE_CPP + ':406', 'Average Forward pass: %g ms.' % (forward_time * 1000 / n))
    _log.info(_CAFFE_CPP + ':408', 'Average Backward pass: %g ms.' % (backward_time * 1000 / n))
    _log.info(_CAFFE_CPP + ':410', 'Average Forward-Backward: %g ms.' % (total * 1000 / n))
    _log.info(_CAFFE_CPP + ':412', 'Total Time: %g ms.' % (total * 1000))
    _log.info(_CAFFE_CPP + ':413', '*** Benchmark ends ***')
    return 0


def device_query(flags: Flags, argv: List[str]) -> int:
    _log.info(_CAFFE_CPP + ':127', 'Querying GPUs ' + flags.gpu)
    gpus = _get_gpus(flags.gpu)
    if not _parallel.gpu_count():
        _log.info(_CAFFE_CPP + ':130', 'PyTorch sees no GPU on this machine; CPU with %d threads'
                  % torch.get_num_threads())
        return 0
    for g in gpus:
        if torch.cuda.is_available():
            prop = torch.cuda.get_device_properties(g)
            lines = [('Device id', g), ('Major revision number', prop.major),
                     ('Minor revision number', prop.minor), ('Name', prop.name),
                     ('Total global memory', prop.total_memory),
                     ('Multiprocessor count', prop.multi_processor_count)]
        else:
            lines = [('Device id', g), ('Name', 'Apple MPS')]
        for k, v in lines:
            _log.info('common.cpp:177', '%-29s%s' % (k + ':', v))
    return 0


COMMANDS: Dict[str, Callable] = {'train': train, 'test': test, 'time': time,
                                 'device_query': device_query}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one `caffe` command; returns the process exit status."""
    return _failed(run_tool(_run, argv, _CAFFE_CPP))


def _run(argv: List[str]) -> int:
    flags = _flags()
    commands = flags.parse(argv)
    if len(commands) != 1:
        flags.show_usage()
        return 1
    func = COMMANDS.get(commands[0])
    if func is None:
        _log.error(_CAFFE_CPP + ':72', 'Available caffe actions:')
        for name in sorted(COMMANDS):
            _log.error(_CAFFE_CPP + ':74', '\t' + name)
        _log.log('F', _CAFFE_CPP + ':76', 'Unknown action: ' + commands[0])
        return 1
    return func(flags, argv)


def _failed(status: int) -> int:
    """A rank of a data-parallel job that failed exits at once (parallel.exit_failed_rank)."""
    if status and _parallel.current() is not None:
        _parallel.exit_failed_rank(status)
    return status
