"""Whole-training throughput: images per second of train_net.py's loop, engine against a
plain-PyTorch Faster R-CNN training step of the same layers.

    python benchmarks/bench_train.py [--cases toy,vgg16] [--precisions fp32,bf16]
                                     [--iters 10] [--warmup 3] [--gemm auto|on|off]
                                     [--threads N] [--ops]

Cases:

* `toy`: ToyNet end-to-end Faster R-CNN on the embedded toy data set (made in a
  temporary folder with datasets.toy_generator, 40 training images) with
  experiments/cfgs/toy_faster_rcnn_end2end.yml, as `make demo` trains it;
* `vgg16`: py-faster-rcnn's VGG16 end-to-end net (models/pascal_voc/VGG16/
  faster_rcnn_end2end) with experiments/cfgs/faster_rcnn_end2end.yml, on one synthetic
  600x1000 image with five ground-truth boxes (conv1/conv2 frozen as in the prototxt,
  weights from the prototxt's fillers).

The engine's step is the real one: fast_rcnn.train.SolverWrapper (RoIDataLayer with the
roidb, AnchorTargetLayer, ProposalLayer, ProposalTargetLayer, the solver's SGD update),
timed around `solver.step(1)` as SolverWrapper.train_model times it. The plain step is
plain_faster_rcnn.PlainFasterRCNN built from the same net: `zero_grad()`, forward (the
same Python layer objects' code on NumPy copies: data layer, anchor targets, proposals and
their NMS, proposal targets), `loss.backward()`, `torch.optim.SGD.step()` with Caffe's
learning-rate and decay multipliers. Under bf16 the engine runs
`caffe.set_precision('bf16')` (what `--bf16` and CAFFE_BF16=1 do), plain PyTorch
`torch.autocast('cpu', bfloat16)` with channels-last weights.

Steps alternate between the sides; printed per case and precision: images/s of each
(median wall step), engine/plain of the median wall and CPU step times and the medians of
the paired ratios (CPU time is what a busy machine moves least), the load average, and both sides' first losses (the same weights and first
minibatch: they agree but for the dropout masks, drawn by different generators). `--ops`
adds what one step of each side moves through memory (op_census.py).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault('GLOG_minloglevel', '2')

from _machine import describe, ratio_line, timed  # noqa: E402
from plain_faster_rcnn import ROOT, PlainFasterRCNN, autocast_if  # noqa: E402
import caffe  # noqa: E402
from caffe import _config  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from fast_rcnn.config import cfg, cfg_from_file, cfg_restore, cfg_snapshot  # noqa: E402


def _toy_roidb(tmp: str):
    from datasets.factory import get_imdb
    from datasets.toy_generator import make_toy_dataset
    from fast_rcnn.train import get_training_roidb
    cfg.DATA_DIR = tmp
    make_toy_dataset(os.path.join(tmp, 'toy'), seed=0, num_trainval=40, num_test=4)
    with contextlib.redirect_stdout(io.StringIO()):
        imdb = get_imdb('toy_2007_trainval')
        imdb.set_proposal_method(cfg.TRAIN.PROPOSAL_METHOD)
        roidb = get_training_roidb(imdb)
    return roidb


def _synthetic_roidb(tmp: str, height: int = 600, width: int = 1000, classes: int = 21):
    """One image with five boxes, as prepare_roidb would describe it."""
    rng = np.random.RandomState(0)
    im = (rng.rand(height // 8, width // 8, 3) * 255).astype(np.uint8)
    im = cv2.resize(im, (width, height), interpolation=cv2.INTER_LINEAR)
    boxes = []
    for c in range(5):
        w, h = rng.randint(60, 300), rng.randint(60, 300)
        x, y = rng.randint(0, width - w), rng.randint(0, height - h)
        im[y:y + h, x:x + w] = rng.randint(0, 255, 3)
        boxes.append([x, y, x + w - 1, y + h - 1])
    path = os.path.join(tmp, 'synthetic.jpg')
    cv2.imwrite(path, im)
    gt = rng.randint(1, classes, 5)
    overlaps = np.zeros((5, classes), np.float32)
    overlaps[np.arange(5), gt] = 1
    entry = {'image': path, 'width': width, 'height': height, 'flipped': False,
             'boxes': np.array(boxes, np.uint16), 'gt_classes': gt.astype(np.int32),
             'gt_overlaps': overlaps, 'max_classes': gt, 'max_overlaps': np.ones(5, np.float32),
             'seg_areas': np.zeros(5, np.float32)}
    return [entry]


CASES = {
    'toy': ('models/toy/ToyNet/faster_rcnn_end2end/solver.prototxt',
            'experiments/cfgs/toy_faster_rcnn_end2end.yml', _toy_roidb),
    'vgg16': ('models/pascal_voc/VGG16/faster_rcnn_end2end/solver.prototxt',
              'experiments/cfgs/faster_rcnn_end2end.yml', _synthetic_roidb),
}


class EngineSide:
    """train_net.py's loop: SolverWrapper, one solver.step(1) per timed step."""

    def __init__(self, solver: str, roidb, out_dir: str, precision: str):
        from fast_rcnn.train import SolverWrapper
        self.precision = precision
        with contextlib.redirect_stdout(io.StringIO()):
            self.sw = SolverWrapper(solver, roidb, out_dir)
        self.net = self.sw.solver.net
        self.first = None

    def step(self) -> None:
        caffe.set_precision(self.precision)
        try:
            self.sw.solver.step(1)
        finally:
            caffe.set_precision('fp32')
        if self.first is None:
            self.first = {n: float(self.net.blobs[n].data) for n, w in
                          self.net.blob_loss_weights.items() if w}


class PlainSide:
    """zero_grad, forward (the same Python layers), loss.backward(), SGD step."""

    def __init__(self, engine: EngineSide, solver_path: str, roidb, precision: str):
        self.bf16 = precision == 'bf16'
        self.model = PlainFasterRCNN(engine.net, train=True)
        data_layer = engine.net._param.layer[0].name
        self.model.py[data_layer].set_roidb(roidb)
        sp = caffe_pb2.SolverParameter()
        with open(solver_path) as f:
            text_format.Merge(f.read(), sp)
        self.opt = self.model.optimizer(sp.base_lr, sp.momentum, sp.weight_decay)
        if self.bf16:
            self.model.to(memory_format=torch.channels_last)
        self.first = None

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with autocast_if(self.bf16):
            out = self.model({})
        out['loss'].backward()
        self.opt.step()
        if self.first is None:
            self.first = {n: float(out[n].detach()) for n in self.model.loss_weights}


def run_case(name: str, precision: str, args, tmp: str) -> Dict[str, object]:
    solver, cfg_file, make_roidb = CASES[name]
    saved = cfg_snapshot()
    try:
        cfg_from_file(os.path.join(ROOT, cfg_file))
        cfg.USE_GPU_NMS = False
        cfg.TRAIN.USE_PREFETCH = False
        roidb = make_roidb(tmp)
        np.random.seed(cfg.RNG_SEED)
        caffe.set_random_seed(cfg.RNG_SEED)
        engine = EngineSide(solver, roidb, os.path.join(tmp, 'out'), precision)
        np.random.seed(cfg.RNG_SEED)  # the plain side's data layer draws the same batches
        plain = PlainSide(engine, os.path.join(ROOT, solver), roidb, precision)
        times = {engine: ([], []), plain: ([], [])}
        for i in range(args.warmup + args.iters):
            for side in (engine, plain):
                np.random.seed(cfg.RNG_SEED + i)
                _, wall, cpu = timed(side.step)
                if i >= args.warmup:
                    times[side][0].append(wall)
                    times[side][1].append(cpu)
        ops = None
        if args.ops:
            from op_census import census, format_rows
            ops = format_rows(census(engine.step), census(plain.step))
        return {'engine': times[engine], 'plain': times[plain], 'ims': cfg.TRAIN.IMS_PER_BATCH,
                'loss_engine': engine.first, 'loss_plain': plain.first, 'ops': ops}
    finally:
        cfg_restore(saved)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cases', default='toy,vgg16')
    ap.add_argument('--precisions', default='fp32,bf16')
    ap.add_argument('--iters', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--gemm', default='auto', choices=('auto', 'on', 'off'))
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--ops', action='store_true', help='print what one step moves, per side')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # solver prototxts name their nets relative to the repository
    caffe.set_mode_cpu()
    caffe.set_bf16_matmuls(args.gemm)
    print(describe(torch, _config))
    print('%d timed steps per side after %d warm-up steps' % (args.iters, args.warmup))
    for name in [c for c in args.cases.split(',') if c]:
        for precision in [p for p in args.precisions.split(',') if p]:
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as tmp:
                r = run_case(name, precision, args, tmp)
            (ew, ec), (pw, pc) = r['engine'], r['plain']
            me, mp = statistics.median(ew), statistics.median(pw)
            print('%-6s %-4s engine %.2f img/s  plain %.2f img/s (median wall step); %s'
                  % (name, precision, r['ims'] / me, r['ims'] / mp, ratio_line(ew, pw, ec, pc)))
            print('    load %.1f -> %.1f' % (load, os.getloadavg()[0]))
            print('    engine wall %s' % ' '.join('%.3f' % t for t in ew))
            print('    plain  wall %s' % ' '.join('%.3f' % t for t in pw))
            print('    first losses engine %s' % _fmt(r['loss_engine']))
            print('                 plain  %s' % _fmt(r['loss_plain']))
            if r['ops']:
                print(r['ops'])


def _fmt(d: Dict[str, float]) -> str:
    return '{%s}' % ', '.join('%s: %.4g' % kv for kv in sorted(d.items()))


if __name__ == '__main__':
    main()
