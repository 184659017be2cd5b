"""Layers that route blobs through the net without changing values: Split, Silence,
Concat and Slice.

Split gives one bottom to several consumers (the net inserts it so that each bottom has
one consumer) and sums their diffs; Silence swallows blobs; Concat joins bottoms along an
axis and Slice cuts one apart, each with one torch op per direction and Caffe's checks.
"""
from __future__ import annotations

import torch

from ..errors import NetError, ShapeError
from ..layer import Layer
from .vision import canonical_axis
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


# ---- Concat, Slice ---------------------------------------------------------------------------

def _legacy_axis(layer: Layer, param, legacy_field: str, num_axes: int) -> int:
    """Concat/Slice axis: the legacy uint32 field (concat_dim / slice_dim) if set, else axis."""
    name = layer.layer_param.name
    if param.HasField(legacy_field):
        axis = int(getattr(param, legacy_field))
        if axis >= num_axes:
            raise ShapeError('layer %r (%s): %s out of range (%d for a %d-axis blob)'
                             % (name, layer.type, legacy_field, axis, num_axes))
        return axis
    return canonical_axis(int(param.axis), num_axes, name)


def _check_axis_fields(layer: Layer, param, legacy_field: str) -> None:
    if param.HasField('axis') and param.HasField(legacy_field):
        raise NetError('layer %r (%s): Either axis or %s should be specified; not both.'
                       % (layer.layer_param.name, layer.type, legacy_field))


@register('Concat')
class Concat(Layer):
    """Joins the bottoms along concat_param.axis (default 1, or the legacy concat_dim)."""
    min_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        _check_axis_fields(self, self.layer_param.concat_param, 'concat_dim')

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape0 = bottom[0].shape
        n = len(shape0)
        self.axis = _legacy_axis(self, self.layer_param.concat_param, 'concat_dim', n)
        out = list(shape0)
        for i, b in enumerate(bottom[1:], 1):
            s = b.shape
            if len(s) != n:
                raise ShapeError('layer %r (Concat): All inputs must have the same #axes: bottom 0 '
                                 'is %s, bottom %d is %s' % (name, shape0, i, s))
            if any(s[j] != shape0[j] for j in range(n) if j != self.axis):
                raise ShapeError('layer %r (Concat): All inputs must have the same shape, except '
                                 'at concat_axis (%d): bottom 0 is %s, bottom %d is %s'
                                 % (name, self.axis, shape0, i, s))
            out[self.axis] += s[self.axis]
        self.sizes = [b.shape[self.axis] for b in bottom]
        top[0].reshape(*out)

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].set_tensor(bottom[0].tensor)  # Caffe shares the one bottom
            return
        top[0].set_tensor(torch.cat([b.tensor for b in bottom], dim=self.axis))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        if len(bottom) == 1:
            if propagate_down[0]:
                bottom[0].set_diff_tensor(dy)
            return
        for b, part, pd in zip(bottom, torch.split(dy, self.sizes, dim=self.axis), propagate_down):
            if pd:
                b.set_diff_tensor(part.clone(memory_format=torch.contiguous_format))


@register('Slice')
class Slice(Layer):
    """Cuts the bottom along slice_param.axis at slice_point (or into equal parts)."""
    exact_num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        sp = self.layer_param.slice_param
        _check_axis_fields(self, sp, 'slice_dim')
        self.points = [int(p) for p in sp.slice_point]

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape = bottom[0].shape
        self.axis = _legacy_axis(self, self.layer_param.slice_param, 'slice_dim', len(shape))
        length = shape[self.axis]
        if self.points:
            if len(self.points) != len(top) - 1:
                raise ShapeError('layer %r (Slice): %d slice_point values for %d tops (need %d)'
                                 % (name, len(self.points), len(top), len(top) - 1))
            if len(top) > length:
                raise ShapeError('layer %r (Slice): %d tops cannot slice an axis of size %d'
                                 % (name, len(top), length))
            prev, sizes = 0, []
            for p in self.points:
                if p <= prev:
                    raise ShapeError('layer %r (Slice): slice points must be increasing and '
                                     'positive, got %s' % (name, self.points))
                sizes.append(p - prev)
                prev = p
            if prev > length:
                raise ShapeError('layer %r (Slice): slice point %d is beyond the axis size %d'
                                 % (name, prev, length))
            sizes.append(length - prev)
        else:
            if length % len(top):
                raise ShapeError('layer %r (Slice): Number of top blobs (%d) should evenly divide '
                                 'input slice axis (%d)' % (name, len(top), length))
            sizes = [length // len(top)] * len(top)
        self.sizes = sizes
        for t, size in zip(top, sizes):
            s = list(shape)
            s[self.axis] = size
            t.reshape(*s)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if len(top) == 1:
            top[0].set_tensor(x)  # Caffe shares the bottom with a single top
            return
        for t, part in zip(top, torch.split(x, self.sizes, dim=self.axis)):
            t.set_tensor(part.clone(memory_format=torch.contiguous_format))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            bottom[0].set_diff_tensor(top[0].diff_tensor)
            return
        bottom[0].set_diff_tensor(torch.cat([t.diff_tensor for t in top], dim=self.axis))
