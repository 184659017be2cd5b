#!/usr/bin/env python3
"""Re-evaluate saved detections (py-faster-rcnn's tools/reval.py).

    ./tools/reval.py output/default/voc_2007_test/VGG16_faster_rcnn_final --imdb voc_2007_test
    ./tools/reval.py output/toy_faster_rcnn_end2end/toy_2007_test/<net> --imdb toy_2007_test \
        --cfg experiments/cfgs/toy_faster_rcnn_end2end.yml --set DATA_DIR /elsewhere/data

Reads OUTPUT_DIR/detections.pkl (written by test_net.py), optionally re-runs NMS, and
prints the data set's evaluation (per-class AP and Mean AP for VOC). The pickle is read
with an unpickler that only rebuilds lists and NumPy arrays.
"""
import _init_paths  # noqa: F401
import argparse
import os

from datasets.factory import get_imdb
from fast_rcnn.config import cfg
from fast_rcnn.test import apply_nms
from utils.safe_pickle import load_arrays

from _tool_args import add_cfg_arg, add_set_arg, load_cfg, parse_or_help


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Re-evaluate results')
    parser.add_argument('output_dir', nargs=1, help='results directory', type=str)
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to re-evaluate',
                        default='voc_2007_test', type=str)
    parser.add_argument('--matlab', dest='matlab_eval', help='use matlab for evaluation',
                        action='store_true')
    parser.add_argument('--comp', dest='comp_mode', help='competition mode', action='store_true')
    parser.add_argument('--nms', dest='apply_nms', help='apply nms', action='store_true')
    # The data set is found through the config (DATA_DIR), so a set outside data/ needs these.
    add_cfg_arg(parser)
    add_set_arg(parser)
    return parse_or_help(parser, argv)


def from_dets(imdb_name, output_dir, args):
    imdb = get_imdb(imdb_name)
    imdb.competition_mode(args.comp_mode)
    imdb.config['matlab_eval'] = args.matlab_eval
    det_file = os.path.join(output_dir, 'detections.pkl')
    dets = load_arrays(det_file)
    imdb.check_detections(dets, det_file)
    if args.apply_nms:
        print('Applying NMS to all detections')
        dets = apply_nms(dets, cfg.TEST.NMS)
    print('Evaluating detections')
    return imdb.evaluate_detections(dets, output_dir)


def main(argv=None):
    args = parse_args(argv)
    load_cfg(args)
    output_dir = os.path.abspath(args.output_dir[0])
    return from_dets(args.imdb_name, output_dir, args)


if __name__ == '__main__':
    main()
