#!/usr/bin/env python3
"""Time one RefineDet320 VGG16 training iteration: the engine against the same network
written directly in PyTorch, in the same run; and the AnnotatedData layer's share of an
iteration with every augmentation of RefineDet's scripts.

    python benchmarks/bench_refinedet.py [--batches 1,4] [--iters 5] [--warmup 2]
                                         [--threads N] [--skip-data]

1. The engine: the train net that examples/refinedet/VGG16_VOC2007_320.py writes (run here
   with --no-run in a scratch folder), its AnnotatedData layer replaced by an Input layer
   (`data` N x 3 x 320 x 320, `label` with three boxes per image), random weights from its
   fillers, trained by an SGD solver: one `solver.step(1)` (forward, backward, update).
2. Plain PyTorch: RefineDet's VGG16 (fc6/fc7 atrous), conv6, the L2-normalised conv4_3 and
   conv5_3, the transfer connection blocks and the ARM/ODM heads as an nn.Module, the
   engine's initial weights copied in; the ARM and ODM losses written with
   F.cross_entropy and F.smooth_l1_loss and backpropagated by autograd; torch.optim.SGD
   with Caffe's lr/decay multipliers. Shared with the engine (no gradient flows through
   them): the prior boxes (the PriorBox values, constants of the net) and the target
   selection of caffe.bbox_util -- reading the label blob, Jaccard matching, decoding the
   ARM-refined anchors, the ranking loss and hard-negative mining -- so that both sides
   train on the same targets; the first step checks that both give the same losses.
   Steps alternate between the two sides; medians after `--warmup` steps are printed with
   their ratio (engine / plain; the goal is <= 1.10), the median of the per-step ratios and
   the ratio of the median process CPU times (the figures least moved by other jobs).
3. The data layer: the same net with its AnnotatedData layer reading an LMDB of toy
   scenes at VOC's image size (shorter side 375), every augmentation of the scripts on
   (distortion, expansion up to 4x, the seven batch samplers, five interpolations, mirror).
   Printed: the time to make one batch without prefetching (what prefetch has to hide),
   and, within training iterations (forward and backward), how long the data layer's
   forward waited for its prefetched batch, as a share of the iteration.
On a shared machine read the ratios, not the absolute times.
"""
from __future__ import annotations

import argparse
import os
import runpy
import statistics
import sys
import tempfile
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE_ROOT = os.path.join(ROOT, 'caffe-fast-rcnn')
sys.path.insert(0, os.path.join(CAFFE_ROOT, 'python'))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe import bbox_util, protoio  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

SIZE = 320
NUM_CLASSES = 21
_MB = caffe_pb2.MultiBoxLossParameter
_CODE = caffe_pb2.PriorBoxParameter


# ---- the nets the example script writes -------------------------------------------------------

def script_nets(work: str) -> str:
    """Run examples/refinedet/VGG16_VOC2007_320.py (--no-run, CPU) in `work`; its train net."""
    script = os.path.join(CAFFE_ROOT, 'examples', 'refinedet', 'VGG16_VOC2007_320.py')
    cwd, argv = os.getcwd(), sys.argv
    sys.path.insert(0, os.path.dirname(script))
    stderr = sys.stderr
    try:
        os.chdir(work)
        sys.argv = [script, '--no-run', '--gpus', '']
        sys.stderr = open(os.devnull, 'w')       # its warnings about the absent VOC data
        runpy.run_path(script, run_name='__main__')
    finally:
        sys.stderr.close()
        sys.stderr = stderr
        os.chdir(cwd)
        sys.argv = argv
    return os.path.join(work, 'models', 'VGGNet', 'VOC0712', 'refinedet_vgg16_320x320',
                        'train.prototxt')


def with_inputs(train_file: str, batch: int, boxes: int, out: str) -> str:
    """The train net with an Input layer for `data` and `label` instead of AnnotatedData."""
    net = protoio.read_text(train_file, caffe_pb2.NetParameter)
    assert net.layer[0].type == 'AnnotatedData'
    data = caffe_pb2.LayerParameter(name='data', type='Input', top=['data', 'label'])
    data.input_param.shape.add(dim=[batch, 3, SIZE, SIZE])
    data.input_param.shape.add(dim=[1, 1, batch * boxes, 8])
    net.layer[0].CopyFrom(data)
    with open(out, 'w') as f:
        f.write(str(net))
    return out


def with_lmdb(train_file: str, batch: int, db: str, label_map: str, out: str) -> str:
    """The train net reading `db` with the script's own augmentations, `batch` images."""
    net = protoio.read_text(train_file, caffe_pb2.NetParameter)
    layer = net.layer[0]
    layer.data_param.source = db
    layer.data_param.batch_size = batch
    layer.annotated_data_param.label_map_file = label_map
    with open(out, 'w') as f:
        f.write(str(net))
    return out


def solver_file(net_file: str, out: str) -> str:
    solver = caffe_pb2.SolverParameter(
        train_net=net_file, base_lr=0.001, lr_policy='fixed', momentum=0.9,
        weight_decay=0.0005, max_iter=1000000, display=0, snapshot=0, type='SGD',
        solver_mode=caffe_pb2.SolverParameter.CPU)
    with open(out, 'w') as f:
        f.write(str(solver))
    return out


def synth_batch(batch: int, boxes: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Images and a label blob of `boxes` boxes per image (item, label, instance, xmin,
    ymin, xmax, ymax, difficult), normalised coordinates."""
    rng = np.random.RandomState(seed)
    data = (rng.randn(batch, 3, SIZE, SIZE) * 50).astype(np.float32)
    rows = []
    for i in range(batch):
        for k in range(boxes):
            w, h = rng.uniform(0.1, 0.6, 2)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            rows.append([i, rng.randint(1, NUM_CLASSES), k, x, y, x + w, y + h, 0])
    return data, np.asarray(rows, np.float32).reshape(1, 1, -1, 8)


# ---- RefineDet320 VGG16 in plain PyTorch --------------------------------------------------------

def conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1,
         dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation)


class L2Norm(nn.Module):
    """SSD's Normalize across channels at each location, a learned scale per channel."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + 1e-10)
        return x / norm * self.weight[None, :, None, None]


class PlainRefineDet(nn.Module):
    """RefineDet320 with VGG16, written as one would in PyTorch; parameter names follow
    the Caffe layers so the engine's weights can be copied in."""

    VGG = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    ARM_SOURCES = ['conv4_3_norm', 'conv5_3_norm', 'fc7', 'conv6_2']
    ANCHORS = 3                                     # aspect ratios 1, 2, 1/2 per location

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        layers = {}
        cin = 3
        for stage, width, depth in self.VGG:
            for j in range(1, depth + 1):
                layers['conv%d_%d' % (stage, j)] = conv(cin, width)
                cin = width
        layers['fc6'] = conv(512, 1024, 3, 1, 3, dilation=3)
        layers['fc7'] = conv(1024, 1024, 1, 1, 0)
        layers['conv6_1'] = conv(1024, 256, 1, 1, 0)
        layers['conv6_2'] = conv(256, 512, 3, 2, 1)
        layers['conv4_3_norm'] = L2Norm(512, 10.)
        layers['conv5_3_norm'] = L2Norm(512, 8.)
        source_channels = [512, 512, 1024, 512]
        for level, c in zip((3, 4, 5, 6), source_channels):
            layers['TL%d_1' % level] = conv(c, 256)
            layers['TL%d_2' % level] = conv(256, 256)
            layers['P%d' % level] = conv(256, 256)
            if level < 6:
                layers['P%d-up' % (level + 1)] = nn.ConvTranspose2d(256, 256, 2, 2)
        a = self.ANCHORS
        for src, c in zip(self.ARM_SOURCES, source_channels):
            layers[src + '_mbox_loc'] = conv(c, a * 4)
            layers[src + '_mbox_conf'] = conv(c, a * 2)
        for level in (3, 4, 5, 6):
            layers['P%d_mbox_loc' % level] = conv(256, a * 4)
            layers['P%d_mbox_conf' % level] = conv(256, a * num_classes)
        self.layers = nn.ModuleDict(layers)

    @staticmethod
    def _flat(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        m = self.layers
        feats = {}
        for stage, _, depth in self.VGG:
            for j in range(1, depth + 1):
                x = F.relu(m['conv%d_%d' % (stage, j)](x), inplace=True)
            feats['conv%d_3' % stage] = x
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = F.relu(m['fc6'](x), inplace=True)
        x = feats['fc7'] = F.relu(m['fc7'](x), inplace=True)
        x = F.relu(m['conv6_1'](x), inplace=True)
        feats['conv6_2'] = F.relu(m['conv6_2'](x), inplace=True)
        feats['conv4_3_norm'] = m['conv4_3_norm'](feats['conv4_3'])
        feats['conv5_3_norm'] = m['conv5_3_norm'](feats['conv5_3'])
        sources = [feats[s] for s in self.ARM_SOURCES]
        p = {}
        for level in (6, 5, 4, 3):
            t = F.relu(m['TL%d_1' % level](sources[level - 3]), inplace=True)
            t = m['TL%d_2' % level](t)
            if level == 6:
                t = F.relu(t, inplace=True)
            else:
                t = F.relu(t + m['P%d-up' % (level + 1)](p[level + 1]), inplace=True)
            p[level] = F.relu(m['P%d' % level](t), inplace=True)
        n = x.shape[0]
        arm_loc = torch.cat([self._flat(m[s + '_mbox_loc'](f))
                             for s, f in zip(self.ARM_SOURCES, sources)], 1)
        arm_conf = torch.cat([self._flat(m[s + '_mbox_conf'](f))
                              for s, f in zip(self.ARM_SOURCES, sources)], 1)
        odm_loc = torch.cat([self._flat(m['P%d_mbox_loc' % k](p[k])) for k in (3, 4, 5, 6)], 1)
        odm_conf = torch.cat([self._flat(m['P%d_mbox_conf' % k](p[k])) for k in (3, 4, 5, 6)], 1)
        return (arm_loc.reshape(n, -1, 4), arm_conf.reshape(n, -1, 2),
                odm_loc.reshape(n, -1, 4), odm_conf.reshape(n, -1, self.num_classes))


def encode_center_size(anchors: torch.Tensor, var: torch.Tensor,
                       gt: torch.Tensor) -> torch.Tensor:
    """SSD's CENTER_SIZE targets of boxes `gt` against `anchors` (variance not in target)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    return torch.stack([(gx - ax) / aw / var[:, 0], (gy - ay) / ah / var[:, 1],
                        torch.log(gw / aw) / var[:, 2], torch.log(gh / ah) / var[:, 3]], 1)


def multibox_loss(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                  var: torch.Tensor, label: torch.Tensor, num_classes: int,
                  arm_conf: Optional[torch.Tensor] = None,
                  arm_loc: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RefineDet's MultiBoxLoss (softmax, smooth L1, per-prediction matching at 0.5, 3:1
    max-negative mining, VALID normalisation, ODM: refined anchors and objectness filter).
    Targets come from caffe.bbox_util (shared); the loss itself is plain PyTorch."""
    n, p = loc.shape[:2]
    with torch.no_grad():
        gt = bbox_util.get_ground_truth(label.reshape(-1, 8), n, 0, True, num_classes)
        anchors = priors.expand(n, p, 4)
        if arm_loc is not None:
            anchors = bbox_util.decode_bbox(priors, var, arm_loc, _CODE.CENTER_SIZE, False)
        overlaps = bbox_util.jaccard_overlap(anchors, gt.boxes)
        match, best = bbox_util.match_bbox(overlaps, gt.valid, _MB.PER_PREDICTION, 0.5)
        has_gt = gt.valid.any(dim=1)
        match = torch.where(has_gt[:, None], match, torch.full_like(match, -1))
        labels = torch.where(match > -1, gt.labels.gather(1, match.clamp_min(0)),
                             torch.zeros_like(match))
        ranking = bbox_util.conf_loss(conf.detach(), labels, _MB.SOFTMAX).float()
        eligible = bbox_util.eligible_for_mining(_MB.MAX_NEGATIVE, match, best, 0.5)
        eligible &= has_gt[:, None]
        if arm_conf is not None:
            eligible &= arm_conf[:, :, 1] >= 0.01
        mined = bbox_util.mine_hard_examples(ranking, match, eligible, _MB.MAX_NEGATIVE, 3.0, 64)
        positive = match > -1
        num_pos = max(int(positive.sum()), 1)
        img, pri = torch.nonzero(positive, as_tuple=True)
        target = encode_center_size(anchors[img, pri], var[pri],
                                    gt.boxes[img, match[img, pri]])
        chosen = positive | mined.negative
    loc_loss = F.smooth_l1_loss(loc[img, pri], target, reduction='sum')
    conf_loss = F.cross_entropy(conf[chosen], labels[chosen], reduction='sum')
    return (loc_loss + conf_loss) / num_pos       # loc_weight (3 + 1) / 4 = 1


class PlainSide:
    """Plain PyTorch: zero_grad, forward, both losses, backward, SGD step."""

    def __init__(self, engine: caffe.Net, data: np.ndarray, label: np.ndarray):
        self.model = PlainRefineDet()
        with torch.no_grad():
            for name, mod in self.model.layers.items():
                blobs = engine.params[name]
                if isinstance(mod, L2Norm):
                    mod.weight.copy_(blobs[0].tensor.reshape(mod.weight.shape))
                    continue
                mod.weight.copy_(blobs[0].tensor.reshape(mod.weight.shape))
                mod.bias.copy_(blobs[1].tensor.reshape(mod.bias.shape))
        pri = engine.blobs['arm_priorbox'].data.reshape(2, -1, 4)
        self.priors, self.var = torch.from_numpy(pri[0].copy()), torch.from_numpy(pri[1].copy())
        self.data, self.label = torch.from_numpy(data), torch.from_numpy(label)
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if name.endswith('bias') else decay).append(param)
        # Caffe's specs: weights lr x1 decayed, biases lr x2 not decayed; L2Norm scales x1.
        self.opt = torch.optim.SGD([{'params': decay, 'lr': 0.001, 'weight_decay': 0.0005},
                                    {'params': no_decay, 'lr': 0.002, 'weight_decay': 0.0}],
                                   lr=0.001, momentum=0.9)

    def losses(self) -> Tuple[torch.Tensor, torch.Tensor]:
        arm_loc, arm_conf, odm_loc, odm_conf = self.model(self.data)
        arm = multibox_loss(arm_loc, arm_conf, self.priors, self.var, self.label, 2)
        arm_prob = torch.softmax(arm_conf.detach(), dim=2)
        odm = multibox_loss(odm_loc, odm_conf, self.priors, self.var, self.label, NUM_CLASSES,
                            arm_conf=arm_prob, arm_loc=arm_loc.detach())
        return arm, odm

    def step(self) -> Dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        arm, odm = self.losses()
        (arm + odm).backward()
        self.opt.step()
        return {'arm_loss': float(arm.detach()), 'odm_loss': float(odm.detach())}


class EngineSide:
    def __init__(self, solver_path: str, data: np.ndarray, label: np.ndarray):
        caffe.set_random_seed(0)
        self.solver = caffe.get_solver(solver_path)
        self.net = self.solver.net
        self.net.blobs['data'].data[...] = data
        self.net.blobs['label'].data[...] = label

    def step(self) -> Dict[str, float]:
        self.solver.step(1)
        return {k: float(self.net.blobs[k].data) for k in ('arm_loss', 'odm_loss')}


def bench_iteration(train_file: str, work: str, batch: int, args) -> Dict[str, float]:
    boxes = 3
    net_file = with_inputs(train_file, batch, boxes, os.path.join(work, 'in%d.prototxt' % batch))
    data, label = synth_batch(batch, boxes)
    engine = EngineSide(solver_file(net_file, os.path.join(work, 'solver%d.prototxt' % batch)),
                        data, label)
    engine.net.forward()
    plain = PlainSide(engine.net, data, label)
    with torch.no_grad():
        arm, odm = plain.losses()
    same = {'arm_loss': (float(engine.net.blobs['arm_loss'].data), float(arm)),
            'odm_loss': (float(engine.net.blobs['odm_loss'].data), float(odm))}
    wall = {engine: [], plain: []}
    cpu = {engine: [], plain: []}
    for i in range(args.warmup + args.iters):
        for side in (engine, plain):
            t0, c0 = time.perf_counter(), time.process_time()
            side.step()
            if i >= args.warmup:
                wall[side].append(time.perf_counter() - t0)
                cpu[side].append(time.process_time() - c0)
    ratios = [e / p for e, p in zip(wall[engine], wall[plain])]
    med = statistics.median
    return {'engine': med(wall[engine]), 'plain': med(wall[plain]),
            'ratio': med(wall[engine]) / med(wall[plain]), 'step_ratio': med(ratios),
            'cpu_ratio': med(cpu[engine]) / med(cpu[plain]), 'same': same}


# ---- the data layer's share -----------------------------------------------------------------

def data_only(train_file: str, batch: int, db: str, label_map: str, out: str) -> str:
    """Just the train net's AnnotatedData layer on `db`, without prefetching."""
    net = protoio.read_text(with_lmdb(train_file, batch, db, label_map, out),
                            caffe_pb2.NetParameter)
    layer = net.layer[0]
    layer.data_param.prefetch = 0
    del net.layer[1:]
    with open(out, 'w') as f:
        f.write(str(net))
    return out


def bench_data(train_file: str, work: str, batch: int, args) -> Dict[str, float]:
    """Time to make a batch in the calling thread, and the wait for a prefetched one within
    training iterations (forward and backward of the whole net)."""
    from bench_annotated_data import toy_lmdb
    db = os.path.join(work, 'voc_sized_lmdb')
    if not os.path.exists(db):
        toy_lmdb(work, 48, 375, 'voc_sized')
    label_map = os.path.join(work, 'voc_sized_labelmap.prototxt')
    caffe.set_random_seed(0)
    alone = caffe.Net(data_only(train_file, batch, db, label_map,
                                os.path.join(work, 'data%d.prototxt' % batch)), caffe.TRAIN)
    alone.forward()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        alone.forward()                        # one batch, made in this thread
    make = (time.perf_counter() - t0) / args.iters
    alone.layers[0].close()
    net = caffe.Net(with_lmdb(train_file, batch, db, label_map,
                              os.path.join(work, 'db%d.prototxt' % batch)), caffe.TRAIN)
    first = list(net._layer_names)[1]
    waits, iters = [], []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        net.forward(end='data')                # takes the prefetched batch
        t1 = time.perf_counter()
        net.forward(start=first)
        net.backward()
        t2 = time.perf_counter()
        if i >= args.warmup:
            waits.append(t1 - t0)
            iters.append(t2 - t0)
    net.layers[0].close()
    wait, it = statistics.median(waits), statistics.median(iters)
    return {'make': make, 'wait': wait, 'iteration': it, 'share': wait / it}


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batches', default='1,4')
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0, help='torch threads (default: torch\'s)')
    ap.add_argument('--skip-data', action='store_true')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    caffe.set_mode_cpu()
    batches = [int(b) for b in args.batches.split(',')]
    print('RefineDet320 VGG16 training iteration (forward, backward, SGD update), %dx%d, '
          '%d torch threads, %d cores' % (SIZE, SIZE, torch.get_num_threads(), os.cpu_count()))
    with tempfile.TemporaryDirectory() as work:
        train_file = script_nets(work)
        for batch in batches:
            r = bench_iteration(train_file, work, batch, args)
            same = ', '.join('%s %.5g vs %.5g' % (k, e, p) for k, (e, p) in r['same'].items())
            print('  batch %d: engine %.3f s, plain PyTorch %.3f s, engine/plain %.2fx '
                  '(median of step ratios %.2fx, of process CPU time %.2fx); first-step '
                  'losses engine vs plain: %s' % (batch, r['engine'], r['plain'], r['ratio'],
                                                  r['step_ratio'], r['cpu_ratio'], same))
        if not args.skip_data:
            print('AnnotatedData with the script\'s augmentations (distort, expand 4x, 7 '
                  'samplers, 5 interpolations, mirror), VOC-sized images, prefetching:')
            for batch in batches:
                d = bench_data(train_file, work, batch, args)
                print('  batch %d: making a batch %.1f ms (without prefetch %.1f%% of the '
                      'iteration); waiting for it %.2f ms of a %.3f s iteration (%.2f%%)'
                      % (batch, 1000 * d['make'], 100 * d['make'] / d['iteration'],
                         1000 * d['wait'], d['iteration'], 100 * d['share']))


if __name__ == '__main__':
    main()
