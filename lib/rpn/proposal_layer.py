"""ProposalLayer: turn the RPN's scores and box deltas into object proposals.

Bottoms: rpn_cls_prob_reshape (1, 2A, H, W) whose second A channels are object
probabilities, rpn_bbox_pred (1, 4A, H, W), im_info [[h, w, scale]]. Tops: rois (R, 5)
as (0, x1, y1, x2, y2), and optionally their scores (R, 1).

Every anchor is moved by its deltas and clipped to the image; boxes smaller than
RPN_MIN_SIZE * scale on a side are dropped; the RPN_PRE_NMS_TOP_N best go through NMS at
RPN_NMS_THRESH and the RPN_POST_NMS_TOP_N best survivors are the proposals. The settings
come from cfg.TRAIN or cfg.TEST by the layer's phase, as in py-faster-rcnn.
"""
from __future__ import annotations

import numpy as np

import caffe
from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes
from fast_rcnn.config import cfg
from fast_rcnn.nms_wrapper import nms
from rpn._params import anchor_params
from rpn.generate_anchors import shifted_anchors


class ProposalLayer(caffe.Layer):
    """See the module docstring."""

    def setup(self, bottom, top):
        self._feat_stride, self._anchors, params = anchor_params(self)
        self._num_anchors = self._anchors.shape[0]
        top[0].reshape(1, 5)
        if len(top) > 1:
            top[1].reshape(1, 1)

    def forward(self, bottom, top):
        if bottom[0].data.shape[0] != 1:
            raise ValueError('ProposalLayer: only single-image batches are supported')
        settings = cfg[str(self.phase)]
        rois, scores = proposals(
            bottom[0].data[:, self._num_anchors:, :, :], bottom[1].data, bottom[2].data[0, :],
            self._anchors, self._feat_stride, settings.RPN_PRE_NMS_TOP_N,
            settings.RPN_POST_NMS_TOP_N, settings.RPN_NMS_THRESH, settings.RPN_MIN_SIZE)
        blob = np.hstack((np.zeros((rois.shape[0], 1), dtype=np.float32), rois.astype(np.float32)))
        top[0].reshape(*blob.shape)
        top[0].data[...] = blob
        if len(top) > 1:
            top[1].reshape(*scores.shape)
            top[1].data[...] = scores

    def backward(self, top, propagate_down, bottom):
        """No gradients through proposals."""

    def reshape(self, bottom, top):
        """Shapes are set in forward."""


def proposals(fg_scores, deltas, im_info, anchors, feat_stride, pre_nms_top_n, post_nms_top_n,
              nms_thresh, min_size):
    """(R, 4) proposals and (R, 1) scores from (1, A, H, W) scores and (1, 4A, H, W) deltas."""
    height, width = fg_scores.shape[-2:]
    all_anchors = shifted_anchors(anchors, height, width, feat_stride)
    deltas = deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
    scores = fg_scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
    boxes = clip_boxes(bbox_transform_inv(all_anchors, deltas), im_info[:2])
    keep = _filter_boxes(boxes, min_size * im_info[2])
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores.ravel(), kind='stable')
    if pre_nms_top_n > 0:
        order = order[:pre_nms_top_n]
    boxes, scores = boxes[order], scores[order]
    # Only the first post_nms_top_n survivors are used: NMS stops there.
    keep = nms(np.hstack((boxes, scores)).astype(np.float32), nms_thresh,
               max_keep=post_nms_top_n if post_nms_top_n > 0 else None)
    return boxes[keep], scores[keep]


def _filter_boxes(boxes, min_size):
    """Indices of boxes at least `min_size` wide and high (+1 convention)."""
    ws = boxes[:, 2] - boxes[:, 0] + 1
    hs = boxes[:, 3] - boxes[:, 1] + 1
    return np.where((ws >= min_size) & (hs >= min_size))[0]
