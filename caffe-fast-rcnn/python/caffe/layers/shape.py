"""Layers that give a blob another shape: Reshape and Flatten (views of their bottom, as
Caffe shares the memory too), Tile (repeats along an axis) and Crop (cuts to a reference
blob's shape), with Caffe's shape rules and error wording.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..errors import NetError, ShapeError
from ..layer import Layer
from ._shapes import blob_count, shape_string
from .base import TorchLayer
from .vision import canonical_axis
from . import register


# ---- views: Reshape, Flatten --------------------------------------------------------------

def _no_in_place(layer: Layer, bottom, top) -> None:
    if bottom[0] is top[0]:
        raise NetError('layer %r: %s Layer does not allow in-place computation.'
                       % (layer.layer_param.name, layer.type))


class _View(Layer):
    """A top that is the bottom seen with another shape; the diff flows back the same way.

    `top_shape` is computed from the bottom's shape alone. The top shares the bottom's
    memory (a torch view), so the layer costs nothing; Caffe shares data and diff too and,
    like Caffe, refuses to work in place.
    """
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1
    backward_uses_forward_state = False

    def top_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        raise NotImplementedError

    def setup(self, bottom, top):
        _no_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        self._shape = self.top_shape(tuple(bottom[0].shape))
        top[0].set_tensor(bottom[0].tensor.reshape(self._shape))

    def forward(self, bottom, top):
        top[0].set_tensor(bottom[0].tensor.reshape(self._shape))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].set_diff_tensor(top[0].diff_tensor.reshape(bottom[0].shape))


@register('Reshape')
class Reshape(_View):
    """reshape_param.shape replaces axes [axis, axis + num_axes) of the bottom.

    A 0 copies the bottom's dimension at the same position, one -1 is inferred from the
    element count; axis may be negative (-1 is the end), num_axes -1 means all the rest.
    """

    def setup(self, bottom, top):
        super().setup(bottom, top)
        rp = self.layer_param.reshape_param
        self.dims = [int(d) for d in rp.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.dims) if d == 0]
        inferred = [i for i, d in enumerate(self.dims) if d == -1]
        name = self.layer_param.name
        if len(inferred) > 1:
            raise NetError('layer %r (Reshape): new shape contains multiple -1 dims; at most a '
                           'single (1) value of -1 may be specified' % name)
        bad = [d for d in self.dims if d < -1]
        if bad:
            raise NetError('layer %r (Reshape): shape dimensions must be >= -1, got %d'
                           % (name, bad[0]))
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = blob_count([d for d in self.dims if d > 0])
        self.axis = int(rp.axis)
        self.num_axes = int(rp.num_axes)

    def top_shape(self, shape):
        name = self.layer_param.name
        n = len(shape)
        start = self.axis if self.axis >= 0 else n + self.axis + 1
        if start < 0:
            raise ShapeError('layer %r (Reshape): axis %d out of range' % (name, self.axis))
        if start > n:
            raise ShapeError('layer %r (Reshape): axis %d out of range for %d-D input blob'
                             % (name, self.axis, n))
        if self.num_axes < -1:
            raise ShapeError('layer %r (Reshape): num_axes must be >= 0, or -1 for all' % name)
        end = n if self.num_axes == -1 else start + self.num_axes
        if end > n:
            raise ShapeError('layer %r (Reshape): end_axis = axis + num_axes is out of range '
                             '(axis %d + num_axes %d for a %d-D input blob)'
                             % (name, start, self.num_axes, n))
        new = list(shape[:start]) + list(self.dims) + list(shape[end:])
        for i in self.copy_axes:
            if start + i >= n:
                raise ShapeError('layer %r (Reshape): new shape contains a 0, but there was no '
                                 'corresponding bottom axis to copy' % name)
            new[start + i] = shape[start + i]
        total = blob_count(shape)
        if self.inferred_axis >= 0:
            explicit = self.constant_count * blob_count(shape, 0, start) * blob_count(shape, end)
            for i in self.copy_axes:
                explicit *= new[start + i]
            if explicit == 0 or total % explicit:
                raise ShapeError('layer %r (Reshape): bottom count (%d) must be divisible by the '
                                 'product of the specified dimensions (%d)' % (name, total, explicit))
            new[start + self.inferred_axis] = total // explicit
        if blob_count(new) != total:
            raise ShapeError('layer %r (Reshape): output count must match input count: bottom %s, '
                             'top %s' % (name, shape_string(shape), shape_string(new)))
        return tuple(new)


@register('Flatten')
class Flatten(_View):
    """Merges axes [axis, end_axis] (both inclusive, negatives from the end) into one."""

    def setup(self, bottom, top):
        super().setup(bottom, top)
        fp = self.layer_param.flatten_param
        self.axis, self.end_axis = int(fp.axis), int(fp.end_axis)

    def top_shape(self, shape):
        name = self.layer_param.name
        start = canonical_axis(self.axis, len(shape), name)
        end = canonical_axis(self.end_axis, len(shape), name)
        return tuple(shape[:start]) + (blob_count(shape, start, end + 1),) + tuple(shape[end + 1:])


# ---- Tile, Crop --------------------------------------------------------------------------------

@register('Tile')
class Tile(TorchLayer):
    """Repeats the block from `axis` on `tiles` times (np.tile along that axis)."""
    allow_in_place = False
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        tp = self.layer_param.tile_param
        name = self.layer_param.name
        if not tp.HasField('tiles'):
            raise NetError('layer %r (Tile): Number of tiles must be specified' % name)
        self.tiles = int(tp.tiles)
        if self.tiles <= 0:
            raise NetError('layer %r (Tile): Number of tiles must be positive, got %d'
                           % (name, self.tiles))

    def reshape(self, bottom, top):
        shape = list(bottom[0].shape)
        self.axis = canonical_axis(int(self.layer_param.tile_param.axis), len(shape),
                                   self.layer_param.name)
        shape[self.axis] *= self.tiles
        top[0].reshape(*shape)

    def compute(self, x):
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return x.repeat(*reps)


@register('Crop')
class Crop(TorchLayer):
    """Crops bottom 0 to bottom 1's shape on the axes from crop_param.axis (default 2) on.

    One offset applies to every cropped axis, several give one per axis; bottom 1 only
    lends its shape and never gets a gradient.
    """
    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1
    non_differentiable = (1,)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        name = self.layer_param.name
        cp = self.layer_param.crop_param
        shape, ref = bottom[0].shape, bottom[1].shape
        n = len(shape)
        start = canonical_axis(int(cp.axis), n, name)
        offsets = [int(o) for o in cp.offset]
        if len(offsets) > 1 and start + len(offsets) != n:
            raise ShapeError('layer %r (Crop): number of offset values specified must be equal to '
                             'the number of dimensions following axis (%d offsets, axis %d, '
                             '%d-axis bottom)' % (name, len(offsets), start, n))
        if len(ref) < n:
            raise ShapeError('layer %r (Crop): the reference bottom has %d axes, fewer than the '
                             'data bottom\'s %d' % (name, len(ref), n))
        out, self.slices = list(shape), []
        for i in range(n):
            off, size = 0, shape[i]
            if i >= start:
                size = ref[i]
                off = offsets[0] if len(offsets) == 1 else (offsets[i - start] if offsets else 0)
                if shape[i] - off < ref[i]:
                    raise ShapeError('layer %r (Crop): the crop for dimension %d is out-of-bounds '
                                     'with size %d and offset %d (bottom size %d)'
                                     % (name, i, ref[i], off, shape[i]))
            out[i] = size
            self.slices.append(slice(off, off + size))
        top[0].reshape(*out)

    def compute(self, x, ref):
        return x[tuple(self.slices)].clone(memory_format=torch.contiguous_format)
