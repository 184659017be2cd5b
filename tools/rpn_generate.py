#!/usr/bin/env python3
"""Generate RPN proposals for every image of a data set (py-faster-rcnn's tools/rpn_generate.py).

    ./tools/rpn_generate.py --gpu 0 --def models/.../rpn_test.pt --net rpn.caffemodel --imdb voc_2007_test
"""
import _init_paths  # noqa: F401
import argparse
import os
import pickle
import sys

import numpy as np

import caffe
from caffe import atomic_files
from datasets.factory import get_imdb
from fast_rcnn.config import cfg, get_output_dir
from rpn.generate import imdb_proposals
from utils.device import setup_caffe_device

from _tool_args import (GPU_ID_HELP, add_cfg_arg, add_device_args, add_net_args, add_set_arg,
                        add_wait_arg, load_cfg, parse_or_help, print_args, print_cfg, wait_for_file,
                        add_precision_arg, apply_precision)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate RPN proposals')
    add_device_args(parser, gpu_help=GPU_ID_HELP)
    add_net_args(parser)
    add_cfg_arg(parser)
    add_wait_arg(parser)
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to test', default='voc_2007_test', type=str)
    add_precision_arg(parser)
    add_set_arg(parser)
    return parse_or_help(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    print_args(args)
    load_cfg(args)
    cfg.TEST.RPN_PRE_NMS_TOP_N = -1
    cfg.TEST.RPN_POST_NMS_TOP_N = 2000
    print_cfg()
    if args.prototxt is None or args.caffemodel is None:
        sys.exit('rpn_generate.py: --def and --net are required')
    wait_for_file(args.caffemodel, args.wait, args.wait_timeout)
    setup_caffe_device(args.gpu_id, args.cpu)
    apply_precision(args)
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    net.name = os.path.splitext(os.path.basename(args.caffemodel))[0]
    imdb = get_imdb(args.imdb_name)
    imdb_boxes = imdb_proposals(net, imdb)
    output_dir = get_output_dir(imdb, net)
    rpn_file = os.path.join(output_dir, net.name + '_rpn_proposals.pkl')
    with atomic_files.atomic_open(rpn_file) as f:
        pickle.dump([np.asarray(b) for b in imdb_boxes], f, pickle.HIGHEST_PROTOCOL)
    print('Wrote RPN proposals to {}'.format(rpn_file))
    return rpn_file


if __name__ == '__main__':
    main()
