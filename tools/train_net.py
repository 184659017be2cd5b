#!/usr/bin/env python3
"""Train a Fast R-CNN or end-to-end Faster R-CNN network (py-faster-rcnn's tools/train_net.py).

    ./tools/train_net.py --gpu 0 --solver models/.../solver.prototxt \
        --weights data/imagenet_models/VGG16.v2.caffemodel --imdb voc_2007_trainval \
        --iters 70000 --cfg experiments/cfgs/faster_rcnn_end2end.yml

`--gpu -1` (or `--cpu`) trains on the CPU. `--gpu 0,1` trains data-parallel, one process
per device (on a machine without GPUs, that many CPU processes); under torchrun the
processes torchrun started train together (see lib/utils/data_parallel.py).
"""
import _init_paths  # noqa: F401
import argparse
import sys

import numpy as np

import caffe
import datasets.imdb
from datasets.factory import get_imdb
from fast_rcnn.config import cfg, get_output_dir
from fast_rcnn.train import get_training_roidb, train_net
from utils.data_parallel import finish_ranks, parse_gpus, rank_main, start_ranks

from _tool_args import (GPU_LIST_HELP, add_cfg_arg, add_device_args, add_precision_arg,
                        add_set_arg, apply_precision, load_cfg, parse_or_help, print_args,
                        print_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a Fast R-CNN network')
    add_device_args(parser, gpu_help=GPU_LIST_HELP, gpu_type=str)
    parser.add_argument('--solver', dest='solver', help='solver prototxt', default=None, type=str)
    parser.add_argument('--iters', dest='max_iters', help='number of iterations to train',
                        default=40000, type=int)
    parser.add_argument('--weights', dest='pretrained_model',
                        help='initialize with pretrained model weights', default=None, type=str)
    add_cfg_arg(parser)
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to train on',
                        default='voc_2007_trainval', type=str)
    parser.add_argument('--rand', dest='randomize', help='randomize (do not use a fixed seed)',
                        action='store_true')
    add_precision_arg(parser)
    add_set_arg(parser)
    return parse_or_help(parser, argv)


def combined_roidb(imdb_names):
    """The training roidb of one imdb or of several joined by '+' (e.g. voc_2007_trainval+voc_2012_trainval)."""
    def get_roidb(imdb_name):
        imdb = get_imdb(imdb_name)
        print('Loaded dataset `{:s}` for training'.format(imdb.name))
        imdb.set_proposal_method(cfg.TRAIN.PROPOSAL_METHOD)
        print('Set proposal method: {:s}'.format(cfg.TRAIN.PROPOSAL_METHOD))
        return get_training_roidb(imdb)

    names = imdb_names.split('+')
    roidbs = [get_roidb(s) for s in names]
    roidb = roidbs[0]
    if len(roidbs) > 1:
        classes = [tuple(get_imdb(s).classes) for s in names]
        for s, c in zip(names[1:], classes[1:]):
            if c != classes[0]:
                raise ValueError('--imdb {}: {} and {} have different classes ({} and {}); '
                                 'data sets trained together must list the same classes in '
                                 'the same order'.format(imdb_names, names[0], s,
                                                         list(classes[0]), list(c)))
        for r in roidbs[1:]:
            roidb.extend(r)
        imdb = datasets.imdb.imdb(imdb_names, classes[1])
    else:
        imdb = get_imdb(imdb_names)
    return imdb, roidb


@rank_main
def main(argv=None):
    args = parse_args(argv)
    load_cfg(args)
    rank = start_ranks(parse_gpus(args.gpu_id, args.cpu), __file__, argv, args.cpu)
    print_args(args)
    apply_precision(args)
    print_cfg()
    if not args.randomize:
        # fix the random seeds (numpy and caffe) for reproducibility; each rank its own
        np.random.seed(cfg.RNG_SEED + rank)
        caffe.set_random_seed(cfg.RNG_SEED + rank)
    if args.solver is None:
        sys.exit('train_net.py: --solver is required')
    imdb, roidb = combined_roidb(args.imdb_name)
    print('{:d} roidb entries'.format(len(roidb)))
    output_dir = get_output_dir(imdb)
    print('Output will be saved to `{:s}`'.format(output_dir))
    train_net(args.solver, roidb, output_dir, pretrained_model=args.pretrained_model,
              max_iters=args.max_iters)
    finish_ranks()


if __name__ == '__main__':
    main()
