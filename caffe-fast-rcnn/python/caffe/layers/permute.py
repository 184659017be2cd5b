"""Permute (SSD): reorders the axes of a blob, e.g. NCHW -> NHWC before flattening a
detection head's predictions prior by prior.

`permute_param.order` lists the new order of the first axes; axes it does not name follow
in their original order. An order that changes nothing shares the bottom's values, as
Caffe does. The gradient is the top's diff permuted back.
"""
from __future__ import annotations

from typing import List

import torch

from ..errors import LayerError
from .base import TorchLayer
from . import register


def permute_order(given, num_axes: int, layer_name: str = '') -> List[int]:
    """Caffe's full axis order from the listed one (missing axes appended in order)."""
    order: List[int] = []
    for o in given:
        o = int(o)
        if not 0 <= o < num_axes:
            raise LayerError('layer %r (Permute): order %d should be less than the input '
                             'dimension (%d axes)' % (layer_name, o, num_axes))
        if o in order:
            raise LayerError('layer %r (Permute): there are duplicate orders (%s)'
                             % (layer_name, [int(x) for x in given]))
        order.append(o)
    order += [i for i in range(num_axes) if i not in order]
    return order


@register('Permute')
class Permute(TorchLayer):
    """See the module docstring."""

    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.order = permute_order(self.layer_param.permute_param.order, len(bottom[0].shape),
                                   self.layer_param.name)
        self.need_permute = self.order != list(range(len(self.order)))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != len(self.order):
            raise LayerError('layer %r (Permute): set up for %d axes, the bottom now has shape %s'
                             % (self.layer_param.name, len(self.order), tuple(shape)))
        top[0].reshape(*[shape[i] for i in self.order])

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if not self.need_permute:
            return x
        return x.permute(*self.order).contiguous()
