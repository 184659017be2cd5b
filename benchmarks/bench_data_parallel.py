"""Data-parallel training: images per second with 1 and 2 ranks, the gradient all-reduce
time per iteration, and how much of it is hidden behind backward.

    python benchmarks/bench_data_parallel.py [--nets zf,vgg16] [--iters 4] [--warmup 2]
                                             [--ranks 2]

For each net (`zf`, `vgg16`: the Fast R-CNN training nets of /work/shared/bench, fed as
bench_engine.py feeds them, one image per rank and step) this trains with SGD (momentum 0.9),
in fresh processes started by caffe.parallel (gloo on the CPU, the cores split between the
ranks as torchrun splits them):

* 1 rank: the time of a step gives the single-process images/s;
* N ranks, layer_wise_reduce true (Caffe's default): each layer's gradients start their
  all-reduce as its backward ends. The exposed time E is how long the reduction still ran
  after the last rank finished its backward (timestamps on the machine's monotonic clock,
  so a wait for a slower rank, the skew, is not counted as communication; it is printed
  apart). After each timed step the ranks meet at a barrier and reduce the same gradients
  again with nothing else running, all buckets at once (as layer_wise_reduce false does):
  that time is the whole all-reduce A, measured in the same processes at the same moment
  as E, so that other load on the machine affects both alike. 1 - E/A is the share of the
  all-reduce that backward hid.

Also printed: the bytes each rank contributes to the reduction per iteration (the volume
the README's scaling estimate for 8 GPUs starts from). Medians over the timed steps.
On a machine with fewer cores than ranks x threads, more ranks cannot be faster: the
figures show the reduction's cost and its overlap, not a speed-up.

Measured on the project's 2-core machine while other jobs ran (load 8-11), 2 ranks: ZF
224 MiB in 4 collectives, all-reduce alone 388-441 ms, 88-92 % hidden; VGG16 513 MiB in 9
collectives, 1542 ms alone, 93 % hidden (the ranks' backward ends were 0.4-0.9 s apart).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe import parallel, protoio  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from bench_engine import BENCH_DIR, NETS, synth_inputs  # noqa: E402

SOLVER = caffe_pb2.SolverParameter(base_lr=1e-7, momentum=0.9, weight_decay=0.0005,
                                   lr_policy='fixed', display=0, random_seed=1, max_iter=10 ** 6)


def _isolated_reduce(dp) -> float:
    """Seconds to reduce the current gradients with nothing else running (all buckets
    launched at once, as with layer_wise_reduce false), after a barrier."""
    parallel.current().barrier('benchmark barrier')
    layer_wise, dp.layer_wise = dp.layer_wise, False
    stats, dp.stats = dp.stats, parallel.ReduceStats()   # not counted with the steps'
    t = time.perf_counter()
    dp.on_start()
    dp.on_gradients_ready()
    dt = time.perf_counter() - t
    dp.layer_wise, dp.stats = layer_wise, stats
    return dt


def _gather_floats(values: List[float]) -> List[List[float]]:
    """Every rank's `values`, in rank order."""
    import torch
    import torch.distributed as dist
    mine = torch.tensor(values, dtype=torch.float64)
    out = [torch.zeros_like(mine) for _ in range(parallel.solver_count())]
    dist.all_gather(out, mine)
    return [o.tolist() for o in out]


def _rank_run(net_path: str, iters: int, warmup: int, out: str) -> None:
    """One rank: train warmup + iters steps, write rank 0's timings to `out` (JSON)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    caffe.set_mode_cpu()
    if world > 1:
        parallel.join_from_env()
    sp = caffe_pb2.SolverParameter()
    sp.CopyFrom(SOLVER)
    sp.net_param.CopyFrom(protoio.read_text(net_path, caffe_pb2.NetParameter))
    solver = caffe.get_solver(sp)
    net = solver.net
    shapes = {name: net.blobs[name].data.shape for name in net.inputs}
    for name, value in synth_inputs(shapes, seed=parallel.solver_rank()).items():
        net.blobs[name].data[...] = value
    dp = None
    if world > 1:
        dp = parallel.DataParallel(solver).attach()
        dp.bcast()
    solver.step(warmup)
    if dp is not None:
        dp.stats = parallel.ReduceStats()
    steps, exposed, skew, whole = [], [], [], []
    for _ in range(iters):
        if dp is not None:
            parallel.current().barrier('benchmark barrier')
        t = time.perf_counter()
        solver.step(1)
        steps.append(time.perf_counter() - t)
        if dp is not None:
            ends = _gather_floats([dp.stats.backward_end, dp.stats.reduced_at])
            last_backward = max(e[0] for e in ends)
            exposed.append(max(0.0, dp.stats.reduced_at - last_backward))
            skew.append(last_backward - min(e[0] for e in ends))
            whole.append(_isolated_reduce(dp))
    if parallel.solver_rank() == 0:
        per = dp.stats.per_iteration() if dp else {}
        with open(out, 'w') as f:
            json.dump({'step_s': float(np.median(steps)),
                       'exposed_s': float(np.median(exposed)) if exposed else 0.0,
                       'skew_s': float(np.median(skew)) if skew else 0.0,
                       'whole_s': float(np.median(whole)) if whole else 0.0,
                       'bytes': per.get('bytes', 0.0), 'collectives': per.get('collectives', 0.0),
                       'launch_ms': per.get('launch_ms', 0.0),
                       'params': sum(b.count for b in net._learnable_params)}, f)
    if world > 1:
        parallel.leave()


def run(net_path: str, ranks: int, iters: int, warmup: int) -> Dict:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, 'result.json')
        status = parallel.spawn_functions(_rank_run, dict(net_path=net_path, iters=iters,
                                                          warmup=warmup, out=out), ranks)
        if status:
            raise SystemExit('benchmark ranks failed (status %d)' % status)
        with open(out) as f:
            return json.load(f)


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nets', default='zf,vgg16')
    ap.add_argument('--iters', type=int, default=4, help='timed steps')
    ap.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    ap.add_argument('--ranks', type=int, default=2)
    args = ap.parse_args(argv)
    print('cores: %d; ranks share them (OMP_NUM_THREADS = cores / ranks)' % (os.cpu_count() or 1))
    for name in args.nets.split(','):
        path = os.path.join(BENCH_DIR, NETS[name]) if name in NETS else name
        one = run(path, 1, args.iters, args.warmup)
        many = run(path, args.ranks, args.iters, args.warmup)
        mb = many['bytes'] / 2 ** 20
        hidden = 1.0 - many['exposed_s'] / many['whole_s'] if many['whole_s'] > 0 else 0.0
        print('\n%s: %d parameters, %.1f MiB of gradients reduced per iteration and rank in %d '
              'collectives' % (name, one['params'], mb, many['collectives']))
        print('  1 rank:   %.3f s/step  %.2f images/s' % (one['step_s'], 1.0 / one['step_s']))
        print('  %d ranks:  %.3f s/step  %.2f images/s' % (args.ranks, many['step_s'],
                                                          args.ranks / many['step_s']))
        print('  all-reduce per iteration: %.0f ms alone, %.0f ms left after the last rank\'s '
              'backward: %.0f %% hidden behind backward' % (1e3 * many['whole_s'],
                                                            1e3 * many['exposed_s'], 100 * hidden))
        print('  (launching during backward: %.0f ms; ranks\' backward ends %.0f ms apart)'
              % (many['launch_ms'], 1e3 * many['skew_s']))

if __name__ == '__main__':
    main()
