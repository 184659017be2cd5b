"""ProposalTargetLayer: label the RPN's proposals and sample the RoIs the head trains on.

Bottoms: rpn_rois (R, 5) and gt_boxes (G, 5 with the class in column 4). Tops: rois,
labels, bbox_targets (R', 4K), bbox_inside_weights, bbox_outside_weights.

The ground-truth boxes join the proposals; each RoI takes the class of the object it
overlaps most. Foreground RoIs (IoU >= TRAIN.FG_THRESH) are sampled up to
FG_FRACTION * BATCH_SIZE, background ones (IoU in [BG_THRESH_LO, BG_THRESH_HI)) fill
the batch. With TRAIN.USE_OHEM (or BATCH_SIZE -1) nothing is sampled: every proposal
goes through, labelled, with BG_THRESH_LO taken as 0, so that the readonly RoI branch
can score them all and OHEMDataLayer can pick the hardest.
"""
from __future__ import annotations

import numpy as np
import numpy.random as npr

import caffe
from fast_rcnn.bbox_transform import bbox_transform
from fast_rcnn.config import cfg
from rpn._params import layer_label, layer_params
from utils.cython_bbox import bbox_overlaps


class ProposalTargetLayer(caffe.Layer):
    """See the module docstring."""

    def setup(self, bottom, top):
        params = layer_params(self, ('num_classes',))
        k = params.get('num_classes')
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError("%s: param_str needs 'num_classes', a positive integer (e.g. "
                             "\"'num_classes': 21\"), got %r" % (layer_label(self), k))
        self._num_classes = k
        top[0].reshape(1, 5)
        top[1].reshape(1, 1)
        for t in top[2:5]:
            t.reshape(1, self._num_classes * 4)

    @property
    def num_classes(self) -> int:
        """The class count of the param_str (background included)."""
        return self._num_classes

    def forward(self, bottom, top):
        all_rois = np.asarray(bottom[0].data, dtype=np.float64).reshape(-1, 5)
        gt_boxes = np.asarray(bottom[1].data, dtype=np.float64).reshape(-1, 5)
        # The ground truth boxes are candidates too.
        gt_rois = np.hstack((np.zeros((gt_boxes.shape[0], 1)), gt_boxes[:, :4]))
        all_rois = np.vstack((all_rois, gt_rois))
        if np.any(all_rois[:, 0] != 0):
            raise ValueError('ProposalTargetLayer: only single-image batches are supported')
        labels, rois, targets, inside = sample_rois(all_rois, gt_boxes, self._num_classes)
        outside = (inside > 0).astype(np.float32)
        blobs = (rois.astype(np.float32), labels.astype(np.float32), targets, inside, outside)
        for blob, value in zip(top, blobs):
            blob.reshape(*value.shape)
            blob.data[...] = value

    def backward(self, top, propagate_down, bottom):
        """No gradients: targets are constants."""

    def reshape(self, bottom, top):
        """Shapes are set in forward."""


def sample_rois(all_rois, gt_boxes, num_classes, rng=npr):
    """(labels, rois, bbox_targets, bbox_inside_weights) of the sampled RoIs."""
    c = cfg.TRAIN
    keep_all = bool(c.USE_OHEM) or c.BATCH_SIZE == -1
    if len(gt_boxes):
        overlaps = bbox_overlaps(all_rois[:, 1:5], gt_boxes[:, :4])
        assignment = overlaps.argmax(axis=1)
        max_overlaps = overlaps.max(axis=1)
        labels = gt_boxes[assignment, 4]
    else:
        assignment = np.zeros(len(all_rois), dtype=np.int64)
        max_overlaps = np.zeros(len(all_rois))
        labels = np.zeros(len(all_rois))
    bg_lo = 0.0 if keep_all else c.BG_THRESH_LO
    fg_inds = np.where(max_overlaps >= c.FG_THRESH)[0]
    bg_inds = np.where((max_overlaps < c.BG_THRESH_HI) & (max_overlaps >= bg_lo))[0]
    if not keep_all:
        rois_per_image = c.BATCH_SIZE  # one image per batch
        fg_per_image = int(np.round(c.FG_FRACTION * rois_per_image))
        n_fg = min(fg_per_image, fg_inds.size)
        if fg_inds.size:
            fg_inds = rng.choice(fg_inds, size=n_fg, replace=False)
        n_bg = min(rois_per_image - n_fg, bg_inds.size)
        if bg_inds.size:
            bg_inds = rng.choice(bg_inds, size=n_bg, replace=False)
    keep = np.concatenate([fg_inds, bg_inds]).astype(np.int64)
    labels = labels[keep].copy()
    labels[len(fg_inds):] = 0
    rois = all_rois[keep]
    targets = np.zeros((len(keep), 4), dtype=np.float64)
    if len(gt_boxes) and len(keep):
        targets = bbox_transform(rois[:, 1:5], gt_boxes[assignment[keep], :4])
        if c.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
            targets = ((targets - np.asarray(c.BBOX_NORMALIZE_MEANS))
                       / np.asarray(c.BBOX_NORMALIZE_STDS))
    bbox_targets, inside = expand_bbox_targets(labels, targets, num_classes)
    return labels, rois, bbox_targets, inside


def expand_bbox_targets(labels, targets, num_classes):
    """Spread (R, 4) targets into the (R, 4K) layout: only the RoI's own class is non-zero."""
    n = len(labels)
    bbox_targets = np.zeros((n, 4 * num_classes), dtype=np.float32)
    inside = np.zeros((n, 4 * num_classes), dtype=np.float32)
    fg = np.where(labels > 0)[0]
    if fg.size:
        cls = labels[fg].astype(np.int64)
        cols = 4 * cls[:, None] + np.arange(4)[None, :]
        bbox_targets[fg[:, None], cols] = targets[fg]
        inside[fg[:, None], cols] = np.asarray(cfg.TRAIN.BBOX_INSIDE_WEIGHTS, dtype=np.float32)
    return bbox_targets, inside
