#!/usr/bin/env python3
"""Seconds since the start of training for each line of a Caffe (glog) training log.

    extract_seconds.py LOG OUTPUT

Writes one number per line: for every log line that carries a timestamp, the seconds
elapsed since the line that says `Solving <net>`. glog's classic stamp has no year
(`I1122 03:19:16.320838 ...`); the year is taken from the log file's creation time, and a
stamp that goes backwards (a run across New Year) moves on to the next year. Stamps with
the year (`I20261122 ...`, newer glog builds) are read as they are.
"""
from __future__ import annotations

import argparse
import datetime
import os
from typing import Iterable, Optional


def get_log_created_year(path: str) -> int:
    """The year the log file was created (the classic glog stamp does not say it)."""
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def extract_datetime_from_line(line: str, year: int) -> Optional[datetime.datetime]:
    """The timestamp of a glog line, or None for a line without one."""
    parts = line.strip().split()
    if len(parts) < 2 or len(parts[0]) < 5 or parts[0][0] not in 'IWEF' or not parts[0][1:].isdigit():
        return None
    date = parts[0][1:]
    if len(date) == 8:                     # I20261122: the stamp carries its year
        year, date = int(date[:4]), date[4:]
    try:
        month, day = int(date[:2]), int(date[2:])
        clock, _, frac = parts[1].partition('.')
        hour, minute, second = (int(x) for x in clock.split(':'))
        micro = int(frac) if frac else 0
        return datetime.datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None


def get_start_time(lines: Iterable[str], year: int) -> Optional[datetime.datetime]:
    """The time of the first `Solving` line (when the solver starts training)."""
    for line in lines:
        if 'Solving' in line:
            return extract_datetime_from_line(line, year)
    return None


def extract_seconds(input_file: str, output_file: str) -> None:
    year = get_log_created_year(input_file)
    with open(input_file) as f:
        lines = f.readlines()
    start = get_start_time(lines, year)
    if start is None:
        raise SystemExit('%s: no "Solving" line; is this a Caffe training log?' % input_file)
    with open(output_file, 'w') as out:
        last = start
        for line in lines:
            t = extract_datetime_from_line(line, year)
            if t is None:
                continue
            if t < last - datetime.timedelta(days=1):
                year += 1
                t = t.replace(year=year)
            last = t
            out.write('%f\n' % (t - start).total_seconds())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('input_file')
    p.add_argument('output_file')
    a = p.parse_args()
    extract_seconds(a.input_file, a.output_file)


if __name__ == '__main__':
    main()
