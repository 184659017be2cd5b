"""Online hard example mining (Shrivastava et al., 2016): pick the RoIs the head gets wrong.

The readonly copy of the RoI head scores every RoI of the image; OHEMDataLayer turns
those scores into a loss per RoI, the same loss the trainable head minimises:

    loss_i = -log(max(p_i[label_i], eps))
             + [label_i > 0] * sum_j w_out_ij * smoothL1(w_in_ij * (pred_ij - target_ij))

(smooth L1 with sigma 1, eps the float64 machine epsilon as in the OHEM code), and hands
the TRAIN.BATCH_SIZE RoIs with the highest loss to the trainable head. With
TRAIN.OHEM_USE_NMS the RoIs first go through NMS per image and per label, scored by their
loss, at TRAIN.OHEM_NMS_THRESH, so that the batch is not many copies of one hard region.
Everything is array arithmetic plus one batched NMS call: no loop over RoIs.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torchvision

import caffe
from fast_rcnn.config import cfg

_EPS = np.finfo(np.float64).eps
TOPS = ('rois_hard', 'labels_hard', 'bbox_targets_hard', 'bbox_inside_weights_hard',
        'bbox_outside_weights_hard')


def roi_losses(cls_prob: np.ndarray, labels: np.ndarray, bbox_pred: Optional[np.ndarray] = None,
               bbox_targets: Optional[np.ndarray] = None, inside: Optional[np.ndarray] = None,
               outside: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-RoI classification (+ box regression, when given) loss, float64 (R,)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    prob = np.asarray(cls_prob, dtype=np.float64).reshape(len(labels), -1)
    if labels.size and (labels.min() < 0 or labels.max() >= prob.shape[1]):
        raise ValueError('OHEMDataLayer: labels must lie in [0, %d), got %d..%d'
                         % (prob.shape[1], labels.min(), labels.max()))
    loss = -np.log(np.maximum(prob[np.arange(len(labels)), labels], _EPS))
    if bbox_pred is not None:
        fg = np.where(labels > 0)[0]  # only foreground RoIs have a regression loss
        w_in = np.asarray(inside)[fg]
        d = w_in * (np.asarray(bbox_pred).reshape(len(labels), -1)[fg] - np.asarray(bbox_targets)[fg])
        ad = np.abs(d)
        sl1 = np.where(ad < 1.0, 0.5 * d * d, ad - 0.5)
        loss[fg] += np.sum(np.asarray(outside)[fg] * sl1 * (w_in != 0), axis=1, dtype=np.float64)
    return loss


def nms_by_loss(rois: np.ndarray, labels: np.ndarray, loss: np.ndarray, thresh: float,
                max_keep: Optional[int] = None) -> np.ndarray:
    """Indices kept by NMS run separately per (image, label), RoIs scored by loss, in
    decreasing loss order; with `max_keep`, only the first `max_keep` of them.

    Greedy NMS decides a box from the boxes scored above it only, so NMS over the M
    highest-loss RoIs keeps exactly the boxes full NMS would keep among them. When only
    the hardest `max_keep` survivors are wanted, this runs NMS on a prefix of the loss
    order and doubles it until enough boxes survive: the same answer as full NMS at a
    fraction of its quadratic cost. Groups are separated by offsetting their boxes
    (one NMS call), and IoU uses py-faster-rcnn's +1 pixel convention.
    """
    n = len(loss)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(loss), kind='stable')
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    boxes = np.asarray(rois[:, 1:5], dtype=np.float64).copy()
    boxes[:, 2:] += 1
    groups = rois[:, 0].astype(np.int64) * (int(labels.max()) + 1) + labels
    span = float(boxes.max() - min(boxes.min(), 0)) + 1
    boxes += (groups * span)[:, None]
    m = n if max_keep is None else min(n, max(4 * int(max_keep), 256))
    while True:
        cand = order[:m]
        keep = torchvision.ops.nms(torch.from_numpy(boxes[cand]),
                                   torch.from_numpy(np.asarray(loss, dtype=np.float64)[cand]),
                                   float(thresh)).numpy()
        kept = cand[np.sort(keep)]  # back to decreasing-loss order
        if max_keep is None or len(kept) >= max_keep or m == n:
            return kept if max_keep is None else kept[:max_keep]
        m = min(n, 2 * m)


def select_hard_examples(loss: np.ndarray, batch_size: int) -> np.ndarray:
    """Indices of the `batch_size` largest losses, largest first (ties: lower index first)."""
    order = np.argsort(-np.asarray(loss), kind='stable')
    return order[:min(len(order), int(batch_size))]


def ohem_minibatch(loss, rois, labels, bbox_targets=None, inside=None, outside=None) -> Dict[str, np.ndarray]:
    """The hard RoIs' blobs, keyed by OHEMDataLayer's top names."""
    if cfg.TRAIN.OHEM_USE_NMS:
        hard = nms_by_loss(rois, labels, loss, cfg.TRAIN.OHEM_NMS_THRESH, cfg.TRAIN.BATCH_SIZE)
    else:
        hard = select_hard_examples(loss, cfg.TRAIN.BATCH_SIZE)
    blobs = {'rois_hard': rois[hard], 'labels_hard': np.asarray(labels).reshape(-1)[hard]}
    if bbox_targets is not None:
        blobs['bbox_targets_hard'] = bbox_targets[hard]
        blobs['bbox_inside_weights_hard'] = inside[hard]
        blobs['bbox_outside_weights_hard'] = outside[hard]
    return blobs


class OHEMDataLayer(caffe.Layer):
    """Selects the hardest RoIs; bottoms and tops as in the OHEM prototxts.

    Bottoms: cls_prob_readonly, bbox_pred_readonly, rois, labels, and with TRAIN.BBOX_REG
    bbox_targets, bbox_inside_weights, bbox_outside_weights. Tops: rois_hard, labels_hard,
    and with TRAIN.BBOX_REG the three *_hard regression blobs. No gradient flows back.
    """

    def setup(self, bottom, top):
        self._reg = bool(cfg.TRAIN.BBOX_REG)
        need = 7 if self._reg else 4
        if len(bottom) < need:
            raise ValueError('OHEMDataLayer needs %d bottoms with TRAIN.BBOX_REG=%s, got %d'
                             % (need, self._reg, len(bottom)))
        self._name_to_top_map = {name: i for i, name in enumerate(TOPS[:len(top)])}
        top[0].reshape(1, 5)
        top[1].reshape(1)
        for i in range(2, len(top)):
            top[i].reshape(1, bottom[4 + i - 2].data.shape[1] if len(bottom) > 4 else 4)

    def forward(self, bottom, top):
        rois = bottom[2].data
        labels = bottom[3].data
        if self._reg:
            targets, inside, outside = bottom[4].data, bottom[5].data, bottom[6].data
            loss = roi_losses(bottom[0].data, labels, bottom[1].data, targets, inside, outside)
        else:
            targets = inside = outside = None
            loss = roi_losses(bottom[0].data, labels)
        blobs = ohem_minibatch(loss, rois, labels, targets, inside, outside)
        for name, value in blobs.items():
            i = self._name_to_top_map.get(name)
            if i is None:
                continue
            top[i].reshape(*value.shape)
            top[i].data[...] = value

    def backward(self, top, propagate_down, bottom):
        """No gradient: the selection is not differentiable and the branch is readonly."""

    def reshape(self, bottom, top):
        """Shapes are set in forward."""
