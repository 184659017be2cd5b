"""PriorBox (SSD): the default boxes of one feature map, in normalised image coordinates.

Bottoms: the feature map (its height and width) and the image (its size, unless img_size
or img_h/img_w give it). Top (1, 2, H * W * num_priors * 4): channel 0 the boxes
[xmin, ymin, xmax, ymax], channel 1 their variances.

At each cell (h, w), centred at ((w + offset) * step_w, (h + offset) * step_h), and for
each min_size s (Caffe truncates sizes to integers): a square of side s; if max sizes are
given, a square of side sqrt(s * max_size); then, for every aspect ratio r other than 1,
a box s * sqrt(r) wide and s / sqrt(r) high. The ratios are 1, then each given ratio not already present
(within 1e-6), followed by its inverse when `flip`. The step defaults to image size /
feature size. The values only depend on shapes, so they are computed once per shape.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np
import torch

from ..errors import LayerError
from ..layer import Layer
from . import register


def prior_aspect_ratios(ratios, flip: bool) -> List[float]:
    """Caffe's list of aspect ratios: 1, then new ratios (each followed by 1/r if flip)."""
    out = [1.0]
    for r in ratios:
        r = float(np.float32(r))
        if any(abs(r - a) < 1e-6 for a in out):
            continue
        out.append(r)
        if flip:
            out.append(float(np.float32(1.0 / r)))
    return out


@register('PriorBox')
class PriorBox(Layer):
    """See the module docstring."""

    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1

    def _fail(self, msg: str) -> LayerError:
        return LayerError('layer %r (PriorBox): %s' % (self.layer_param.name, msg))

    def setup(self, bottom, top):
        pp = self.layer_param.prior_box_param
        if not len(pp.min_size):
            raise self._fail('must provide min_size.')
        self.min_sizes = [float(s) for s in pp.min_size]
        if any(s <= 0 for s in self.min_sizes):
            raise self._fail('min_size must be positive, got %s' % self.min_sizes)
        self.aspect_ratios = prior_aspect_ratios(pp.aspect_ratio, pp.flip)
        self.max_sizes = [float(s) for s in pp.max_size]
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                raise self._fail('%d max_size values for %d min_size values; give one per '
                                 'min_size' % (len(self.max_sizes), len(self.min_sizes)))
            for lo, hi in zip(self.min_sizes, self.max_sizes):
                if not hi > lo:
                    raise self._fail('max_size must be greater than min_size (%g <= %g)' % (hi, lo))
        self.num_priors = len(self.aspect_ratios) * len(self.min_sizes) + len(self.max_sizes)
        variances = [float(v) for v in pp.variance]
        if len(variances) > 1 and len(variances) != 4:
            raise self._fail('give 1 or 4 variance values, got %d' % len(variances))
        if any(v <= 0 for v in variances):
            raise self._fail('variance must be positive, got %s' % variances)
        self.variances = variances or [float(np.float32(0.1))]
        if pp.HasField('img_h') or pp.HasField('img_w'):
            if pp.HasField('img_size'):
                raise self._fail('Either img_size or img_h/img_w should be specified; not both.')
            self.img_h, self.img_w = int(pp.img_h), int(pp.img_w)
            if self.img_h <= 0 or self.img_w <= 0:
                raise self._fail('img_h and img_w should be larger than 0 (got %d, %d)'
                                 % (self.img_h, self.img_w))
        elif pp.HasField('img_size'):
            self.img_h = self.img_w = int(pp.img_size)
            if self.img_h <= 0:
                raise self._fail('img_size should be larger than 0.')
        else:
            self.img_h = self.img_w = 0
        if pp.HasField('step_h') or pp.HasField('step_w'):
            if pp.HasField('step'):
                raise self._fail('Either step or step_h/step_w should be specified; not both.')
            self.step_h, self.step_w = float(pp.step_h), float(pp.step_w)
            if self.step_h <= 0 or self.step_w <= 0:
                raise self._fail('step_h and step_w should be larger than 0 (got %g, %g)'
                                 % (self.step_h, self.step_w))
        elif pp.HasField('step'):
            self.step_h = self.step_w = float(pp.step)
            if self.step_h <= 0:
                raise self._fail('step should be larger than 0.')
        else:
            self.step_h = self.step_w = 0.0
        self.offset = float(pp.offset)
        self.clip = bool(pp.clip)
        self._cache = None

    @staticmethod
    def _hw(shape):
        # Caffe's height() and width(): axes 2 and 3 (1 past the last axis).
        return (int(shape[2]) if len(shape) > 2 else 1), (int(shape[3]) if len(shape) > 3 else 1)

    def reshape(self, bottom, top):
        h, w = self._hw(bottom[0].shape)
        dim = h * w * self.num_priors * 4
        if dim <= 0:
            raise self._fail('the feature map %s gives no priors' % (tuple(bottom[0].shape),))
        top[0].reshape(1, 2, dim)

    def _cell_boxes(self) -> np.ndarray:
        """Half widths and heights of the priors of one cell, in Caffe's order (K, 2)."""
        out = []
        for i, s in enumerate(self.min_sizes):
            s = int(s)                                  # Caffe: int min_size_ = min_sizes_[s]
            out.append((s / 2.0, s / 2.0))
            if self.max_sizes:
                side = float(np.float32(math.sqrt(s * int(self.max_sizes[i]))))
                out.append((side / 2.0, side / 2.0))
            for r in self.aspect_ratios:
                if abs(r - 1.0) < 1e-6:
                    continue
                bw = float(np.float32(s * math.sqrt(r)))
                bh = float(np.float32(s / math.sqrt(r)))
                out.append((bw / 2.0, bh / 2.0))
        return np.asarray(out, dtype=np.float64)

    def _priors(self, fh: int, fw: int, img_h: int, img_w: int) -> np.ndarray:
        if self.step_w == 0 or self.step_h == 0:
            step_w = np.float32(img_w) / np.float32(fw)
            step_h = np.float32(img_h) / np.float32(fh)
        else:
            step_w, step_h = np.float32(self.step_w), np.float32(self.step_h)
        off = np.float32(self.offset)
        cx = ((np.arange(fw, dtype=np.float32) + off) * step_w).astype(np.float64)
        cy = ((np.arange(fh, dtype=np.float32) + off) * step_h).astype(np.float64)
        half = self._cell_boxes()                               # (K, 2)
        cxg = np.broadcast_to(cx[None, :, None], (fh, fw, half.shape[0]))
        cyg = np.broadcast_to(cy[:, None, None], (fh, fw, half.shape[0]))
        boxes = np.stack(((cxg - half[:, 0]) / img_w, (cyg - half[:, 1]) / img_h,
                          (cxg + half[:, 0]) / img_w, (cyg + half[:, 1]) / img_h), axis=-1)
        boxes = boxes.reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        var = np.asarray(self.variances, dtype=np.float64)
        var = np.broadcast_to(var if var.size == 4 else np.repeat(var, 4),
                              (boxes.size // 4, 4)).reshape(-1)
        return np.stack((boxes, var))[None]

    def forward(self, bottom, top):
        fh, fw = self._hw(bottom[0].shape)
        if self.img_h == 0 or self.img_w == 0:
            img_h, img_w = self._hw(bottom[1].shape)
        else:
            img_h, img_w = self.img_h, self.img_w
        t = top[0].tensor
        key = (fh, fw, img_h, img_w, t.dtype, t.device)
        if self._cache is None or self._cache[0] != key:
            arr = self._priors(fh, fw, img_h, img_w)
            self._cache = (key, torch.as_tensor(arr, dtype=t.dtype, device=t.device))
        top[0].set_tensor(self._cache[1].clone())  # Python may write into the top

    def backward(self, top, propagate_down, bottom):
        """Priors depend on shapes only: nothing flows back (as Caffe)."""
