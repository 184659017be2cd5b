#!/usr/bin/env python3
"""Parse a Caffe training log into CSV tables of training and test outputs.

    parse_log.py LOGFILE OUTPUT_DIR [--verbose] [--delimiter ,]

Writes OUTPUT_DIR/<log name>.train and OUTPUT_DIR/<log name>.test with the columns
Caffe's tools/extra/parse_log.py gives: NumIters, Seconds, LearningRate, then one column
per net output (`loss`, `accuracy`, ... as the `Train/Test net output #k: name = v` lines
name them). Rows follow Caffe's script exactly: the learning rate of a row is the last
`lr = ` seen before the row's outputs (Caffe prints it after them, so the first row
borrows the second row's rate); seconds count from the `Solving` line. Both the fork's
`Iteration N, loss = v` and BVLC's `Iteration N (x iter/s, ...), loss = v` lines are read,
and both glog stamps (`I1122 ...` and, from newer glog builds, `I20261122 ...`).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections import OrderedDict
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import extract_seconds  # noqa: E402

_ITERATION = re.compile(r'Iteration (\d+)')
_TRAIN_OUTPUT = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)')
_TEST_OUTPUT = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)')
_LEARNING_RATE = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')
_SMOOTHED_LOSS = re.compile(r'Iteration (\d+)(?: \([^)]*\))?, loss = ([-+\.\deE]+|nan|inf|-inf)')


def parse_log(path_to_log: str) -> Tuple[List[OrderedDict], List[OrderedDict]]:
    """(train rows, test rows): lists of OrderedDicts with the columns described above."""
    year = extract_seconds.get_log_created_year(path_to_log)
    with open(path_to_log) as f:
        lines = f.readlines()
    start = extract_seconds.get_start_time(lines, year)
    iteration = -1
    learning_rate = float('nan')
    train_rows: List[OrderedDict] = []
    test_rows: List[OrderedDict] = []
    train_row = test_row = None
    for line in lines:
        m = _ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue            # nothing before the first iteration is a result
        t = extract_seconds.extract_datetime_from_line(line, year)
        if t is None or start is None:
            continue
        seconds = (t - start).total_seconds()
        m = _LEARNING_RATE.search(line)
        if m:
            learning_rate = float(m.group(1))
        train_rows, train_row = _net_output(_TRAIN_OUTPUT, train_row, train_rows, line,
                                            iteration, seconds, learning_rate)
        test_rows, test_row = _net_output(_TEST_OUTPUT, test_row, test_rows, line,
                                          iteration, seconds, learning_rate)
    _fix_initial_nan_learning_rate(train_rows)
    _fix_initial_nan_learning_rate(test_rows)
    return train_rows, test_rows


def parse_smoothed_loss(path_to_log: str) -> List[Tuple[int, float]]:
    """(iteration, smoothed loss) from the `Iteration N, loss = v` lines (for plots)."""
    out = []
    with open(path_to_log) as f:
        for line in f:
            m = _SMOOTHED_LOSS.search(line)
            if m:
                out.append((int(m.group(1)), float(m.group(2))))
    return out


def _net_output(regex, row: Optional[OrderedDict], rows: List[OrderedDict], line: str,
                iteration: float, seconds: float, learning_rate: float):
    """Add a `... net output #k: name = v` line to the current row; a row is complete when
    it has as many columns as the first row (outputs of one iteration come together)."""
    m = regex.search(line)
    if m:
        if not row or row['NumIters'] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([('NumIters', iteration), ('Seconds', seconds),
                               ('LearningRate', learning_rate)])
        row[m.group(2)] = float(m.group(3))
    if row and len(rows) >= 1 and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return rows, row


def _fix_initial_nan_learning_rate(rows: List[OrderedDict]) -> None:
    """The first rows come before any `lr = ` line: give them the second row's rate."""
    if len(rows) > 1:
        rows[0]['LearningRate'] = rows[1]['LearningRate']


def save_csv_files(logfile_path: str, output_dir: str, train_rows, test_rows,
                   delimiter: str = ',', verbose: bool = False) -> None:
    base = os.path.basename(logfile_path)
    write_csv(os.path.join(output_dir, base + '.train'), train_rows, delimiter, verbose)
    write_csv(os.path.join(output_dir, base + '.test'), test_rows, delimiter, verbose)


def write_csv(output_filename: str, rows, delimiter: str, verbose: bool = False) -> None:
    if not rows:
        if verbose:
            print('Not writing %s; no lines to write' % output_filename)
        return
    with open(output_filename, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), delimiter=delimiter,
                           lineterminator='\r\n')
        w.writeheader()
        w.writerows(rows)
    if verbose:
        print('Wrote %s' % output_filename)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Parse a Caffe training log into two CSV files '
                                'containing training and testing information')
    p.add_argument('logfile_path', help='Path to log file')
    p.add_argument('output_dir', help='Directory in which to place output CSV files')
    p.add_argument('--verbose', action='store_true', help='Print some extra info (e.g., output '
                   'filenames)')
    p.add_argument('--delimiter', default=',', help='Column delimiter in output files '
                   '(default: \'%(default)s\')')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    train_rows, test_rows = parse_log(args.logfile_path)
    save_csv_files(args.logfile_path, args.output_dir, train_rows, test_rows,
                   delimiter=args.delimiter, verbose=args.verbose)


if __name__ == '__main__':
    main()
