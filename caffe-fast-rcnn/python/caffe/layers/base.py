"""TorchLayer: a layer whose forward is a differentiable PyTorch function.

A subclass writes `compute(*bottoms) -> top tensor(s)` with torch ops and reads its
learnable tensors from `self.p`. This base turns that into Caffe's layer-wise
forward/backward:

* forward runs `compute` on the bottoms' tensors. When the net says this layer needs
  backward, the bottoms that need a gradient and the parameters whose `lr_mult` is not
  zero enter as fresh autograd leaves, so PyTorch records exactly the graph that backward
  will need and nothing more (frozen layers record nothing and cost no backward work).
* backward asks `torch.autograd.grad` for those leaves' gradients given the tops' diffs,
  writes bottom diffs (Caffe overwrites them) and adds parameter diffs (Caffe accumulates
  them until the solver clears them).
* If forward ran without recording (a TEST net, or `backward` asked for more than the net
  planned), backward recomputes the layer from the inputs forward saw. Layers with random
  forwards (Dropout) override `backward` instead.
* If the bottoms are not the ones forward saw (backward with no forward before it, a blob
  reshaped or written by Python since), the net calls `refresh_for_backward`, which drops
  the recorded graph: backward then recomputes from the bottoms' current data, which is
  what Caffe's backward reads. The normal forward -> backward path never recomputes.

Speed notes: a parameter gradient from autograd is a fresh tensor; it is added into the
blob's diff (Caffe accumulates), or becomes the diff when the blob has none yet
(Blob.accumulate_diff). Under `caffe.set_precision('bf16')` the net runs this layer inside
torch.autocast, and layers that set `channels_last_in_bf16` (convolutions: oneDNN's bf16
kernels want NHWC) get their 4-axis bottoms in channels-last memory order.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .. import _config, fillers
from ..blob import Blob
from ..errors import NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2


class TorchLayer(Layer):
    """See the module docstring."""

    # Bottoms that never get a gradient (labels, weights): indices into bottom.
    non_differentiable: Sequence[int] = ()
    # Under set_precision('bf16'): run inside torch.autocast (the net turns this off for loss
    # layers, which compute in float32), and hand 4-axis bottoms over in channels-last order
    # when `channels_last_in_bf16` (set by convolutions).
    run_in_bf16 = True
    channels_last_in_bf16 = False
    # Set by the net for a layer that may overwrite its bottom (Caffe's in-place, top is
    # bottom, the bottom not a Split's top) when the class defines
    # `compute_inplace(x) -> x` and `backward_inplace(dy, y) -> dx` (the gradient from the
    # output alone, which is all Caffe's in-place layers have left): ReLU.
    inplace = False

    def __init__(self, param=None, *args, **kwargs):
        super().__init__(param)
        self.p: List[torch.Tensor] = []
        # Set by the net after its backward analysis.
        self.record_bottoms: List[bool] = []
        self.record = False
        self._outs: Optional[list] = None
        self._leaves: Optional[list] = None
        self._params: Optional[list] = None
        self._inputs: Optional[list] = None

    # ---- helpers for subclasses -----------------------------------------------------------
    def add_param(self, shape: Sequence[int], filler: Optional[caffe_pb2.FillerParameter]) -> Blob:
        """Create a learnable blob filled by `filler` (or keep the one loaded from the proto)."""
        b = Blob(tuple(int(s) for s in shape))
        if filler is not None:
            try:
                fillers.fill(b.tensor, filler)
            except NetError as e:
                raise NetError('layer %r (%s): parameter %d: %s'
                               % (self.layer_param.name, self.type, len(self.blobs), e)) from None
        self.blobs.append(b)
        return b

    def check_param_shapes(self, *shapes: Sequence[int]) -> bool:
        """If the prototxt carried blobs, check their shapes and return True (keep them)."""
        if not len(self.blobs):
            return False
        if len(self.blobs) != len(shapes):
            raise ShapeError('layer %r: %d parameter blobs given, %s needs %d'
                             % (self.layer_param.name, len(self.blobs), self.type, len(shapes)))
        for i, (b, s) in enumerate(zip(self.blobs, shapes)):
            if tuple(b.shape) != tuple(s):
                raise ShapeError('layer %r: parameter %d has shape %s, expected %s'
                                 % (self.layer_param.name, i, tuple(b.shape), tuple(s)))
        return True

    def compute(self, *bottoms: torch.Tensor):
        raise NotImplementedError

    def reshape(self, bottom, top):
        """Default shaping: run compute on empty-batch stand-ins to learn the top shapes.

        Subclasses with cheap, explicit shape rules override this (most do); it must not
        depend on bottom values.
        """
        with torch.no_grad():
            self.p = [b.tensor for b in self.blobs]
            outs = self.compute(*[b.tensor for b in bottom])
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        for t, o in zip(top, outs):
            t.reshape(*o.shape)

    # ---- engine hooks -----------------------------------------------------------------------
    def run_forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if self.inplace:
            # No second buffer: the bottom (its producer's output, which the producer's
            # autograd graph does not keep; if it did, its backward recomputes) is overwritten.
            with torch.no_grad():
                y = self.compute_inplace(bottom[0].tensor)
            self._inputs, self._outs, self._leaves, self._params = [y], None, None, None
            top[0].set_tensor(y)
            return
        xs = [b.tensor for b in bottom]
        if self.channels_last_in_bf16 and _config.low_precision() is not None:
            xs = [x.contiguous(memory_format=torch.channels_last)
                  if x.dim() == 4 and x.is_floating_point() else x for x in xs]
        self._inputs = xs
        if self.record and torch.is_grad_enabled():
            leaves = [x.detach().requires_grad_(True) if g else x
                      for x, g in zip(xs, self.record_bottoms)]
            params = [b.tensor.detach().requires_grad_(True) if g else b.tensor
                      for b, g in zip(self.blobs, self.param_propagate_down)]
            self.p = params
            outs = self.compute(*leaves)
            self._leaves, self._params = leaves, params
        else:
            with torch.no_grad():
                self.p = [b.tensor for b in self.blobs]
                outs = self.compute(*xs)
            self._leaves = self._params = None
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        self._outs = outs
        for t, o in zip(top, outs):
            t.set_tensor(o.detach())

    def refresh_for_backward(self, bottom, top) -> None:
        """Backward from the bottoms' current data: forget forward's graph (see the module
        docstring). For an in-place layer the blob holds its output, which is all its
        backward (`backward_inplace`) reads."""
        self._inputs = [b.tensor for b in bottom]
        self._outs = self._leaves = self._params = None

    def run_backward(self, top, propagate_down, bottom) -> None:
        if self.inplace:
            if self._inputs is None:
                raise RuntimeError('layer %r: backward before forward' % self.layer_param.name)
            if propagate_down[0]:
                bottom[0].set_diff_tensor(self.backward_inplace(top[0].diff_tensor,
                                                                self._inputs[0]))
            return
        try:
            self._run_backward(top, propagate_down, bottom, recompute=False)
        except RuntimeError as e:
            # A later in-place layer overwrote an output this layer's graph kept: recompute.
            if 'modified by an inplace operation' not in str(e):
                raise
            self._run_backward(top, propagate_down, bottom, recompute=True)

    def _run_backward(self, top, propagate_down, bottom, recompute: bool) -> None:
        want_b = [bool(pd) and i not in self.non_differentiable for i, pd in enumerate(propagate_down)]
        want_p = list(self.param_propagate_down)
        recorded = not recompute and self._leaves is not None and all(
            (not w) or l.requires_grad for w, l in zip(want_b, self._leaves)) and all(
            (not w) or p.requires_grad for w, p in zip(want_p, self._params))
        if recorded:
            outs, leaves, params = self._outs, self._leaves, self._params
        else:
            if self._inputs is None:
                raise RuntimeError('layer %r: backward before forward' % self.layer_param.name)
            lowp = _config.low_precision() if self.run_in_bf16 else None
            dev = self._inputs[0].device.type if self._inputs else 'cpu'
            with torch.enable_grad(), torch.autocast(dev, dtype=lowp or torch.bfloat16,
                                                     enabled=lowp is not None):
                leaves = [x.detach().requires_grad_(True) if w else x
                          for x, w in zip(self._inputs, want_b)]
                params = [b.tensor.detach().requires_grad_(True) if w else b.tensor
                          for b, w in zip(self.blobs, want_p)]
                self.p = params
                outs = self.compute(*leaves)
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        wrt, where = [], []
        for i, (l, w) in enumerate(zip(leaves, want_b)):
            if w:
                wrt.append(l)
                where.append(('b', i))
        for i, (p, w) in enumerate(zip(params, want_p)):
            if w:
                wrt.append(p)
                where.append(('p', i))
        pairs = [(o, t.diff_tensor) for o, t in zip(outs, top) if o.requires_grad]
        if not wrt:
            return
        if pairs:
            grads = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                        retain_graph=True, allow_unused=True)
        else:
            grads = [None] * len(wrt)
        # A gradient autograd passed straight through (an identity-like compute) may be a top
        # diff itself: such a one is copied into a parameter diff, never adopted as it.
        held = {g.untyped_storage().data_ptr() for _, g in pairs}
        for (kind, i), g in zip(where, grads):
            if kind == 'b':
                if g is None:
                    bottom[i].set_diff_tensor(torch.zeros_like(bottom[i].tensor))
                else:
                    bottom[i].set_diff_tensor(g)
            elif g is not None:
                self.blobs[i].accumulate_diff(g, take=g.untyped_storage().data_ptr() not in held)
