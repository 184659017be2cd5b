"""Layers that route blobs through the net without changing values: Split, Silence,
Concat, Slice, BatchReindex and Filter.

Split gives one bottom to several consumers (the net inserts it so that each bottom has
one consumer) and sums their diffs; Silence swallows blobs; Concat joins bottoms along an
axis and Slice cuts one apart, each with one torch op per direction and Caffe's checks.
BatchReindex picks items of a batch by index (repeats allowed) and Filter keeps the items
a selector marks; both move whole items along axis 0 with one index op per direction.

Split, Silence, Concat and Slice only move values, so under bf16 they take blobs in the
float type and memory layout their producers left (`run_in_bf16`): converting there would
cost a pass, and another one back if the consumer computes in bf16 again.
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
    allow_in_place = False
    exact_num_bottom = 1
    min_top = 1
    run_in_bf16 = True
    backward_uses_forward_state = False

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
        diffs = [t.diff_tensor for t in top]
        if len(diffs) == 1:
            total = diffs[0].clone()
        else:
            # One pass for the first two (not a copy, then an add); a sum over a bf16 and a
            # float32 diff is float32.
            total = torch.add(diffs[0], diffs[1])
            for d in diffs[2:]:
                total = total.add_(d) if torch.result_type(total, d) == total.dtype else total + d
        bottom[0].set_diff_tensor(total)


@register('Silence')
class Silence(Layer):
    """Consumes blobs so they are not net outputs; sends zero gradients back."""
    min_bottom = 1
    exact_num_top = 0
    run_in_bf16 = True
    backward_uses_forward_state = False

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, pd in zip(bottom, propagate_down):
            if pd:
                b.set_diff_tensor(torch.zeros_like(b.tensor))


# ---- Concat, Slice ---------------------------------------------------------------------------

def _dense_copy(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """A dense copy of a piece of `whole`, in whole's layout: contiguous, or channels-last
    for a channels-last map (a bf16 convolution's output), so no pass reorders it."""
    if whole.dim() == 4 and not whole.is_contiguous() \
            and whole.is_contiguous(memory_format=torch.channels_last):
        return part.clone(memory_format=torch.channels_last)
    return part.clone(memory_format=torch.contiguous_format)


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
    backward_uses_forward_state = False
    allow_in_place = False
    min_bottom = 1
    exact_num_top = 1
    run_in_bf16 = True

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
        sizes = [b.shape[self.axis] for b in bottom]  # the bottoms as they are now, as Caffe
        for b, part, pd in zip(bottom, torch.split(dy, sizes, dim=self.axis), propagate_down):
            if pd:
                b.set_diff_tensor(_dense_copy(part, dy))


@register('Slice')
class Slice(Layer):
    """Cuts the bottom along slice_param.axis at slice_point (or into equal parts)."""
    backward_uses_forward_state = False
    allow_in_place = False
    exact_num_bottom = 1
    min_top = 1
    run_in_bf16 = True

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
            t.set_tensor(_dense_copy(part, x))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            bottom[0].set_diff_tensor(top[0].diff_tensor)
            return
        bottom[0].set_diff_tensor(torch.cat([t.diff_tensor for t in top], dim=self.axis))


# ---- BatchReindex, Filter ----------------------------------------------------------------------

@register('BatchReindex')
class BatchReindex(Layer):
    """top = bottom[0][bottom[1]]: items of axis 0 picked by index, in any order and with
    repeats (the index values are truncated to int, as Caffe's static_cast).

    Backward sums each top item's diff into the item it came from (an item picked twice
    gets both diffs, one never picked gets zero). The index bottom has no gradient: asking
    for one is Caffe's "Cannot backprop to index." error, and force_backward leaves it alone
    (BVLC would abort on such a net; here the index is treated like a loss layer's label).
    """
    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        ishape = bottom[1].shape
        if len(ishape) != 1:
            raise ShapeError('layer %r (BatchReindex): the index bottom must have one axis: '
                             'Check failed: 1 == bottom[1]->num_axes() (1 vs. %d)'
                             % (self.layer_param.name, len(ishape)))
        top[0].reshape(*((ishape[0],) + tuple(bottom[0].shape[1:])))

    def _indices(self, bottom) -> torch.Tensor:
        """The index bottom as int64, checked as Caffe does on the float values."""
        raw = bottom[1].tensor
        num = bottom[0].shape[0]
        name = self.layer_param.name
        if raw.numel():
            if bool((raw < 0).any()):
                raise ShapeError('layer %r (BatchReindex): Index specified for reindex layer was '
                                 'negative. (%g)' % (name, float(raw.min())))
            if bool((raw >= num).any()):
                raise ShapeError('layer %r (BatchReindex): Index specified for reindex layer was '
                                 'greater than batch size. (%g for %d items)'
                                 % (name, float(raw.max()), num))
        return torch.trunc(raw).long()

    def forward(self, bottom, top):
        idx = self._indices(bottom)
        self._idx = idx
        top[0].set_tensor(bottom[0].tensor.index_select(0, idx))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise NetError('layer %r (BatchReindex): Cannot backprop to index.'
                           % self.layer_param.name)
        if not propagate_down[0]:
            return
        x = bottom[0].tensor
        dx = torch.zeros(x.shape, dtype=top[0].diff_tensor.dtype, device=x.device)
        dx.index_add_(0, self._idx, top[0].diff_tensor)
        bottom[0].set_diff_tensor(dx)


@register('Filter')
class Filter(Layer):
    """Keeps the items (axis 0) of bottoms 0..K-1 whose entry in the last bottom, the
    selector, is non-zero; top k is bottom k filtered, so there is one top fewer than bottoms.

    As in Caffe the selection is made while reshaping, from the selector's values, except
    the very first reshape (net set-up, before any data) which keeps every item. Backward
    copies each top diff to the kept items and writes zeros to the dropped ones; the
    selector gets no gradient ("FilterLayer cannot backpropagate to filter index inputs"),
    and force_backward leaves it alone.
    """
    allow_in_place = False
    min_bottom = 2
    min_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != self._selector

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise NetError('layer %r (Filter): there must be one top per filtered bottom: '
                           'Check failed: top.size() == bottom.size() - 1 (%d vs. %d)'
                           % (self.layer_param.name, len(top), len(bottom) - 1))
        self._selector = len(bottom) - 1
        self._first = True
        self._idx = None

    def reshape(self, bottom, top):
        name = self.layer_param.name
        sel = bottom[-1]
        sshape = sel.shape
        if not sshape or any(d != 1 for d in sshape[1:]):
            raise ShapeError('layer %r (Filter): Selector blob dimensions must be singletons (1), '
                             'except the first (selector shape %s)' % (name, sshape))
        for i, b in enumerate(bottom[:-1]):
            if not b.shape or b.shape[0] != sshape[0]:
                raise ShapeError('layer %r (Filter): Each bottom should have the same 0th '
                                 'dimension as the selector blob (bottom %d is %s, the selector '
                                 '%s)' % (name, i, b.shape, sshape))
        self._idx = torch.nonzero(sel.tensor.reshape(-1) != 0).reshape(-1)
        kept = int(self._idx.numel())
        if self._first:
            kept = bottom[0].shape[0]
            self._first = False
        for b, t in zip(bottom, top):
            t.reshape(*((kept,) + tuple(b.shape[1:])))

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            t.set_tensor(b.tensor.index_select(0, self._idx))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[self._selector]:
            raise NetError('layer %r: FilterLayer cannot backpropagate to filter index inputs'
                           % self.layer_param.name)
        for t, b, pd in zip(top, bottom, propagate_down):
            if pd:
                dx = torch.zeros(b.shape, dtype=t.diff_tensor.dtype, device=b.tensor.device)
                dx.index_copy_(0, self._idx, t.diff_tensor)
                b.set_diff_tensor(dx)
