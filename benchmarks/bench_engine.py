"""Time the engine against plain PyTorch on the Fast R-CNN training nets, in one run.

    python benchmarks/bench_engine.py [--nets zf,vgg16] [--iters 7] [--bf16] [--forward-only]
                                      [--upto LAYER] [--drop TYPE,...] [--threads N]
                                      [--gemm auto|on|off] [--ops]

For each net (names `zf`, `vgg16` stand for /work/shared/bench/*_fast_rcnn_train.prototxt;
any other value is a prototxt path) this builds

* the engine's `caffe.Net` in TRAIN, inputs synthesised as shared/bench/run_bench.py does
  (RoIs inside the image, 25% foreground labels, regression targets on the label's class),
  timed as a solver's step runs it: `net.clear_param_diffs(lazy=True); net.forward();
  net.backward()` (Caffe's Solver::Step clears the diffs first, as plain PyTorch's
  zero_grad());
* a plain-PyTorch `nn.Module` with the same layers: `nn.Conv2d`, in-place ReLU, LRN written
  with torch ops, `max_pool2d(ceil_mode=True)`, `torchvision.ops.roi_pool`, `nn.Linear`,
  dropout, `cross_entropy` and smooth-L1, the engine's initial weights copied in, and
  `requires_grad=False` on every parameter whose `lr_mult` is 0 (VGG16's conv1/conv2), timed
  as an idiomatic training step: `zero_grad()`, forward, `loss.backward()`.

Engine and plain steps alternate, so drifts of the machine hit both alike; the first
`--warmup` steps of each are not timed (they create oneDNN primitives and touch memory for
the first time). Printed per net: median seconds of each, engine/plain of the medians, and
the median of the per-step ratios (each engine step against the plain step right after it,
the figure least moved by other load on a shared machine), and the same for the process's
CPU time per step (all threads; with --threads 1 exactly the step's own work).

`--bf16` runs both sides in bfloat16 autocast with channels-last activations (the engine
through `caffe.set_precision('bf16')`), and prints how far the engine's losses, outputs and
gradients moved from fp32 (see _bf16_accuracy). Plain PyTorch's autocast always multiplies
in bf16; the engine's inner products do where the hardware has native bf16 dot products
(AMX, AVX512-BF16) unless `--gemm on|off` forces it (caffe.set_bf16_matmuls).
`--ops` prints, per side, what one step moves through memory (casts, layout changes,
copies, fills, element-wise passes; see op_census.py): a figure no other load can move.
`--upto LAYER` keeps the layers up to LAYER (and `--drop TYPE` removes layers of a type,
wiring their bottom through), so the conv body alone can be timed; a net cut before its
losses is trained against a fixed gradient on its outputs (force_backward).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe import protoio  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

BENCH_DIR = '/work/shared/bench'
NETS = {'zf': 'zf_fast_rcnn_train.prototxt', 'vgg16': 'vgg16_fast_rcnn_train.prototxt'}
INPUTS = ('data', 'rois', 'labels', 'bbox_targets', 'bbox_inside_weights', 'bbox_outside_weights')
LRN = caffe_pb2.LRNParameter
POOL = caffe_pb2.PoolingParameter


# ---- prototxt surgery for sub-nets -------------------------------------------------------------

def trimmed_net(path: str, upto: Optional[str], drop: Sequence[str], out_dir: str) -> str:
    """Write a copy of the net with layers of types `drop` removed and nothing after `upto`.

    A dropped layer's top is renamed to its bottom in later layers, so the rest stays wired.
    A net cut before its losses gets `force_backward: true` (trained from output diffs).
    """
    if not upto and not drop:
        return path
    net = protoio.read_text(path, caffe_pb2.NetParameter)
    kept, alias, seen = [], {}, False
    for lp in net.layer:
        if seen:
            break
        seen = lp.name == upto
        bottoms = [alias.get(b, b) for b in lp.bottom]
        if lp.type in drop:
            for t in lp.top:
                alias[t] = bottoms[0]
            continue
        new = caffe_pb2.LayerParameter()
        new.CopyFrom(lp)
        del new.bottom[:]
        new.bottom.extend(bottoms)
        kept.append(new)
    if upto and not seen:
        raise SystemExit('--upto: no layer named %r in %s' % (upto, path))
    del net.layer[:]
    net.layer.extend(kept)
    if not any(lp.type.endswith('Loss') for lp in kept):
        net.force_backward = True
    out = os.path.join(out_dir, os.path.basename(path))
    with open(out, 'w') as f:
        f.write(text_format.MessageToString(net))
    return out


# ---- inputs (as run_bench.py makes them) ------------------------------------------------------

def synth_inputs(shapes: Dict[str, tuple], seed: int = 0) -> Dict[str, np.ndarray]:
    """Synthetic minibatch drawn with run_bench.py's recipe and random stream."""
    rng = np.random.RandomState(seed)
    _, _, H, W = shapes['data']
    R = shapes['rois'][0]
    C = shapes['bbox_targets'][1] // 4
    x1, y1 = rng.uniform(0, W * 0.7, R), rng.uniform(0, H * 0.7, R)
    rois = np.stack([np.zeros(R), x1, y1, np.minimum(x1 + rng.uniform(16, W * 0.5, R), W - 1),
                     np.minimum(y1 + rng.uniform(16, H * 0.5, R), H - 1)], 1)
    labels = np.where(rng.rand(R) < 0.25, rng.randint(1, C, R), 0)
    w = np.zeros((R, 4 * C), np.float32)
    for i, lab in enumerate(labels):
        if lab:
            w[i, 4 * lab:4 * lab + 4] = 1
    data = rng.randn(1, 3, H, W) * 50
    targets = rng.randn(R, 4 * C) * w
    out = {'data': data, 'rois': rois, 'labels': labels, 'bbox_targets': targets,
           'bbox_inside_weights': w, 'bbox_outside_weights': w}
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# ---- the plain PyTorch model -----------------------------------------------------------------

class PlainNet(nn.Module):
    """The net written as an ordinary PyTorch module: one op per prototxt layer.

    Layer sizes, hyper-parameters and frozen parameters come from the prototxt so that the
    two sides compute the same function; the ops are the ones a person would write by hand.
    """

    def __init__(self, net_param: caffe_pb2.NetParameter, shapes: Dict[str, tuple]):
        super().__init__()
        self.ops: List[Tuple[str, caffe_pb2.LayerParameter]] = []
        self.mods = nn.ModuleDict()
        for lp in net_param.layer:
            if lp.type == 'Convolution':
                cp = lp.convolution_param
                conv = nn.Conv2d(shapes[lp.bottom[0]][1], cp.num_output, cp.kernel_size[0],
                                 cp.stride[0] if cp.stride else 1, cp.pad[0] if cp.pad else 0,
                                 bias=cp.bias_term)
                self._freeze(conv, lp)
                self.mods[lp.name] = conv
            elif lp.type == 'InnerProduct':
                ip = lp.inner_product_param
                k = int(np.prod(shapes[lp.bottom[0]][1:]))
                lin = nn.Linear(k, ip.num_output, bias=ip.bias_term)
                self._freeze(lin, lp)
                self.mods[lp.name] = lin
            self.ops.append((lp.type, lp))

    @staticmethod
    def _freeze(mod: nn.Module, lp: caffe_pb2.LayerParameter) -> None:
        for spec, p in zip(lp.param, [mod.weight, mod.bias]):
            if p is not None and spec.lr_mult == 0:
                p.requires_grad_(False)

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """All blobs by name (the losses among them)."""
        b = dict(inputs)
        losses = {}
        for kind, lp in self.ops:
            x = b[lp.bottom[0]] if lp.bottom else None
            if kind == 'Convolution':
                y = self.mods[lp.name](x)
            elif kind == 'ReLU':
                y = F.relu(x, inplace=lp.top[0] == lp.bottom[0])
            elif kind == 'LRN':
                y = _lrn(x, lp.lrn_param)
            elif kind == 'Pooling':
                pp = lp.pooling_param
                if pp.pool == POOL.MAX:
                    y = F.max_pool2d(x, pp.kernel_size, pp.stride, pp.pad, ceil_mode=True)
                else:
                    y = F.avg_pool2d(x, pp.kernel_size, pp.stride, pp.pad, ceil_mode=True)
            elif kind == 'ROIPooling':
                import torchvision
                rp = lp.roi_pooling_param
                # torchvision's CPU roi_pool has no bf16 kernel: pool the map in float32.
                y = torchvision.ops.roi_pool(x.float(), b[lp.bottom[1]], (rp.pooled_h, rp.pooled_w),
                                             rp.spatial_scale)
            elif kind == 'InnerProduct':
                y = self.mods[lp.name](x.flatten(1))
            elif kind == 'Dropout':
                y = F.dropout(x, lp.dropout_param.dropout_ratio, training=True)
            elif kind == 'SoftmaxWithLoss':
                y = F.cross_entropy(x.float(), b[lp.bottom[1]].long())
                losses[lp.top[0]] = y
            elif kind == 'SmoothL1Loss':
                sigma2 = lp.smooth_l1_loss_param.sigma ** 2
                diff = b[lp.bottom[2]] * (x.float() - b[lp.bottom[1]])
                per = F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction='none', beta=1.0 / sigma2)
                y = (b[lp.bottom[3]] * per).sum() / x.shape[0]
                losses[lp.top[0]] = y
            else:
                raise SystemExit('plain model: no op for layer type %s' % kind)
            b[lp.top[0]] = y
        return b


def _lrn(x: torch.Tensor, p) -> torch.Tensor:
    """Caffe's LRN: across channels as torch's local_response_norm, within a channel by
    average pooling of squares over the local_size x local_size window."""
    if p.norm_region == LRN.ACROSS_CHANNELS:
        return F.local_response_norm(x, p.local_size, p.alpha, p.beta, p.k)
    pad = (p.local_size - 1) // 2
    s = F.avg_pool2d(x * x, p.local_size, 1, pad, count_include_pad=True)
    return x * (1 + p.alpha * s).pow(-p.beta)


# ---- the two sides ---------------------------------------------------------------------------

class EngineSide:
    """Our engine: caffe.Net in TRAIN, timed as run_bench.py times it."""

    def __init__(self, path: str, inputs: Dict[str, np.ndarray], forward_only: bool):
        caffe.set_random_seed(0)
        self.net = caffe.Net(path, caffe.TRAIN)
        for k, v in inputs.items():
            if k in self.net.blobs:
                self.net.blobs[k].data[...] = v
        self.forward_only = forward_only
        self.loss_names = [n for n, w in self.net.blob_loss_weights.items() if w]
        self.out_diffs = {n: np.full(self.net.blobs[n].shape, 1e-3, np.float32)
                          for n in self.net.outputs if n not in self.loss_names}

    def step(self) -> Dict[str, float]:
        if not self.forward_only:
            self.net.clear_param_diffs(lazy=True)  # as the solver does
        out = self.net.forward()
        if not self.forward_only:
            self.net.backward(**self.out_diffs)
        return {n: float(out[n]) for n in self.loss_names if n in out}


class PlainSide:
    """Plain PyTorch: zero_grad, forward, loss.backward()."""

    def __init__(self, net_param, engine: caffe.Net, inputs: Dict[str, np.ndarray],
                 forward_only: bool, bf16: bool):
        shapes = {n: tuple(blob.shape) for n, blob in engine.blobs.items()}
        self.model = PlainNet(net_param, shapes)
        self.bf16 = bf16
        self.forward_only = forward_only
        self.inputs = {k: torch.from_numpy(v.copy()) for k, v in inputs.items()}
        with torch.no_grad():
            for name, blobs in engine.params.items():
                mod = self.model.mods[name]
                mod.weight.copy_(blobs[0].tensor.reshape(mod.weight.shape).float())
                if len(blobs) > 1:
                    mod.bias.copy_(blobs[1].tensor.reshape(mod.bias.shape).float())
        if bf16:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.inputs['data'] = self.inputs['data'].contiguous(memory_format=torch.channels_last)
        self.loss_names = [n for n, w in engine.blob_loss_weights.items() if w]
        self.weights = dict(engine.blob_loss_weights)
        self.out_grads = {n: torch.full(engine.blobs[n].shape, 1e-3) for n in engine.outputs
                          if n not in self.loss_names}

    def _run(self) -> Dict[str, torch.Tensor]:
        if self.bf16:
            with torch.autocast('cpu', dtype=torch.bfloat16):
                return self.model(self.inputs)
        return self.model(self.inputs)

    def step(self) -> Dict[str, float]:
        model = self.model
        if self.forward_only:
            with torch.no_grad():
                b = self._run()
            return {n: float(b[n].detach()) for n in self.loss_names}
        model.zero_grad(set_to_none=True)
        b = self._run()
        terms = [self.weights[n] * b[n] for n in self.loss_names]
        terms += [(b[n] * g).sum() for n, g in self.out_grads.items()]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        total.backward()
        return {n: float(b[n].detach()) for n in self.loss_names}


def bench_net(name: str, args, tmp: str) -> Dict[str, object]:
    path = os.path.join(BENCH_DIR, NETS[name]) if name in NETS else name
    path = trimmed_net(path, args.upto, [t for t in args.drop.split(',') if t], tmp)
    net_param = protoio.read_text(path, caffe_pb2.NetParameter)
    shapes = {n: tuple(s.dim) for n, s in zip(net_param.input, net_param.input_shape)}
    inputs = synth_inputs(shapes)
    caffe.set_precision('bf16' if args.bf16 else 'fp32')
    engine = EngineSide(path, inputs, args.forward_only)
    plain = PlainSide(net_param, engine.net, inputs, args.forward_only, args.bf16)
    t_engine, t_plain, c_engine, c_plain = [], [], [], []
    loss_e = loss_p = {}
    for i in range(args.warmup + args.iters):
        for side, times, cpus in ((engine, t_engine, c_engine), (plain, t_plain, c_plain)):
            t0, p0 = time.perf_counter(), time.process_time()
            losses = side.step()
            dt, dc = time.perf_counter() - t0, time.process_time() - p0
            if i >= args.warmup:
                times.append(dt)
                cpus.append(dc)
            if side is engine:
                loss_e = losses
            else:
                loss_p = losses
    if args.ops:
        from op_census import census, format_rows
        result_ops = format_rows(census(engine.step), census(plain.step))
    result = {'net': os.path.basename(path), 'engine': statistics.median(t_engine),
              'plain': statistics.median(t_plain), 'engine_all': t_engine, 'plain_all': t_plain,
              'engine_cpu': c_engine, 'plain_cpu': c_plain,
              'loss_engine': loss_e, 'loss_plain': loss_p}
    if args.ops:
        result['ops'] = result_ops
    if args.bf16:
        result['loss_err'] = _bf16_accuracy(path, inputs)
    caffe.set_precision('fp32')
    return result


def _bf16_accuracy(path: str, inputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """How far the engine's bf16 results are from fp32 on the same net, weights and dropout.

    The prototxt's fillers give near-zero scores (every loss is then about log(21) whatever
    the precision), so the weights are redrawn at He scale (std sqrt(2 / fan_in), the first
    layer's divided by the image's std, the two heads' by 10) so that every layer matters
    and the scores are of order 1. Returned: relative error of each loss, and relative L2 error of the
    score and box outputs and of the gradients of the first learnable conv and of fc6.
    """
    caffe.set_precision('fp32')
    caffe.set_random_seed(0)
    net = caffe.Net(path, caffe.TRAIN)
    rng = np.random.RandomState(1)
    names = list(net.params)
    for n, ps in net.params.items():
        w = ps[0].data
        std = np.sqrt(2.0 / np.prod(w.shape[1:]))
        if n == names[0]:
            std /= float(inputs['data'].std())  # unit-scale activations from the image
        if n in ('cls_score', 'bbox_pred'):
            std *= 0.1  # scores of order 1: softmax not saturated
        w[...] = rng.randn(*w.shape) * std
    for k, v in inputs.items():
        if k in net.blobs:
            net.blobs[k].data[...] = v
    grads = [n for n, lp in zip(net._layer_names, net.layers)
             if len(lp.blobs) and any(lp.param_propagate_down)]
    watch = [grads[0], 'fc6'] if 'fc6' in grads else grads[:1]
    res = {}
    for prec in ('fp32', 'bf16'):
        caffe.set_precision(prec)
        net.clear_param_diffs()
        caffe.set_random_seed(1)  # the same dropout masks
        out = net.forward()
        net.backward()
        res[prec] = {n: float(out[n]) for n, w in net.blob_loss_weights.items() if w}
        for n in ('cls_score', 'bbox_pred'):
            if n in net.blobs:
                res[prec][n] = net.blobs[n].data.copy()
        for n in watch:
            res[prec]['grad ' + n] = net.params[n][0].diff.copy()
    caffe.set_precision('fp32')
    err = {}
    for k, ref in res['fp32'].items():
        low = res['bf16'][k]
        err[k] = float(np.linalg.norm(np.asarray(low) - ref) / max(np.linalg.norm(ref), 1e-30))
    return err


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--nets', default='zf,vgg16', help='comma list of zf, vgg16 or prototxt paths')
    ap.add_argument('--iters', type=int, default=7, help='timed steps per side')
    ap.add_argument('--warmup', type=int, default=2, help='untimed steps per side first')
    ap.add_argument('--bf16', action='store_true', help='bfloat16 autocast + channels-last, both sides')
    ap.add_argument('--forward-only', action='store_true', help='time forward only')
    ap.add_argument('--upto', default=None, help='keep layers up to this one (sub-net)')
    ap.add_argument('--drop', default='', help='comma list of layer types to leave out')
    ap.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: default)')
    ap.add_argument('--gemm', default='auto', choices=('auto', 'on', 'off'),
                    help="engine's inner products in bf16 under --bf16: by the hardware (auto) "
                         "or forced")
    ap.add_argument('--ops', action='store_true',
                    help='also print what one step of each side moves through memory')
    args = ap.parse_args(argv)
    caffe.set_bf16_matmuls(args.gemm)
    if args.threads:
        torch.set_num_threads(args.threads)
    caffe.set_mode_cpu()
    mode = ('forward' if args.forward_only else 'forward+backward') + (' bf16' if args.bf16 else ' fp32')
    from caffe import _config
    print('torch %s, %d threads, %s, %d timed steps (median s); freed-memory reuse %s (both sides)'
          % (torch.__version__, torch.get_num_threads(), mode, args.iters,
             'on' if _config.memory_reuse_enabled() else 'off'))
    from _machine import describe
    print(describe(torch, _config))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.nets.split(',') if n]:
            r = bench_net(name, args, tmp)
            rows.append(r)
            paired = statistics.median(e / p for e, p in zip(r['engine_all'], r['plain_all']))
            print('%-34s engine %.3f s  plain %.3f s  engine/plain %.2fx  (median of paired '
                  'step ratios %.2fx)' % (r['net'], r['engine'], r['plain'],
                                          r['engine'] / r['plain'], paired))
            from _machine import ratio_line
            print('    %s' % ratio_line(r['engine_all'], r['plain_all'], r['engine_cpu'],
                                        r['plain_cpu']))
            print('    engine steps %s' % ' '.join('%.3f' % t for t in r['engine_all']))
            print('    plain  steps %s' % ' '.join('%.3f' % t for t in r['plain_all']))
            print('    losses engine %s plain %s' % (_fmt(r['loss_engine']), _fmt(r['loss_plain'])))
            if 'ops' in r:
                print(r['ops'])
            if 'loss_err' in r:
                print('    engine bf16 vs fp32, relative error (He-scaled weights): %s'
                      % _fmt(r['loss_err']))


def _fmt(d: Dict[str, float]) -> str:
    return '{%s}' % ', '.join('%s: %.4g' % kv for kv in d.items())


if __name__ == '__main__':
    main()
