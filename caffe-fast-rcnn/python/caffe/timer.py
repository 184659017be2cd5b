"""pycaffe's `caffe.Timer` (start, stop, ms) and `caffe.log` / `caffe.init_log`.

BVLC's python/train.py times each layer and the all-reduce with these. A Timer measures the
wall time between start() and stop(); on a GPU it waits for the device's queued work
first, as Caffe's GPU timer measures device time.
"""
from __future__ import annotations

import time

import torch

from . import _config, _log


def _sync() -> None:
    if _config.device().type == 'cuda':
        torch.cuda.synchronize()


class Timer:
    """Wall-clock interval timer (Caffe's Timer)."""

    def __init__(self) -> None:
        self._start = None
        self._elapsed = 0.0
        self.running = False

    def start(self) -> None:
        if not self.running:
            _sync()
            self._start = time.perf_counter()
            self.running = True

    def stop(self) -> None:
        if self.running:
            _sync()
            self._elapsed = time.perf_counter() - self._start
            self.running = False

    @property
    def ms(self) -> float:
        """Milliseconds of the last start..stop (up to now if still running)."""
        if self.running:
            return 1e3 * (time.perf_counter() - self._start)
        return 1e3 * self._elapsed

    @property
    def seconds(self) -> float:
        return self.ms / 1e3


def init_log(level: int = 0) -> None:
    """pycaffe's init_log: logs already go to stderr in glog's format; GLOG_minloglevel
    filters them. Kept so scripts that call it run unchanged."""


def log(message: str) -> None:
    """Write an INFO line in Caffe's log format (pycaffe's caffe.log)."""
    _log.info('pycaffe', str(message))
