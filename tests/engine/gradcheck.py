"""Finite-difference gradient checks of layers through caffe.Net, in float64.

`check_net_gradients(net_text, inputs)` builds the net (which must set
`force_backward: true`) in float64, runs forward, sets random diffs on every output
that is not a loss, runs backward, and compares every input's and every parameter's diff
with central differences of the objective sum(loss_weight * loss) + sum(diff * output).
`forward_net(net_text, inputs)` is its first step, for the layer tests' own checks.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2


def forward_net(net_text: str, inputs: Dict[str, np.ndarray], phase=caffe.TRAIN,
                dtype: torch.dtype = torch.float64, seed: Optional[int] = None,
                weights: Optional[str] = None) -> caffe.Net:
    """The net of `net_text` built in `dtype` (fillers seeded with `seed` when given, then
    the .caffemodel `weights` copied in when given), its input blobs shaped and filled from
    `inputs`, after one forward pass."""
    param = protoio.parse_text(net_text, caffe_pb2.NetParameter())
    with caffe.precision(dtype):
        if seed is not None:
            caffe.set_random_seed(seed)
        net = caffe.Net(param, phase)
        if weights is not None:
            net.copy_from(weights)
        for k, v in inputs.items():
            net.blobs[k].reshape(*np.shape(v))
            net.blobs[k].data[...] = v
        net.reshape()
        net.forward()
    return net


def _objective(net, top_diffs: Dict[str, np.ndarray]) -> float:
    net._forward(0, len(net.layers) - 1)
    total = 0.0
    weights = net.blob_loss_weights
    for name in net.outputs:
        data = net.blobs[name].data
        if weights[name]:
            total += weights[name] * float(np.sum(data))
        else:
            total += float(np.sum(data * top_diffs[name]))
    return total


def check_net_gradients(net_text: str, inputs: Dict[str, np.ndarray], phase=caffe.TRAIN,
                        eps: float = 1e-6, rtol: float = 1e-4, atol: float = 1e-6,
                        skip_inputs: Iterable[str] = (), check_params: bool = True,
                        seed: int = 0) -> caffe.Net:
    """Assert that analytic and numeric gradients agree; returns the net for more checks."""
    rng = np.random.RandomState(seed)
    with caffe.precision(torch.float64):
        net = forward_net(net_text, inputs, phase, torch.float64, seed)
        weights = net.blob_loss_weights
        top_diffs = {n: rng.randn(*net.blobs[n].shape) for n in net.outputs if not weights[n]}
        for p in net._learnable_params:
            p.diff[...] = 0
        for n, d in top_diffs.items():
            net.blobs[n].diff[...] = d
        net._backward(len(net.layers) - 1, 0)
        analytic = {('blob', k): net.blobs[k].diff.copy() for k in inputs if k not in skip_inputs}
        if check_params:
            for lname, ps in net.params.items():
                for i, p in enumerate(ps):
                    analytic[('param', lname, i)] = p.diff.copy()
        for key, grad in analytic.items():
            arr = net.blobs[key[1]].data if key[0] == 'blob' else net.params[key[1]][key[2]].data
            numeric = np.zeros_like(grad)
            flat = arr.reshape(-1)
            nflat = numeric.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                up = _objective(net, top_diffs)
                flat[i] = old - eps
                down = _objective(net, top_diffs)
                flat[i] = old
                nflat[i] = (up - down) / (2 * eps)
            _objective(net, top_diffs)
            if not np.allclose(grad, numeric, rtol=rtol, atol=atol):
                err = np.abs(grad - numeric).max()
                raise AssertionError('gradient of %s differs: max abs err %.3g\nanalytic=%s\nnumeric=%s'
                                     % (key, err, grad.ravel()[:12], numeric.ravel()[:12]))
        return net
