"""The data tools' per-line work (reading, decoding, encoding images, parsing annotations)
on a pool of threads, one per core, with the results in list order.

OpenCV's codecs, the file reads and most of protobuf's serialisation release the GIL, so
threads overlap them; the caller (the main thread) writes the records in order, as Caffe's
tools do, so the databases and files are the same whatever the number of cores.
"""
from __future__ import annotations

import concurrent.futures as futures
import os
from collections import deque
from typing import Callable, Deque, Iterable, Iterator, TypeVar

T = TypeVar('T')
R = TypeVar('R')


def map_in_order(fn: Callable[[T], R], items: Iterable[T],
                 workers: int = 0) -> Iterator[R]:
    """fn over items on `workers` threads (default: one per core), yielding the results in
    the items' order, at most 4 jobs per thread ahead of the consumer. An exception of fn
    is raised when its item's turn comes; the jobs not started are then dropped."""
    workers = workers or max(1, os.cpu_count() or 1)
    with futures.ThreadPoolExecutor(workers) as pool:
        pending: Deque[futures.Future] = deque()
        try:
            for item in items:
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for job in pending:
                job.cancel()
