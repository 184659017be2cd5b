"""Starting the ranks of a data-parallel job on this machine, and watching over them.

`caffe train --gpu 0,1` (and the tools' `--gpu 0,1`) run their own command line again once
per rank, with the environment torchrun would give (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT): the started processes join the group exactly
as under torchrun, so there is one code path for one machine and for several.
`spawn_functions` does the same for a Python function (the alt-opt stages).

The launcher then supervises: when a rank exits with an error or is killed, it says which
rank and how, gives the others a few seconds to stop on their own (they notice within a
second and report it too), then terminates what is left and returns non-zero. A signal sent
to the launcher (SIGINT, SIGHUP, SIGTERM) is passed on to every rank, so Caffe's
`--sigint_effect` / `--sighup_effect` work as with one process (the ranks agree on the
action at the next iteration). Ranks die with the launcher (Linux: PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, Optional, Sequence

from .. import _log
from .group import free_port

_TAG = 'parallel.cpp'
#: How long the other ranks get to stop on their own after one failed (seconds;
#: CAFFE_DIST_GRACE overrides it).
GRACE_SECONDS = 10.0
_PARENT_ENV = 'CAFFE_LAUNCHER_PID'


def _threads_per_rank(n: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // max(n, 1)))


def rank_environment(rank: int, size: int, port: int, base: Optional[Dict[str, str]] = None
                     ) -> Dict[str, str]:
    """The environment of rank `rank` of `size` on this machine (torchrun's variables)."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(size), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
               TORCHELASTIC_USE_AGENT_STORE='False')
    env[_PARENT_ENV] = str(os.getpid())
    # Ranks sharing the CPU split its cores, as torchrun does (unless told otherwise).
    env.setdefault('OMP_NUM_THREADS', _threads_per_rank(size))
    return env


def die_with_parent() -> None:
    """Make this rank end when its launcher ends (a rank must never outlive its job)."""
    parent = os.environ.get(_PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith('linux'):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if str(os.getppid()) != parent:   # the launcher died before we could ask
        os._exit(1)


def exit_failed_rank(status: int = 1) -> None:
    """End this failed rank at once with `status`, its output flushed. A normal exit would
    tear down the process group at interpreter exit, which waits for ranks that are dead
    or hung (the launcher stops the others)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = 'signal %d' % -code
        return 'was killed by %s' % name
    return 'exited with status %d' % code


class _Child:
    """A rank process: a subprocess.Popen or a multiprocessing.Process."""

    def __init__(self, rank: int, proc: Any):
        self.rank, self.proc = rank, proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Optional[int]:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll()
        return None if self.proc.is_alive() else self.proc.exitcode

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        if isinstance(self.proc, subprocess.Popen):
            self.proc.wait()
        else:
            self.proc.join()


def _grace() -> float:
    try:
        return float(os.environ.get('CAFFE_DIST_GRACE', '') or GRACE_SECONDS)
    except ValueError:
        return GRACE_SECONDS


def supervise(children: Sequence[_Child], grace: Optional[float] = None) -> int:
    """Wait for the ranks; stop them all when one fails. Returns 0, or the failure's status."""
    grace = _grace() if grace is None else grace
    forwarded = {}

    def forward(signum, _frame):
        for c in children:
            if c.poll() is None:
                c.signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, 'SIGHUP', None)):
        if sig is None:
            continue
        try:
            forwarded[sig] = signal.signal(sig, forward)
        except ValueError:          # not the main thread
            pass
    status = 0
    try:
        failed_at = None
        while True:
            codes = [c.poll() for c in children]
            bad = [(c, code) for c, code in zip(children, codes) if code not in (None, 0)]
            if bad and failed_at is None:
                failed_at = time.monotonic()
                for c, code in bad:
                    _log.error(_TAG, 'rank %d (pid %d) %s; stopping the other ranks'
                               % (c.rank, c.pid, _describe(code)))
                first = bad[0][1]
                status = first if first > 0 else 128 - first
            if all(code is not None for code in codes):
                break
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for c, code in zip(children, codes):
                    if code is None:
                        _log.error(_TAG, 'rank %d (pid %d) did not stop within %g s; killing it'
                                   % (c.rank, c.pid, grace))
                        c.signal(signal.SIGKILL)
                failed_at = float('inf')
            time.sleep(0.1)
    finally:
        for c in children:
            if c.poll() is None:
                c.signal(signal.SIGKILL)
            c.reap()
        for sig, old in forwarded.items():
            signal.signal(sig, old)
    return status


def spawn_command(argv: Sequence[str], size: int, env: Optional[Dict[str, str]] = None) -> int:
    """Run `argv` once per rank (as under torchrun) and supervise; returns the exit status."""
    port = free_port()
    children = []
    for rank in range(size):
        proc = subprocess.Popen(list(argv), env=rank_environment(rank, size, port, env),
                                start_new_session=True)
        children.append(_Child(rank, proc))
    return supervise(children)


def _function_main(rank: int, size: int, port: int, target: Callable, kwargs: Dict[str, Any],
                   env: Dict[str, str]) -> None:
    os.environ.update(env)
    die_with_parent()
    threads = os.environ.get('OMP_NUM_THREADS')
    if threads and threads.isdigit():
        import torch   # already imported while unpickling the target: set it directly
        torch.set_num_threads(int(threads))
    try:
        target(**kwargs)
    except BaseException:
        traceback.print_exc()
        exit_failed_rank(1)


def spawn_functions(target: Callable, kwargs: Dict[str, Any], size: int) -> int:
    """Call `target(**kwargs)` in `size` fresh processes (multiprocessing's spawn), each a
    rank with torchrun's environment; supervise them; return 0 or the failure's status.
    `target` joins the group itself (caffe.parallel.join_from_env)."""
    ctx = mp.get_context('spawn')
    port = free_port()
    children = []
    for rank in range(size):
        env = {k: v for k, v in rank_environment(rank, size, port).items()
               if os.environ.get(k) != v}
        proc = ctx.Process(target=_function_main, args=(rank, size, port, target, kwargs, env),
                           name='rank %d' % rank)
        proc.start()
        children.append(_Child(rank, proc))
    return supervise(children)
