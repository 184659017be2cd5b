"""Layers that route blobs without computing on them: Split, Silence (more to come)."""
from __future__ import annotations

import torch

from ..layer import Layer
from . import register


@register('Split')
class Split(Layer):
    """Copies its bottom to every top (sharing memory); backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        for t in top:
            t.set_tensor(x)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        total = top[0].diff_tensor.clone()
        for t in top[1:]:
            total += t.diff_tensor
        bottom[0].set_diff_tensor(total)


@register('Silence')
class Silence(Layer):
    """Consumes blobs so they are not net outputs; sends zero gradients back."""
    min_bottom = 1
    exact_num_top = 0

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, pd in zip(bottom, propagate_down):
            if pd:
                b.set_diff_tensor(torch.zeros_like(b.tensor))
