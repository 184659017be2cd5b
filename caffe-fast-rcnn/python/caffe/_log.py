"""Log lines in glog's classic format, as Caffe prints them.

`I1122 03:19:16.320838 28227 solver.cpp:243] Iteration 0, loss = 1.02673`

py-faster-rcnn's scripts and Caffe's tools/extra/parse_log.py read these lines, so the
level letter, the month-day stamp, the thread id and the `file:line]` tag follow glog.
As with glog, GLOG_minloglevel (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL) hides lower levels.

In data-parallel training only the root solver (rank 0) writes INFO lines, as Caffe's
`LOG_IF(INFO, Caffe::root_solver())` does; other ranks still write warnings and errors, tagged
`[rank r]` so a log of several ranks tells them apart. CAFFE_LOG_ALL_RANKS=1 keeps every
rank's INFO lines.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading

_LEVELS = {'I': 0, 'W': 1, 'E': 2, 'F': 3}
_rank = {'rank': 0}


def set_rank(rank: int) -> None:
    """The data-parallel rank of this process (see the module docstring)."""
    _rank['rank'] = int(rank)


def _all_ranks() -> bool:
    return os.environ.get('CAFFE_LOG_ALL_RANKS', '') not in ('', '0')


def _min_level() -> int:
    try:
        return int(os.environ.get('GLOG_minloglevel', '0'))
    except ValueError:
        return 0


def log(level: str, where: str, message: str) -> None:
    """Print `message` at `level` ('I', 'W', 'E', 'F') tagged with a Caffe source `where`."""
    if _LEVELS[level] < _min_level():
        return
    rank = _rank['rank']
    if rank:
        if level == 'I' and not _all_ranks():
            return
        message = '[rank %d] %s' % (rank, message)
    now = datetime.datetime.now()
    stamp = '%s%02d%02d %02d:%02d:%02d.%06d' % (level, now.month, now.day, now.hour, now.minute,
                                                now.second, now.microsecond)
    tid = threading.get_native_id() if hasattr(threading, 'get_native_id') else os.getpid()
    lines = str(message).split('\n')
    out = ''.join('%s %5d %s] %s\n' % (stamp, tid, where, line) if i == 0 else line + '\n'
                  for i, line in enumerate(lines))
    sys.stderr.write(out)
    sys.stderr.flush()


def info(where: str, message: str) -> None:
    log('I', where, message)


def warning(where: str, message: str) -> None:
    log('W', where, message)


def error(where: str, message: str) -> None:
    log('E', where, message)
