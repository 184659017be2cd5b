#!/usr/bin/env python3
"""Generate RPN proposals for every image of a data set (py-faster-rcnn's tools/rpn_generate.py).

    ./tools/rpn_generate.py --gpu 0 --def models/.../rpn_test.pt --net rpn.caffemodel --imdb voc_2007_test
"""
import _init_paths  # noqa: F401
import argparse
import os
import pickle
import pprint
import sys
import time

import numpy as np

import caffe
from datasets.factory import get_imdb
from fast_rcnn.config import cfg, cfg_from_file, cfg_from_list, get_output_dir
from rpn.generate import imdb_proposals
from utils.device import setup_caffe_device


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate RPN proposals')
    parser.add_argument('--gpu', dest='gpu_id', help='GPU id to use; -1 for the CPU', default=0, type=int)
    parser.add_argument('--cpu', dest='cpu', action='store_true', help='run on the CPU')
    parser.add_argument('--def', dest='prototxt', help='prototxt file defining the network', default=None, type=str)
    parser.add_argument('--net', dest='caffemodel', help='model to test', default=None, type=str)
    parser.add_argument('--cfg', dest='cfg_file', help='optional config file', default=None, type=str)
    parser.add_argument('--wait', dest='wait', help='wait until net file exists', default=True,
                        type=lambda s: str(s).lower() not in ('0', 'false', 'no'))
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to test', default='voc_2007_test', type=str)
    parser.add_argument('--set', dest='set_cfgs', help='set config keys', default=None, nargs=argparse.REMAINDER)
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
    cfg.TEST.RPN_PRE_NMS_TOP_N = -1
    cfg.TEST.RPN_POST_NMS_TOP_N = 2000
    print('Using config:')
    pprint.pprint(cfg)
    while not os.path.exists(args.caffemodel) and args.wait:
        print('Waiting for {} to exist...'.format(args.caffemodel))
        time.sleep(10)
    setup_caffe_device(args.gpu_id, args.cpu)
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    net.name = os.path.splitext(os.path.basename(args.caffemodel))[0]
    imdb = get_imdb(args.imdb_name)
    imdb_boxes = imdb_proposals(net, imdb)
    output_dir = get_output_dir(imdb, net)
    rpn_file = os.path.join(output_dir, net.name + '_rpn_proposals.pkl')
    tmp = rpn_file + '.tmp'
    with open(tmp, 'wb') as f:
        pickle.dump([np.asarray(b) for b in imdb_boxes], f, pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, rpn_file)
    print('Wrote RPN proposals to {}'.format(rpn_file))
    return rpn_file


if __name__ == '__main__':
    main()
