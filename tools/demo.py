#!/usr/bin/env python3
"""Detect objects in images with a trained Faster R-CNN and save pictures of the detections
(py-faster-rcnn's tools/demo.py, writing PNGs instead of opening windows).

    ./tools/demo.py --net vgg16                       # the original: data/demo/*.jpg, VOC classes
    ./tools/demo.py --cpu --def models/toy/ToyNet/faster_rcnn_end2end/test.prototxt \
        --caffemodel output/.../toynet_faster_rcnn_iter_3000.caffemodel --imdb toy_2007_test \
        --images data/toy/VOCdevkit2007/VOC2007/JPEGImages/000401.jpg --out output/demo
"""
import _init_paths  # noqa: F401
import argparse
import os
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import caffe  # noqa: E402
from caffe.image_file import read_image  # noqa: E402
from fast_rcnn.config import cfg  # noqa: E402
from fast_rcnn.net_classes import check_net_classes  # noqa: E402
from fast_rcnn.nms_wrapper import nms  # noqa: E402
from fast_rcnn.test import im_detect  # noqa: E402
from utils.device import setup_caffe_device  # noqa: E402
from utils.timer import Timer  # noqa: E402

from _tool_args import (add_cfg_arg, add_device_args, add_precision_arg, add_set_arg,  # noqa: E402
                        apply_precision, load_cfg)

CLASSES = ('__background__', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
           'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
           'sheep', 'sofa', 'train', 'tvmonitor')

NETS = {'vgg16': ('VGG16', 'VGG16_faster_rcnn_final.caffemodel'),
        'zf': ('ZF', 'ZF_faster_rcnn_final.caffemodel')}


def draw_detections(im, detections, out_path, title=''):
    """Save `im` (BGR) with boxes and labels of [(class_name, x1, y1, x2, y2, score)]."""
    fig, ax = plt.subplots(figsize=(max(4, im.shape[1] / 80.0), max(3, im.shape[0] / 80.0)))
    ax.imshow(im[:, :, (2, 1, 0)], aspect='equal')
    colours = plt.get_cmap('tab10')
    names = sorted({d[0] for d in detections})
    for name, x1, y1, x2, y2, score in detections:
        c = colours(names.index(name) % 10)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=2))
        ax.text(x1, y1 - 2, '{:s} {:.2f}'.format(name, score), fontsize=8, color='white',
                bbox=dict(facecolor=c, alpha=0.7, pad=1, edgecolor='none'))
    ax.set_title(title or '{} detections'.format(len(detections)), fontsize=10)
    ax.axis('off')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)


def detect(net, im, classes, conf_thresh=0.8, nms_thresh=0.3):
    """[(class, x1, y1, x2, y2, score)] above `conf_thresh` after per-class NMS."""
    scores, boxes = im_detect(net, im)
    out = []
    for cls_ind, name in enumerate(classes[1:], start=1):
        cls_boxes = boxes[:, 4 * cls_ind:4 * (cls_ind + 1)]
        cls_scores = scores[:, cls_ind]
        dets = np.hstack((cls_boxes, cls_scores[:, np.newaxis])).astype(np.float32)
        dets = dets[nms(dets, nms_thresh), :]
        for d in dets[dets[:, -1] >= conf_thresh]:
            out.append((name, float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4])))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Faster R-CNN demo')
    add_device_args(parser, cpu_dest='cpu_mode', cpu_help='use CPU mode')
    parser.add_argument('--net', dest='demo_net', help='network to use [vgg16]', choices=NETS.keys(),
                        default='vgg16')
    parser.add_argument('--def', dest='prototxt', default=None, help='test prototxt (overrides --net)')
    parser.add_argument('--caffemodel', default=None, help='weights (overrides --net)')
    parser.add_argument('--imdb', default=None, help='take class names from this data set')
    parser.add_argument('--images', nargs='*', default=None, help='image files [data/demo/*.jpg]')
    parser.add_argument('--out', default=os.path.join(cfg.ROOT_DIR, 'output', 'demo'),
                        help='folder for the pictures')
    parser.add_argument('--conf', type=float, default=0.8, help='score threshold')
    parser.add_argument('--nms', type=float, default=0.3, help='NMS threshold')
    add_cfg_arg(parser)
    add_precision_arg(parser)
    add_set_arg(parser, set_help=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg.TEST.HAS_RPN = True  # Use RPN for proposals
    load_cfg(args, skip_empty=True)
    prototxt = args.prototxt or os.path.join(cfg.MODELS_DIR, NETS[args.demo_net][0],
                                             'faster_rcnn_alt_opt', 'faster_rcnn_test.pt')
    caffemodel = args.caffemodel or os.path.join(cfg.DATA_DIR, 'faster_rcnn_models',
                                                 NETS[args.demo_net][1])
    if not os.path.isfile(caffemodel):
        sys.exit('{:s} not found.\nDid you run ./data/scripts/fetch_faster_rcnn_models.sh '
                 '(or train one and pass --caffemodel)?'.format(caffemodel))
    classes = CLASSES
    if args.imdb:
        from datasets.factory import get_imdb
        classes = tuple(get_imdb(args.imdb).classes)
    setup_caffe_device(args.gpu_id, args.cpu_mode)
    apply_precision(args)
    net = caffe.Net(prototxt, caffemodel, caffe.TEST)
    print('\n\nLoaded network {:s}'.format(caffemodel))
    check_net_classes(net, len(classes), 'imdb {}'.format(args.imdb) if args.imdb
                      else "the demo's {} VOC classes (pass --imdb for others)".format(len(classes)),
                      classes, net_name=caffemodel, bbox_reg=bool(cfg.TEST.BBOX_REG))
    images = args.images
    if images is None:
        demo_dir = os.path.join(cfg.DATA_DIR, 'demo')
        images = [os.path.join(demo_dir, n) for n in sorted(os.listdir(demo_dir))
                  if n.lower().endswith(('.jpg', '.png'))] if os.path.isdir(demo_dir) else []
    written = []
    for path in images:
        try:
            im = read_image(path)
        except OSError as e:
            sys.exit(str(e))
        timer = Timer()
        timer.tic()
        dets = detect(net, im, classes, args.conf, args.nms)
        timer.toc()
        print('Detection took {:.3f}s for {}: {:d} objects'.format(timer.total_time, path, len(dets)))
        out_path = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + '_detections.png')
        draw_detections(im, dets, out_path, os.path.basename(path))
        print('Wrote {}'.format(out_path))
        written.append(out_path)
    return written


if __name__ == '__main__':
    main()
