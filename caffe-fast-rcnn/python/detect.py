#!/usr/bin/env python3
"""Windowed detection with a Caffe classification model, as pycaffe's detect.py.

    detect.py INPUT OUTPUT [--crop_mode list|selective_search] [--model_def ...] ...

With --crop_mode list, INPUT is a .csv with a header naming the columns filename, ymin,
xmin, ymax, xmax (any order): every window of every image is classified. With
selective_search (the default), INPUT is a .txt of image file names whose windows come from
the external selective_search_ijcv_with_python package. OUTPUT is a .csv (filename, the
window, then class0 ... classN-1 probabilities, one row per window) or, for any other
extension, an HDF5 file with the datasets filename, window and prediction.
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
import time
from typing import List, Optional

import numpy as np

import caffe
from caffe import script_args

HERE = os.path.dirname(os.path.abspath(__file__))
CROP_MODES = ['list', 'selective_search']
COORD_COLS = ['ymin', 'xmin', 'ymax', 'xmax']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('input_file', help="Input txt/csv filename. If .txt, must be list of "
                   "filenames. If .csv, must be comma-separated file with header "
                   "'filename, xmin, ymin, xmax, ymax'")
    p.add_argument('output_file', help='Output h5/csv filename. Format depends on extension.')
    script_args.add_model_args(p, HERE)
    p.add_argument('--crop_mode', default='selective_search', choices=CROP_MODES,
                   help='How to generate windows for detection.')
    script_args.add_preprocessing_args(
        p, HERE, "Data set image mean of H x W x K dimensions (numpy array). Set to '' "
                 "for no mean subtraction.")
    p.add_argument('--context_pad', type=int, default=16,
                   help='Amount of surrounding context to collect in input window.')
    return p.parse_args(argv)


def read_windows(path: str):
    """[(filename, windows (K x 4) in COORD_COLS order), ...] from a windows .csv, images in
    order of first appearance."""
    grouped = collections.OrderedDict()
    with open(path, newline='') as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        missing = [c for c in ['filename'] + COORD_COLS if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit('%s: the header lacks the column(s) %s' % (path, ', '.join(missing)))
        for row in reader:
            grouped.setdefault(row['filename'], []).append([int(float(row[c])) for c in COORD_COLS])
    return [(name, np.array(w, dtype=int)) for name, w in grouped.items()]


def save(detections, path: str) -> None:
    names = [d['filename'] for d in detections]
    windows = np.array([d['window'] for d in detections], dtype=int).reshape(-1, 4)
    preds = np.array([np.ravel(d['prediction']) for d in detections], dtype=np.float32)
    if path.lower().endswith('csv'):
        with open(path, 'w', newline='') as f:
            out = csv.writer(f)
            out.writerow(['filename'] + COORD_COLS +
                         ['class%d' % i for i in range(preds.shape[1] if preds.size else 0)])
            for name, w, p in zip(names, windows, preds):
                out.writerow([name] + [int(v) for v in w] + ['%.9g' % v for v in p])
    else:
        import h5py
        with h5py.File(path, 'w') as f:
            f.create_dataset('filename', data=np.array(names, dtype=h5py.string_dtype()))
            f.create_dataset('window', data=windows)
            f.create_dataset('prediction', data=preds)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    mean = script_args.read_mean(args.mean_file)
    if mean is not None and mean.ndim == 3 and mean.shape[1:] != (1, 1):
        mean = mean.mean(1).mean(1)   # pycaffe's detect.py: one value per channel
    script_args.set_mode(args.gpu)
    detector = caffe.Detector(args.model_def, args.pretrained_model, mean=mean,
                              input_scale=args.input_scale, raw_scale=args.raw_scale,
                              channel_swap=script_args.channel_swap(args.channel_swap),
                              context_pad=args.context_pad)
    t = time.time()
    print('Loading input...')
    lower = args.input_file.lower()
    if args.crop_mode == 'list':
        if not lower.endswith('csv'):
            raise SystemExit('--crop_mode list needs a .csv of windows, got %s' % args.input_file)
        detections = detector.detect_windows(read_windows(args.input_file))
    elif lower.endswith('txt'):
        with open(args.input_file) as f:
            inputs = [line.strip() for line in f if line.strip()]
        detections = detector.detect_selective_search(inputs)
    else:
        raise SystemExit('Unknown input file type: not in txt or csv.')
    print('Processed {} windows in {:.3f} s.'.format(len(detections), time.time() - t))
    t = time.time()
    save(detections, args.output_file)
    print('Saved to {} in {:.3f} s.'.format(args.output_file, time.time() - t))
    return 0


if __name__ == '__main__':
    sys.exit(main())
