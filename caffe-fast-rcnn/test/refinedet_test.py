#!/usr/bin/env python3
"""Score RefineDet models on PASCAL VOC, COCO or the toy set, single scale (RefineDet's
test/refinedet_test.py on Python 3, with flags instead of edited constants).

Run from the Caffe root (caffe-fast-rcnn/):

    python test/refinedet_test.py --gpu 0 --imdb voc_2007_test \\
        --path models/VGGNet/VOC0712/refinedet_vgg16_320x320/
    python test/refinedet_test.py --gpu -1 --imdb toy_2007_test \\
        --path models/ToyNet/toy/refinedet_toynet_160x160/ --net <one>.caffemodel

Every .caffemodel in --path is scored (or those given with --net) with --path's
deploy.prototxt (for COCO, single_test_deploy.prototxt when there is one, whose
confidence_threshold is the Soft-NMS threshold), at the deploy net's input size. VOC and
the toy set print each class's AP and `Mean AP = ...` (the project's lib/ evaluation, VOC07
11-point metric for 2007), COCO the 12 COCOeval figures; voc_2012_test only writes the
results files for the evaluation server. At the end a table of iteration -> mAP is printed
and written to <path>/mAP.txt. Data sets are the project's (data/VOCdevkit2007,
data/coco, data/toy; see lib/datasets/factory.py). Multi-scale testing is not provided.
"""
import _init_paths  # noqa: F401
import argparse
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2
from datasets.factory import get_imdb
from fast_rcnn.config import cfg, cfg_from_file, cfg_from_list, get_output_dir
from refinedet_detect import DEFAULT_MEAN, detect_imdb, input_size
from utils.device import setup_caffe_device

COCO_HEADER = ('Iter\tAP@0.5:0.95\tAP@0.5\tAP@0.75\tAP@S\tAP@M\tAP@L\tAR@1\tAR@10\tAR@100\t'
               'AR@S\tAR@M\tAR@L')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Score RefineDet models (single scale).')
    p.add_argument('--gpu', dest='gpu_id', type=int, default=0,
                   help='GPU device id to use [0]; -1 for the CPU')
    p.add_argument('--imdb', default='voc_2007_test',
                   help='voc_2007_test, voc_2012_test, coco_2014_minival, coco_2015_test-dev, '
                        'toy_2007_test, ... [voc_2007_test]')
    p.add_argument('--path', default='models/VGGNet/VOC0712/refinedet_vgg16_320x320/',
                   help='the model folder: its deploy.prototxt and (without --net) every '
                        '.caffemodel in it')
    p.add_argument('--def', dest='prototxt', default=None,
                   help='the deploy prototxt [<path>/deploy.prototxt]')
    p.add_argument('--net', dest='caffemodels', action='append', default=None,
                   help='a .caffemodel to score (repeat for several) [every one in --path]')
    p.add_argument('--mean', default=','.join('%g' % m for m in DEFAULT_MEAN),
                   help='the BGR mean pixel subtracted [104,117,123]')
    p.add_argument('--cfg', dest='cfg_file', default=None, help='optional config file')
    p.add_argument('--set', dest='set_cfgs', nargs=argparse.REMAINDER, default=None,
                   help='set config keys')
    p.add_argument('--comp', dest='comp_mode', action='store_true',
                   help='competition mode (keep unsalted results files)')
    return p.parse_args(argv)


def deploy_file(path: str, imdb_name: str) -> str:
    """RefineDet's choice: COCO's single_test_deploy.prototxt when present, else deploy."""
    single = os.path.join(path, 'single_test_deploy.prototxt')
    if 'coco' in imdb_name and os.path.exists(single):
        return single
    return os.path.join(path, 'deploy.prototxt')


def confidence_threshold(prototxt: str) -> float:
    """The DetectionOutput's confidence_threshold in `prototxt` (0.01 if none is set)."""
    net_param = protoio.read_text(prototxt, caffe_pb2.NetParameter)
    for layer in net_param.layer:
        if layer.type == 'DetectionOutput':
            return float(layer.detection_output_param.confidence_threshold)
    raise ValueError('{}: no DetectionOutput layer; give a RefineDet deploy.prototxt'
                     .format(prototxt))


def snapshot_iteration(caffemodel: str) -> int:
    """The iteration a snapshot's name ends with (`..._iter_12000.caffemodel`), else 0."""
    m = re.search(r'_(\d+)$', os.path.splitext(os.path.basename(caffemodel))[0])
    return int(m.group(1)) if m else 0


def models_in(path: str) -> List[str]:
    if not os.path.isdir(path):
        raise FileNotFoundError('{}: no such model folder'.format(path))
    found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith('.caffemodel'))
    if not found:
        raise FileNotFoundError('{}: no .caffemodel to score'.format(path))
    return found


def score(net: caffe.Net, imdb, mean: Sequence[float], soft_nms_threshold: Optional[float]):
    """Detect the whole set and evaluate: a float mAP (VOC, toy), COCOeval's 12 stats
    (COCO), or None when the split has no ground truth (results files only)."""
    all_boxes = detect_imdb(net, imdb, input_size(net), mean, soft_nms_threshold)
    output_dir = get_output_dir(imdb, net)
    if imdb.name == 'voc_2012_test':
        print('Saving detections')
        imdb.config['use_salt'] = False
        imdb._write_voc_results_file(all_boxes)
        return None
    print('Evaluating detections')
    result = imdb.evaluate_detections(all_boxes, output_dir)
    if result is None:
        return None
    if hasattr(result, 'stats'):
        return np.asarray(result.stats, dtype=np.float64)
    return float(np.mean(result))


def write_table(path: str, results: Dict[int, object], imdb_name: str) -> List[str]:
    lines = []
    if 'coco' in imdb_name:
        lines.append(COCO_HEADER)
        for it in sorted(results):
            lines.append('%d\t    %s' % (it, '\t'.join('%.2f' % (100 * v) for v in results[it])))
    else:
        lines.extend('%d\t%.4f' % (it, results[it]) for it in sorted(results))
    target = os.path.join(path, 'mAP.txt')
    tmp = target + '.tmp'
    with open(tmp, 'w') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.replace(tmp, target)
    return lines


def main(argv: Optional[Sequence[str]] = None) -> Dict[int, object]:
    args = parse_args(argv)
    if args.cfg_file:
        cfg_from_file(args.cfg_file)
    if args.set_cfgs:
        cfg_from_list(args.set_cfgs)
    if cfg.EXP_DIR == 'default':
        cfg.EXP_DIR = 'refinedet'
    try:
        mean = [float(v) for v in args.mean.split(',')]
    except ValueError:
        mean = []
    if len(mean) != 3:
        sys.exit('refinedet_test.py: --mean must be three numbers (B,G,R), got %r' % args.mean)
    setup_caffe_device(args.gpu_id)
    prototxt = args.prototxt or deploy_file(args.path, args.imdb)
    if not os.path.exists(prototxt):
        sys.exit('refinedet_test.py: {}: no such deploy prototxt'.format(prototxt))
    soft_nms_threshold = confidence_threshold(prototxt) if 'coco' in args.imdb else None
    caffemodels = args.caffemodels or models_in(args.path)
    imdb = get_imdb(args.imdb)
    imdb.competition_mode(args.comp_mode)
    results: Dict[int, object] = {}
    for caffemodel in caffemodels:
        print('Start evaluating: ' + caffemodel)
        net = caffe.Net(prototxt, caffemodel, caffe.TEST)
        net.name = os.path.splitext(os.path.basename(caffemodel))[0]
        result = score(net, imdb, mean, soft_nms_threshold)
        if result is not None:
            results[snapshot_iteration(caffemodel)] = result
    if results:
        print('#' * 100)
        table_dir = args.path if os.path.isdir(args.path) else os.path.dirname(caffemodels[0])
        for line in write_table(table_dir or '.', results, args.imdb):
            print(line)
        print('#' * 100)
    return results


if __name__ == '__main__':
    main()
