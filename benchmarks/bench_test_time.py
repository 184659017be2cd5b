"""Time test-time detection (tools/test_net.py's per-image work) against plain PyTorch.

    python benchmarks/bench_test_time.py [--nets zf,vgg16] [--precisions fp32,bf16]
                                         [--iters 5] [--warmup 1] [--image 480x800]
                                         [--gemm auto|on|off] [--threads N]

For each Faster R-CNN test net (`zf`, `vgg16`: models/pascal_voc/<NET>/faster_rcnn_end2end/
test.prototxt, or a prototxt path) with random He-scaled weights (plain_faster_rcnn.
randomize_weights) and one synthetic image (480x800 by default, which test scaling turns
into the 600x1000 input py-faster-rcnn's nets see), one step is what test_net does per
image:

* engine: `fast_rcnn.test.im_detect(net, im)` (image blob, forward through the conv body,
  the RPN, the ProposalLayer with its NMS, RoI pooling and the heads, box decoding), then
  test_net's per-class thresholding and NMS;
* plain PyTorch: the same net as plain_faster_rcnn.PlainFasterRCNN (forward only, under
  `torch.no_grad()`), the same image preparation, the same ProposalLayer code and the same
  decoding, per-class thresholding and NMS.

So the two differ only in how the net's layers are run. Steps alternate between the sides;
printed per net and precision: median wall and CPU seconds (CPU time is the figure a busy
machine moves least; with --threads 1 it is the work itself), engine/plain of the medians
and the median of the paired step ratios, the load before and after, and how far the plain
scores are from the engine's (the same function: ~1e-6 in fp32).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault('GLOG_minloglevel', '2')

from _machine import describe, ratio_line, timed  # noqa: E402
from plain_faster_rcnn import ROOT, PlainFasterRCNN, autocast_if, randomize_weights  # noqa: E402
import caffe  # noqa: E402
from caffe import _config  # noqa: E402
from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes  # noqa: E402
from fast_rcnn.config import cfg, cfg_from_file  # noqa: E402
from fast_rcnn.nms_wrapper import nms  # noqa: E402
from fast_rcnn.test import _get_blobs, im_detect  # noqa: E402

NETS = {n: os.path.join(ROOT, 'models', 'pascal_voc', d, 'faster_rcnn_end2end', 'test.prototxt')
        for n, d in (('zf', 'ZF'), ('vgg16', 'VGG16'))}


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image: smooth noise with a few bright rectangles (something to detect)."""
    rng = np.random.RandomState(seed)
    small = rng.rand(height // 16 + 1, width // 16 + 1, 3)
    im = np.kron(small, np.ones((16, 16, 1)))[:height, :width] * 200
    for _ in range(6):
        y, x = rng.randint(0, height - 60), rng.randint(0, width - 60)
        im[y:y + rng.randint(30, 200), x:x + rng.randint(30, 200)] = rng.rand(3) * 255
    return im.clip(0, 255).astype(np.uint8)


def per_class_nms(scores: np.ndarray, boxes: np.ndarray, thresh: float = 0.05,
                  max_per_image: int = 100) -> int:
    """test_net's work after im_detect for one image; returns the number of detections."""
    kept = []
    for j in range(1, scores.shape[1]):
        inds = np.flatnonzero(scores[:, j] > thresh)
        dets = np.hstack((boxes[inds, 4 * j:4 * j + 4], scores[inds, j:j + 1])).astype(np.float32)
        kept.append(dets[nms(dets, cfg.TEST.NMS)])
    all_scores = np.concatenate([d[:, -1] for d in kept]) if kept else np.zeros(0)
    if max_per_image > 0 and len(all_scores) > max_per_image:
        cut = np.sort(all_scores)[-max_per_image]
        kept = [d[d[:, -1] >= cut] for d in kept]
    return sum(len(d) for d in kept)


class EngineSide:
    def __init__(self, net: caffe.Net, im: np.ndarray, precision: str):
        self.net, self.im, self.precision = net, im, precision

    def step(self) -> Tuple[np.ndarray, np.ndarray]:
        caffe.set_precision(self.precision)
        try:
            scores, boxes = im_detect(self.net, self.im)
        finally:
            caffe.set_precision('fp32')
        per_class_nms(scores, boxes)
        return scores, boxes


class PlainSide:
    def __init__(self, engine: caffe.Net, im: np.ndarray, precision: str):
        self.bf16 = precision == 'bf16'
        self.model = PlainFasterRCNN(engine, train=False)
        if self.bf16:
            self.model.to(memory_format=torch.channels_last)
        self.im = im

    def step(self) -> Tuple[np.ndarray, np.ndarray]:
        blobs, im_scales = _get_blobs(self.im, None)
        data = torch.from_numpy(blobs['data'].astype(np.float32, copy=False))
        inputs = {'data': data, 'im_info': torch.tensor(
            [[data.shape[2], data.shape[3], im_scales[0]]], dtype=torch.float32)}
        if self.bf16:
            inputs['data'] = data.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_if(self.bf16):
            out = self.model(inputs)
        rois = out['rois'].numpy()
        boxes = rois[:, 1:5] / im_scales[0]
        scores = out['cls_prob'].float().numpy().reshape(rois.shape[0], -1)
        deltas = out['bbox_pred'].float().numpy().reshape(rois.shape[0], -1)
        pred = clip_boxes(bbox_transform_inv(boxes, deltas), self.im.shape)
        per_class_nms(scores, pred)
        return scores, pred


def bench(name: str, precision: str, args, im: np.ndarray) -> Dict[str, object]:
    path = NETS.get(name, name)
    caffe.set_random_seed(0)
    net = caffe.Net(path, caffe.TEST)
    randomize_weights(net, np.random.RandomState(1))
    engine = EngineSide(net, im, precision)
    plain = PlainSide(net, im, precision)
    times = {engine: ([], []), plain: ([], [])}
    outs = {}
    for i in range(args.warmup + args.iters):
        for side in (engine, plain):
            outs[side], wall, cpu = timed(side.step)
            if i >= args.warmup:
                times[side][0].append(wall)
                times[side][1].append(cpu)
    (se, _), (sp, _) = outs[engine], outs[plain]
    n = min(len(se), len(sp))
    return {'engine': times[engine], 'plain': times[plain], 'rois': (len(se), len(sp)),
            'score_diff': float(np.abs(se[:n] - sp[:n]).max()) if n else float('nan')}


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--nets', default='zf,vgg16')
    ap.add_argument('--precisions', default='fp32,bf16')
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--image', default='480x800', help='HxW of the synthetic image')
    ap.add_argument('--gemm', default='auto', choices=('auto', 'on', 'off'))
    ap.add_argument('--threads', type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    caffe.set_mode_cpu()
    caffe.set_bf16_matmuls(args.gemm)
    cfg_from_file(os.path.join(ROOT, 'experiments', 'cfgs', 'faster_rcnn_end2end.yml'))
    cfg.TEST.HAS_RPN = True
    cfg.USE_GPU_NMS = False
    h, w = (int(v) for v in args.image.lower().split('x'))
    im = synthetic_image(h, w)
    print(describe(torch, _config))
    print('image %dx%d, scaled to TEST.SCALES %s / MAX_SIZE %d; %d timed steps per side after %d'
          % (h, w, tuple(cfg.TEST.SCALES), cfg.TEST.MAX_SIZE, args.iters, args.warmup))
    for name in [n for n in args.nets.split(',') if n]:
        for precision in [p for p in args.precisions.split(',') if p]:
            load = os.getloadavg()[0]
            r = bench(name, precision, args, im)
            (ew, ec), (pw, pc) = r['engine'], r['plain']
            print('%-6s %-4s im_detect+NMS per image, %s' % (name, precision, ratio_line(ew, pw, ec, pc)))
            print('    load %.1f -> %.1f; rois engine %d plain %d; max score difference %.2g'
                  % (load, os.getloadavg()[0], r['rois'][0], r['rois'][1], r['score_diff']))
            print('    engine wall %s' % ' '.join('%.3f' % t for t in ew))
            print('    plain  wall %s' % ' '.join('%.3f' % t for t in pw))


if __name__ == '__main__':
    main()
