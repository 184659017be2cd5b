"""Layers that route, reshape, combine or summarise blobs.

Split, Silence, Reshape, Flatten, Concat, Slice, Tile, Crop, Eltwise, Reduction, ArgMax
and Accuracy, each with Caffe's shape rules and checks. Reshape and Flatten are views of
their bottom (Caffe shares the memory too), Concat and Slice copy with one torch op each
way, Eltwise keeps Caffe's MAX mask (which decides where ties send the gradient), and
ArgMax/Accuracy break ties the way Caffe does, so their outputs match Caffe's exactly.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import LayerError, NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from .base import TorchLayer
from .vision import canonical_axis
from . import register


def _count(shape: Sequence[int], start: int = 0, end: Optional[int] = None) -> int:
    """Caffe's Blob::count(start, end): the product of shape[start:end]."""
    return int(np.prod(shape[start:end], dtype=np.int64))


def _shape_str(shape: Sequence[int]) -> str:
    """Caffe's shape_string: '2 3 4 (24)'."""
    return '%s (%d)' % (' '.join(str(d) for d in shape), _count(shape))


def _no_in_place(layer: Layer, bottom, top) -> None:
    if bottom[0] is top[0]:
        raise NetError('layer %r: %s Layer does not allow in-place computation.'
                       % (layer.layer_param.name, layer.type))


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


# ---- views: Reshape, Flatten --------------------------------------------------------------

class _View(Layer):
    """A top that is the bottom seen with another shape; the diff flows back the same way.

    `top_shape` is computed from the bottom's shape alone. The top shares the bottom's
    memory (a torch view), so the layer costs nothing; Caffe shares data and diff too and,
    like Caffe, refuses to work in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1

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
        self.constant_count = _count([d for d in self.dims if d > 0])
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
        total = _count(shape)
        if self.inferred_axis >= 0:
            explicit = self.constant_count * _count(shape, 0, start) * _count(shape, end)
            for i in self.copy_axes:
                explicit *= new[start + i]
            if explicit == 0 or total % explicit:
                raise ShapeError('layer %r (Reshape): bottom count (%d) must be divisible by the '
                                 'product of the specified dimensions (%d)' % (name, total, explicit))
            new[start + self.inferred_axis] = total // explicit
        if _count(new) != total:
            raise ShapeError('layer %r (Reshape): output count must match input count: bottom %s, '
                             'top %s' % (name, _shape_str(shape), _shape_str(new)))
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
        return tuple(shape[:start]) + (_count(shape, start, end + 1),) + tuple(shape[end + 1:])


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


# ---- Tile, Crop --------------------------------------------------------------------------------

@register('Tile')
class Tile(TorchLayer):
    """Repeats the block from `axis` on `tiles` times (np.tile along that axis)."""
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


# ---- Eltwise, Reduction ------------------------------------------------------------------------

_ELT = caffe_pb2.EltwiseParameter


@register('Eltwise')
class Eltwise(Layer):
    """Element-wise PROD, SUM (with one coefficient per bottom) or MAX of equal-shaped bottoms.

    MAX follows Caffe's CPU mask exactly: between bottoms 0 and 1 the second wins unless
    the first is strictly greater (a tie goes to bottom 1); a later bottom takes over
    only where it is strictly greater than the running maximum. Backward sends each
    top diff to the one bottom the mask names. PROD's gradient is the product of the
    other bottoms (`stable_prod_grad`, the default) or top / bottom.
    """
    min_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        ep = self.layer_param.eltwise_param
        name = self.layer_param.name
        if len(ep.coeff) and len(ep.coeff) != len(bottom):
            raise NetError('layer %r (Eltwise): Eltwise Layer takes one coefficient per bottom '
                           'blob (%d coefficients, %d bottoms).' % (name, len(ep.coeff), len(bottom)))
        if ep.operation == _ELT.PROD and len(ep.coeff):
            raise NetError('layer %r (Eltwise): Eltwise layer only takes coefficients for '
                           'summation.' % name)
        self.op = ep.operation
        self.coeffs = [float(c) for c in ep.coeff] if len(ep.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = bool(ep.stable_prod_grad)
        self._mask = None

    def reshape(self, bottom, top):
        s0 = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != s0:
                raise ShapeError('layer %r (Eltwise): bottom[0]: %s, bottom[%d]: %s'
                                 % (self.layer_param.name, _shape_str(s0), i, _shape_str(b.shape)))
        top[0].reshape(*s0)

    def forward(self, bottom, top):
        xs = [b.tensor for b in bottom]
        self._inputs = xs
        if self.op == _ELT.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
        elif self.op == _ELT.SUM:
            y = xs[0] * self.coeffs[0] if self.coeffs[0] != 1 else xs[0].clone()
            for x, c in zip(xs[1:], self.coeffs[1:]):
                y.add_(x, alpha=c)
        elif self.op == _ELT.MAX:
            kind = torch.uint8 if len(xs) <= 256 else torch.int64
            first = xs[0] > xs[1]
            y = torch.where(first, xs[0], xs[1])
            mask = (~first).to(kind)  # 0 where bottom 0 wins, else 1
            for i, x in enumerate(xs[2:], 2):
                take = x > y
                y = torch.where(take, x, y)
                mask = torch.where(take, torch.full((), i, dtype=kind, device=y.device), mask)
            self._mask = mask
        else:
            raise NetError('layer %r (Eltwise): unknown operation %d'
                           % (self.layer_param.name, self.op))
        self._top = y
        top[0].set_tensor(y)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        xs = self._inputs
        for i, (b, pd) in enumerate(zip(bottom, propagate_down)):
            if not pd:
                continue
            if self.op == _ELT.PROD:
                if self.stable_prod_grad:
                    others = [x for j, x in enumerate(xs) if j != i]
                    g = others[0]
                    for x in others[1:]:
                        g = g * x
                    g = g * dy
                else:
                    g = self._top / xs[i] * dy
            elif self.op == _ELT.SUM:
                g = dy * self.coeffs[i] if self.coeffs[i] != 1 else dy.clone()
            else:
                g = torch.where(self._mask == i, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))
            b.set_diff_tensor(g)


_RED = caffe_pb2.ReductionParameter


@register('Reduction')
class Reduction(TorchLayer):
    """Reduces every axis from reduction_param.axis on with SUM, ASUM, SUMSQ or MEAN, times coeff.

    The top keeps the axes before `axis` (axis 0, the default, gives a scalar).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        rp = self.layer_param.reduction_param
        if rp.operation not in (_RED.SUM, _RED.ASUM, _RED.SUMSQ, _RED.MEAN):
            raise NetError('layer %r (Reduction): unknown reduction operation %d'
                           % (self.layer_param.name, rp.operation))
        self.op = rp.operation
        self.coeff = float(rp.coeff)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(int(self.layer_param.reduction_param.axis), len(shape),
                                   self.layer_param.name)
        self.out_shape = tuple(shape[:self.axis])
        self.num = _count(shape, 0, self.axis)
        self.dim = _count(shape, self.axis)
        top[0].reshape(*self.out_shape)

    def compute(self, x):
        flat = x.reshape(self.num, self.dim)
        if self.op == _RED.SUM or self.op == _RED.MEAN:
            y = flat.sum(dim=1)
        elif self.op == _RED.ASUM:
            y = flat.abs().sum(dim=1)
        else:
            y = (flat * flat).sum(dim=1)
        coeff = self.coeff / self.dim if self.op == _RED.MEAN else self.coeff
        if coeff != 1:
            y = y * coeff
        return y.reshape(self.out_shape)


# ---- ArgMax, Accuracy ------------------------------------------------------------------------------

def _ranked(x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k largest values along the last axis and their indices, in Caffe's order.

    Caffe partially sorts (value, index) pairs with std::greater, so among equal values
    the larger index comes first. A stable descending sort of the reversed axis gives
    exactly that order.
    """
    n = x.shape[-1]
    values, idx = torch.sort(torch.flip(x, dims=(-1,)), dim=-1, descending=True, stable=True)
    return values[..., :k], (n - 1) - idx[..., :k]


@register('ArgMax')
class ArgMax(Layer):
    """The top_k indices (and with out_max_val the values) of the largest scores.

    Without argmax_param.axis each item's scores are flattened and the top is
    (N, 1, top_k) with indices, or (N, 2, top_k) with indices then values (padded with
    1s to the bottom's axis count). With an axis, that axis becomes top_k long and holds
    indices, or values if out_max_val. No backward, as in Caffe.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom, top):
        ap = self.layer_param.argmax_param
        name = self.layer_param.name
        self.out_max_val = bool(ap.out_max_val)
        self.top_k = int(ap.top_k)
        self.has_axis = ap.HasField('axis')
        if self.top_k < 1:
            raise NetError('layer %r (ArgMax): top k must not be less than 1.' % name)
        shape = bottom[0].shape
        if self.has_axis:
            self.axis = canonical_axis(int(ap.axis), len(shape), name)
            if self.top_k > shape[self.axis]:
                raise ShapeError('layer %r (ArgMax): top_k must be less than or equal to the '
                                 'dimension of the axis (top_k %d, axis %d has %d)'
                                 % (name, self.top_k, self.axis, shape[self.axis]))
        elif self.top_k > _count(shape, 1):
            raise ShapeError('layer %r (ArgMax): top_k must be less than or equal to the dimension '
                             'of the flattened bottom blob per instance (top_k %d, %d per instance)'
                             % (name, self.top_k, _count(shape, 1)))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            out = list(shape)
            out[self.axis] = self.top_k
        else:
            out = [1] * max(len(shape), 3)
            out[0] = shape[0]
            out[1] = 2 if self.out_max_val else 1
            out[2] = self.top_k
        top[0].reshape(*out)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self.has_axis:
            values, idx = _ranked(x.movedim(self.axis, -1), self.top_k)
            y = values if self.out_max_val else idx.to(x.dtype)
            y = y.movedim(-1, self.axis)
        else:
            values, idx = _ranked(x.reshape(x.shape[0], -1), self.top_k)
            y = idx.to(x.dtype).unsqueeze(1)
            if self.out_max_val:
                y = torch.cat([y, values.unsqueeze(1)], dim=1)
        top[0].set_tensor(y.contiguous().reshape(top[0].shape))


@register('Accuracy')
class Accuracy(Layer):
    """Top-k classification accuracy over the labels not equal to ignore_label.

    Scores are (outer, C, inner) around accuracy_param.axis; one label per outer x inner
    item. A label counts as a hit when fewer than top_k OTHER classes score at least as
    high as it (BVLC's rule: a tie counts against the true class). The first top is a
    scalar (0 when every label is ignored); the optional second top holds each class's
    accuracy (0 for a class without labels). No backward, as in Caffe.
    """
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom, top):
        ap = self.layer_param.accuracy_param
        self.top_k = int(ap.top_k)
        self.ignore = int(ap.ignore_label) if ap.HasField('ignore_label') else None

    def reshape(self, bottom, top):
        name = self.layer_param.name
        shape = bottom[0].shape
        labels = bottom[1].count
        if labels == 0 or self.top_k > bottom[0].count // labels:
            raise ShapeError('layer %r (Accuracy): top_k must be less than or equal to the number '
                             'of classes (top_k %d, scores %s, %d labels)'
                             % (name, self.top_k, shape, labels))
        self.axis = canonical_axis(int(self.layer_param.accuracy_param.axis), len(shape), name)
        self.outer = _count(shape, 0, self.axis)
        self.inner = _count(shape, self.axis + 1)
        if self.outer * self.inner != labels:
            raise ShapeError(
                'layer %r (Accuracy): Number of labels must match number of predictions; e.g., if '
                'label axis == 1 and prediction shape is (N, C, H, W), label count (number of '
                'labels) must be N*H*W, with integer values in {0, 1, ..., C-1}. Predictions %s '
                'give %d, labels %s hold %d'
                % (name, shape, self.outer * self.inner, bottom[1].shape, labels))
        top[0].reshape()
        if len(top) > 1:
            top[1].reshape(shape[self.axis])

    def forward(self, bottom, top):
        x = bottom[0].tensor
        c = x.shape[self.axis]
        scores = x.reshape(self.outer, c, self.inner)
        labels = bottom[1].tensor.reshape(self.outer, self.inner).long()
        valid = torch.ones_like(labels, dtype=torch.bool) if self.ignore is None \
            else labels != self.ignore
        bad = valid & ((labels < 0) | (labels >= c))
        if bool(bad.any()):
            raise LayerError('layer %r (Accuracy): label %d out of range [0, %d)'
                             % (self.layer_param.name, int(labels[bad][0]), c))
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = scores.gather(1, safe.unsqueeze(1))
        # Classes scoring at least the true class's score, the true class itself excluded.
        # (A NaN true score is then -1 and counts as a hit, as in Caffe's loop.)
        at_least = (scores >= true_score).sum(dim=1) - 1
        hit = (at_least < self.top_k) & valid
        count = int(valid.sum())
        acc = hit.sum().to(x.dtype) / count if count else torch.zeros((), dtype=x.dtype,
                                                                       device=x.device)
        top[0].set_tensor(acc.reshape(()))
        if len(top) > 1:
            per_label = torch.bincount(labels[valid], minlength=c).to(x.dtype)
            per_hit = torch.bincount(labels[hit], minlength=c).to(x.dtype)
            per_class = torch.where(per_label > 0, per_hit / per_label.clamp(min=1),
                                    torch.zeros_like(per_label))
            top[1].set_tensor(per_class)
