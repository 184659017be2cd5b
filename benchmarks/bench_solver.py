"""The solver's own cost per iteration on VGG16's parameters, next to a forward+backward.

    python benchmarks/bench_solver.py [--prototxt P] [--iters N] [--fb-iters M] [--no-fb]
                                      [--type SGD|Nesterov|AdaGrad|RMSProp|AdaDelta|Adam]

The parameter set is VGG16 Fast R-CNN's (138M floats, conv1/conv2 frozen as in
py-faster-rcnn), built from the bench prototxt's Convolution and InnerProduct layers with
minimal inputs, so no convolution runs; the solver is the real one (caffe.SGDSolver with
py-faster-rcnn's VGG16 settings). The overhead is everything `solver.step(1)` does besides
the net's forward/backward: clearing the diffs, the loss bookkeeping, clipping/normalising/
regularising, the update rule and w -= step. It is compared with the median forward+backward
of the full bench net (run_bench.py's synthetic minibatch). Target: overhead < 3 %.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe.layers import layer_type_list  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

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


def fb_net(full: caffe_pb2.NetParameter):
    """The bench net, minus trailing loss layers whose type is not registered yet."""
    known = set(layer_type_list())
    consumed = {b for lp in full.layer for b in lp.bottom}
    net = caffe_pb2.NetParameter()
    net.CopyFrom(full)
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


def time_forward_backward(param: caffe_pb2.NetParameter, iters: int) -> float:
    """Median seconds of net.forward() + net.backward() on run_bench.py's synthetic batch."""
    net = caffe.Net(param, caffe.TRAIN)
    rng = np.random.RandomState(0)
    _, _, H, W = net.blobs['data'].data.shape
    R = net.blobs['rois'].data.shape[0]
    C = net.blobs['bbox_targets'].data.shape[1] // 4
    x1, y1 = rng.uniform(0, W * 0.7, R), rng.uniform(0, H * 0.7, R)
    rois = np.stack([np.zeros(R), x1, y1, np.minimum(x1 + rng.uniform(16, W * 0.5, R), W - 1),
                     np.minimum(y1 + rng.uniform(16, H * 0.5, R), H - 1)], 1)
    labels = np.where(rng.rand(R) < 0.25, rng.randint(1, C, R), 0)
    w = np.zeros((R, 4 * C), np.float32)
    for i, l in enumerate(labels):
        if l:
            w[i, 4 * l:4 * l + 4] = 1
    net.blobs['data'].data[...] = rng.randn(1, 3, H, W) * 50
    net.blobs['rois'].data[...] = rois
    net.blobs['labels'].data[...] = labels
    net.blobs['bbox_targets'].data[...] = rng.randn(R, 4 * C) * w
    for name in ('bbox_inside_weights', 'bbox_outside_weights'):
        net.blobs[name].data[...] = w
    times = []
    for i in range(iters + 1):
        t = time.perf_counter()
        net.forward()
        net.backward()
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_solver(param_net: caffe_pb2.NetParameter, kind: str, iters: int):
    text = 'type: "%s" %s' % (kind, ADAPTIVE.get(kind, SOLVER))
    sp = text_format.Merge(text, caffe_pb2.SolverParameter())
    sp.net_param.CopyFrom(param_net)
    solver = caffe.get_solver(sp)
    n = sum(b.count for b in solver.net._learnable_params)
    trainable = sum(b.count for b, lr in zip(solver.net._learnable_params, solver.net._params_lr) if lr)
    rng = np.random.RandomState(0)
    for b in solver.net._learnable_params:
        b.diff[...] = rng.standard_normal(b.shape).astype(np.float32) * 1e-3
    solver.net.forward_backward = lambda: 0.5   # the net's work is timed separately
    solver.step(2)                               # warm up (allocates the history)
    steps, updates = [], []
    for _ in range(iters):
        t = time.perf_counter()
        solver.step(1)
        steps.append(time.perf_counter() - t)
    clears = []
    for _ in range(iters):
        t = time.perf_counter()
        solver.apply_update()
        updates.append(time.perf_counter() - t)
        t = time.perf_counter()
        solver.net.clear_param_diffs()
        clears.append(time.perf_counter() - t)
    return (n, trainable, float(np.median(steps)), float(np.median(updates)),
            float(np.median(clears)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--prototxt', default=DEFAULT_PROTOTXT)
    ap.add_argument('--iters', type=int, default=5, help='solver steps to time')
    ap.add_argument('--fb-iters', type=int, default=2, help='forward+backward passes to time')
    ap.add_argument('--no-fb', action='store_true', help='skip the forward+backward timing')
    ap.add_argument('--type', default='SGD', help='solver type (SGD as py-faster-rcnn)')
    args = ap.parse_args()
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    import torch
    full = read(args.prototxt)
    n, trainable, step_s, update_s, clear_s = time_solver(parameter_net(full), args.type, args.iters)
    print('parameters: %.1fM floats (%.1fM trainable), torch threads %d, load average %.1f'
          % (n / 1e6, trainable / 1e6, torch.get_num_threads(), os.getloadavg()[0]))
    print('%s solver overhead per iteration: %.1f ms (step without forward/backward; of which '
          'apply_update %.1f ms, clear_param_diffs %.1f ms)'
          % (args.type, step_s * 1e3, update_s * 1e3, clear_s * 1e3))
    if args.type == 'SGD':
        # The fused update reads w, g, h and writes w, h; clearing writes g: memory-bound.
        moved = 4.0 * (5 * trainable + n)
        print('memory traffic: %.2f GB per iteration, %.1f GB/s effective (Caffe itself moves '
              'about twice as much: 12 passes)' % (moved / 1e9, moved / 1e9 / (update_s + clear_s)))
    if args.no_fb:
        return
    param, dropped = fb_net(full)
    if param is None:
        print('forward+backward: not timed, missing layer types %s' % ', '.join(dropped))
        return
    fb = time_forward_backward(param, args.fb_iters)
    note = ' (without %s: type not registered yet)' % ', '.join(dropped) if dropped else ''
    print('forward+backward of %s: %.2f s median%s' % (os.path.basename(args.prototxt), fb, note))
    print('solver overhead: %.2f %% of forward+backward (target < 3 %%)' % (100 * step_s / fb))


if __name__ == '__main__':
    main()
