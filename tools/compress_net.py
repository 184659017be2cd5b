#!/usr/bin/env python3
"""Compress a Fast R-CNN network with truncated SVD of fc6 and fc7 (py-faster-rcnn's
tools/compress_net.py).

    ./tools/compress_net.py --def test.prototxt --def-svd test_svd.prototxt --net model.caffemodel

The SVD prototxt replaces each fcN by fcN_L (l outputs, no bias) and fcN_U (original
outputs): W ~= U_l diag(s_l) V_l, with fcN_L = diag(s_l) V_l and fcN_U = U_l plus the bias.
"""
import _init_paths  # noqa: F401
import argparse
import os
import sys

import numpy as np

import caffe


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Compress a Fast R-CNN network')
    parser.add_argument('--def', dest='prototxt', help='prototxt file defining the uncompressed network',
                        default=None, type=str)
    parser.add_argument('--def-svd', dest='prototxt_svd', help='prototxt file defining the SVD compressed network',
                        default=None, type=str)
    parser.add_argument('--net', dest='caffemodel', help='model to compress', default=None, type=str)
    if argv is None and len(sys.argv) == 1:
        parser.print_help()
        sys.exit(1)
    return parser.parse_args(argv)


def compress_weights(W, l):
    """Compress the weight matrix W of an inner product (fully connected) layer using truncated SVD.

    Returns (Ul, L): Ul is (m, l), L = diag(s_l) V_l is (l, k), so that W ~= Ul.dot(L).
    """
    U, s, V = np.linalg.svd(W, full_matrices=False)
    Ul = U[:, :l]
    sl = s[:l]
    Vl = V[:l, :]
    L = np.dot(np.diag(sl), Vl)
    return Ul, L


def main(argv=None):
    args = parse_args(argv)
    caffe.set_mode_cpu()
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    net_svd = caffe.Net(args.prototxt_svd, args.caffemodel, caffe.TEST)
    print('Uncompressed network {} : {}'.format(args.prototxt, args.caffemodel))
    print('Compressed network prototxt {}'.format(args.prototxt_svd))
    out = os.path.splitext(os.path.basename(args.caffemodel))[0] + '_svd'
    out_dir = os.path.dirname(args.caffemodel)
    for layer in ('fc6', 'fc7'):
        if layer + '_L' not in net_svd.params:
            continue
        l = net_svd.params[layer + '_L'][0].data.shape[0]
        print('  {} compressed to {}'.format(layer, l))
        out += '_{}_{}'.format(layer, l)
        W = net.params[layer][0].data
        Ul, L = compress_weights(W, l)
        net_svd.params[layer + '_L'][0].data[...] = L
        net_svd.params[layer + '_U'][0].data[...] = Ul
        net_svd.params[layer + '_U'][1].data[...] = net.params[layer][1].data
    filename = '{}/{}.caffemodel'.format(out_dir, out)
    net_svd.save(filename)
    print('Wrote svd model to: {:s}'.format(filename))
    return filename


if __name__ == '__main__':
    main()
