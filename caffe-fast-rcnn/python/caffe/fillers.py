"""Fillers: how learnable blobs get their first values (Caffe's filler.hpp).

Each filler writes into a torch tensor using the engine's seeded generator, so
`caffe.set_random_seed` makes net construction repeatable. Fan-in and fan-out follow
Caffe: fan_in = count / shape[0], fan_out = count / shape[1].
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from . import _config
from .errors import NetError
from .proto import caffe_pb2

_FILLERS: Dict[str, Callable] = {}


def _filler(name):
    def deco(fn):
        _FILLERS[name] = fn
        return fn
    return deco


def _fans(t: torch.Tensor):
    count = t.numel()
    fan_in = count // t.shape[0] if t.dim() >= 1 and t.shape[0] else count
    fan_out = count // t.shape[1] if t.dim() >= 2 and t.shape[1] else count
    return fan_in, fan_out


def _variance_n(t: torch.Tensor, p: caffe_pb2.FillerParameter) -> float:
    fan_in, fan_out = _fans(t)
    norm = caffe_pb2.FillerParameter
    if p.variance_norm == norm.AVERAGE:
        n = (fan_in + fan_out) / 2.0
    elif p.variance_norm == norm.FAN_OUT:
        n = float(fan_out)
    else:
        n = float(fan_in)
    if n <= 0:
        raise NetError('the %s filler needs a blob with inputs and outputs, got shape %s'
                       % (p.type, tuple(t.shape)))
    return n


@_filler('constant')
def _constant(t, p, gen):
    t.fill_(p.value)


@_filler('uniform')
def _uniform(t, p, gen):
    if p.min > p.max:
        raise NetError('the uniform filler needs min <= max, got min %g, max %g' % (p.min, p.max))
    t.uniform_(p.min, p.max, generator=gen)


@_filler('gaussian')
def _gaussian(t, p, gen):
    if p.std < 0:
        raise NetError('the gaussian filler needs std >= 0, got %g' % p.std)
    t.normal_(p.mean, p.std, generator=gen)
    if p.sparse >= 0:
        # Keep each weight with probability sparse / num_outputs, as Caffe does.
        if t.dim() < 2:
            raise NetError('the sparse gaussian filler needs a blob of at least 2 axes')
        keep = torch.empty_like(t).bernoulli_(min(1.0, p.sparse / float(t.shape[0])), generator=gen)
        t.mul_(keep)


@_filler('positive_unitball')
def _positive_unitball(t, p, gen):
    t.uniform_(0, 1, generator=gen)
    if not t.numel():
        return
    rows = t.view(t.shape[0], -1) if t.dim() else t.view(1, -1)
    rows.div_(rows.sum(dim=1, keepdim=True))


@_filler('xavier')
def _xavier(t, p, gen):
    scale = math.sqrt(3.0 / _variance_n(t, p))
    t.uniform_(-scale, scale, generator=gen)


@_filler('msra')
def _msra(t, p, gen):
    t.normal_(0.0, math.sqrt(2.0 / _variance_n(t, p)), generator=gen)


@_filler('bilinear')
def _bilinear(t, p, gen):
    if t.dim() != 4 or t.shape[2] != t.shape[3]:
        raise NetError('the bilinear filler needs a 4-axis blob with square kernels, got %s'
                       % (tuple(t.shape),))
    k = t.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - torch.abs(torch.arange(k, dtype=torch.float64) / f - c)
    t.copy_((ramp[:, None] * ramp[None, :]).to(t.dtype).expand_as(t))


def fill(t: torch.Tensor, p: caffe_pb2.FillerParameter) -> torch.Tensor:
    """Fill `t` in place as FillerParameter `p` says; returns `t`."""
    try:
        fn = _FILLERS[p.type]
    except KeyError:
        raise NetError('Unknown filler type %r (known: %s)' % (p.type, ', '.join(sorted(_FILLERS)))) from None
    # Random numbers are drawn in float32 on the CPU so that a net's initial weights do not
    # depend on the device or on the float type it runs in.
    tmp = torch.empty(t.shape, dtype=torch.float32)
    fn(tmp, p, _config.generator(torch.device('cpu')))
    t.copy_(tmp)
    return t


def filler_types():
    return sorted(_FILLERS)
