"""Per-iteration cost of py-faster-rcnn's Python layers at VGG16 sizes, next to the net.

    python benchmarks/bench_python_layers.py [--repeat 10] [--skip-net]

Inputs are shaped like one VGG16 training iteration on a 600x1000 image: a 38x63 conv5_3
map with 9 anchors (21546 anchors), a few ground-truth boxes, TRAIN's 12000 -> 2000
proposals, 128 sampled RoIs, and for OHEM the readonly scores of all 2000 RoIs. Each layer
runs through caffe.Net as in the prototxts. The last lines compare the layers' total with
the median forward+backward time of ../shared/bench/vgg16_fast_rcnn_train.prototxt
through the engine (target: Python layers under 10% of it).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'lib'), os.path.join(ROOT, 'caffe-fast-rcnn', 'python')]
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from fast_rcnn.config import cfg  # noqa: E402

H, W, A, SCALE = 38, 63, 9, 1.6
IM_H, IM_W = 600, 1000

NET = """
input: "rpn_cls_score" input_shape { dim: 1 dim: 18 dim: %(h)d dim: %(w)d }
input: "rpn_cls_prob_reshape" input_shape { dim: 1 dim: 18 dim: %(h)d dim: %(w)d }
input: "rpn_bbox_pred" input_shape { dim: 1 dim: 36 dim: %(h)d dim: %(w)d }
input: "gt_boxes" input_shape { dim: 4 dim: 5 }
input: "im_info" input_shape { dim: 1 dim: 3 }
input: "data" input_shape { dim: 1 dim: 3 dim: %(H)d dim: %(W)d }
layer { name: "rpn-data" type: "Python" bottom: "rpn_cls_score" bottom: "gt_boxes" bottom: "im_info" bottom: "data"
  top: "rpn_labels" top: "rpn_bbox_targets" top: "rpn_bbox_inside_weights" top: "rpn_bbox_outside_weights"
  python_param { module: "rpn.anchor_target_layer" layer: "AnchorTargetLayer" param_str: "'feat_stride': 16" } }
layer { name: "proposal" type: "Python" bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred" bottom: "im_info"
  top: "rpn_rois" python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
layer { name: "roi-data" type: "Python" bottom: "rpn_rois" bottom: "gt_boxes"
  top: "rois" top: "labels" top: "bbox_targets" top: "bbox_inside_weights" top: "bbox_outside_weights"
  python_param { module: "rpn.proposal_target_layer" layer: "ProposalTargetLayer" param_str: "'num_classes': 21" } }
"""

OHEM_NET = """
input: "cls_prob_readonly" input_shape { dim: 2000 dim: 21 }
input: "bbox_pred_readonly" input_shape { dim: 2000 dim: 84 }
input: "rois" input_shape { dim: 2000 dim: 5 }
input: "labels" input_shape { dim: 2000 }
input: "bbox_targets" input_shape { dim: 2000 dim: 84 }
input: "bbox_inside_weights" input_shape { dim: 2000 dim: 84 }
input: "bbox_outside_weights" input_shape { dim: 2000 dim: 84 }
layer { name: "hard_roi_mining" type: "Python"
  bottom: "cls_prob_readonly" bottom: "bbox_pred_readonly" bottom: "rois" bottom: "labels"
  bottom: "bbox_targets" bottom: "bbox_inside_weights" bottom: "bbox_outside_weights"
  top: "rois_hard" top: "labels_hard" top: "bbox_targets_hard" top: "bbox_inside_weights_hard" top: "bbox_outside_weights_hard"
  python_param { module: "roi_data_layer.layer" layer: "OHEMDataLayer" } }
"""


def _net(text):
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt', delete=False) as f:
        f.write(text)
    try:
        return caffe.Net(f.name, caffe.TRAIN)
    finally:
        os.unlink(f.name)


def _median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def _layer_timer(net, name):
    i = list(net._layer_names).index(name)
    return lambda: net._forward(i, i)


def rpn_layers(repeat):
    rng = np.random.RandomState(0)
    net = _net(NET % dict(h=H, w=W, H=IM_H, W=IM_W))
    net.blobs['rpn_cls_score'].data[...] = rng.randn(1, 18, H, W)
    prob = rng.rand(1, 18, H, W)
    net.blobs['rpn_cls_prob_reshape'].data[...] = prob
    net.blobs['rpn_bbox_pred'].data[...] = rng.randn(1, 36, H, W) * 0.2
    net.blobs['gt_boxes'].data[...] = [[100, 120, 380, 460, 3], [500, 80, 760, 300, 7],
                                       [620, 300, 980, 590, 12], [30, 400, 200, 560, 15]]
    net.blobs['im_info'].data[...] = [[IM_H, IM_W, SCALE]]
    net.forward()
    out = {}
    for layer in ('rpn-data', 'proposal', 'roi-data'):
        out[layer] = _median_ms(_layer_timer(net, layer), repeat)
    out['(proposals kept)'] = net.blobs['rpn_rois'].data.shape[0]
    return out


def ohem_layer(repeat):
    rng = np.random.RandomState(1)
    net = _net(OHEM_NET)
    n, k = 2000, 21
    labels = np.where(rng.rand(n) < 0.25, rng.randint(1, k, n), 0)
    w = np.zeros((n, 4 * k), np.float32)
    fg = np.where(labels > 0)[0]
    w[fg[:, None], 4 * labels[fg][:, None] + np.arange(4)] = 1
    x1, y1 = rng.uniform(0, 700, n), rng.uniform(0, 400, n)
    net.blobs['cls_prob_readonly'].data[...] = rng.dirichlet(np.ones(k), n)
    net.blobs['bbox_pred_readonly'].data[...] = rng.randn(n, 4 * k)
    net.blobs['rois'].data[...] = np.stack([np.zeros(n), x1, y1, x1 + 200, y1 + 150], 1)
    net.blobs['labels'].data[...] = labels
    net.blobs['bbox_targets'].data[...] = rng.randn(n, 4 * k) * w
    net.blobs['bbox_inside_weights'].data[...] = w
    net.blobs['bbox_outside_weights'].data[...] = w
    cfg.TRAIN.OHEM_USE_NMS = True
    return {'hard_roi_mining (OHEM, NMS)': _median_ms(lambda: net.forward(), repeat)}


def data_layer(repeat):
    """RoIDataLayer's minibatch for one 500x375 JPEG scaled to 600 (VOC-sized image)."""
    import cv2
    from roi_data_layer.minibatch import get_minibatch
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, 'im.jpg')
    cv2.imwrite(path, (np.random.RandomState(2).rand(375, 500, 3) * 255).astype(np.uint8))
    boxes = np.array([[10, 20, 200, 300], [250, 40, 480, 360]], dtype=np.uint16)
    roidb = [{'image': path, 'width': 500, 'height': 375, 'boxes': boxes,
              'gt_classes': np.array([3, 7], dtype=np.int32), 'flipped': False,
              'max_classes': np.array([3, 7]), 'max_overlaps': np.ones(2, dtype=np.float32)}]
    cfg.TRAIN.HAS_RPN = True
    cfg.TRAIN.IMS_PER_BATCH = 1
    return {'input-data (RoIDataLayer minibatch)': _median_ms(lambda: get_minibatch(roidb, 21), repeat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeat', type=int, default=10)
    ap.add_argument('--skip-net', action='store_true', help='do not time the VGG16 net')
    ap.add_argument('--bench-dir', default=os.path.join(ROOT, '..', 'shared', 'bench'))
    args = ap.parse_args()
    caffe.set_mode_cpu()
    np.random.seed(0)
    rows = {}
    rows.update(data_layer(args.repeat))
    rows.update(rpn_layers(args.repeat))
    rows.update(ohem_layer(args.repeat))
    total = 0.0
    print('%-40s %10s' % ('Python layer (VGG16 sizes)', 'ms/iter'))
    for name, ms in rows.items():
        if name.startswith('('):
            print('%-40s %10d' % (name, ms))
            continue
        total += ms
        print('%-40s %10.1f' % (name, ms))
    print('%-40s %10.1f' % ('all Python layers', total))
    proto = os.path.join(args.bench_dir, 'vgg16_fast_rcnn_train.prototxt')
    if args.skip_net or not os.path.exists(proto):
        return
    net = caffe.Net(proto, caffe.TRAIN)
    rng = np.random.RandomState(0)
    for name in net.inputs:
        net.blobs[name].data[...] = 0
    net.blobs['data'].data[...] = rng.randn(*net.blobs['data'].shape) * 50
    r = net.blobs['rois'].shape[0]
    x1 = rng.uniform(0, 300, r)
    net.blobs['rois'].data[...] = np.stack([np.zeros(r), x1, x1 * 0.5, x1 + 100, x1 * 0.5 + 80], 1)

    def step():
        net.forward()
        net.backward()
    ms = _median_ms(step, max(2, args.repeat // 3))
    print('%-40s %10.1f' % ('VGG16 Fast R-CNN forward+backward', ms))
    print('Python layers / net = %.1f%%  (target < 10%%)' % (100 * total / ms))


if __name__ == '__main__':
    main()
