#!/usr/bin/env python3
"""Draw a net prototxt as a picture (png, svg, pdf, ... by the output's extension; .raw is
the DOT text), as pycaffe's draw_net.py. Needs Graphviz's `dot` for pictures."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from google.protobuf import text_format

import caffe
import caffe.draw
from caffe.proto import caffe_pb2

PHASES = {'TRAIN': caffe.TRAIN, 'TEST': caffe.TEST, 'ALL': None}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw a network graph.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('input_net_proto_file', help='Input network prototxt file')
    parser.add_argument('output_image_file', help='Output image file')
    parser.add_argument('--rankdir', default='LR',
                        help='One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., '
                             'horizontal), or another valid dot option (Graphviz rankdir).')
    parser.add_argument('--phase', default='ALL',
                        help='Which network phase to draw: TRAIN, TEST, or ALL (every layer '
                             'whatever its phase).')
    parser.add_argument('--display_lrm', action='store_true',
                        help='Show the learning rate multipliers, when not zero, of the '
                             'convolution and inner product layers.')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    net = caffe_pb2.NetParameter()
    with open(args.input_net_proto_file) as f:
        text_format.Merge(f.read(), net)
    print('Drawing net to %s' % args.output_image_file)
    if args.phase not in PHASES:
        raise ValueError('Unknown phase: ' + args.phase)
    caffe.draw.draw_net_to_file(net, args.output_image_file, args.rankdir, PHASES[args.phase],
                                args.display_lrm)
    return 0


if __name__ == '__main__':
    sys.exit(main())
