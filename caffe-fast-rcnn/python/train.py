#!/usr/bin/env python3
"""Train a net on several GPUs (or CPU ranks) with pycaffe's multi-GPU API.

    python train.py --solver solver.prototxt [--snapshot x_iter_N.solverstate]
                    [--gpus 0 1 2 3] [--timing]

One process per device. The parent makes a rendezvous id (caffe.NCCL.new_uid()) and starts
the processes; each one says how many solvers there are and which one it is
(set_solver_count / set_solver_rank) before building its solver, so that its data layers
read their own share of the data; then caffe.NCCL joins the ranks, bcast() gives every rank
the first rank's weights, and the NCCL object, registered as a solver callback (and, with
layer_wise_reduce, as the net's after_backward callback), averages the gradients before
each update. Every rank trains the same weights; rank 0 logs and snapshots.

On a machine where PyTorch sees no GPU the ids only say how many CPU processes to run.
`caffe train --solver ... --gpu 0,1` does the same from the command line.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import caffe  # noqa: E402


def show_timing(solver, nccl):
    """Rank 0 prints, every `display` iterations, each layer's forward and backward time,
    the whole iteration's and the wait for the gradient all-reduce."""
    net = solver.net
    n = len(net.layers)
    fwd = [caffe.Timer() for _ in range(n)]
    bwd = [caffe.Timer() for _ in range(n)]
    whole, allreduce = caffe.Timer(), caffe.Timer()
    display = max(solver.param.display, 1)

    def report():
        if solver.iter % display:
            return
        lines = ['']
        lines += ['forw %3d %10s: %.2f' % (i, net._layer_names[i], fwd[i].ms) for i in range(n)]
        lines += ['back %3d %10s: %.2f' % (i, net._layer_names[i], bwd[i].ms)
                  for i in reversed(range(n))]
        lines += ['solver total: %.2f' % whole.ms, 'allreduce: %.2f' % allreduce.ms]
        caffe.log('\n'.join(lines))

    net.before_forward(lambda i: fwd[i].start())
    net.after_forward(lambda i: fwd[i].stop())
    net.before_backward(lambda i: bwd[i].start())
    net.after_backward(lambda i: bwd[i].stop())
    solver.add_callback(lambda: whole.start(), lambda: (whole.stop(), allreduce.start()))
    solver.add_callback(nccl)
    solver.add_callback(lambda: None, lambda: (allreduce.stop(), report()))


def solve(proto, snapshot, gpus, timing, uid, rank):
    """One rank: choose its device, build its solver, join the others, train. A rank that
    fails exits at once (its peers are dead or will stop; nothing to wait for)."""
    try:
        _solve(proto, snapshot, gpus, timing, uid, rank)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def _solve(proto, snapshot, gpus, timing, uid, rank):
    if caffe.parallel.gpu_count():
        caffe.set_mode_gpu()
        caffe.set_device(gpus[rank])
    else:
        caffe.set_mode_cpu()
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)

    solver = caffe.get_solver(proto)
    if snapshot:
        solver.restore(snapshot)

    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    if timing and rank == 0:
        show_timing(solver, nccl)
    else:
        solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter - solver.iter)


def train(proto, snapshot, gpus, timing=False):
    """Start one process per device and wait for them; if one fails, stop the others.
    Returns the exit status (0 when every rank finished)."""
    if not caffe.parallel.gpu_count():
        caffe.log('PyTorch sees no GPU: training with %d CPU processes' % len(gpus))
    uid = caffe.NCCL.new_uid()
    caffe.init_log()
    caffe.log('Using devices %s' % ', '.join(map(str, gpus)))
    ctx = mp.get_context('spawn')
    procs = [ctx.Process(target=solve, args=(proto, snapshot, gpus, timing, uid, rank))
             for rank in range(len(gpus))]
    for p in procs:
        p.start()
    status = 0
    while any(p.is_alive() for p in procs):
        failed = [p for p in procs if p.exitcode not in (None, 0)]
        if failed:
            status = 1
            for p in procs:
                if p.is_alive():
                    p.terminate()
            break
        time.sleep(0.2)
    for p in procs:
        p.join()
        if p.exitcode:
            status = 1
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--solver', required=True, help='solver prototxt')
    parser.add_argument('--snapshot', help='solver state to resume from')
    parser.add_argument('--gpus', type=int, nargs='+', default=[0], help='device ids, one per rank')
    parser.add_argument('--timing', action='store_true', help='print per-layer and all-reduce times')
    args = parser.parse_args(argv)
    return train(args.solver, args.snapshot, args.gpus, args.timing)


if __name__ == '__main__':
    sys.exit(main())
