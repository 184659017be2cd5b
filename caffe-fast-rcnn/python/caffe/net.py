"""caffe.Net: a net built from a prototxt, run layer by layer with Caffe's semantics.

Construction follows Caffe's Net::Init: upgrade legacy formats, keep the layers whose
include/exclude rules match the phase, level and stages, insert Split layers, wire bottoms
and tops by name (a top named like its bottom is in place), set each layer up, share
parameters by `param { name }`, then work out which layers need backward: a layer does if
a bottom or a learnable parameter (lr_mult != 0) needs a gradient and its tops reach a
loss; `propagate_down` and `force_backward` adjust that as in Caffe. Net outputs are the
blobs nobody consumes, in name order.

The pycaffe surface (blobs, params, layers, forward/backward with start/end and keyword
blobs, forward_all, copy_from, save, ...) lives in `pycaffe.py`, added to this class.
"""
from __future__ import annotations

import collections
import contextlib
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import _config, _log, protoio, upgrade, weights
from .blob import Blob
from .errors import LayerError, NetError, ShapeError
from .layer import Layer
from .layers import layer_class
from .layers.base import TorchLayer
from .netstate import filter_net
from .phase import Phase
from .proto import caffe_pb2
from .splits import insert_splits


def read_net_param(path: str) -> caffe_pb2.NetParameter:
    """A prototxt file as an upgraded NetParameter (errors name the file, line, column)."""
    if not os.path.isfile(path):
        raise NetError('net file not found: %s' % path)
    return upgrade.upgrade_net(protoio.read_text(path, caffe_pb2.NetParameter), path)


class Net:
    """A Caffe net; see the module docstring."""

    def __init__(self, *args, **kwargs):
        spec, phase, weights, level, stages = _parse_net_args(args, kwargs)
        if isinstance(spec, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(spec)
            upgrade.upgrade_net(param, '<NetParameter>')
            self._source = '<NetParameter %s>' % param.name
        else:
            param = read_net_param(spec)
            self._source = spec
        # As Caffe: the prototxt's own state, with the caller's phase and level, and the
        # caller's stages added to its stages.
        state = caffe_pb2.NetState()
        state.CopyFrom(param.state)
        state.phase = int(phase)
        state.level = level
        state.stage.extend(stages)
        self.phase = Phase(phase)
        self._init(param, state)
        if weights:
            self.copy_from(weights)

    # ---- construction ---------------------------------------------------------------------
    def _init(self, in_param: caffe_pb2.NetParameter, state: caffe_pb2.NetState) -> None:
        try:
            filtered = filter_net(in_param, state)
        except NetError as e:
            raise NetError('%s: %s' % (self._source, e)) from None
        param = insert_splits(filtered)
        self._param = param
        self._name = param.name
        self._force_backward = param.force_backward
        self._debug_info = param.debug_info
        self._blobs: List[Blob] = []
        self._blob_names: List[str] = []
        self._blob_index: Dict[str, int] = {}
        self._blob_need_backward: List[bool] = []
        self.layers: List[Layer] = []
        self._layer_names: List[str] = []
        self._bottom_ids: List[List[int]] = []
        self._top_ids: List[List[int]] = []
        self._bottom_need_backward: List[List[bool]] = []
        self._layer_need_backward: List[bool] = []
        self._loss_weights: List[List[float]] = []
        self._inputs: List[int] = []
        self._params: List[Blob] = []          # every layer's param blobs, in order
        self._param_owners: List[int] = []     # -1 or index of the owning param
        self._param_display_names: List[str] = []
        self._param_layer_indices: List[tuple] = []
        self._learnable_params: List[Blob] = []
        self._learnable_param_ids: List[int] = []
        self._params_lr: List[float] = []
        self._params_weight_decay: List[float] = []
        self._has_params_lr: List[bool] = []
        self._has_params_decay: List[bool] = []
        self._param_names_index: Dict[str, int] = {}
        # pycaffe's before_forward/after_forward/before_backward/after_backward callbacks:
        # each is called with the layer's index (data-parallel training reduces a layer's
        # gradients from after_backward, as BVLC's NCCL does).
        self._before_forward: List = []
        self._after_forward: List = []
        self._before_backward: List = []
        self._after_backward: List = []

        info = lambda msg: _log.info('net.cpp', msg)  # noqa: E731
        where = self._source
        if len(param.input_shape) != len(param.input):
            # As Caffe: "Exactly one input_shape must be specified per input."
            raise NetError('%s: %d inputs but %d input_shape entries; give each input its '
                           'shape (input_shape { dim: ... } or four input_dim values)'
                           % (where, len(param.input), len(param.input_shape)))
        available = set()
        for i, name in enumerate(param.input):
            if name in self._blob_index:
                raise NetError('%s: duplicate input blob %r' % (where, name))
            shape = tuple(param.input_shape[i].dim) if len(param.input_shape) else ()
            info('Input %d -> %s' % (i, name))
            bid = self._add_blob(name, Blob(shape))
            self._blob_need_backward.append(False)
            self._inputs.append(bid)
            available.add(name)

        for li, lp in enumerate(param.layer):
            if not lp.HasField('phase'):
                lp.phase = state.phase
            if not lp.type:
                raise NetError('%s: layer %r has no type' % (where, lp.name))
            if lp.name in self._layer_names:
                raise NetError('%s: two layers are named %r' % (where, lp.name))
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise NetError('%s: layer %r has %d propagate_down values for %d bottoms'
                               % (where, lp.name, len(lp.propagate_down), len(lp.bottom)))
            layer = _create_layer(lp)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            info('Creating Layer %s' % lp.name)
            need_backward = False
            bids, bneed = [], []
            for bi, bname in enumerate(lp.bottom):
                if bname not in available:
                    known = ', '.join(repr(n) for n in self._blob_names) or 'none'
                    raise NetError('%s: Unknown bottom blob %r (layer %r, bottom index %d); '
                                   'blobs defined so far: %s' % (where, bname, lp.name, bi, known))
                bid = self._blob_index[bname]
                info('%s <- %s' % (lp.name, bname))
                nb = self._blob_need_backward[bid]
                if len(lp.propagate_down):
                    nb = bool(lp.propagate_down[bi])
                bids.append(bid)
                bneed.append(nb)
                need_backward |= self._blob_need_backward[bid]
                available.discard(bname)
            tids = []
            for ti, tname in enumerate(lp.top):
                if ti < len(lp.bottom) and lp.bottom[ti] == tname:
                    info('%s -> %s (in-place)' % (lp.name, tname))
                    tid = self._blob_index[tname]
                elif tname in self._blob_index:
                    raise NetError('%s: Top blob %r produced by multiple sources (layer %r)'
                                   % (where, tname, lp.name))
                else:
                    info('%s -> %s' % (lp.name, tname))
                    tid = self._add_blob(tname, Blob())
                    self._blob_need_backward.append(False)
                tids.append(tid)
                if lp.type == 'Input':  # as Caffe: Input layer tops are net inputs
                    self._inputs.append(tid)
                available.add(tname)
            self._bottom_ids.append(bids)
            self._top_ids.append(tids)
            self._bottom_need_backward.append(bneed)
            bottom = [self._blobs[i] for i in bids]
            top = [self._blobs[i] for i in tids]
            in_place = self._check_in_place(layer, lp)
            shapes_before = {ti: tuple(top[ti].shape) for ti in in_place}
            self._setup_layer(li, layer, lp, bottom, top)
            for ti, shape in shapes_before.items():
                if tuple(top[ti].shape) != shape:
                    raise NetError('%s: layer %r (%s) is used in place on blob %r but changes its '
                                   'shape from %s to %s; give its top another name'
                                   % (where, lp.name, lp.type, lp.top[ti], _dims(shape),
                                      _dims(top[ti].shape)))
            for t, tid in zip(top, tids):
                info('Top shape: %s (%d)' % (' '.join(str(d) for d in t.shape), t.count))
            # Parameters: learnable unless lr_mult is 0; shared by name.
            nparams = len(layer.blobs)
            if len(lp.param) > nparams:
                raise NetError('%s: Too many params specified for layer %r (%d param entries, '
                               'the layer has %d parameter blobs)'
                               % (where, lp.name, len(lp.param), nparams))
            layer.param_propagate_down = []
            for pi in range(nparams):
                spec = lp.param[pi] if pi < len(lp.param) else caffe_pb2.ParamSpec()
                pneed = spec.lr_mult != 0
                need_backward |= pneed
                layer.param_propagate_down.append(pneed)
            for pi in range(nparams):
                self._append_param(li, pi)
            self._layer_need_backward.append(need_backward)
            if need_backward:
                for tid in tids:
                    self._blob_need_backward[tid] = True

        self._analyse_backward(info)
        self._outputs = []
        for name in sorted(available):
            info('This network produces output %s' % name)
            self._outputs.append(self._blob_index[name])
        # A TEST net (im_detect, rpn_generate, scoring) runs forward only, almost always: it
        # records no autograd graph (recording costs: max pooling keeps argmax maps,
        # convolutions save their inputs; 7 % of a VGG16 test forward). Its layers still
        # "need backward" in Caffe's sense, and a backward on it recomputes each layer from
        # the bottoms it kept, with the same result. force_backward asks for backward:
        # then the graph is recorded.
        record = self.phase == Phase.TRAIN or self._force_backward
        for li, layer in enumerate(self.layers):
            if isinstance(layer, TorchLayer):
                layer.record_bottoms = list(self._bottom_need_backward[li])
                layer.record = record and self._layer_need_backward[li]
            if getattr(layer, 'run_in_bf16', False) and any(self._loss_weights[li]):
                layer.run_in_bf16 = False  # losses are computed in float32 under bf16
            if isinstance(layer, TorchLayer) and hasattr(layer, 'compute_inplace'):
                layer.inplace = self._may_overwrite(li)
        self._last_shapes: List[Optional[tuple]] = [None] * len(self.layers)
        # What each layer's last forward saw of its bottoms (see _stale), and which bottoms
        # are also tops (in place: the blob then holds the layer's output).
        self._seen: List[Optional[tuple]] = [None] * len(self.layers)
        self._in_place_bottoms = [[bid in tids for bid in bids]
                                  for bids, tids in zip(self._bottom_ids, self._top_ids)]
        info('Network initialization done.')

    def _check_in_place(self, layer: Layer, lp: caffe_pb2.LayerParameter) -> List[int]:
        """The top indices this layer uses in place; an error if its class cannot run in
        place (see Layer.allow_in_place)."""
        pairs = [ti for ti, tname in enumerate(lp.top)
                 if ti < len(lp.bottom) and lp.bottom[ti] == tname]
        if pairs and getattr(layer, 'allow_in_place', None) is False:
            raise NetError('%s: layer %r: %s Layer does not allow in-place computation (its '
                           'top %r is its bottom); give the top another name'
                           % (self._source, lp.name, lp.type, lp.top[pairs[0]]))
        return pairs

    def _may_overwrite(self, li: int) -> bool:
        """Whether layer li may compute in place, as Caffe does when its top is its bottom:
        not on a net input or a Split's top (those share their tensor with other blobs)."""
        bids, tids = self._bottom_ids[li], self._top_ids[li]
        if len(bids) != 1 or tids != bids or bids[0] in self._inputs:
            return False
        for lj in range(li - 1, -1, -1):
            if bids[0] in self._top_ids[lj]:
                if self._param.layer[lj].type == 'Split':
                    return False
                if lj == li or self._top_ids[lj] != self._bottom_ids[lj]:
                    return True  # the blob's producer (not another in-place layer)
        return False

    def _add_blob(self, name: str, blob: Blob) -> int:
        self._blob_index[name] = len(self._blobs)
        self._blobs.append(blob)
        self._blob_names.append(name)
        return len(self._blobs) - 1

    def _setup_layer(self, li, layer, lp, bottom, top) -> None:
        name = lp.name
        _check_counts(layer, lp, len(bottom), len(top))
        if len(lp.blobs):
            for j, bp in enumerate(lp.blobs):
                try:
                    arr = weights.proto_to_array(bp)
                except ShapeError as e:
                    raise ShapeError('%s: layer %r, blobs %d given in the net: %s'
                                     % (self._source, name, j, e)) from None
                b = Blob(arr.shape)
                b.tensor.copy_(torch.from_numpy(arr))
                layer.blobs.append(b)
        try:
            layer.setup(bottom, top)
            layer.reshape(bottom, top)
        except (NetError, ShapeError, LayerError):
            raise
        except Exception as e:
            raise _layer_error(lp, 'setup', e) from e
        # Loss weights: loss layers weigh their first top 1 by default.
        loss_weights = list(lp.loss_weight)
        if not loss_weights and layer.is_loss:
            loss_weights = [1.0]
        if len(loss_weights) > len(top):
            raise NetError('%s: layer %r has %d loss_weight values for %d tops'
                           % (self._source, name, len(loss_weights), len(top)))
        loss_weights += [0.0] * (len(top) - len(loss_weights))
        for t, w in zip(top, loss_weights):
            if w:
                t.diff_tensor.fill_(w)
        self._loss_weights.append(loss_weights)

    def _append_param(self, li: int, pi: int) -> None:
        lp = self._param.layer[li]
        layer = self.layers[li]
        spec = lp.param[pi] if pi < len(lp.param) else caffe_pb2.ParamSpec()
        net_pid = len(self._params)
        pname = spec.name
        self._params.append(layer.blobs[pi])
        self._param_layer_indices.append((li, pi))
        self._param_display_names.append(pname if pname else str(pi))
        if not pname or pname not in self._param_names_index:
            # This layer owns the parameter.
            self._param_owners.append(-1)
            if pname:
                self._param_names_index[pname] = net_pid
            self._learnable_param_ids.append(len(self._learnable_params))
            self._learnable_params.append(layer.blobs[pi])
            self._has_params_lr.append(spec.HasField('lr_mult'))
            self._has_params_decay.append(spec.HasField('decay_mult'))
            self._params_lr.append(spec.lr_mult)
            self._params_weight_decay.append(spec.decay_mult)
            return
        owner_pid = self._param_names_index[pname]
        self._param_owners.append(owner_pid)
        oli, opi = self._param_layer_indices[owner_pid]
        owner_blob = self.layers[oli].blobs[opi]
        this_blob = layer.blobs[pi]
        strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
        if strict and tuple(owner_blob.shape) != tuple(this_blob.shape):
            raise ShapeError(
                'Cannot share param %r owned by layer %r with layer %r; shape mismatch. Owner '
                'layer param shape is %s; sharing layer shape is %s'
                % (pname, self._layer_names[oli], lp.name, _shape_str(owner_blob),
                   _shape_str(this_blob)))
        if not strict and owner_blob.count != this_blob.count:
            raise ShapeError('Cannot share param %r owned by layer %r with layer %r; count '
                             'mismatch. Owner layer param shape is %s; sharing layer expects %s'
                             % (pname, self._layer_names[oli], lp.name, _shape_str(owner_blob),
                                _shape_str(this_blob)))
        lid = self._learnable_param_ids[owner_pid]
        self._learnable_param_ids.append(lid)
        if spec.HasField('lr_mult'):
            if self._has_params_lr[lid] and self._params_lr[lid] != spec.lr_mult:
                raise NetError("Shared param %r has mismatched lr_mult." % pname)
            self._has_params_lr[lid] = True
            self._params_lr[lid] = spec.lr_mult
        if spec.HasField('decay_mult'):
            if self._has_params_decay[lid] and self._params_weight_decay[lid] != spec.decay_mult:
                raise NetError("Shared param %r has mismatched decay_mult." % pname)
            self._has_params_decay[lid] = True
            self._params_weight_decay[lid] = spec.decay_mult
        # One blob: the sharing layer uses the owner's (as Caffe shares data and diff).
        layer.blobs[pi] = owner_blob
        self._params[net_pid] = owner_blob

    def _analyse_backward(self, info) -> None:
        under_loss, skip = set(), set()
        for li in range(len(self.layers) - 1, -1, -1):
            contributes, skip_down = False, True
            for ti, tid in enumerate(self._top_ids[li]):
                name = self._blob_names[tid]
                if self._loss_weights[li][ti] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self._layer_need_backward[li] and skip_down:
                self._layer_need_backward[li] = False
                self._bottom_need_backward[li] = [False] * len(self._bottom_ids[li])
            if not contributes:
                self._layer_need_backward[li] = False
            info('%s %s backward computation.' % (
                self._layer_names[li],
                'needs' if self._layer_need_backward[li] else 'does not need'))
            for bi, bid in enumerate(self._bottom_ids[li]):
                name = self._blob_names[bid]
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[li][bi] = False
                if not self._bottom_need_backward[li][bi]:
                    skip.add(name)
        if self._force_backward:
            for li, layer in enumerate(self.layers):
                self._layer_need_backward[li] = True
                for bi, bid in enumerate(self._bottom_ids[li]):
                    nb = self._bottom_need_backward[li][bi] or layer.allow_force_backward(bi)
                    self._bottom_need_backward[li][bi] = nb
                    self._blob_need_backward[bid] = self._blob_need_backward[bid] or nb
                layer.param_propagate_down = [True] * len(layer.blobs)

    # ---- running ------------------------------------------------------------------------------
    def _forward(self, start: int, end: int) -> float:
        """Run layers start..end (inclusive); returns the weighted loss of those layers."""
        loss = None
        lowp = _config.low_precision()
        before, after = self._before_forward, self._after_forward
        with _net_precision_scope(lowp):
            for li in range(start, end + 1):
                layer = self.layers[li]
                bottom = [self._blobs[i] for i in self._bottom_ids[li]]
                top = [self._blobs[i] for i in self._top_ids[li]]
                for hook in before:
                    hook(li)
                try:
                    with _precision_scope(layer, bottom, lowp):
                        if isinstance(layer, TorchLayer):
                            shapes = tuple(b.shape for b in bottom)
                            if shapes != self._last_shapes[li]:
                                layer.reshape(bottom, top)
                                self._last_shapes[li] = shapes
                            layer.run_forward(bottom, top)
                        else:
                            layer.run_forward(bottom, top)
                except (NetError, ShapeError, LayerError):
                    raise
                except Exception as e:
                    raise _layer_error(self._param.layer[li], 'forward', e) from e
                self._seen[li] = _bottom_state(bottom)
                for hook in after:
                    hook(li)
                for t, w in zip(top, self._loss_weights[li]):
                    if w:
                        term = (t.tensor * t.diff_tensor).sum()
                        loss = term if loss is None else loss + term
        return float(loss) if loss is not None else 0.0

    def _backward(self, start: int, end: int) -> None:
        """Run backward of layers start down to end (inclusive)."""
        lowp = _config.low_precision()
        before, after = self._before_backward, self._after_backward
        for li in range(start, end - 1, -1):
            if not self._layer_need_backward[li]:
                continue
            layer = self.layers[li]
            bottom = [self._blobs[i] for i in self._bottom_ids[li]]
            top = [self._blobs[i] for i in self._top_ids[li]]
            for hook in before:
                hook(li)
            try:
                if self._stale(li, bottom):
                    with _precision_scope(layer, bottom, lowp):
                        layer.refresh_for_backward(bottom, top)
                    self._seen[li] = _bottom_state(bottom)
                if lowp is not None and not getattr(layer, 'run_in_bf16', False):
                    _to_float32(top, diff=True)
                layer.run_backward(top, list(self._bottom_need_backward[li]), bottom)
            except (NetError, ShapeError, LayerError):
                raise
            except Exception as e:
                raise _layer_error(self._param.layer[li], 'backward', e) from e
            for hook in after:
                hook(li)

    def _stale(self, li: int, bottom: Sequence[Blob]) -> bool:
        """Whether layer li's forward state is not of its bottoms' current data: no forward
        yet, or a bottom whose tensor was replaced (reshaped, set by another forward) or
        whose array Python was handed since (it may have written into it).

        Caffe's backward reads the blobs as they are; the engine's layers keep what forward
        computed (autograd graphs, masks), valid only for the data forward saw. An in-place
        bottom holds the layer's own output, so only its shape is checked there: its data
        changing (a later layer converting it, Python reading it) says nothing about the
        input forward saw, which is gone.
        """
        seen = self._seen[li]
        if seen is None:
            return True
        for b, (t, version), in_place in zip(bottom, seen, self._in_place_bottoms[li]):
            now = b._data.tensor
            if in_place:
                if now.shape != t.shape:
                    return True
            elif now is not t or b.data_version != version:
                return True
        return False

    def forward_prefilled(self) -> float:
        return self._forward(0, len(self.layers) - 1)

    def forward_backward(self) -> float:
        """One training pass (used by the solver): forward, then backward; returns the loss."""
        loss = self._forward(0, len(self.layers) - 1)
        self._backward(len(self.layers) - 1, 0)
        return loss


# ---- helpers -------------------------------------------------------------------------------

def _bottom_state(bottom: Sequence[Blob]) -> tuple:
    """What a layer's forward saw of its bottoms: each one's tensor and data version."""
    return tuple((b._data.tensor, b.data_version) for b in bottom)


def _to_float32(blobs: Sequence[Blob], diff: bool = False) -> None:
    """Give bf16 values (or gradients) of these blobs back in float32, in the blobs, and in
    the standard contiguous order (a bf16 convolution's output is channels-last: code
    written for NCHW, e.g. slicing channels, would crawl through it)."""
    for b in blobs:
        t = b.diff_tensor if diff else b.tensor
        if t.dtype in (torch.bfloat16, torch.float16):
            (b.set_diff_tensor if diff else b.set_tensor)(
                t.to(torch.float32, memory_format=torch.contiguous_format))


def _net_precision_scope(lowp: Optional[torch.dtype]):
    """The autocast context a forward pass runs in under set_precision('bf16'): one for the
    whole pass (entering one per layer cost ~20 us a layer)."""
    if lowp is None:
        return contextlib.nullcontext()
    return torch.autocast(_config.device().type, dtype=lowp)


_NO_SCOPE = contextlib.nullcontext()


def _precision_scope(layer: Layer, bottom: Sequence[Blob], lowp: Optional[torch.dtype]):
    """A layer's context inside the pass's autocast (see _net_precision_scope).

    Layers marked `run_in_bf16` (TorchLayers other than losses) run inside it, so
    convolutions and inner products compute in bf16; every other layer (losses, Python
    layers, layers with hand-written torch code) gets float32 bottoms and no autocast.
    """
    if lowp is None or getattr(layer, 'run_in_bf16', False):
        return _NO_SCOPE
    _to_float32(bottom)
    return torch.autocast(_config.device().type, enabled=False)


def _parse_net_args(args, kwargs):
    """Accept pycaffe's two signatures: (file, phase, ...) and the legacy (file, weights, phase)."""
    args = list(args)
    spec = kwargs.pop('network_file', None) or kwargs.pop('spec', None)
    if spec is None:
        if not args:
            raise TypeError('Net() needs a network prototxt file')
        spec = args.pop(0)
    weights = kwargs.pop('weights', None)
    phase = kwargs.pop('phase', None)
    level = int(kwargs.pop('level', 0))
    stages = list(kwargs.pop('stages', None) or [])
    if kwargs:
        raise TypeError('Net() got unexpected arguments: %s' % ', '.join(sorted(kwargs)))
    if args and isinstance(args[0], (str, bytes, os.PathLike)):
        weights = os.fspath(args.pop(0))
    if args:
        phase = args.pop(0)
    if args:
        raise TypeError('Net() takes (network_file, phase) or (network_file, weights, phase)')
    if phase is None:
        raise TypeError('Net() needs a phase: caffe.TRAIN or caffe.TEST')
    if int(phase) not in (0, 1):
        raise ValueError('phase must be caffe.TRAIN or caffe.TEST, got %r' % (phase,))
    if not isinstance(spec, caffe_pb2.NetParameter):
        spec = os.fspath(spec)
    return spec, int(phase), weights, level, stages


def _create_layer(lp: caffe_pb2.LayerParameter) -> Layer:
    cls = layer_class(lp.type, lp.name)
    factory = getattr(cls, 'create', None)
    return factory(lp) if factory is not None else cls(lp)


def _check_counts(layer, lp, nb, nt) -> None:
    def check(kind, n, exact, lo, hi):
        if exact is not None and n != exact:
            raise NetError('layer %r (%s) takes %d %s blob(s), got %d'
                           % (lp.name, lp.type, exact, kind, n))
        if lo is not None and n < lo:
            raise NetError('layer %r (%s) takes at least %d %s blob(s), got %d'
                           % (lp.name, lp.type, lo, kind, n))
        if hi is not None and n > hi:
            raise NetError('layer %r (%s) takes at most %d %s blob(s), got %d'
                           % (lp.name, lp.type, hi, kind, n))
    check('bottom', nb, layer.exact_num_bottom, layer.min_bottom, layer.max_bottom)
    check('top', nt, layer.exact_num_top, layer.min_top, layer.max_top)


def _layer_error(lp, stage: str, e: BaseException) -> LayerError:
    import traceback
    tb = ''.join(traceback.format_exception(type(e), e, e.__traceback__))
    return LayerError('layer %r (%s) failed in %s: %s: %s\n%s'
                      % (lp.name, lp.type, stage, type(e).__name__, e, tb))


def _dims(shape) -> str:
    return ' x '.join(str(d) for d in shape) if len(shape) else '(no shape)'


def _shape_str(b: Blob) -> str:
    return '%s (%d)' % (' '.join(str(d) for d in b.shape), b.count)
