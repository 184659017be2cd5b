"""AnchorTargetLayer: which anchors the RPN should call object or background, and where
the objects are relative to them.

Bottoms: rpn_cls_score (only its H x W is used), gt_boxes (G, 5), im_info [[h, w, scale]],
data. Tops: rpn_labels (1, 1, A*H, W) with 1 object / 0 background / -1 ignored,
rpn_bbox_targets (1, 4A, H, W), rpn_bbox_inside_weights and rpn_bbox_outside_weights.

Rules (py-faster-rcnn's): anchors crossing the image border by more than
`allowed_border` are ignored; an anchor is background below TRAIN.RPN_NEGATIVE_OVERLAP
IoU with every object, object at or above TRAIN.RPN_POSITIVE_OVERLAP, and the best anchor
of every object is an object too (ties included); then at most
RPN_FG_FRACTION * RPN_BATCHSIZE objects and RPN_BATCHSIZE in all are kept at random.
Everything is array arithmetic over all anchors at once.
"""
from __future__ import annotations

import numpy as np
import numpy.random as npr

import caffe
from fast_rcnn.bbox_transform import bbox_transform
from fast_rcnn.config import cfg
from rpn._params import anchor_params
from rpn.generate_anchors import shifted_anchors
from utils.cython_bbox import bbox_overlaps


class AnchorTargetLayer(caffe.Layer):
    """See the module docstring."""

    def setup(self, bottom, top):
        self._feat_stride, self._anchors, params = anchor_params(self, ('allowed_border',))
        self._num_anchors = self._anchors.shape[0]
        self._allowed_border = params.get('allowed_border', 0)
        height, width = bottom[0].data.shape[-2:]
        a = self._num_anchors
        top[0].reshape(1, 1, a * height, width)
        top[1].reshape(1, a * 4, height, width)
        top[2].reshape(1, a * 4, height, width)
        top[3].reshape(1, a * 4, height, width)

    def forward(self, bottom, top):
        if bottom[0].data.shape[0] != 1:
            raise ValueError('AnchorTargetLayer: only single-image batches are supported, got %d'
                             % bottom[0].data.shape[0])
        height, width = bottom[0].data.shape[-2:]
        gt_boxes = np.asarray(bottom[1].data, dtype=np.float64).reshape(-1, 5)
        im_info = bottom[2].data[0, :]
        labels, targets, inside, outside = anchor_targets(
            self._anchors, height, width, self._feat_stride, gt_boxes, im_info,
            self._allowed_border)
        a = self._num_anchors

        def to_map(values, channels):
            # (H*W*A, c) cell-major -> (1, A*c, H, W)
            return values.reshape(1, height, width, a * channels).transpose(0, 3, 1, 2)

        label_map = labels.reshape(1, height, width, a).transpose(0, 3, 1, 2).reshape(1, 1, a * height, width)
        for blob, value in zip(top, (label_map, to_map(targets, 4), to_map(inside, 4), to_map(outside, 4))):
            blob.reshape(*value.shape)
            blob.data[...] = value

    def backward(self, top, propagate_down, bottom):
        """No gradients: the targets are constants."""

    def reshape(self, bottom, top):
        """Shapes are set in forward."""


def anchor_targets(base_anchors, height, width, feat_stride, gt_boxes, im_info,
                   allowed_border=0, rng=npr):
    """Labels (K*A,), targets, inside and outside weights (K*A, 4) for all anchors."""
    all_anchors = shifted_anchors(base_anchors, height, width, feat_stride)
    total = all_anchors.shape[0]
    inside_img = np.where((all_anchors[:, 0] >= -allowed_border) &
                          (all_anchors[:, 1] >= -allowed_border) &
                          (all_anchors[:, 2] < im_info[1] + allowed_border) &
                          (all_anchors[:, 3] < im_info[0] + allowed_border))[0]
    anchors = all_anchors[inside_img]
    n = len(inside_img)
    labels = np.full(n, -1, dtype=np.float32)
    targets = np.zeros((n, 4), dtype=np.float32)
    c = cfg.TRAIN
    if len(gt_boxes) and n:
        overlaps = bbox_overlaps(anchors, gt_boxes[:, :4])
        argmax = overlaps.argmax(axis=1)
        max_overlaps = overlaps[np.arange(n), argmax]
        gt_max = overlaps.max(axis=0)
        # Every object's best anchors (all ties), but only where the overlap is positive.
        best_of_gt = np.where((overlaps == gt_max[None, :]) & (gt_max[None, :] > 0))[0]
        if not c.RPN_CLOBBER_POSITIVES:
            labels[max_overlaps < c.RPN_NEGATIVE_OVERLAP] = 0
        labels[best_of_gt] = 1
        labels[max_overlaps >= c.RPN_POSITIVE_OVERLAP] = 1
        if c.RPN_CLOBBER_POSITIVES:
            labels[max_overlaps < c.RPN_NEGATIVE_OVERLAP] = 0
        targets = bbox_transform(anchors, gt_boxes[argmax, :4]).astype(np.float32)
    elif n:
        labels[:] = 0  # no objects: every anchor in the image is background
    num_fg = int(c.RPN_FG_FRACTION * c.RPN_BATCHSIZE)
    fg = np.where(labels == 1)[0]
    if len(fg) > num_fg:
        labels[rng.choice(fg, size=len(fg) - num_fg, replace=False)] = -1
    num_bg = c.RPN_BATCHSIZE - int(np.sum(labels == 1))
    bg = np.where(labels == 0)[0]
    if len(bg) > num_bg:
        labels[rng.choice(bg, size=len(bg) - num_bg, replace=False)] = -1
    inside_w = np.zeros((n, 4), dtype=np.float32)
    inside_w[labels == 1] = np.asarray(c.RPN_BBOX_INSIDE_WEIGHTS, dtype=np.float32)
    outside_w = np.zeros((n, 4), dtype=np.float32)
    if c.RPN_POSITIVE_WEIGHT < 0:
        examples = max(int(np.sum(labels >= 0)), 1)
        pos_w = neg_w = 1.0 / examples
    else:
        if not 0 < c.RPN_POSITIVE_WEIGHT < 1:
            raise ValueError('TRAIN.RPN_POSITIVE_WEIGHT must be in (0, 1) or negative, got %r'
                             % c.RPN_POSITIVE_WEIGHT)
        pos_w = c.RPN_POSITIVE_WEIGHT / max(int(np.sum(labels == 1)), 1)
        neg_w = (1.0 - c.RPN_POSITIVE_WEIGHT) / max(int(np.sum(labels == 0)), 1)
    outside_w[labels == 1] = pos_w
    outside_w[labels == 0] = neg_w
    return (_unmap(labels, total, inside_img, -1), _unmap(targets, total, inside_img, 0),
            _unmap(inside_w, total, inside_img, 0), _unmap(outside_w, total, inside_img, 0))


def _unmap(data, count, inds, fill):
    """Scatter rows of `data` (for anchors `inds`) into an array for all `count` anchors."""
    out = np.full((count,) + data.shape[1:], fill, dtype=np.float32)
    out[inds] = data
    return out
