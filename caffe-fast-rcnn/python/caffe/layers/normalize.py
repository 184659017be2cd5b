"""Normalize: SSD's L2 normalisation with a learned scale (conv4_3_norm and friends).

SSD and RefineDet put it on early VGG feature maps, whose activations are much larger
than those of deeper layers, so that all heads see features of a similar magnitude.
Caffe's arithmetic (SSD's normalize_layer.cpp, CPU):

* the bottom is read through Caffe's legacy accessors: (num, channels, height, width),
  missing trailing axes count as 1 (2 to 4 axes);
* across_spatial (the default): one norm per item, sqrt(sum over C, H, W of x^2 + eps);
  otherwise one norm per item and pixel, sqrt(sum over C of x^2 + eps). `eps` (default
  1e-10) is added to the sum of squares, inside the square root, in both modes;
* top = x / norm * scale, scale one learned value (channel_shared, the default; the blob
  then has no axes, as Caffe's `Blob(vector<int>(0))`) or one per channel. The scale
  starts from `scale_filler`, or the constant 1 without one;
* backward: bottom_diff = scale * (dy - x * sum(x * dy) / norm^2) / norm, the sums over the
  same cells as the norm's; scale_diff += sum(x / norm * dy) over everything the scale
  covers (all of the blob, or every item and pixel of its channel).

SSD's bottom diff (CPU and GPU alike) is the exact gradient only while all channels share
one scale value: with per-channel scales that differ, the true gradient's dot product would
weigh each channel by its scale, sum(scale * x * dy), and Caffe's leaves the scale out and
multiplies afterwards. Every SSD/RefineDet model was trained with Caffe's formula, so it is
kept here. Caffe computes the scale's gradient as sum(top * dy) / scale, the same number
except when a scale is 0, where Caffe gets 0/0; here it is taken from x / norm directly.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .. import _log
from ..blob import Blob
from ..errors import NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from .. import fillers
from . import register


def _legacy_dims(shape, layer: str) -> Tuple[int, int, int]:
    """(num, channels, height * width) as Caffe's num()/channels()/height()/width() give."""
    if len(shape) < 2:
        raise ShapeError('layer %r (Normalize): Number of axes of bottom blob must be >=2 '
                         '(bottom shape %s).' % (layer, tuple(shape)))
    if len(shape) > 4:
        raise ShapeError('layer %r (Normalize): Cannot use legacy accessors on Blobs with > 4 '
                         'axes (bottom shape %s).' % (layer, tuple(shape)))
    dims = [int(d) for d in shape] + [1] * (4 - len(shape))
    return dims[0], dims[1], dims[2] * dims[3]


@register('Normalize')
class Normalize(Layer):
    """See the module docstring."""

    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.norm_param
        _, channels, _ = _legacy_dims(bottom[0].shape, lp.name)
        self.across_spatial = bool(p.across_spatial)
        self.channel_shared = bool(p.channel_shared)
        self.eps = float(p.eps)
        self.channels = channels
        want = 1 if self.channel_shared else channels
        if len(self.blobs):
            _log.info('normalize_layer.cpp:39', 'Skipping parameter initialization')
        else:
            blob = Blob(() if self.channel_shared else (channels,))
            filler = caffe_pb2.FillerParameter()
            if p.HasField('scale_filler'):
                filler.CopyFrom(p.scale_filler)
            else:
                filler.type = 'constant'
                filler.value = 1.0
            fillers.fill(blob.tensor, filler)
            self.blobs.append(blob)
        if len(self.blobs) != 1 or self.blobs[0].count != want:
            raise ShapeError('layer %r (Normalize): Scale size is inconsistent with prototxt '
                             'config: the scale blob holds %s values, %s needs %d'
                             % (lp.name, [b.count for b in self.blobs],
                                'channel_shared' if self.channel_shared
                                else '%d channels' % channels, want))
        self._saved = None

    def reshape(self, bottom, top):
        _, channels, _ = _legacy_dims(bottom[0].shape, self.layer_param.name)
        if not self.channel_shared and channels != self.channels:
            raise ShapeError('layer %r (Normalize): bottom has %d channels, the scale was set up '
                             'for %d' % (self.layer_param.name, channels, self.channels))
        top[0].reshape(*bottom[0].shape)

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        """The scale, shaped to broadcast over (num, channels, spatial)."""
        s = self.blobs[0].tensor.to(like.dtype)
        return s.reshape(1, 1, 1) if self.channel_shared else s.reshape(1, -1, 1)

    def _sum_dims(self) -> Tuple[int, ...]:
        return (1, 2) if self.across_spatial else (1,)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        n, c, s = _legacy_dims(x.shape, self.layer_param.name)
        x3 = x.reshape(n, c, s)
        norm = torch.sqrt((x3 * x3).sum(dim=self._sum_dims(), keepdim=True) + self.eps)
        y = x3 / norm * self._scale(x3)
        self._saved = (x3, norm)
        top[0].set_tensor(y.reshape(x.shape))

    def backward(self, top, propagate_down, bottom):
        if self._saved is None:
            raise NetError('layer %r (Normalize): backward before forward' % self.layer_param.name)
        x3, norm = self._saved
        dy = top[0].diff_tensor.reshape(x3.shape).to(x3.dtype)
        if self.param_propagate_down and self.param_propagate_down[0]:
            prod = x3 / norm * dy
            g = prod.sum() if self.channel_shared else prod.sum(dim=(0, 2))
            self.blobs[0].accumulate_diff(g.reshape(self.blobs[0].shape), take=True)
        if propagate_down[0]:
            dot = (x3 * dy).sum(dim=self._sum_dims(), keepdim=True)
            dx = (dy - x3 * (dot / (norm * norm))) / norm * self._scale(x3)
            bottom[0].set_diff_tensor(dx.reshape(bottom[0].shape))
