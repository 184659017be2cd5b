"""fast_rcnn.test (im_detect, test_net, apply_nms), rpn.generate and fast_rcnn.train
(SolverWrapper snapshots, train_net) on tiny nets with random weights."""
import os
import re

import cv2
import numpy as np
import pytest

import caffe
from fast_rcnn import test as frtest
from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes
from fast_rcnn.config import cfg
from fast_rcnn.train import SolverWrapper, train_net
from roi_data_layer import roidb as rdl_roidb
from roi_fixtures import BOXES_0, BOXES_1, NUM_CLASSES, ToyImdb, write_image
from rpn import generate
from tiny_nets import fast_rcnn_train_net, ip, rois_head_net, write_text as _write

K = NUM_CLASSES
pytestmark = pytest.mark.usefixtures('tiny_cfg')

POOL_NET = (
    "name: 'pool_head'\n"
    "input: 'data' input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n"
    "input: 'rois' input_shape { dim: 1 dim: 5 }\n"
    "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'\n"
    "  convolution_param { num_output: 4 kernel_size: 3 pad: 1\n"
    "                      weight_filler { type: 'gaussian' std: 0.01 } } }\n"
    "layer { name: 'pool' type: 'ROIPooling' bottom: 'conv' bottom: 'rois' top: 'pool'\n"
    "  roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 1.0 } }\n"
    + ip('cls_score', 'pool', K) + ip('bbox_pred', 'pool', 4 * K)
    + "layer { name: 'cls_prob' type: 'Softmax' bottom: 'cls_score' top: 'cls_prob' }\n")


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- im_detect ------------------------------------------------------------------------------

def _rois_head(tmp_path, bbox_std=0.05):
    net = caffe.Net(_write(tmp_path, 'rois_head.prototxt', rois_head_net()), caffe.TEST)
    rng = np.random.RandomState(0)
    net.params['cls_score'][0].data[...] = rng.randn(K, 5) * 0.05
    net.params['cls_score'][1].data[...] = rng.randn(K)
    net.params['bbox_pred'][0].data[...] = rng.randn(4 * K, 5) * bbox_std
    net.params['bbox_pred'][1].data[...] = rng.randn(4 * K) * 0.1
    return net


def _expected(net, boxes, scale, im_shape):
    rois = np.hstack((np.zeros((len(boxes), 1)), boxes * scale)).astype(np.float32)
    p = {k: [b.data.astype(np.float64) for b in net.params[k]] for k in ('cls_score', 'bbox_pred')}
    scores = _softmax(rois @ p['cls_score'][0].T + p['cls_score'][1])
    deltas = rois @ p['bbox_pred'][0].T + p['bbox_pred'][1]
    return scores, clip_boxes(bbox_transform_inv(boxes.astype(np.float64), deltas), im_shape)


def test_im_detect_scores_and_clipped_boxes(tmp_path):
    net = _rois_head(tmp_path)
    im = write_image(tmp_path / 'im.png', 40, 60, seed=3)          # scale 80 / 40 = 2
    boxes = np.array([[0, 0, 9, 9], [5, 5, 30, 20], [10, 2, 59, 39], [30, 20, 50, 35]], np.uint16)
    scores, pred = frtest.im_detect(net, im, boxes)
    assert scores.shape == (4, K) and pred.shape == (4, 4 * K)
    exp_scores, exp_pred = _expected(net, boxes.astype(np.float64), 2.0, im.shape)
    np.testing.assert_allclose(scores, exp_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred, exp_pred, rtol=1e-4, atol=1e-3)
    # the random deltas push boxes out of the image: everything is clipped back in
    assert pred[:, 0::2].min() >= 0 and pred[:, 0::2].max() <= 59
    assert pred[:, 1::2].min() >= 0 and pred[:, 1::2].max() <= 39
    assert (pred[:, 0::2] == 59).any() and (pred == 0).any()


def test_im_detect_without_bbox_reg_repeats_the_boxes(tmp_path):
    cfg.TEST.BBOX_REG = False
    net = _rois_head(tmp_path)
    im = write_image(tmp_path / 'im.png', 40, 60, seed=3)
    boxes = np.array([[0, 0, 9, 9], [5, 5, 30, 20]], np.float64)
    _, pred = frtest.im_detect(net, im, boxes)
    np.testing.assert_array_equal(pred, np.tile(boxes, (1, K)))


def test_dedup_boxes_runs_each_feature_box_once(tmp_path):
    net = _rois_head(tmp_path)
    im = write_image(tmp_path / 'im.png', 40, 60, seed=3)
    # boxes 0 and 2 are equal; 3 differs from 0 by one pixel, which is the same
    # cell once scaled by 2 and by DEDUP_BOXES = 1/16 (20 -> 1.25, 22 -> 1.375)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 20], [0, 0, 10, 10], [0, 0, 11, 10]], np.float64)
    scores, pred = frtest.im_detect(net, im, boxes)
    assert net.blobs['rois'].shape[0] == 2
    np.testing.assert_array_equal(scores[0], scores[2])
    np.testing.assert_array_equal(scores[0], scores[3])
    np.testing.assert_array_equal(pred[0], pred[3])
    cfg.DEDUP_BOXES = 0
    scores_all, pred_all = frtest.im_detect(net, im, boxes)
    assert net.blobs['rois'].shape[0] == 4
    np.testing.assert_allclose(scores_all[:3], scores[:3], rtol=1e-6)
    assert not np.allclose(scores_all[3], scores[3])


def test_project_im_rois_picks_the_pyramid_level_by_area():
    boxes = np.array([[0, 0, 99, 99], [0, 0, 299, 299]], np.float64)
    # 100^2 * 2^2 = 40000 is closest to 224^2 at scale 2; 300^2 at scale 1
    rois, levels = frtest._project_im_rois(boxes, np.array([1.0, 2.0]))
    assert levels.ravel().tolist() == [1, 0]
    np.testing.assert_array_equal(rois, [[0, 0, 198, 198], [0, 0, 299, 299]])
    blob = frtest._get_rois_blob(boxes, np.array([1.0, 2.0]))
    assert blob.dtype == np.float32 and blob[:, 0].tolist() == [1, 0]


def test_multi_scale_image_blob():
    cfg.TEST.SCALES = (40, 80)
    blob, scales = frtest._get_image_blob(np.zeros((40, 60, 3), np.uint8))
    assert blob.shape == (2, 3, 80, 120) and scales.tolist() == [1.0, 2.0]


_FIXED_ROIS_LAYER = '''
import numpy as np
import caffe

BOXES = np.array([[0, 0, 9, 9], [5, 5, 30, 20], [10, 2, 59, 39]], dtype=np.float64)


class FixedRois(caffe.Layer):
    """Stands in for the RPN: fixed boxes (original image coordinates), scaled by im_info."""

    def setup(self, bottom, top):
        top[0].reshape(1, 5)
        if len(top) > 1:
            top[1].reshape(1, 1)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        scale = bottom[0].data[0, 2]
        rois = np.hstack((np.zeros((len(BOXES), 1)), BOXES * scale))
        top[0].reshape(*rois.shape)
        top[0].data[...] = rois
        if len(top) > 1:
            top[1].reshape(len(BOXES), 1)
            top[1].data[...] = np.linspace(0.9, 0.1, len(BOXES))[:, None]
'''


def _rpn_net(tmp_path, monkeypatch, tops="top: 'rois'", head=True):
    (tmp_path / 'fixed_rois_layer.py').write_text(_FIXED_ROIS_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ("name: 'rpn_like'\n"
            "input: 'data' input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n"
            "input: 'im_info' input_shape { dim: 1 dim: 3 }\n"
            "layer { name: 'silence' type: 'Silence' bottom: 'data' }\n"
            "layer { name: 'proposal' type: 'Python' bottom: 'im_info' %s\n"
            "  python_param { module: 'fixed_rois_layer' layer: 'FixedRois' } }\n" % tops)
    if head:
        text += (ip('cls_score', 'rois', K) + ip('bbox_pred', 'rois', 4 * K)
                 + "layer { name: 'cls_prob' type: 'Softmax' bottom: 'cls_score' top: 'cls_prob' }\n")
    return caffe.Net(_write(tmp_path, 'rpn_like.prototxt', text), caffe.TEST)


def test_im_detect_with_rpn(tmp_path, monkeypatch):
    cfg.TEST.HAS_RPN = True
    net = _rpn_net(tmp_path, monkeypatch)
    im = write_image(tmp_path / 'im.png', 40, 60, seed=4)
    scores, pred = frtest.im_detect(net, im)
    boxes = np.array([[0, 0, 9, 9], [5, 5, 30, 20], [10, 2, 59, 39]], np.float64)
    exp_scores, exp_pred = _expected(net, boxes, 2.0, im.shape)
    np.testing.assert_allclose(net.blobs['im_info'].data, [[80, 120, 2]])
    np.testing.assert_allclose(scores, exp_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred, exp_pred, rtol=1e-4, atol=1e-3)


def test_rpn_generate_proposals(tmp_path, monkeypatch):
    net = _rpn_net(tmp_path, monkeypatch, tops="top: 'rois' top: 'scores'", head=False)
    db = ToyImdb(tmp_path)
    boxes = generate.imdb_proposals(net, db)
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], [[0, 0, 9, 9], [5, 5, 30, 20], [10, 2, 59, 39]],
                               atol=1e-5)
    b, s = generate.im_proposals(net, db.images[1])
    np.testing.assert_allclose(b, boxes[1], atol=1e-5)
    np.testing.assert_allclose(s.ravel(), [0.9, 0.5, 0.1], atol=1e-6)
    cfg.TEST.SCALES = (40, 80)
    with pytest.raises(ValueError, match='single scale'):
        generate.im_proposals(net, db.images[0])


# ---- test_net / apply_nms / vis -------------------------------------------------------------

def test_test_net_end_to_end(tmp_path, capsys):
    from utils.safe_pickle import load_arrays

    net = caffe.Net(_write(tmp_path, 'pool.prototxt', POOL_NET), caffe.TEST)
    specs = ((BOXES_0, (50, 80)), (BOXES_1, (60, 40)), (BOXES_1[:1], (30, 30)))
    db = ToyImdb(tmp_path, specs=specs)
    all_boxes = frtest.test_net(net, db, max_per_image=3, thresh=0.0)
    out = capsys.readouterr().out
    assert re.search(r'im_detect: 1/3 \d+\.\d{3}s \d+\.\d{3}s', out)
    assert re.search(r'im_detect: 2/3 ', out) and 'image 2' in out and 'no proposals' in out
    assert db.evaluated is not None and db.evaluated[0] is all_boxes
    output_dir = db.evaluated[1]
    assert output_dir.startswith(str(tmp_path / 'output' / 'default' / 'toy'))
    assert len(all_boxes) == K and all(len(c) == 3 for c in all_boxes)
    assert all_boxes[0] == [[], [], []]
    for i, (w, h) in enumerate([(80, 50), (40, 60)]):
        dets = [all_boxes[j][i] for j in range(1, K)]
        assert sum(len(d) for d in dets) == 3            # thresh 0: capped by max_per_image
        for d in dets:
            assert d.dtype == np.float32 and d.shape[1] == 5
            assert (d[:, 0:4:2] <= w - 1).all() and (d[:, 1:4:2] <= h - 1).all()
    assert all(all_boxes[j][2].shape == (0, 5) for j in range(1, K))
    saved = load_arrays(os.path.join(output_dir, 'detections.pkl'))
    for j in range(1, K):
        for i in range(3):
            np.testing.assert_array_equal(saved[j][i], all_boxes[j][i])


def test_apply_nms_keeps_the_best_of_overlapping_boxes():
    dets = np.array([[0, 0, 10, 10, .9], [1, 1, 10, 10, .8], [20, 20, 30, 30, .7]], np.float32)
    out = frtest.apply_nms([[[], []], [dets, []]], 0.3)
    assert out[0] == [[], []] and out[1][1] == []
    np.testing.assert_array_equal(out[1][0], dets[[0, 2]])


def test_vis_detections_renders_off_screen(tmp_path):
    im = np.zeros((40, 60, 3), np.uint8)
    dets = np.array([[5, 5, 30, 20, .9], [0, 0, 10, 10, .1]], np.float32)
    path = str(tmp_path / 'vis.png')
    fig = frtest.vis_detections(im, 'square', dets, save_path=path)
    assert len(fig.axes[0].patches) == 1 and cv2.imread(path) is not None


# ---- SolverWrapper / train_net ----------------------------------------------------------

SOLVER = ('train_net: "{net}"\nbase_lr: 0.00001\nlr_policy: "fixed"\nmomentum: 0.9\n'
          'weight_decay: 0.0005\ndisplay: 1\nsnapshot: 0\nsnapshot_prefix: "tiny_fast_rcnn"\n')


@pytest.fixture
def training(tmp_path):
    db = ToyImdb(tmp_path)
    rdl_roidb.prepare_roidb(db)
    net_path = _write(tmp_path, 'train.prototxt', fast_rcnn_train_net(std=0.0001))
    solver = _write(tmp_path, 'solver.prototxt', SOLVER.format(net=net_path))
    return db.roidb, net_path, solver, str(tmp_path / 'out')


def test_snapshot_unnormalises_bbox_pred_and_restores_it(training):
    roidb, net_path, solver, out_dir = training
    cfg.TRAIN.SNAPSHOT_INFIX = 'x'
    sw = SolverWrapper(solver, roidb, out_dir)
    net = sw.solver.net
    rng = np.random.RandomState(1)
    net.params['bbox_pred'][0].data[...] = rng.randn(4 * K, 5)
    net.params['bbox_pred'][1].data[...] = rng.randn(4 * K)
    w, b = (p.data.copy() for p in net.params['bbox_pred'])
    path = sw.snapshot()
    assert path == os.path.join(out_dir, 'tiny_fast_rcnn_x_iter_0.caffemodel')
    # the running net still has its normalised weights
    np.testing.assert_array_equal(net.params['bbox_pred'][0].data, w)
    np.testing.assert_array_equal(net.params['bbox_pred'][1].data, b)
    saved = caffe.Net(net_path, caffe.TEST, weights=path)
    means, stds = sw.bbox_means, sw.bbox_stds
    assert stds.shape == (4 * K,) and stds[4:].min() > 0 and not stds[:4].any()
    np.testing.assert_allclose(saved.params['bbox_pred'][0].data, w * stds[:, None], rtol=1e-6)
    np.testing.assert_allclose(saved.params['bbox_pred'][1].data, b * stds + means, rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_array_equal(saved.params['cls_score'][0].data, net.params['cls_score'][0].data)
    # a snapshot's raw deltas are the normalised ones mapped back: d = s * n + m
    x = rng.randn(5)
    normalised = w @ x + b
    raw = saved.params['bbox_pred'][0].data @ x + saved.params['bbox_pred'][1].data
    np.testing.assert_allclose(raw, normalised * stds + means, rtol=1e-5, atol=1e-6)


def test_train_net_snapshots_and_speed_log(training, capsys):
    roidb, _, solver, out_dir = training
    cfg.TRAIN.SNAPSHOT_ITERS = 4
    paths = train_net(solver, roidb, out_dir, max_iters=10)
    assert [os.path.basename(p) for p in paths] == [
        'tiny_fast_rcnn_iter_{}.caffemodel'.format(i) for i in (4, 8, 10)]
    assert all(os.path.isfile(p) for p in paths)
    out = capsys.readouterr().out
    assert 'Filtered 0 roidb entries: 2 -> 2' in out
    assert re.search(r'^speed: \d+\.\d{3}s / iter$', out, re.M)
    assert 'Wrote snapshot to: ' + paths[-1] in out


def test_rpn_training_requires_precomputed_normalisation(training):
    roidb, _, solver, out_dir = training
    cfg.TRAIN.HAS_RPN = True
    with pytest.raises(ValueError, match='BBOX_NORMALIZE_TARGETS_PRECOMPUTED'):
        SolverWrapper(solver, roidb, out_dir)


def test_rpn_training_uses_the_fixed_statistics(training, tmp_path):
    roidb, _, _, out_dir = training
    cfg.TRAIN.HAS_RPN = True
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = True
    text = ("name: 'tiny_rpn'\n"
            "layer { name: 'input-data' type: 'Python' top: 'data' top: 'im_info' top: 'gt_boxes'\n"
            "  python_param { module: 'roi_data_layer.layer' layer: 'RoIDataLayer'\n"
            "                 param_str: \"'num_classes': 3\" } }\n"
            "layer { name: 'silence' type: 'Silence' bottom: 'data' bottom: 'gt_boxes' }\n"
            + ip('bbox_pred', 'im_info', 4 * K))
    net_path = _write(tmp_path, 'rpn_train.prototxt', text)
    solver = _write(tmp_path, 'rpn_solver.prototxt', SOLVER.format(net=net_path))
    sw = SolverWrapper(solver, roidb, out_dir)
    assert 'bbox_targets' not in roidb[0]          # targets are made in the net
    np.testing.assert_array_equal(sw.bbox_stds, np.tile([.1, .1, .2, .2], K))
    w = sw.solver.net.params['bbox_pred'][0].data.copy()
    saved = caffe.Net(net_path, caffe.TEST, weights=sw.snapshot())
    np.testing.assert_allclose(saved.params['bbox_pred'][0].data, w * sw.bbox_stds[:, None],
                               rtol=1e-6)
