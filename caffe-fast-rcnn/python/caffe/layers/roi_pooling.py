"""ROIPooling (caffe-fast-rcnn): max pooling of each RoI into a fixed pooled_h x pooled_w grid.

Bottoms: features (N, C, H, W) and rois (R, 5) = (batch_index, x1, y1, x2, y2) in image
coordinates; top: (R, C, pooled_h, pooled_w). Caffe's rules: each coordinate is scaled by
spatial_scale and rounded half away from zero; the RoI spans max(end - start + 1, 1) cells;
bin (ph, pw) covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) shifted by the RoI start
and clipped to the map; an empty bin gives 0; the first maximum wins.

The pooling runs on torchvision's roi_pool kernels, which follow the same rules. So that
the rounding is Caffe's on every platform (Caffe multiplies in the blob's float type and
rounds half away from zero), the layer scales and rounds the coordinates itself and hands
torchvision integer boxes with spatial_scale 1.

Backward sends each pooled unit's diff to the input cell its maximum came from (the
stored argmax), as Caffe does, with one Caffe quirk kept: a RoI whose rounded end lies
before its start (pooled as a single cell) gets no gradient, because Caffe's backward
only visits cells inside [start, end]. The rois get no gradient.
"""
from __future__ import annotations

import torch

from .. import _log
from ..errors import NetError, ShapeError
from ..layer import Layer
from . import register


def _torchvision_ops():
    """torch.ops.torchvision, registered by importing torchvision on first use: the import
    costs about two seconds of start-up, which processes without RoI pooling (the tools,
    data-parallel ranks of other nets) should not pay."""
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    return torch.ops.torchvision


def caffe_round(v: torch.Tensor) -> torch.Tensor:
    """Round half away from zero (C's round), in v's float type."""
    r = torch.round(v)  # half to even: differs from C only on exact .5 ties
    trunc = torch.trunc(v)
    tie = (v - trunc).abs() == 0.5
    return torch.where(tie, trunc + torch.sign(v), r)


def scaled_rois(rois: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """(R, 5) rois with x1, y1, x2, y2 scaled to the feature map and rounded as Caffe does."""
    out = rois.clone()
    scale = torch.tensor(spatial_scale, dtype=rois.dtype, device=rois.device)
    out[:, 1:] = caffe_round(rois[:, 1:] * scale)
    return out


@register('ROIPooling')
class ROIPooling(Layer):
    """See the module docstring."""
    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.roi_pooling_param
        name = self.layer_param.name
        if p.pooled_h <= 0:
            raise NetError('layer %r: pooled_h must be > 0' % name)
        if p.pooled_w <= 0:
            raise NetError('layer %r: pooled_w must be > 0' % name)
        self.pooled_h = int(p.pooled_h)
        self.pooled_w = int(p.pooled_w)
        self.spatial_scale = float(p.spatial_scale)
        if not self.spatial_scale > 0:   # 0 would map every RoI onto the feature map's corner
            raise NetError('layer %r: spatial_scale must be positive (1 / the feature stride, '
                           'e.g. 0.0625), got %g' % (name, self.spatial_scale))
        _log.info('roi_pooling_layer.cpp:35', 'Spatial scale: %g' % self.spatial_scale)
        self._saved = None

    def reshape(self, bottom, top):
        name = self.layer_param.name
        fshape, rshape = bottom[0].shape, bottom[1].shape
        if len(fshape) != 4:
            raise ShapeError('layer %r: ROIPooling needs (N, C, H, W) features, got shape %s'
                             % (name, fshape))
        per_roi = 1
        for d in rshape[1:]:
            per_roi *= d
        if len(rshape) == 0 or len(rshape) > 4 or per_roi != 5:
            raise ShapeError('layer %r: ROI layer C x W x H must be == 5 (rois are (R, 5) = '
                             '(batch_index, x1, y1, x2, y2)); got shape %s' % (name, rshape))
        top[0].reshape(rshape[0], fshape[1], self.pooled_h, self.pooled_w)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        rois = bottom[1].tensor.reshape(-1, 5)
        if rois.shape[0]:
            batch = torch.trunc(rois[:, 0])
            lo, hi = float(batch.min()), float(batch.max())
            if lo < 0 or hi >= x.shape[0]:
                raise ShapeError('layer %r: RoI batch index %d out of range [0, %d)'
                                 % (self.layer_param.name, int(lo if lo < 0 else hi), x.shape[0]))
        boxes = scaled_rois(rois, self.spatial_scale)
        out, argmax = _torchvision_ops().roi_pool(x.contiguous(), boxes, 1.0,
                                                     self.pooled_h, self.pooled_w)
        self._saved = (boxes, argmax, tuple(x.shape))
        top[0].set_tensor(out)

    def backward(self, top, propagate_down, bottom):
        # propagate_down[1] (rois): Caffe computes nothing for them and leaves their diff.
        if not propagate_down[0]:
            return
        if self._saved is None:
            raise NetError('layer %r: backward before forward' % self.layer_param.name)
        boxes, argmax, (n, c, h, w) = self._saved
        grad = top[0].diff_tensor
        malformed = (boxes[:, 3] < boxes[:, 1]) | (boxes[:, 4] < boxes[:, 2])
        if bool(malformed.any()):
            grad = grad * (~malformed).to(grad.dtype)[:, None, None, None]
        dx = _torchvision_ops()._roi_pool_backward(
            grad.contiguous(), boxes, argmax, 1.0, self.pooled_h, self.pooled_w, n, c, h, w)
        bottom[0].set_diff_tensor(dx)
