"""Which rank this process is, the torch.distributed group the ranks form, and how a rank
notices that another one died or hangs.

Caffe keeps `solver_count` and `solver_rank` in its singleton; pycaffe sets them with
`set_solver_count` / `set_solver_rank` before building a solver, and layers read them
(a Data layer takes every solver_count-th record). Here they live in `_state`, and joining a
process group sets them from the group.

A group is joined in one of two ways:

* under `torchrun` (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
  `join_from_env()`, init_method `env://`;
* from a uid made by `new_uid()` (BVLC's `NCCL.new_uid()`): a `tcp://host:port` address the
  launching process hands to every rank.

The backend is NCCL when the ranks compute on CUDA devices and gloo otherwise.

Faults. Every wait on a collective goes through `Group.wait`, which polls the work and,
while it is not done, checks the other ranks once a second: a rank on this machine whose
process is gone is named at once; a rank whose progress counter (published by `beat`, which
training calls on every layer) has not moved for `timeout` seconds is named as hung. gloo
itself reports a dead peer within milliseconds ("Connection closed by peer"); the checks turn
that into an error naming the rank. The torch-level timeout stays a backstop a minute later.
"""
from __future__ import annotations

import datetime
import os
import socket
import time
from typing import Dict, List, Optional, Tuple

import torch

from .. import _config, _log
from ..errors import CaffeError

_ENV_KEYS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
_state = {'count': 1, 'rank': 0, 'multiprocess': False}
_TAG = 'parallel.cpp'


class RankFailure(CaffeError):
    """Another rank died or stopped making progress; the message names it."""

    def __init__(self, message: str, ranks: Optional[List[int]] = None):
        super().__init__(message)
        self.ranks = list(ranks or [])


# ---- Caffe's solver_count / solver_rank -------------------------------------------------------

def solver_count() -> int:
    """How many solvers (ranks) train together (Caffe::solver_count)."""
    return _state['count']


def solver_rank() -> int:
    """This process's rank among them (Caffe::solver_rank); 0 is the root solver."""
    return _state['rank']


def root_solver() -> bool:
    """Whether this process logs, snapshots and tests (Caffe::root_solver)."""
    return _state['rank'] == 0


def set_solver_count(count: int) -> None:
    count = int(count)
    if count < 1:
        raise ValueError('set_solver_count: the solver count must be at least 1, got %d' % count)
    _state['count'] = count


def set_solver_rank(rank: int) -> None:
    rank = int(rank)
    if rank < 0:
        raise ValueError('set_solver_rank: a rank is not negative, got %d' % rank)
    _state['rank'] = rank
    _log.set_rank(rank)


def set_multiprocess(flag: bool) -> None:
    """Kept for BVLC's scripts. Ranks here are always separate processes (one interpreter
    each), so the flag only records what the script said."""
    _state['multiprocess'] = bool(flag)


def multiprocess() -> bool:
    return _state['multiprocess']


# ---- settings ---------------------------------------------------------------------------------

def timeout_seconds() -> float:
    """How long a rank may make no progress before the others give up on it
    (CAFFE_DIST_TIMEOUT, seconds; 300 by default)."""
    raw = os.environ.get('CAFFE_DIST_TIMEOUT', '').strip()
    if not raw:
        return 300.0
    try:
        value = float(raw)
    except ValueError:
        raise CaffeError('CAFFE_DIST_TIMEOUT must be a number of seconds, got %r' % raw) from None
    if value <= 0:
        raise CaffeError('CAFFE_DIST_TIMEOUT must be positive, got %r' % raw)
    return value


def env_has_group() -> bool:
    """Whether a launcher (torchrun, or `caffe train --gpu 0,1`) made this process a rank."""
    return all(os.environ.get(k) for k in _ENV_KEYS)


def env_local_rank() -> Tuple[int, int]:
    """(local rank, ranks on this machine) as the launcher set them."""
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', rank))
    local_n = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', '1')))
    return local, local_n


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port nobody listens on right now (for a rendezvous on this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def new_uid() -> str:
    """A rendezvous address for ranks started on this machine (BVLC's NCCL::new_uid)."""
    return 'tcp://127.0.0.1:%d' % free_port()


def backend_for(device: torch.device) -> str:
    return 'nccl' if device.type == 'cuda' else 'gloo'


# ---- the group ----------------------------------------------------------------------------------

class Group:
    """The process group this rank belongs to, with the liveness bookkeeping."""

    def __init__(self, rank: int, size: int, backend: str, device: torch.device, timeout: float):
        import torch.distributed as dist
        self.rank, self.size = rank, size
        self.backend = backend
        self.device = device
        self.timeout = timeout
        self.store = _default_store()
        self.host = socket.gethostname()
        self._beats = 0
        self._last_beat = 0.0
        self._seen: Dict[int, Tuple[bytes, float]] = {}
        self.peers: Dict[int, Tuple[str, int]] = {}
        # Objects (proposals, net signatures) travel on a gloo group even when gradients go
        # through NCCL: gather_object on NCCL would need them on a GPU.
        self.cpu_group = dist.new_group(backend='gloo') if backend != 'gloo' else None
        self._publish_identity()

    # -- identities and progress --------------------------------------------------------------
    def _key(self, kind: str, rank: int) -> str:
        return 'caffe/%s/%d' % (kind, rank)

    def _publish_identity(self) -> None:
        if self.store is None:
            return
        self.store.set(self._key('peer', self.rank), '%s:%d' % (self.host, os.getpid()))
        self.beat(force=True)
        for r in range(self.size):
            if r == self.rank:
                continue
            try:
                raw = self.store.get(self._key('peer', r)).decode('utf-8')
            except RuntimeError as e:
                raise RankFailure('rank %d did not join the process group within %g s: %s'
                                  % (r, self.timeout, e), [r]) from None
            host, _, pid = raw.rpartition(':')
            self.peers[r] = (host, int(pid))

    def beat(self, force: bool = False) -> None:
        """Publish that this rank's main thread is making progress (at most once a second)."""
        if self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._last_beat < 1.0:
            return
        self._last_beat = now
        self._beats += 1
        try:
            self.store.set(self._key('beat', self.rank), str(self._beats))
        except RuntimeError:
            pass   # the store's host (rank 0) is gone: the next wait names it

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, work, what: str) -> None:
        """Wait for an async collective, naming the rank at fault if it cannot finish."""
        if not work.is_completed():
            start = last_check = time.monotonic()
            pause = 5e-5
            while not work.is_completed():
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
                now = time.monotonic()
                if now - last_check >= 1.0:
                    last_check = now
                    self.beat(force=True)
                    self.check_peers(what, now - start)
        try:
            work.wait()
        except RuntimeError as e:
            raise self.failure(what, e) from None

    def check_peers(self, what: str, waited: float = 0.0) -> None:
        """Raise RankFailure if a rank is gone or has made no progress for `timeout` s."""
        dead = self._dead_local_peers()
        if dead:
            raise RankFailure(self._gone_message(dead, what), dead)
        if self.store is None:
            return
        now = time.monotonic()
        for r in range(self.size):
            if r == self.rank:
                continue
            try:
                value = self.store.get(self._key('beat', r))
            except RuntimeError as e:
                raise RankFailure('rank %d: %s: the rendezvous store (kept by rank 0) stopped '
                                  'answering (%s); rank 0 died or its machine is unreachable'
                                  % (self.rank, what, _first_line(e)), [0]) from None
            seen = self._seen.get(r)
            if seen is None or seen[0] != value:
                self._seen[r] = (value, now)
            elif now - seen[1] > self.timeout:
                raise RankFailure('rank %d: %s: rank %d has made no progress for %.0f s (it hangs, '
                                  'or is far slower than this rank; CAFFE_DIST_TIMEOUT=%g)'
                                  % (self.rank, what, r, now - seen[1], self.timeout), [r])

    def _dead_local_peers(self) -> List[int]:
        return [r for r, (host, pid) in sorted(self.peers.items())
                if host == self.host and not _process_alive(pid)]

    def _gone_message(self, ranks: List[int], what: str) -> str:
        names = ', '.join('rank %d (pid %d)' % (r, self.peers[r][1]) for r in ranks)
        return ('rank %d: %s: %s %s gone (died or was killed); stopping. Resume from the last '
                'snapshot (caffe train --snapshot, any number of ranks)'
                % (self.rank, what, names, 'is' if len(ranks) == 1 else 'are'))

    def failure(self, what: str, error: BaseException) -> RankFailure:
        """The RankFailure for a collective that failed with `error` (a peer's connection
        closed, a timeout): name the rank that is gone if it can be found."""
        deadline = time.monotonic() + 3.0
        while True:
            dead = self._dead_local_peers()
            if dead:
                return RankFailure(self._gone_message(dead, what), dead)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)   # a killed peer may still be a zombie for a moment
        suspects = [r for r in range(self.size) if r != self.rank]
        return RankFailure('rank %d: %s failed: %s (another rank died, was killed or is '
                           'unreachable: %s)' % (self.rank, what, _first_line(error),
                                                 ', '.join('rank %d' % r for r in suspects)),
                           suspects)

    # -- objects -----------------------------------------------------------------------------------
    def gather_objects(self, obj, dst: int = 0) -> Optional[list]:
        """Every rank's `obj` in rank order on `dst` (None elsewhere)."""
        import torch.distributed as dist
        out = [None] * self.size if self.rank == dst else None
        try:
            dist.gather_object(obj, out, dst=dst, group=self.cpu_group)
        except RuntimeError as e:
            raise self.failure('gathering results on rank %d' % dst, e) from None
        return out

    def barrier(self, what: str) -> None:
        """All ranks reach this point (monitored, so a dead rank is named)."""
        import torch.distributed as dist
        flag = torch.zeros(1, device=self.device)
        try:
            work = dist.all_reduce(flag, async_op=True)
        except RuntimeError as e:
            raise self.failure(what, e) from None
        self.wait(work, what)


_group: Optional[Group] = None


def current() -> Optional[Group]:
    """The group this process joined, or None."""
    return _group


def join(init_method: str, rank: int, world_size: int, device: Optional[torch.device] = None,
         timeout: Optional[float] = None) -> Group:
    """Join (or create) the ranks' process group; sets solver_count and solver_rank."""
    global _group
    import torch.distributed as dist
    if not dist.is_available():
        raise CaffeError('data-parallel training needs torch.distributed, which this PyTorch '
                         'build lacks')
    if rank < 0 or rank >= world_size:
        raise CaffeError('rank %d is outside 0..%d' % (rank, world_size - 1))
    device = device or _config.device()
    timeout = timeout_seconds() if timeout is None else float(timeout)
    if _group is not None:
        if (_group.rank, _group.size) != (rank, world_size):
            raise CaffeError('this process is already rank %d of %d; cannot become rank %d of %d'
                             % (_group.rank, _group.size, rank, world_size))
        return _group
    backend = backend_for(device)
    if not dist.is_initialized():
        kwargs = {}
        if backend == 'nccl':
            torch.cuda.set_device(device)
            kwargs['device_id'] = device
        try:
            # The torch-level timeout is a backstop behind Group.wait's own checks.
            dist.init_process_group(backend, init_method=init_method, rank=rank,
                                    world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout + 60), **kwargs)
        except (RuntimeError, ValueError) as e:
            raise CaffeError('rank %d of %d could not join the process group at %s: %s'
                             % (rank, world_size, init_method, _first_line(e))) from None
    elif (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise CaffeError('torch.distributed is initialised as rank %d of %d, not %d of %d'
                         % (dist.get_rank(), dist.get_world_size(), rank, world_size))
    set_solver_count(world_size)
    set_solver_rank(rank)
    set_multiprocess(True)
    _group = Group(rank, world_size, backend, device, timeout)
    _log.info(_TAG, 'Rank %d of %d joined (%s backend, %s)' % (rank, world_size, backend, device))
    return _group


def join_from_env(device: Optional[torch.device] = None) -> Group:
    """Join the group a launcher (torchrun, `caffe train --gpu 0,1`) set up in the environment."""
    if not env_has_group():
        missing = [k for k in _ENV_KEYS if not os.environ.get(k)]
        raise CaffeError('not started by a launcher: %s not set' % ', '.join(missing))
    return join('env://', int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), device)


def leave() -> None:
    """Leave the group at the end of training. The process keeps its rank (its last log
    lines are still those of rank r)."""
    global _group
    import torch.distributed as dist
    if _group is not None and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass
    _group = None


# ---- helpers ------------------------------------------------------------------------------------

def _default_store():
    """The key-value store the default process group was made with (None if unreachable)."""
    try:
        from torch.distributed import distributed_c10d
        return distributed_c10d._get_default_store()
    except (ImportError, AttributeError, RuntimeError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state not in ('Z', 'X')
    except (OSError, IndexError):
        return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
