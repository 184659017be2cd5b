"""RPN layers through caffe.Net, as the prototxts use them, on hand-checkable inputs."""
import os

import numpy as np
import pytest

import caffe
from fast_rcnn.bbox_transform import bbox_transform
from fast_rcnn.config import cfg
from rpn.generate_anchors import generate_anchors, shifted_anchors
from utils.cython_bbox import bbox_overlaps


def _net(tmp_path, text, phase=caffe.TRAIN):
    path = os.path.join(str(tmp_path), 'net.prototxt')
    with open(path, 'w') as f:
        f.write(text)
    return caffe.Net(path, phase)


def test_generate_anchors_are_the_nine_of_py_faster_rcnn():
    a = generate_anchors()
    assert a.shape == (9, 4)
    np.testing.assert_array_equal(a[0], [-84, -40, 99, 55])
    np.testing.assert_array_equal(a[4], [-120, -120, 135, 135])
    np.testing.assert_array_equal(a[8], [-168, -344, 183, 359])


def test_shifted_anchors_order_is_cell_major():
    base = generate_anchors()
    all_a = shifted_anchors(base, 2, 3, 16)
    assert all_a.shape == (2 * 3 * 9, 4)
    # cell (y=1, x=2) is cell index 5; anchor 4 of it
    np.testing.assert_array_equal(all_a[5 * 9 + 4], base[4] + [32, 16, 32, 16])


ANCHOR_NET = """
input: "rpn_cls_score" input_shape { dim: 1 dim: 18 dim: %(h)d dim: %(w)d }
input: "gt_boxes" input_shape { dim: %(g)d dim: 5 }
input: "im_info" input_shape { dim: 1 dim: 3 }
input: "data" input_shape { dim: 1 dim: 3 dim: %(H)d dim: %(W)d }
layer { name: "rpn-data" type: "Python"
  bottom: "rpn_cls_score" bottom: "gt_boxes" bottom: "im_info" bottom: "data"
  top: "rpn_labels" top: "rpn_bbox_targets" top: "rpn_bbox_inside_weights" top: "rpn_bbox_outside_weights"
  python_param { module: "rpn.anchor_target_layer" layer: "AnchorTargetLayer" param_str: "'feat_stride': 16" } }
"""


def test_anchor_target_layer_labels_and_targets(tmp_path):
    h, w, H, W = 12, 16, 192, 256
    gt = np.array([[40, 30, 140, 120, 1], [150, 100, 230, 180, 2]], dtype=np.float32)
    net = _net(tmp_path, ANCHOR_NET % dict(h=h, w=w, g=2, H=H, W=W))
    net.blobs['gt_boxes'].data[...] = gt
    net.blobs['im_info'].data[...] = [[H, W, 1.0]]
    np.random.seed(0)
    net.forward()
    A = 9
    labels = net.blobs['rpn_labels'].data
    assert labels.shape == (1, 1, A * h, w)
    targets = net.blobs['rpn_bbox_targets'].data
    assert targets.shape == (1, 4 * A, h, w)
    # Back to (cell, anchor) order.
    lab = labels.reshape(1, A, h, w).transpose(0, 2, 3, 1).ravel()
    tgt = targets.transpose(0, 2, 3, 1).reshape(-1, 4)
    inside = net.blobs['rpn_bbox_inside_weights'].data.transpose(0, 2, 3, 1).reshape(-1, 4)
    outside = net.blobs['rpn_bbox_outside_weights'].data.transpose(0, 2, 3, 1).reshape(-1, 4)
    anchors = shifted_anchors(generate_anchors(), h, w, 16)
    inside_img = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < W) & (anchors[:, 3] < H)
    assert np.all(lab[~inside_img] == -1)
    ov = bbox_overlaps(anchors, gt[:, :4])
    ov[~inside_img] = -1
    # The best anchor of each object is positive.
    for g in range(2):
        assert lab[ov[:, g].argmax()] == 1
    pos = lab == 1
    assert pos.sum() <= cfg.TRAIN.RPN_BATCHSIZE * cfg.TRAIN.RPN_FG_FRACTION
    assert (lab >= 0).sum() <= cfg.TRAIN.RPN_BATCHSIZE
    assert np.all(ov[lab == 0].max(axis=1) < cfg.TRAIN.RPN_NEGATIVE_OVERLAP)
    expected = bbox_transform(anchors[pos], gt[ov[pos].argmax(axis=1), :4])
    np.testing.assert_allclose(tgt[pos], expected, rtol=1e-5, atol=1e-5)
    assert np.all(inside[pos] == 1) and np.all(inside[~pos] == 0)
    n = (lab >= 0).sum()
    np.testing.assert_allclose(outside[lab >= 0], 1.0 / n, rtol=1e-6)
    assert np.all(outside[lab < 0] == 0)


PROPOSAL_NET = """
input: "rpn_cls_prob_reshape" input_shape { dim: 1 dim: 18 dim: 4 dim: 5 }
input: "rpn_bbox_pred" input_shape { dim: 1 dim: 36 dim: 4 dim: 5 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "proposal" type: "Python"
  bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred" bottom: "im_info"
  top: "rois" top: "scores"
  python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
"""


def test_proposal_layer_with_zero_deltas_returns_clipped_anchors_by_score(tmp_path):
    net = _net(tmp_path, PROPOSAL_NET, caffe.TEST)
    rng = np.random.RandomState(3)
    probs = rng.rand(1, 18, 4, 5).astype(np.float32)
    net.blobs['rpn_cls_prob_reshape'].data[...] = probs
    net.blobs['rpn_bbox_pred'].data[...] = 0
    net.blobs['im_info'].data[...] = [[64, 80, 1.0]]
    net.forward()
    rois = net.blobs['rois'].data
    scores = net.blobs['scores'].data.ravel()
    assert rois.shape[1] == 5 and np.all(rois[:, 0] == 0)
    assert np.all(np.diff(scores) <= 0)
    assert rois.shape[0] <= cfg.TEST.RPN_POST_NMS_TOP_N
    assert np.all(rois[:, 1] >= 0) and np.all(rois[:, 3] <= 79) and np.all(rois[:, 4] <= 63)
    # The top proposal is the best-scoring anchor, clipped.
    fg = probs[:, 9:].transpose(0, 2, 3, 1).ravel()
    anchors = shifted_anchors(generate_anchors(), 4, 5, 16)
    best = anchors[fg.argmax()]
    clipped = [max(best[0], 0), max(best[1], 0), min(best[2], 79), min(best[3], 63)]
    np.testing.assert_allclose(rois[0, 1:], clipped)
    # No two kept proposals overlap more than the NMS threshold.
    ov = bbox_overlaps(rois[:, 1:], rois[:, 1:])
    np.fill_diagonal(ov, 0)
    assert ov.max() <= cfg.TEST.RPN_NMS_THRESH + 1e-6


TARGET_NET = """
input: "rpn_rois" input_shape { dim: %(r)d dim: 5 }
input: "gt_boxes" input_shape { dim: 2 dim: 5 }
layer { name: "roi-data" type: "Python" bottom: "rpn_rois" bottom: "gt_boxes"
  top: "rois" top: "labels" top: "bbox_targets" top: "bbox_inside_weights" top: "bbox_outside_weights"
  python_param { module: "rpn.proposal_target_layer" layer: "ProposalTargetLayer" param_str: "'num_classes': 3" } }
"""


def _random_rois(rng, n, size=200):
    x1 = rng.uniform(0, size * 0.7, n)
    y1 = rng.uniform(0, size * 0.7, n)
    return np.stack([np.zeros(n), x1, y1, x1 + rng.uniform(5, size * 0.3, n),
                     y1 + rng.uniform(5, size * 0.3, n)], 1)


@pytest.mark.parametrize('ohem', [False, True])
def test_proposal_target_layer_sampling(tmp_path, ohem, monkeypatch):
    monkeypatch.setitem(cfg.TRAIN, 'USE_OHEM', ohem)
    monkeypatch.setitem(cfg.TRAIN, 'BATCH_SIZE', 32)
    rng = np.random.RandomState(0)
    rois = _random_rois(rng, 300)
    gt = np.array([[20, 20, 80, 90, 1], [100, 110, 170, 160, 2]], dtype=np.float32)
    net = _net(tmp_path, TARGET_NET % dict(r=300))
    net.blobs['rpn_rois'].data[...] = rois
    net.blobs['gt_boxes'].data[...] = gt
    np.random.seed(1)
    net.forward()
    out_rois = net.blobs['rois'].data
    labels = net.blobs['labels'].data
    targets = net.blobs['bbox_targets'].data
    inside = net.blobs['bbox_inside_weights'].data
    outside = net.blobs['bbox_outside_weights'].data
    all_rois = np.vstack([rois, np.hstack([np.zeros((2, 1)), gt[:, :4]])])
    ov = bbox_overlaps(all_rois[:, 1:], gt[:, :4]).max(axis=1)
    fg_total = int((ov >= cfg.TRAIN.FG_THRESH).sum())
    lo = 0.0 if ohem else cfg.TRAIN.BG_THRESH_LO
    bg_total = int(((ov < cfg.TRAIN.BG_THRESH_HI) & (ov >= lo)).sum())
    n_fg = int((labels > 0).sum())
    if ohem:
        assert len(labels) == fg_total + bg_total
        assert n_fg == fg_total
    else:
        assert len(labels) == min(32, min(8, fg_total) + bg_total)
        assert n_fg == min(8, fg_total)
    # Each fg RoI's targets sit in its class's 4 columns, and match bbox_transform.
    ov_rois = bbox_overlaps(out_rois[:, 1:], gt[:, :4])
    for i in np.where(labels > 0)[0]:
        c = int(labels[i])
        assert c == int(gt[ov_rois[i].argmax(), 4])
        expect = bbox_transform(out_rois[i:i + 1, 1:], gt[ov_rois[i].argmax():ov_rois[i].argmax() + 1, :4])
        if cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
            expect = (expect - np.array(cfg.TRAIN.BBOX_NORMALIZE_MEANS)) / np.array(cfg.TRAIN.BBOX_NORMALIZE_STDS)
        np.testing.assert_allclose(targets[i, 4 * c:4 * c + 4], expect[0], rtol=1e-4, atol=1e-5)
        assert inside[i].sum() == 4 and np.all(inside[i, 4 * c:4 * c + 4] == 1)
    assert np.all(targets[labels == 0] == 0)
    np.testing.assert_array_equal(outside, (inside > 0).astype(np.float32))
