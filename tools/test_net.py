#!/usr/bin/env python3
"""Test a Fast R-CNN / Faster R-CNN network on an image database (py-faster-rcnn's tools/test_net.py).

    ./tools/test_net.py --gpu 0 --def models/.../test.prototxt --net output/.../final.caffemodel \
        --imdb voc_2007_test --cfg experiments/cfgs/faster_rcnn_end2end.yml

Prints `im_detect: i/N` progress, then `AP for <class> = ...` and `Mean AP = ...`.
"""
import _init_paths  # noqa: F401
import argparse
import os
import pprint
import sys
import time

import caffe
from datasets.factory import get_imdb
from fast_rcnn.config import cfg, cfg_from_file, cfg_from_list
from fast_rcnn.test import test_net
from utils.device import setup_caffe_device


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a Fast R-CNN network')
    parser.add_argument('--gpu', dest='gpu_id', help='GPU id to use; -1 for the CPU', default=0, type=int)
    parser.add_argument('--cpu', dest='cpu', help='run on the CPU', action='store_true')
    parser.add_argument('--def', dest='prototxt', help='prototxt file defining the network',
                        default=None, type=str)
    parser.add_argument('--net', dest='caffemodel', help='model to test', default=None, type=str)
    parser.add_argument('--cfg', dest='cfg_file', help='optional config file', default=None, type=str)
    parser.add_argument('--wait', dest='wait', help='wait until net file exists', default=True,
                        type=lambda s: str(s).lower() not in ('0', 'false', 'no'))
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to test',
                        default='voc_2007_test', type=str)
    parser.add_argument('--comp', dest='comp_mode', help='competition mode', action='store_true')
    parser.add_argument('--set', dest='set_cfgs', help='set config keys', default=None,
                        nargs=argparse.REMAINDER)
    parser.add_argument('--vis', dest='vis', help='visualize detections', action='store_true')
    parser.add_argument('--num_dets', dest='max_per_image', help='max number of detections per image',
                        default=100, type=int)
    if argv is None and len(sys.argv) == 1:
        parser.print_help()
        sys.exit(1)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    print('Called with args:')
    print(args)
    if args.cfg_file is not None:
        cfg_from_file(args.cfg_file)
    if args.set_cfgs is not None:
        cfg_from_list(args.set_cfgs)
    setup_caffe_device(args.gpu_id, args.cpu)
    print('Using config:')
    pprint.pprint(cfg)
    if args.prototxt is None or args.caffemodel is None:
        sys.exit('test_net.py: --def and --net are required')
    while not os.path.exists(args.caffemodel) and args.wait:
        print('Waiting for {} to exist...'.format(args.caffemodel))
        time.sleep(10)
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    net.name = os.path.splitext(os.path.basename(args.caffemodel))[0]
    imdb = get_imdb(args.imdb_name)
    imdb.competition_mode(args.comp_mode)
    if not cfg.TEST.HAS_RPN:
        imdb.set_proposal_method(cfg.TEST.PROPOSAL_METHOD)
    return test_net(net, imdb, max_per_image=args.max_per_image, vis=args.vis)


if __name__ == '__main__':
    main()
