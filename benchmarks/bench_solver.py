"""The solver's own cost per iteration on VGG16's parameters, next to a forward+backward.

    python benchmarks/bench_solver.py [--prototxt P] [--iters N] [--fb-iters M] [--no-fb]
                                      [--type SGD|Nesterov|AdaGrad|RMSProp|AdaDelta|Adam]
                                      [--size HxW] [--full]

The parameter set is VGG16 Fast R-CNN's (134.7M floats, conv1/conv2 frozen as in
py-faster-rcnn), built from the bench prototxt's Convolution and InnerProduct layers with
minimal inputs, so no convolution runs; the solver is the real one (caffe.SGDSolver with
py-faster-rcnn's VGG16 settings). The overhead is everything `solver.step(1)` does besides
the net's forward/backward: clearing the diffs (lazily: the backward overwrites them), the
loss bookkeeping, clipping/normalising/regularising, the update rule and w -= step. It is compared with the median forward+backward
of the full bench net (run_bench.py's synthetic minibatch). Target: overhead < 3 %.

--size 600x1000 times the forward+backward at py-faster-rcnn's training scale (SCALES 600,
MAX_SIZE 1000) instead of the bench net's 320x480. --full also trains the full net with the
real solver for --iters steps and reports each step's time minus its forward+backward.

The SGD update is memory-bound: it must read w, g, h and write w, h (5 x 4 bytes per
parameter); the figure printed next to it is that traffic over its time, to compare with
the machine's bandwidth (the in-place add printed after it moves 3 streams).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe.layers import layer_type_list  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import synth_inputs  # noqa: E402

DEFAULT_PROTOTXT = os.path.join(os.path.dirname(ROOT), 'shared', 'bench', 'vgg16_fast_rcnn_train.prototxt')
SOLVER = ('base_lr: 0.001 lr_policy: "step" gamma: 0.1 stepsize: 30000 display: 20 '
          'average_loss: 100 momentum: 0.9 weight_decay: 0.0005 snapshot: 0 max_iter: 70000')
ADAPTIVE = {'AdaGrad': 'base_lr: 0.001 lr_policy: "fixed" weight_decay: 0.0005',
            'RMSProp': 'base_lr: 0.001 lr_policy: "fixed" weight_decay: 0.0005 rms_decay: 0.98',
            'AdaDelta': 'base_lr: 1.0 lr_policy: "fixed" weight_decay: 0.0005 momentum: 0.95 delta: 1e-6',
            'Adam': 'base_lr: 0.001 lr_policy: "fixed" weight_decay: 0.0005 momentum: 0.9 momentum2: 0.999'}


def read(path: str) -> caffe_pb2.NetParameter:
    return text_format.Merge(open(path).read(), caffe_pb2.NetParameter())


def parameter_net(full: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """The learnable layers of `full`, each fed by its own tiny input of the right width."""
    features = {name: 3 for name in full.input}     # channels (conv) or flat size (fc)
    flat = {}
    out = caffe_pb2.NetParameter(name=full.name + '_params')
    for lp in full.layer:
        src = features.get(lp.bottom[0], 0) if len(lp.bottom) else 0
        if lp.type == 'Convolution':
            k = lp.convolution_param.kernel_size[0] if len(lp.convolution_param.kernel_size) else 1
            feed = (1, src, k, k)
            features[lp.top[0]] = lp.convolution_param.num_output
        elif lp.type == 'InnerProduct':
            feed = (1, flat.get(lp.bottom[0], src))
            features[lp.top[0]] = lp.inner_product_param.num_output
        elif lp.type == 'ROIPooling':
            rp = lp.roi_pooling_param
            features[lp.top[0]] = src
            flat[lp.top[0]] = src * rp.pooled_h * rp.pooled_w
            continue
        else:
            for t in lp.top:
                features[t] = src
                if lp.bottom and lp.bottom[0] in flat:
                    flat[t] = flat[lp.bottom[0]]
            continue
        name = 'in_' + lp.name
        out.input.append(name)
        out.input_shape.add().dim.extend(feed)
        q = out.layer.add()
        q.CopyFrom(lp)
        del q.bottom[:]
        q.bottom.append(name)
    return out


def fb_net(full: caffe_pb2.NetParameter, size=None):
    """The bench net (its image resized to `size`, (H, W), if given), minus trailing loss
    layers whose type is not registered yet."""
    known = set(layer_type_list())
    consumed = {b for lp in full.layer for b in lp.bottom}
    net = caffe_pb2.NetParameter()
    net.CopyFrom(full)
    if size:
        dims = net.input_shape[list(net.input).index('data')].dim
        dims[2], dims[3] = size
    dropped = []
    del net.layer[:]
    for lp in full.layer:
        if lp.type not in known:
            if any(t in consumed for t in lp.top):
                return None, [lp.type]
            dropped.append('%s (%s)' % (lp.name, lp.type))
            continue
        net.layer.add().CopyFrom(lp)
    return net, dropped


def fill_batch(net) -> None:
    """run_bench.py's synthetic minibatch (bench_engine.synth_inputs) in the net's inputs."""
    shapes = {name: net.blobs[name].data.shape for name in net.inputs}
    for name, value in synth_inputs(shapes).items():
        if name in net.blobs:
            net.blobs[name].data[...] = value


def time_forward_backward(param: caffe_pb2.NetParameter, iters: int) -> float:
    """Median seconds of net.forward() + net.backward() on run_bench.py's synthetic batch."""
    net = caffe.Net(param, caffe.TRAIN)
    fill_batch(net)
    times = []
    for i in range(iters + 1):
        t = time.perf_counter()
        net.forward()
        net.backward()
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


class TimedPass:
    """Stands in for (or wraps) net.forward_backward and records how long each call took,
    so the solver's own time is the step's time minus this."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, []

    def __call__(self) -> float:
        t = time.perf_counter()
        loss = self.inner()
        self.seconds.append(time.perf_counter() - t)
        return loss


def timed_steps(solver, iters: int, warmup: int = 2):
    """Median seconds of solver.step(1), and of the forward+backward inside it."""
    timed = TimedPass(solver.net.forward_backward)
    solver.net.forward_backward = timed
    solver.step(warmup)                  # allocates the history, warms the caches
    steps, passes = [], []
    for _ in range(iters):
        timed.seconds.clear()
        t = time.perf_counter()
        solver.step(1)
        steps.append(time.perf_counter() - t)
        passes.append(sum(timed.seconds))
    steps, passes = np.array(steps), np.array(passes)
    return float(np.median(steps - passes)), float(np.median(passes))


def make_solver(net_param: caffe_pb2.NetParameter, kind: str):
    text = 'type: "%s" %s' % (kind, ADAPTIVE.get(kind, SOLVER))
    sp = text_format.Merge(text, caffe_pb2.SolverParameter())
    sp.net_param.CopyFrom(net_param)
    return caffe.get_solver(sp)


def time_solver(param_net: caffe_pb2.NetParameter, kind: str, iters: int):
    """The solver on the parameter-only net; its "backward" writes stored gradients into
    the diffs, as a real backward does after the solver's (lazy) clear."""
    solver = make_solver(param_net, kind)
    params = solver.net._learnable_params
    n = sum(b.count for b in params)
    trainable = sum(b.count for b, lr in zip(params, solver.net._params_lr) if lr)
    rng = np.random.RandomState(0)
    grads = [torch.from_numpy(rng.standard_normal(b.shape).astype(np.float32) * 1e-3)
             for b in params]

    def backward() -> float:
        for b, gr in zip(params, grads):
            b.accumulate_diff(gr)
        return 0.5
    solver.net.forward_backward = backward
    overhead, _ = timed_steps(solver, iters)
    updates = []
    for _ in range(iters):
        solver.net.clear_param_diffs(lazy=True)
        backward()
        t = time.perf_counter()
        solver.apply_update()
        updates.append(time.perf_counter() - t)
    return n, trainable, overhead, float(np.median(updates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--prototxt', default=DEFAULT_PROTOTXT)
    ap.add_argument('--iters', type=int, default=5, help='solver steps to time')
    ap.add_argument('--fb-iters', type=int, default=2, help='forward+backward passes to time')
    ap.add_argument('--no-fb', action='store_true', help='skip the forward+backward timing')
    ap.add_argument('--type', default='SGD', help='solver type (SGD as py-faster-rcnn)')
    ap.add_argument('--size', default=None, help='image size HxW for the forward+backward '
                    '(default: the prototxt\'s; py-faster-rcnn trains at up to 600x1000)')
    ap.add_argument('--full', action='store_true', help='also train the full net with the '
                    'real solver and report step time minus forward+backward')
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split('x')) if args.size else None
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    full = read(args.prototxt)
    n, trainable, step_s, update_s = time_solver(parameter_net(full), args.type, args.iters)
    print('parameters: %.1fM floats (%.1fM trainable), torch threads %d, load average %.1f'
          % (n / 1e6, trainable / 1e6, torch.get_num_threads(), os.getloadavg()[0]))
    print('%s solver overhead per iteration: %.1f ms (step minus its forward/backward; of which '
          'apply_update %.1f ms)' % (args.type, step_s * 1e3, update_s * 1e3))
    if args.type == 'SGD':
        # The fused update reads w, g, h and writes w, h: memory-bound.
        moved = 4.0 * 5 * trainable
        print('memory traffic of the update: %.2f GB per iteration, %.1f GB/s effective (Caffe '
              'itself makes 12 passes); this machine: %.1f GB/s for an in-place add'
              % (moved / 1e9, moved / 1e9 / update_s, add_bandwidth()))
    if args.no_fb:
        return
    param, dropped = fb_net(full, size)
    if param is None:
        print('forward+backward: not timed, missing layer types %s' % ', '.join(dropped))
        return
    shape = tuple(param.input_shape[list(param.input).index('data')].dim)
    fb = time_forward_backward(param, args.fb_iters)
    note = ' (without %s: type not registered yet)' % ', '.join(dropped) if dropped else ''
    print('forward+backward of %s at %dx%d: %.2f s median%s'
          % (os.path.basename(args.prototxt), shape[2], shape[3], fb, note))
    print('solver overhead: %.2f %% of forward+backward (target < 3 %%)' % (100 * step_s / fb))
    if args.full:
        solver = make_solver(param, args.type)
        fill_batch(solver.net)
        over, inner = timed_steps(solver, args.iters, warmup=1)
        print('full training step: forward+backward %.2f s, rest of the step %.1f ms = %.2f %% '
              '(median of %d steps)' % (inner, over * 1e3, 100 * over / inner, args.iters))


def add_bandwidth(n: int = 64 << 20) -> float:
    """GB/s of a.add_(b) on arrays far larger than the caches (reads 2, writes 1)."""
    a, b = torch.zeros(n), torch.ones(n)
    best = float('inf')
    for _ in range(4):
        t = time.perf_counter()
        a.add_(b)
        best = min(best, time.perf_counter() - t)
    return 3 * 4 * n / best / 1e9


if __name__ == '__main__':
    main()
