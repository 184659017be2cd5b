#!/usr/bin/env python3
"""Test a Fast R-CNN / Faster R-CNN network on an image database (py-faster-rcnn's tools/test_net.py).

    ./tools/test_net.py --gpu 0 --def models/.../test.prototxt --net output/.../final.caffemodel \
        --imdb voc_2007_test --cfg experiments/cfgs/faster_rcnn_end2end.yml

Prints `im_detect: i/N` progress, then `AP for <class> = ...` and `Mean AP = ...`.
"""
import _init_paths  # noqa: F401
import argparse
import os
import sys

import caffe
from datasets.factory import get_imdb
from fast_rcnn.config import cfg
from fast_rcnn.test import test_net
from utils.device import setup_caffe_device

from _tool_args import (GPU_ID_HELP, add_cfg_arg, add_device_args, add_net_args,
                        add_precision_arg, add_set_arg, add_wait_arg, apply_precision, load_cfg,
                        parse_or_help, print_args, print_cfg, wait_for_file)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a Fast R-CNN network')
    add_device_args(parser, gpu_help=GPU_ID_HELP)
    add_net_args(parser)
    add_cfg_arg(parser)
    add_wait_arg(parser)
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to test',
                        default='voc_2007_test', type=str)
    parser.add_argument('--comp', dest='comp_mode', help='competition mode', action='store_true')
    add_set_arg(parser)
    parser.add_argument('--vis', dest='vis', help='visualize detections', action='store_true')
    parser.add_argument('--num_dets', dest='max_per_image', help='max number of detections per image',
                        default=100, type=int)
    add_precision_arg(parser)
    return parse_or_help(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    print_args(args)
    load_cfg(args)
    setup_caffe_device(args.gpu_id, args.cpu)
    apply_precision(args)
    print_cfg()
    if args.prototxt is None or args.caffemodel is None:
        sys.exit('test_net.py: --def and --net are required')
    wait_for_file(args.caffemodel, args.wait, args.wait_timeout)
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    net.name = os.path.splitext(os.path.basename(args.caffemodel))[0]
    imdb = get_imdb(args.imdb_name)
    imdb.competition_mode(args.comp_mode)
    if not cfg.TEST.HAS_RPN:
        imdb.set_proposal_method(cfg.TEST.PROPOSAL_METHOD)
    return test_net(net, imdb, max_per_image=args.max_per_image, vis=args.vis)


if __name__ == '__main__':
    main()
