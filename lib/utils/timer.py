"""A tic/toc stopwatch that also keeps the running average, for speed logs."""

from __future__ import annotations

import time


class Timer(object):
    """Accumulating stopwatch.

    ``tic()`` starts a measurement; ``toc()`` ends it, adds it to the total and
    returns the average over all calls (or this call's duration with
    ``average=False``).  Attributes: ``total_time``, ``calls``, ``start_time``,
    ``diff`` (last duration) and ``average_time``, all in seconds.
    """

    def __init__(self) -> None:
        self.total_time = 0.
        self.calls = 0
        self.start_time = 0.
        self.diff = 0.
        self.average_time = 0.

    def tic(self) -> None:
        """Start a measurement."""
        # perf_counter is monotonic: a wall-clock jump cannot give negative times
        self.start_time = time.perf_counter()

    def toc(self, average: bool = True) -> float:
        """Stop the measurement; return the average (default) or this duration."""
        self.diff = time.perf_counter() - self.start_time
        self.total_time += self.diff
        self.calls += 1
        self.average_time = self.total_time / self.calls
        return self.average_time if average else self.diff
