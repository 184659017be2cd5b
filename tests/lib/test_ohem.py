"""OHEM's selection against a plain per-RoI reference of the rule, and through caffe.Net."""
import os

import numpy as np
import pytest

import caffe
from fast_rcnn.config import cfg
from roi_data_layer import ohem


def _reference_losses(prob, labels, pred, targets, w_in, w_out):
    out = []
    for i, l in enumerate(labels.astype(int)):
        loss = -np.log(max(prob[i, l], np.finfo(float).eps))
        if l > 0:
            for j in range(w_in.shape[1]):
                if w_in[i, j] != 0:
                    x = w_in[i, j] * (pred[i, j] - targets[i, j])
                    loss += w_out[i, j] * (0.5 * x * x if abs(x) < 1 else abs(x) - 0.5)
        out.append(loss)
    return np.array(out)


def _reference_nms(dets, thresh):
    """Greedy NMS with the +1 pixel convention, best score first."""
    x1, y1, x2, y2, s = dets.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = list(np.argsort(-s, kind='stable'))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            w = min(x2[i], x2[j]) - max(x1[i], x1[j]) + 1
            h = min(y2[i], y2[j]) - max(y1[i], y1[j]) + 1
            inter = max(w, 0) * max(h, 0)
            if inter / (area[i] + area[j] - inter) <= thresh:
                rest.append(j)
        order = rest
    return keep


def _inputs(rng, n=300, k=4, images=1):
    prob = rng.dirichlet(np.ones(k), size=n)
    labels = rng.randint(0, k, n).astype(np.float32)
    x1, y1 = rng.uniform(0, 150, n), rng.uniform(0, 150, n)
    rois = np.stack([rng.randint(0, images, n), x1, y1, x1 + rng.uniform(8, 60, n),
                     y1 + rng.uniform(8, 60, n)], 1).astype(np.float32)
    w_in = np.zeros((n, 4 * k), np.float32)
    for i, l in enumerate(labels.astype(int)):
        if l:
            w_in[i, 4 * l:4 * l + 4] = 1
    pred = rng.randn(n, 4 * k).astype(np.float32)
    targets = (rng.randn(n, 4 * k) * w_in).astype(np.float32)
    return prob, labels, pred, targets, w_in, w_in * 0.5, rois


def test_losses_equal_the_rule():
    rng = np.random.RandomState(0)
    prob, labels, pred, targets, w_in, w_out, rois = _inputs(rng)
    prob[0, int(labels[0])] = 0.0  # the eps clamp
    got = ohem.roi_losses(prob, labels, pred, targets, w_in, w_out)
    np.testing.assert_allclose(got, _reference_losses(prob, labels, pred, targets, w_in, w_out), rtol=1e-6)


@pytest.mark.parametrize('use_nms', [False, True])
@pytest.mark.parametrize('images', [1, 2])
def test_selection_equals_the_rule(monkeypatch, use_nms, images):
    monkeypatch.setitem(cfg.TRAIN, 'OHEM_USE_NMS', use_nms)
    monkeypatch.setitem(cfg.TRAIN, 'BATCH_SIZE', 64)
    rng = np.random.RandomState(images + 10 * use_nms)
    prob, labels, pred, targets, w_in, w_out, rois = _inputs(rng, images=images)
    loss = ohem.roi_losses(prob, labels, pred, targets, w_in, w_out)
    blobs = ohem.ohem_minibatch(loss, rois, labels, targets, w_in, w_out)
    candidates = np.arange(len(loss))
    if use_nms:
        kept = []
        for img in np.unique(rois[:, 0]):
            for lab in np.unique(labels):
                sel = np.where((labels == lab) & (rois[:, 0] == img))[0]
                if len(sel):
                    dets = np.hstack([rois[sel, 1:], loss[sel, None]]).astype(np.float32)
                    kept.extend(sel[_reference_nms(dets.astype(np.float64), cfg.TRAIN.OHEM_NMS_THRESH)])
        candidates = np.array(sorted(kept))
    expect = candidates[np.argsort(-loss[candidates], kind='stable')][:64]
    got_rows = {tuple(r) for r in blobs['rois_hard']}
    assert len(blobs['rois_hard']) == len(expect) == 64
    assert got_rows == {tuple(r) for r in rois[expect]}
    # Blobs stay row-aligned.
    for name, src in (('labels_hard', labels), ('bbox_targets_hard', targets),
                      ('bbox_inside_weights_hard', w_in), ('bbox_outside_weights_hard', w_out)):
        index = {tuple(r): i for i, r in enumerate(rois)}
        rows = [index[tuple(r)] for r in blobs['rois_hard']]
        np.testing.assert_array_equal(blobs[name], src[rows])
    # Hardest first.
    sel_loss = loss[[{tuple(r): i for i, r in enumerate(rois)}[tuple(r)] for r in blobs['rois_hard']]]
    assert np.all(np.diff(sel_loss) <= 0)


NET = """
input: "cls_prob_readonly" input_shape { dim: 300 dim: 4 }
input: "bbox_pred_readonly" input_shape { dim: 300 dim: 16 }
input: "rois" input_shape { dim: 300 dim: 5 }
input: "labels" input_shape { dim: 300 }
input: "bbox_targets" input_shape { dim: 300 dim: 16 }
input: "bbox_inside_weights" input_shape { dim: 300 dim: 16 }
input: "bbox_outside_weights" input_shape { dim: 300 dim: 16 }
layer { name: "hard_roi_mining" type: "Python"
  bottom: "cls_prob_readonly" bottom: "bbox_pred_readonly" bottom: "rois" bottom: "labels"
  bottom: "bbox_targets" bottom: "bbox_inside_weights" bottom: "bbox_outside_weights"
  top: "rois_hard" top: "labels_hard" top: "bbox_targets_hard" top: "bbox_inside_weights_hard"
  top: "bbox_outside_weights_hard"
  propagate_down: false propagate_down: false propagate_down: false propagate_down: false
  propagate_down: false propagate_down: false propagate_down: false
  python_param { module: "roi_data_layer.ohem" layer: "OHEMDataLayer" } }
"""


def test_layer_in_a_net(tmp_path, monkeypatch):
    monkeypatch.setitem(cfg.TRAIN, 'BATCH_SIZE', 32)
    monkeypatch.setitem(cfg.TRAIN, 'OHEM_USE_NMS', False)
    path = os.path.join(str(tmp_path), 'net.prototxt')
    with open(path, 'w') as f:
        f.write(NET)
    net = caffe.Net(path, caffe.TRAIN)
    rng = np.random.RandomState(5)
    prob, labels, pred, targets, w_in, w_out, rois = _inputs(rng)
    for name, v in (('cls_prob_readonly', prob), ('bbox_pred_readonly', pred), ('rois', rois),
                    ('labels', labels), ('bbox_targets', targets), ('bbox_inside_weights', w_in),
                    ('bbox_outside_weights', w_out)):
        net.blobs[name].data[...] = v
    net.forward()
    assert net.blobs['rois_hard'].data.shape == (32, 5)
    assert net.blobs['bbox_targets_hard'].data.shape == (32, 16)
    loss = _reference_losses(prob, labels, pred, targets, w_in, w_out)
    expect = np.argsort(-loss, kind='stable')[:32]
    np.testing.assert_array_equal(net.blobs['rois_hard'].data, rois[expect])
    np.testing.assert_array_equal(net.blobs['labels_hard'].data, labels[expect])


def test_prefix_nms_equals_full_nms_on_crowded_boxes():
    rng = np.random.RandomState(7)
    n = 3000
    x1, y1 = rng.uniform(0, 40, n), rng.uniform(0, 40, n)  # heavily overlapping
    rois = np.stack([np.zeros(n), x1, y1, x1 + rng.uniform(30, 60, n), y1 + rng.uniform(30, 60, n)], 1)
    labels = rng.randint(0, 3, n)
    loss = rng.rand(n)
    full = ohem.nms_by_loss(rois, labels, loss, 0.7)
    assert np.all(np.diff(loss[full]) <= 0)
    for k in (10, 100, 1000):
        np.testing.assert_array_equal(ohem.nms_by_loss(rois, labels, loss, 0.7, max_keep=k), full[:k])
