"""Time RefineDet's MultiBoxLoss and DetectionOutput against what they must not slow down.

    python benchmarks/bench_multibox.py [--batch 8] [--iters 5] [--body-batch 2] [--threads N]
                                        [--skip-body]

RefineDet320 sizes: priors from the engine's PriorBox on 40x40, 20x20, 10x10 and 5x5 maps
(min_size 32/64/128/256, aspect ratio 2 with flip: 3 priors per cell, 6375 priors), 21
classes, `--batch` images with about 3 ground-truth boxes each.

1. Loss: the ARM loss (2 classes, 4 bottoms) and the ODM loss (21 classes, 6 bottoms:
   objectness filtering and ARM-refined anchors), with the ARM confidence softmax between
   them, as in RefineDet's train net; one forward+backward of these layers through
   `caffe.Net`. Compared with a plain-PyTorch forward+backward of RefineDet's VGG16 body
   (conv1_1 .. conv5_3, dilated fc6 1024, fc7 1024) on 320x320 images: the body is timed
   at `--body-batch` images and scaled to `--batch` (its cost is linear in the batch).
   The full RefineDet net adds extra layers, the transfer blocks and heads to that body,
   so the printed share of the loss is an upper bound.
2. DetectionOutput (5 bottoms, nms 0.45, top_k 1000, keep_top_k 500, confidence 0.01),
   per image, on (a) trained-net-like scores (background wins on almost every prior; a
   few hundred confident objects) and (b) a random net's scores (every class near 1/21, so
   every class sends 1000 candidates to NMS: the worst case). Compared with a plain-PyTorch
   decoder of the same inputs (decode, threshold, per-class torchvision NMS, top-k).

Medians of `--iters` timed runs after one warm-up; engine and plain runs alternate. On a
shared machine, read the ratios rather than the absolute times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe import protoio  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

MAPS = ((40, 32), (20, 64), (10, 128), (5, 256))      # (feature size, min_size) on 320 x 320
NUM_CLASSES = 21


def priors() -> np.ndarray:
    """RefineDet320's anchors, concatenated as its mbox_priorbox Concat does."""
    lines = ['input: "data" input_shape { dim: 1 dim: 3 dim: 320 dim: 320 }']
    for k, (s, m) in enumerate(MAPS):
        lines.append('input: "f%d" input_shape { dim: 1 dim: 1 dim: %d dim: %d }' % (k, s, s))
        lines.append('layer { name: "p%d" type: "PriorBox" bottom: "f%d" bottom: "data" '
                     'top: "p%d" prior_box_param { min_size: %d aspect_ratio: 2 flip: true '
                     'clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 '
                     'step: %d offset: 0.5 } }' % (k, k, k, m, 320 // s))
    lines.append('layer { name: "cat" type: "Concat" bottom: "p0" bottom: "p1" bottom: "p2" '
                 'bottom: "p3" top: "priors" concat_param { axis: 2 } }')
    net = caffe.Net(protoio.parse_text('\n'.join(lines), caffe_pb2.NetParameter()), caffe.TEST)
    net.forward()
    return net.blobs['priors'].data.copy()


def ground_truth(rng, batch: int) -> np.ndarray:
    rows = []
    for i in range(batch):
        for k in range(rng.randint(2, 5)):
            cx, cy = rng.uniform(0.15, 0.85, 2)
            w, h = rng.uniform(0.08, 0.5, 2)
            rows.append([i, rng.randint(1, NUM_CLASSES), k, cx - w / 2, cy - h / 2,
                         cx + w / 2, cy + h / 2, 0])
    return np.array(rows).reshape(1, 1, -1, 8)


LOSS_NET = '''force_backward: true
input: "arm_loc" input_shape { dim: %(n)d dim: %(l)d }
input: "arm_conf" input_shape { dim: %(n)d dim: %(a)d }
input: "odm_loc" input_shape { dim: %(n)d dim: %(l)d }
input: "odm_conf" input_shape { dim: %(n)d dim: %(c)d }
input: "priors" input_shape { dim: 1 dim: 2 dim: %(l)d }
input: "label" input_shape { dim: 1 dim: 1 dim: %(g)d dim: 8 }
layer { name: "arm_loss" type: "MultiBoxLoss" bottom: "arm_loc" bottom: "arm_conf"
  bottom: "priors" bottom: "label" top: "arm_loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1
    num_classes: 2 share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5
    use_prior_for_matching: true background_label_id: 0 use_difficult_gt: true
    neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE }
  loss_param { normalization: VALID } }
layer { name: "arm_conf_reshape" type: "Reshape" bottom: "arm_conf" top: "arm_conf_reshape"
  reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "arm_conf_softmax" type: "Softmax" bottom: "arm_conf_reshape"
  top: "arm_conf_softmax" softmax_param { axis: 2 } }
layer { name: "arm_conf_flatten" type: "Flatten" bottom: "arm_conf_softmax"
  top: "arm_conf_flatten" flatten_param { axis: 1 } }
layer { name: "odm_loss" type: "MultiBoxLoss" bottom: "odm_loc" bottom: "odm_conf"
  bottom: "priors" bottom: "label" bottom: "arm_conf_flatten" bottom: "arm_loc" top: "odm_loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  propagate_down: false propagate_down: false
  multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1
    num_classes: 21 share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5
    use_prior_for_matching: true background_label_id: 0 use_difficult_gt: true
    neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE
    objectness_score: 0.01 }
  loss_param { normalization: VALID } }
'''

OUTPUT_NET = '''input: "odm_loc" input_shape { dim: 1 dim: %(l)d }
input: "odm_conf" input_shape { dim: 1 dim: %(c)d }
input: "priors" input_shape { dim: 1 dim: 2 dim: %(l)d }
input: "arm_conf" input_shape { dim: 1 dim: %(a)d }
input: "arm_loc" input_shape { dim: 1 dim: %(l)d }
layer { name: "detection_out" type: "DetectionOutput" bottom: "odm_loc" bottom: "odm_conf"
  bottom: "priors" bottom: "arm_conf" bottom: "arm_loc" top: "detection_out"
  detection_output_param { num_classes: 21 background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 1000 } code_type: CENTER_SIZE keep_top_k: 500
    confidence_threshold: 0.01 objectness_score: 0.01 } }
'''


def timed(fn, iters: int):
    fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


# ---- the conv body, in plain PyTorch -----------------------------------------------------------

class VGGBody(nn.Module):
    """RefineDet's VGG16 body: conv1_1 .. conv5_3 (pool5 3x3/1), dilated fc6, fc7."""

    def __init__(self):
        super().__init__()
        cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
        layers, c = [], 3
        for v in cfg:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        layers += [nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(512, 1024, 3, padding=3, dilation=3),
                   nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def body_step(model, x):
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.backward(torch.ones_like(y))


# ---- a plain-PyTorch decoder for DetectionOutput's comparison ----------------------------------

def plain_detect(loc, conf, pri, arm_conf, arm_loc):
    var = pri[1]
    def decode(anchor, d):
        w, h = anchor[:, 2] - anchor[:, 0], anchor[:, 3] - anchor[:, 1]
        cx, cy = (anchor[:, 0] + anchor[:, 2]) / 2, (anchor[:, 1] + anchor[:, 3]) / 2
        cx = cx + d[:, 0] * var[:, 0] * w
        cy = cy + d[:, 1] * var[:, 1] * h
        w = w * torch.exp(d[:, 2] * var[:, 2])
        h = h * torch.exp(d[:, 3] * var[:, 3])
        return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
    boxes = decode(decode(pri[0], arm_loc), loc)
    conf = torch.where((arm_conf[:, 1] < 0.01)[:, None], F.one_hot(
        torch.zeros(conf.shape[0], dtype=torch.long), conf.shape[1]).to(conf.dtype), conf)
    scores, cls = conf[:, 1:], torch.arange(1, conf.shape[1]).expand(conf.shape[0], -1)
    keep = scores > 0.01
    s, c = scores[keep], cls[keep]
    b = boxes[:, None, :].expand(-1, scores.shape[1], 4)[keep]
    kept = []
    for k in torch.unique(c):           # top_k 1000 per class, then NMS
        m = torch.nonzero(c == k).reshape(-1)
        m = m[s[m].argsort(descending=True)[:1000]]
        kept.append(m[torchvision.ops.nms(b[m], s[m], 0.45)])
    kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
    kept = kept[s[kept].argsort(descending=True)[:500]]
    return torch.cat((c[kept, None].to(s.dtype), s[kept, None], b[kept]), 1)


def output_inputs(rng, pri: np.ndarray, trained: bool):
    p = pri.shape[2] // 4
    logits = rng.randn(p, NUM_CLASSES)
    if trained:
        logits[:, 0] += 8.0                                     # background everywhere ...
        obj = rng.choice(p, 300, replace=False)                 # ... but a few hundred objects
        logits[obj, rng.randint(1, NUM_CLASSES, 300)] += 12.0
    conf = np.exp(logits - logits.max(1, keepdims=True))
    conf /= conf.sum(1, keepdims=True)
    arm = rng.rand(p, 2)
    if trained:
        arm[:, 1] *= 0.02
        arm[obj, 1] = 1
    arm /= arm.sum(1, keepdims=True)
    return {'odm_loc': rng.randn(1, p * 4) * 0.5, 'odm_conf': conf.reshape(1, -1),
            'priors': pri, 'arm_conf': arm.reshape(1, -1),
            'arm_loc': rng.randn(1, p * 4) * 0.5}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--body-batch', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--skip-body', action='store_true', help='only time the detection layers')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    caffe.set_mode_cpu()
    rng = np.random.RandomState(0)
    pri = priors()
    p = pri.shape[2] // 4
    n = args.batch
    print('torch %s, %d threads; %d priors, %d classes, batch %d'
          % (torch.__version__, torch.get_num_threads(), p, NUM_CLASSES, n))

    label = ground_truth(rng, n)
    sizes = dict(n=n, l=p * 4, a=p * 2, c=p * NUM_CLASSES, g=label.shape[2])
    net = caffe.Net(protoio.parse_text(LOSS_NET % sizes, caffe_pb2.NetParameter()), caffe.TRAIN)
    feeds = {'arm_loc': rng.randn(n, p * 4) * 0.5, 'arm_conf': rng.randn(n, p * 2),
             'odm_loc': rng.randn(n, p * 4) * 0.5, 'odm_conf': rng.randn(n, p * NUM_CLASSES),
             'priors': pri, 'label': label}
    for k, v in feeds.items():
        net.blobs[k].data[...] = v

    def loss_step():
        net.forward()
        net.backward()

    loss_s = timed(loss_step, args.iters)
    print('MultiBoxLoss ARM + ODM forward+backward, batch %d: %.1f ms  (%d ground-truth boxes; '
          'arm_loss %.3f, odm_loss %.3f)' % (n, loss_s * 1e3, label.shape[2],
                                             float(net.blobs['arm_loss'].data),
                                             float(net.blobs['odm_loss'].data)))
    if not args.skip_body:
        model = VGGBody()
        x = torch.randn(args.body_batch, 3, 320, 320)
        body_s = timed(lambda: body_step(model, x), max(2, args.iters // 2)) * n / args.body_batch
        print('plain PyTorch VGG16 body forward+backward, 320x320, batch %d (timed at %d): '
              '%.2f s' % (n, args.body_batch, body_s))
        print('  -> MultiBoxLoss is %.2f%% of the body\'s forward+backward (goal < 5%%)'
              % (100 * loss_s / body_s))

    for name, trained in (('trained-net-like scores', True), ('random-net scores', False)):
        feeds = output_inputs(rng, pri, trained)
        onet = caffe.Net(protoio.parse_text(OUTPUT_NET % sizes, caffe_pb2.NetParameter()),
                         caffe.TEST)
        for k, v in feeds.items():
            onet.blobs[k].data[...] = v
        eng = timed(onet.forward, args.iters)
        t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in feeds.items()}
        args_plain = (t['odm_loc'].reshape(p, 4), t['odm_conf'].reshape(p, NUM_CLASSES),
                      t['priors'].reshape(2, p, 4), t['arm_conf'].reshape(p, 2),
                      t['arm_loc'].reshape(p, 4))
        plain = timed(lambda: plain_detect(*args_plain), args.iters)
        print('DetectionOutput per image, %s: %.1f ms (%d detections); plain PyTorch decoder '
              '%.1f ms; engine/plain %.2f (goal < 20 ms)'
              % (name, eng * 1e3, onet.blobs['detection_out'].shape[2], plain * 1e3, eng / plain))


if __name__ == '__main__':
    main()
