"""The Python face of Net, as pycaffe's `pycaffe.py` and `_caffe.cpp` present it.

Dictionaries of blobs, parameters and layers keyed by name; `forward` and `backward` that
take blobs by keyword and run all or part of the net; `forward_all` over batches;
weights in and out of files. Added to `Net` here so that net.py stays about building and
running a net.
"""
from __future__ import annotations

import collections
from itertools import zip_longest
from typing import Dict, List, Optional

import numpy as np

from . import weights as _weights
from .net import Net


def _blobs(self) -> 'collections.OrderedDict[str, object]':
    """An OrderedDict (name -> Blob) of every blob, in the order the net created them."""
    return collections.OrderedDict(zip(self._blob_names, self._blobs))


def _blob_loss_weights(self):
    weights = collections.OrderedDict((n, 0.0) for n in self._blob_names)
    for li, tids in enumerate(self._top_ids):
        for tid, w in zip(tids, self._loss_weights[li]):
            if w:
                weights[self._blob_names[tid]] = w
    return weights


def _layer_dict(self):
    return collections.OrderedDict(zip(self._layer_names, self.layers))


def _params(self):
    """An OrderedDict (layer name -> list of parameter Blobs) of layers that have any."""
    return collections.OrderedDict((name, list(layer.blobs))
                                   for name, layer in zip(self._layer_names, self.layers)
                                   if len(layer.blobs))


def _inputs(self) -> List[str]:
    return [self._blob_names[i] for i in self._inputs]


def _outputs(self) -> List[str]:
    return [self._blob_names[i] for i in self._outputs]


def _top_names(self):
    return collections.OrderedDict((name, [self._blob_names[i] for i in ids])
                                   for name, ids in zip(self._layer_names, self._top_ids))


def _bottom_names(self):
    return collections.OrderedDict((name, [self._blob_names[i] for i in ids])
                                   for name, ids in zip(self._layer_names, self._bottom_ids))


def _layer_index(self, name: str) -> int:
    try:
        return self._layer_names.index(name)
    except ValueError:
        raise KeyError('no layer named %r in net %r' % (name, self._name)) from None


def _forward(self, blobs: Optional[List[str]] = None, start: Optional[str] = None,
             end: Optional[str] = None, **kwargs) -> Dict[str, np.ndarray]:
    """Forward from layer `start` to layer `end` (names, inclusive), inputs by keyword.

    Returns {blob name: data} for the net's outputs (or `end`'s tops) plus `blobs`.
    """
    blobs = list(blobs or [])
    start_ind = _layer_index(self, start) if start is not None else 0
    if end is not None:
        end_ind = _layer_index(self, end)
        outputs = set(self.top_names[end] + blobs)
    else:
        end_ind = len(self.layers) - 1
        outputs = set(self.outputs + blobs)
    if kwargs:
        if set(kwargs) != set(self.inputs):
            raise Exception('Input blob arguments do not match net inputs: got %s, the net '
                            'takes %s' % (sorted(kwargs), self.inputs))
        for name, arr in kwargs.items():
            if arr.shape[0] != self.blobs[name].shape[0]:
                raise Exception('Input is not batch sized: %r has %d items, the blob %d'
                                % (name, arr.shape[0], self.blobs[name].shape[0]))
            self.blobs[name].data[...] = arr
    self._forward(start_ind, end_ind)
    return {name: self.blobs[name].data for name in outputs}


def _backward(self, diffs: Optional[List[str]] = None, start: Optional[str] = None,
              end: Optional[str] = None, **kwargs) -> Dict[str, np.ndarray]:
    """Backward from layer `start` down to layer `end`, top diffs by keyword.

    Returns {blob name: diff} for the net's inputs (or `end`'s bottoms) plus `diffs`.
    """
    diffs = list(diffs or [])
    start_ind = _layer_index(self, start) if start is not None else len(self.layers) - 1
    if end is not None:
        end_ind = _layer_index(self, end)
        outputs = set(self.bottom_names[end] + diffs)
    else:
        end_ind = 0
        outputs = set(self.inputs + diffs)
    if kwargs:
        if set(kwargs) != set(self.outputs):
            raise Exception('Top diff arguments do not match net outputs: got %s, the net '
                            'outputs %s' % (sorted(kwargs), self.outputs))
        for name, diff in kwargs.items():
            diff = np.asarray(diff)
            if diff.ndim and diff.shape[0] != self.blobs[name].shape[0]:
                raise Exception('Diff is not batch sized')
            self.blobs[name].diff[...] = diff
    self._backward(start_ind, end_ind)
    return {name: self.blobs[name].diff for name in outputs}


def _batch(self, blobs):
    """Split {name: array} into batches the size of the net's first input."""
    num = len(next(iter(blobs.values())))
    batch_size = next(iter(self.blobs.values())).shape[0] if not self.inputs else \
        self.blobs[self.inputs[0]].shape[0]
    remainder = num % batch_size
    for b in range(num // batch_size):
        i = b * batch_size
        yield {name: blobs[name][i:i + batch_size] for name in blobs}
    if remainder > 0:
        padded = {}
        for name in blobs:
            pad = np.zeros((batch_size - remainder,) + blobs[name].shape[1:])
            padded[name] = np.concatenate([blobs[name][-remainder:], pad])
        yield padded


def _forward_all(self, blobs=None, **kwargs):
    """Forward over all items of the keyword inputs, batch by batch; returns stacked outputs."""
    all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
    for batch in _batch(self, {name: kwargs[name] for name in self.inputs if name in kwargs}):
        outs = self.forward(blobs=blobs, **batch)
        for out, arr in outs.items():
            all_outs[out].extend(arr.copy())
    pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values()))) if kwargs else 0
    for out in all_outs:
        all_outs[out] = np.asarray(all_outs[out])
        if pad:
            all_outs[out] = all_outs[out][:-pad]
    return all_outs


def _forward_backward_all(self, blobs=None, diffs=None, **kwargs):
    """forward_all and backward over all items; inputs and output diffs by keyword."""
    all_outs = {out: [] for out in set(self.outputs + (blobs or []))}
    all_diffs = {diff: [] for diff in set(self.inputs + (diffs or []))}
    forward_batches = _batch(self, {name: kwargs[name] for name in self.inputs if name in kwargs})
    backward_batches = _batch(self, {name: kwargs[name] for name in self.outputs if name in kwargs})
    for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
        batch_blobs = self.forward(blobs=blobs, **fb)
        batch_diffs = self.backward(diffs=diffs, **bb)
        for out, arr in batch_blobs.items():
            all_outs[out].extend(arr.copy())
        for d, arr in batch_diffs.items():
            all_diffs[d].extend(arr.copy())
    for out, d in zip(all_outs, all_diffs):
        all_outs[out] = np.asarray(all_outs[out])
        all_diffs[d] = np.asarray(all_diffs[d])
    pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values()))) if kwargs else 0
    if pad:
        for out in all_outs:
            all_outs[out] = all_outs[out][:-pad]
        for d in all_diffs:
            all_diffs[d] = all_diffs[d][:-pad]
    return all_outs, all_diffs


def _set_input_arrays(self, data, labels, layer_idx: int = 0):
    """Feed a MemoryData layer (pycaffe's set_input_arrays)."""
    layer = self.layers[layer_idx]
    if not hasattr(layer, 'reset'):
        raise TypeError('set_input_arrays needs a MemoryData layer at index %d, found %s'
                        % (layer_idx, layer.type))
    layer.reset(data, labels)


def _copy_from(self, path: str) -> None:
    """Copy weights of same-named layers from a .caffemodel (or .h5) file."""
    if str(path).endswith(('.h5', '.hdf5')):
        _weights.load_hdf5(self, path)
    else:
        _weights.copy_from_file(self, path)


def _share_with(self, other: Net) -> None:
    """Use `other`'s parameter blobs for same-named layers (Caffe's ShareTrainedLayersWith)."""
    index = {name: i for i, name in enumerate(self._layer_names)}
    for name, layer in zip(other._layer_names, other.layers):
        li = index.get(name)
        if li is None:
            continue
        mine = self.layers[li].blobs
        if len(mine) != len(layer.blobs):
            raise ValueError('Incompatible number of blobs for layer %r' % name)
        for j, src in enumerate(layer.blobs):
            if tuple(src.shape) != tuple(mine[j].shape):
                raise ValueError('Cannot share param %d weights from layer %r; shape mismatch: '
                                 '%s vs %s' % (j, name, src.shape, mine[j].shape))
            mine[j].share_data(src)


def _clear_param_diffs(self, lazy: bool = False) -> None:
    """Zero every learnable parameter's gradient. Arrays Python holds from `.diff` see the
    zeros at once; the solver passes lazy=True (see Blob.clear_diff): its next backward
    overwrites the buffers, and apply_update reads every gradient, so no stale value
    survives a step."""
    for b in self._learnable_params:
        if lazy:
            b.clear_diff()
        else:
            b.diff_tensor.zero_()


def _reshape(self) -> None:
    """Reshape every layer for the current input shapes (Caffe's Net::Reshape)."""
    for li, layer in enumerate(self.layers):
        bottom = [self._blobs[i] for i in self._bottom_ids[li]]
        top = [self._blobs[i] for i in self._top_ids[li]]
        layer.reshape(bottom, top)
        self._last_shapes[li] = tuple(b.shape for b in bottom)


def _layer_callback(fn):
    """A callable of the layer index: a function, or an object with `run(layer)` (the NCCL
    object that BVLC's python/train.py passes to `net.after_backward`)."""
    run = getattr(fn, 'run', None)
    if callable(run):
        return run
    if not callable(fn):
        raise TypeError('a net callback takes the layer index; got %r' % (fn,))
    return fn


def _before_forward(self, fn) -> None:
    """Call `fn(layer_index)` before each layer's forward (pycaffe's before_forward)."""
    self._before_forward.append(_layer_callback(fn))


def _after_forward(self, fn) -> None:
    """Call `fn(layer_index)` after each layer's forward."""
    self._after_forward.append(_layer_callback(fn))


def _before_backward(self, fn) -> None:
    """Call `fn(layer_index)` before each layer's backward (layers that run backward only)."""
    self._before_backward.append(_layer_callback(fn))


def _after_backward(self, fn) -> None:
    """Call `fn(layer_index)` after each layer's backward; `net.after_backward(nccl)` makes
    data-parallel training reduce each layer's gradients as soon as they are complete."""
    self._after_backward.append(_layer_callback(fn))


def _name_get(self) -> str:
    return self._name


def _name_set(self, value: str) -> None:
    self._name = str(value)


Net.blobs = property(_blobs)
Net.blob_loss_weights = property(_blob_loss_weights)
Net.layer_dict = property(_layer_dict)
Net.params = property(_params)
Net.inputs = property(_inputs)
Net.outputs = property(_outputs)
Net.top_names = property(_top_names)
Net.bottom_names = property(_bottom_names)
Net.name = property(_name_get, _name_set)
Net.forward = _forward
Net.backward = _backward
Net.forward_all = _forward_all
Net.forward_backward_all = _forward_backward_all
Net.set_input_arrays = _set_input_arrays
Net._batch = _batch
Net.copy_from = _copy_from
Net.share_with = _share_with
Net.save = lambda self, path: _weights.save_caffemodel(self, path)
Net.save_hdf5 = lambda self, path: _weights.save_hdf5(self, path)
Net.load_hdf5 = lambda self, path: _weights.load_hdf5(self, path)
Net.clear_param_diffs = _clear_param_diffs
Net.before_forward = _before_forward
Net.after_forward = _after_forward
Net.before_backward = _before_backward
Net.after_backward = _after_backward
Net.reshape = _reshape
Net._top_ids_of = lambda self, i: list(self._top_ids[i])
Net._bottom_ids_of = lambda self, i: list(self._bottom_ids[i])
