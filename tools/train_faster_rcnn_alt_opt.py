#!/usr/bin/env python3
"""Train Faster R-CNN by 4-step alternating optimisation (py-faster-rcnn's
tools/train_faster_rcnn_alt_opt.py).

    Stage 1 RPN (init: ImageNet model) -> proposals -> Stage 1 Fast R-CNN (init: ImageNet)
    Stage 2 RPN (init: stage 1 Fast R-CNN, shared convs frozen) -> proposals ->
    Stage 2 Fast R-CNN (init: stage 2 RPN) -> <net>_faster_rcnn_final.caffemodel

Each stage runs in its own child process, as in the original, so that every stage starts
from a clean engine and config. `--ohem` trains the Fast R-CNN stages with online hard
example mining (the stage*_fast_rcnn_ohem_* prototxts). `--iters a,b,c,d` overrides the
stages' iteration counts (default 80000,40000,80000,40000).

`--gpu 0,1` runs every stage on one process per device (CPU processes on a machine without
GPUs): the training stages are data-parallel (caffe.parallel), and proposal generation
splits the images between the ranks and gathers their proposals on rank 0, which writes
the file and reports the stage's result.
"""
import _init_paths  # noqa: F401
import argparse
import multiprocessing as mp
import os
import pickle
import pprint
import sys

import numpy as np

from datasets.factory import get_imdb
from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot, get_output_dir
from utils.data_parallel import parse_gpus

from _tool_args import (GPU_LIST_HELP, add_cfg_arg, add_device_args, add_precision_arg,
                        add_set_arg, apply_precision, load_cfg, parse_or_help, print_args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a Faster R-CNN network')
    add_device_args(parser, gpu_help=GPU_LIST_HELP, gpu_type=str)
    parser.add_argument('--net_name', dest='net_name', help='network name (e.g., "ZF")',
                        default=None, type=str)
    parser.add_argument('--weights', dest='pretrained_model',
                        help='initialize with pretrained model weights', default=None, type=str)
    add_cfg_arg(parser)
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to train on',
                        default='voc_2007_trainval', type=str)
    parser.add_argument('--ohem', dest='ohem', help='train the Fast R-CNN stages with OHEM',
                        action='store_true')
    parser.add_argument('--iters', dest='stage_iters', default=None, type=str,
                        help='iterations of the four stages, comma separated')
    add_precision_arg(parser)
    add_set_arg(parser)
    return parse_or_help(parser, argv)


def get_roidb(imdb_name, rpn_file=None):
    from fast_rcnn.train import get_training_roidb
    imdb = get_imdb(imdb_name)
    print('Loaded dataset `{:s}` for training'.format(imdb.name))
    imdb.set_proposal_method(cfg.TRAIN.PROPOSAL_METHOD)
    print('Set proposal method: {:s}'.format(cfg.TRAIN.PROPOSAL_METHOD))
    if rpn_file is not None:
        imdb.config['rpn_file'] = rpn_file
    roidb = get_training_roidb(imdb)
    return roidb, imdb


def get_solvers(net_name, ohem=False):
    """Solver prototxts of the four stages, their iteration counts, and the RPN test net."""
    n = 'faster_rcnn_alt_opt'
    frcn = 'fast_rcnn_ohem_solver30k40k.pt' if ohem else 'fast_rcnn_solver30k40k.pt'
    names = ['stage1_rpn_solver60k80k.pt', 'stage1_' + frcn, 'stage2_rpn_solver60k80k.pt', 'stage2_' + frcn]
    solvers = [os.path.join(cfg.MODELS_DIR, net_name, n, s) for s in names]
    max_iters = [80000, 40000, 80000, 40000]
    rpn_test_prototxt = os.path.join(cfg.MODELS_DIR, net_name, n, 'rpn_test.pt')
    missing = [s for s in solvers + [rpn_test_prototxt] if not os.path.exists(s)]
    if missing:
        raise FileNotFoundError('alt-opt prototxts not found for net %r under %s: %s'
                                % (net_name, cfg.MODELS_DIR, ', '.join(missing)))
    return solvers, max_iters, rpn_test_prototxt


def _init_stage(cfg_state, gpus=None):
    """In a stage's child process: take the parent's config, choose the device (and, as a
    rank of a data-parallel stage, join the others), seed; returns the rank (0 if alone)."""
    cfg_restore(cfg_state)
    import caffe
    from utils.data_parallel import start_ranks
    from utils.device import setup_caffe_device
    rank = 0
    if gpus and len(gpus) > 1:
        rank = start_ranks(gpus, __file__, [])
    else:
        setup_caffe_device(cfg.GPU_ID)
    np.random.seed(cfg.RNG_SEED + rank)
    caffe.set_random_seed(cfg.RNG_SEED + rank)
    return rank


def _report(queue, result):
    """Rank 0 (or the only process) hands the stage's result to the parent; ranks leave
    their group."""
    from caffe import parallel
    if parallel.root_solver():
        queue.put(result)
    parallel.leave()


def train_rpn(queue=None, imdb_name=None, init_model=None, solver=None, max_iters=None, cfg_state=None,
              gpus=None):
    """Train a Region Proposal Network in a separate training process."""
    rank = _init_stage(cfg_state, gpus)
    # Not using any proposals, just ground-truth boxes
    cfg.TRAIN.HAS_RPN = True
    cfg.TRAIN.BBOX_REG = False  # applies only to Fast R-CNN bbox regression
    cfg.TRAIN.PROPOSAL_METHOD = 'gt'
    cfg.TRAIN.IMS_PER_BATCH = 1
    cfg.TRAIN.USE_OHEM = False
    print('Init model: {}'.format(init_model))
    print('Using config:')
    pprint.pprint(cfg)
    from fast_rcnn.train import train_net
    roidb, imdb = get_roidb(imdb_name)
    print('roidb len: {}'.format(len(roidb)))
    output_dir = get_output_dir(imdb)
    print('Output will be saved to `{:s}`'.format(output_dir))
    model_paths = train_net(solver, roidb, output_dir, pretrained_model=init_model,
                            max_iters=max_iters)
    if rank == 0:
        for path in model_paths[:-1]:
            os.remove(path)
    _report(queue, {'model_path': model_paths[-1]})


def rpn_generate(queue=None, imdb_name=None, rpn_model_path=None, rpn_test_prototxt=None, cfg_state=None,
                 gpus=None):
    """Use a trained RPN to generate proposals for every image of the data set (each rank
    for its share of the images, gathered on rank 0)."""
    rank = _init_stage(cfg_state, gpus)
    cfg.TEST.RPN_PRE_NMS_TOP_N = -1     # no pre NMS filtering
    cfg.TEST.RPN_POST_NMS_TOP_N = 2000  # limit top boxes after NMS
    print('RPN model: {}'.format(rpn_model_path))
    print('Using config:')
    pprint.pprint(cfg)
    import caffe
    from caffe import parallel
    from rpn.generate import imdb_proposals
    imdb = get_imdb(imdb_name)
    print('Loaded dataset `{:s}` for proposal generation'.format(imdb.name))
    rpn_net = caffe.Net(rpn_test_prototxt, rpn_model_path, caffe.TEST)
    output_dir = get_output_dir(imdb)
    print('Output will be saved to `{:s}`'.format(output_dir))
    group = parallel.current()
    if group is None:
        rpn_proposals = imdb_proposals(rpn_net, imdb)
    else:
        mine = parallel.shard(imdb.num_images)
        boxes = imdb_proposals(rpn_net, imdb, indices=mine)
        shares = group.gather_objects({i: np.asarray(boxes[i]) for i in mine})
        if rank != 0:
            _report(queue, None)
            return
        rpn_proposals = [None] * imdb.num_images
        for share in shares:
            for i, b in share.items():
                rpn_proposals[i] = b
        print('Gathered the proposals of {:d} ranks'.format(len(shares)))
    rpn_net_name = os.path.splitext(os.path.basename(rpn_model_path))[0]
    rpn_proposals_path = os.path.join(output_dir, rpn_net_name + '_proposals.pkl')
    from caffe import atomic_files
    with atomic_files.atomic_open(rpn_proposals_path) as f:  # read back by this run only
        pickle.dump([np.asarray(b) for b in rpn_proposals], f, pickle.HIGHEST_PROTOCOL)
    print('Wrote RPN proposals to {}'.format(rpn_proposals_path))
    _report(queue, {'proposal_path': rpn_proposals_path})


def train_fast_rcnn(queue=None, imdb_name=None, init_model=None, solver=None, max_iters=None,
                    cfg_state=None, rpn_file=None, ohem=False, gpus=None):
    """Train a Fast R-CNN using proposals generated by an RPN."""
    rank = _init_stage(cfg_state, gpus)
    cfg.TRAIN.HAS_RPN = False           # not generating proposals on-the-fly
    cfg.TRAIN.PROPOSAL_METHOD = 'rpn'   # use pre-computed RPN proposals instead
    cfg.TRAIN.IMS_PER_BATCH = 2
    cfg.TRAIN.USE_OHEM = bool(ohem)
    print('Init model: {}'.format(init_model))
    print('RPN proposals: {}'.format(rpn_file))
    print('Using config:')
    pprint.pprint(cfg)
    from fast_rcnn.train import train_net
    roidb, imdb = get_roidb(imdb_name, rpn_file=rpn_file)
    output_dir = get_output_dir(imdb)
    print('Output will be saved to `{:s}`'.format(output_dir))
    model_paths = train_net(solver, roidb, output_dir, pretrained_model=init_model,
                            max_iters=max_iters)
    if rank == 0:
        for path in model_paths[:-1]:
            os.remove(path)
    _report(queue, {'model_path': model_paths[-1]})


# The devices of --gpu: one process per device in every stage when there are several.
_GPUS = []


def _run_stage(target, **kwargs):
    """Run one stage in a fresh process (one per device with --gpu 0,1,...) and return
    what it reports."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    kwargs['queue'] = queue
    kwargs['cfg_state'] = cfg_snapshot()
    if len(_GPUS) > 1:
        from caffe import parallel
        kwargs['gpus'] = list(_GPUS)
        status = parallel.spawn_functions(target, kwargs, len(_GPUS))
        if status:
            raise RuntimeError('stage %s failed (a rank exited with status %s); see the log above'
                               % (target.__name__, status))
        return queue.get(timeout=60)
    p = ctx.Process(target=target, kwargs=kwargs)
    p.start()
    try:
        while True:
            try:
                out = queue.get(timeout=5)
                break
            except Exception:
                if not p.is_alive():
                    raise RuntimeError('stage %s failed (exit code %s); see the log above'
                                       % (target.__name__, p.exitcode)) from None
    finally:
        p.join()
    return out


def main(argv=None):
    args = parse_args(argv)
    print_args(args)
    load_cfg(args)
    gpus = parse_gpus(args.gpu_id, args.cpu)
    _GPUS[:] = gpus
    cfg.GPU_ID = gpus[0]
    apply_precision(args)  # the stages' processes inherit it through CAFFE_BF16
    if args.net_name is None:
        sys.exit('train_faster_rcnn_alt_opt.py: --net_name is required')
    solvers, max_iters, rpn_test_prototxt = get_solvers(args.net_name, args.ohem)
    if args.stage_iters:
        max_iters = [int(x) for x in args.stage_iters.split(',')]
        if len(max_iters) != 4:
            sys.exit('--iters needs four comma-separated numbers, one per stage')

    def banner(text):
        print('~' * 70)
        print(text)
        print('~' * 70)

    banner('Stage 1 RPN, init from ImageNet model')
    cfg.TRAIN.SNAPSHOT_INFIX = 'stage1'
    rpn_stage1_out = _run_stage(train_rpn, imdb_name=args.imdb_name, init_model=args.pretrained_model,
                                solver=solvers[0], max_iters=max_iters[0])

    banner('Stage 1 RPN, generate proposals')
    rpn_stage1_out.update(_run_stage(rpn_generate, imdb_name=args.imdb_name,
                                     rpn_model_path=str(rpn_stage1_out['model_path']),
                                     rpn_test_prototxt=rpn_test_prototxt))

    banner('Stage 1 Fast R-CNN using RPN proposals, init from ImageNet model')
    cfg.TRAIN.SNAPSHOT_INFIX = 'stage1'
    fast_rcnn_stage1_out = _run_stage(train_fast_rcnn, imdb_name=args.imdb_name,
                                      init_model=args.pretrained_model, solver=solvers[1],
                                      max_iters=max_iters[1], rpn_file=rpn_stage1_out['proposal_path'],
                                      ohem=args.ohem)

    banner('Stage 2 RPN, init from stage 1 Fast R-CNN model')
    cfg.TRAIN.SNAPSHOT_INFIX = 'stage2'
    rpn_stage2_out = _run_stage(train_rpn, imdb_name=args.imdb_name,
                                init_model=str(fast_rcnn_stage1_out['model_path']),
                                solver=solvers[2], max_iters=max_iters[2])

    banner('Stage 2 RPN, generate proposals')
    rpn_stage2_out.update(_run_stage(rpn_generate, imdb_name=args.imdb_name,
                                     rpn_model_path=str(rpn_stage2_out['model_path']),
                                     rpn_test_prototxt=rpn_test_prototxt))

    banner('Stage 2 Fast R-CNN, init from stage 2 RPN R-CNN model')
    cfg.TRAIN.SNAPSHOT_INFIX = 'stage2'
    fast_rcnn_stage2_out = _run_stage(train_fast_rcnn, imdb_name=args.imdb_name,
                                      init_model=str(rpn_stage2_out['model_path']),
                                      solver=solvers[3], max_iters=max_iters[3],
                                      rpn_file=rpn_stage2_out['proposal_path'], ohem=args.ohem)

    # Create final model (just a copy of the last stage)
    final_path = os.path.join(os.path.dirname(fast_rcnn_stage2_out['model_path']),
                              args.net_name + '_faster_rcnn_final.caffemodel')
    print('cp {} -> {}'.format(fast_rcnn_stage2_out['model_path'], final_path))
    from caffe import atomic_files  # a kill mid-copy must not leave half a final model
    atomic_files.copy_file(fast_rcnn_stage2_out['model_path'], final_path)
    print('Final model: {}'.format(final_path))
    return final_path


if __name__ == '__main__':
    main()
