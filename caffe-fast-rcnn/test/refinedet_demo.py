#!/usr/bin/env python3
"""Draw a RefineDet model's detections on pictures (RefineDet's test/refinedet_demo.py on
Python 3, with flags for what the original had as constants).

Run from the Caffe root (caffe-fast-rcnn/):

    python test/refinedet_demo.py --save_fig          # the original: examples/images/*.jpg
    python test/refinedet_demo.py --gpu_id -1 --save_fig --labelmap data/toy/labelmap_toy.prototxt \\
        --def models/ToyNet/toy/refinedet_toynet_160x160/deploy.prototxt \\
        --net models/ToyNet/toy/refinedet_toynet_160x160/<model>.caffemodel \\
        --out ../output/demo/refinedet ../data/toy/VOCdevkit2007/VOC2007/JPEGImages/000401.jpg

Each picture shows the detections scoring at least --threshold, with their class names
from the label map. With --save_fig it is saved as <image>_dets.jpg (in --out when given,
else beside the image); a window opens only when a display is available.
"""
import _init_paths  # noqa: F401
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import matplotlib
if not os.environ.get('DISPLAY'):
    matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import caffe  # noqa: E402
from caffe import protoio  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from refinedet_detect import DEFAULT_MEAN, detect, input_size, read_image  # noqa: E402
from utils.device import setup_caffe_device  # noqa: E402

DEFAULT_IMAGES = ['000456.jpg', '000542.jpg', '001150.jpg', '001763.jpg', '004545.jpg']


def label_names(labelmap_file: str) -> Dict[int, str]:
    """label -> display name (the name when there is none) of a LabelMap prototxt."""
    labelmap = protoio.read_text(labelmap_file, caffe_pb2.LabelMap)
    return {item.label: item.display_name or item.name for item in labelmap.item}


def show_results(img: np.ndarray, image_file: str, results: np.ndarray, names: Dict[int, str],
                 threshold: float = 0.6, save_fig: bool = False,
                 out_dir: Optional[str] = None) -> Optional[str]:
    """Draw detections (x1, y1, x2, y2, score, label) of `img` (BGR) scoring at least
    `threshold`; save the figure as <image>_dets.jpg when asked. Returns the saved path."""
    fig = plt.figure(figsize=(max(4, img.shape[1] / 80.0), max(3, img.shape[0] / 80.0)))
    plt.imshow(img[:, :, ::-1])
    plt.axis('off')
    ax = plt.gca()
    num_classes = max(1, len(names) - 1)
    colors = plt.cm.hsv(np.linspace(0, 1, num_classes + 1)).tolist()
    for x1, y1, x2, y2, score, label in results[results[:, 4] >= threshold]:
        label = int(label)
        if label not in names:
            raise KeyError('label {} is not in the label map (labels {})'
                           .format(label, sorted(names)))
        color = colors[label % num_classes]
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                   linewidth=3))
        ax.text(x1, y1, '%s: %.2f' % (names[label], score),
                bbox={'facecolor': color, 'alpha': 0.5})
    saved = None
    if save_fig:
        base = os.path.splitext(os.path.basename(image_file))[0] + '_dets.jpg'
        folder = out_dir or os.path.dirname(image_file)
        os.makedirs(folder or '.', exist_ok=True)
        saved = os.path.join(folder, base)
        plt.savefig(saved, bbox_inches='tight')
        print('Saved: ' + saved)
    if matplotlib.get_backend().lower() != 'agg':
        plt.show()
    plt.close(fig)
    return saved


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Draw RefineDet detections on pictures.')
    p.add_argument('--gpu_id', type=int, default=0, help='GPU id [0]; -1 for the CPU')
    p.add_argument('--save_fig', action='store_true', help='save <image>_dets.jpg')
    p.add_argument('--labelmap', default='data/VOC0712/labelmap_voc.prototxt')
    p.add_argument('--def', dest='prototxt',
                   default='models/VGGNet/VOC0712/refinedet_vgg16_320x320/deploy.prototxt')
    p.add_argument('--net', dest='caffemodel',
                   default='models/VGGNet/VOC0712/refinedet_vgg16_320x320/'
                           'VOC0712_refinedet_vgg16_320x320_final.caffemodel')
    p.add_argument('--threshold', type=float, default=0.6, help='lowest score drawn [0.6]')
    p.add_argument('--mean', default=','.join('%g' % m for m in DEFAULT_MEAN),
                   help='the BGR mean pixel subtracted [104,117,123]')
    p.add_argument('--out', default=None, help='folder for the saved pictures [beside each image]')
    p.add_argument('images', nargs='*',
                   help='pictures [examples/images/{%s}]' % ','.join(DEFAULT_IMAGES))
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = parse_args(argv)
    setup_caffe_device(args.gpu_id)
    mean = [float(v) for v in args.mean.split(',')]
    if len(mean) != 3:
        sys.exit('refinedet_demo.py: --mean must be three numbers (B,G,R), got %r' % args.mean)
    for path, what in ((args.labelmap, 'label map'), (args.prototxt, 'deploy prototxt'),
                       (args.caffemodel, 'model')):
        if not os.path.exists(path):
            sys.exit('refinedet_demo.py: {}: no such {}'.format(path, what))
    names = label_names(args.labelmap)
    net = caffe.Net(args.prototxt, args.caffemodel, caffe.TEST)
    size = input_size(net)
    images = args.images or [os.path.join('examples', 'images', n) for n in DEFAULT_IMAGES]
    saved = []
    for image_file in images:
        image = read_image(image_file)
        result = detect(net, image, size, mean)
        path = show_results(image, image_file, result, names, args.threshold, args.save_fig,
                            args.out)
        if path:
            saved.append(path)
    return saved


if __name__ == '__main__':
    main()
