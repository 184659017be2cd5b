"""Time OHEM's hard-RoI selection for 2000 RoIs (21 classes), with and without NMS.

    python benchmarks/bench_ohem.py [--rois 2000] [--repeat 50]

Prints the median milliseconds of roi_losses + ohem_minibatch, the work OHEMDataLayer
does per iteration. Target: under 5 ms for 2000 RoIs on a 2-core CPU.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'lib'), os.path.join(ROOT, 'caffe-fast-rcnn', 'python')]

from fast_rcnn.config import cfg  # noqa: E402
from roi_data_layer import ohem  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rois', type=int, default=2000)
    ap.add_argument('--classes', type=int, default=21)
    ap.add_argument('--repeat', type=int, default=50)
    args = ap.parse_args()
    rng = np.random.RandomState(0)
    n, k = args.rois, args.classes
    prob = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    labels = np.where(rng.rand(n) < 0.25, rng.randint(1, k, n), 0).astype(np.float32)
    x1, y1 = rng.uniform(0, 500, n), rng.uniform(0, 350, n)
    rois = np.stack([np.zeros(n), x1, y1, x1 + rng.uniform(16, 300, n), y1 + rng.uniform(16, 250, n)], 1).astype(np.float32)
    w = np.zeros((n, 4 * k), np.float32)
    fg = np.where(labels > 0)[0]
    cols = 4 * labels[fg].astype(int)[:, None] + np.arange(4)
    w[fg[:, None], cols] = 1
    pred = rng.randn(n, 4 * k).astype(np.float32)
    targets = (rng.randn(n, 4 * k) * w).astype(np.float32)
    for use_nms in (False, True):
        cfg.TRAIN.OHEM_USE_NMS = use_nms
        times = []
        for _ in range(args.repeat + 1):
            t = time.perf_counter()
            loss = ohem.roi_losses(prob, labels, pred, targets, w, w)
            ohem.ohem_minibatch(loss, rois, labels, targets, w, w)
            times.append(time.perf_counter() - t)
        print('OHEM selection, %d RoIs, %d classes, nms=%s: median %.2f ms'
              % (n, k, use_nms, 1000 * float(np.median(times[1:]))))


if __name__ == '__main__':
    main()
