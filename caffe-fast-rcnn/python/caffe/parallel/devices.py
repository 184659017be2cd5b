"""Which device each rank computes on.

`--gpu 0,1` names one device per rank; rank r (its local rank, on its machine) takes the
r-th id. On a machine where PyTorch sees no GPU, the ids only say how many ranks to run,
and every rank computes on the CPU (with a warning), so a job written for GPUs can be tried
on a laptop.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .. import _config, _log
from ..errors import CaffeError
from .group import env_local_rank

_TAG = 'caffe.cpp'


def gpu_count() -> int:
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    mps = getattr(torch.backends, 'mps', None)
    return 1 if (mps is not None and mps.is_available()) else 0


def parse_gpu_list(text) -> List[int]:
    """'0,1' -> [0, 1]; 'all' -> every GPU PyTorch sees; '' -> []; an int -> [it]."""
    if isinstance(text, int):
        return [text]
    text = str(text or '').strip()
    if text == 'all':
        return list(range(gpu_count()))
    if not text:
        return []
    try:
        ids = [int(s) for s in text.split(',') if s.strip() != '']
    except ValueError:
        raise CaffeError('--gpu takes device ids separated by commas (or all, or -1 for the '
                         'CPU); got %r' % text) from None
    if len(set(ids)) != len(ids):
        raise CaffeError('--gpu %s names a device twice' % text)
    if len(ids) > 1 and any(i < 0 for i in ids):
        raise CaffeError('--gpu %s: -1 (the CPU) cannot be part of a list; several CPU ranks '
                         'are asked for with several ids on a machine without GPUs' % text)
    return ids


def use_rank_device(gpus: Sequence[int], local_rank: Optional[int] = None) -> torch.device:
    """Set the engine's device for this rank from the --gpu list; returns the device."""
    if local_rank is None:
        local_rank, _ = env_local_rank()
    ids = [g for g in gpus if g >= 0]
    if not ids:
        _config.set_mode_cpu()
        return torch.device('cpu')
    if gpu_count() == 0:
        if local_rank == 0:
            _log.warning(_TAG, 'PyTorch sees no GPU on this machine: the %d ids of --gpu %s '
                         'start %d CPU ranks' % (len(ids), ','.join(map(str, ids)), len(ids)))
        _config.set_mode_cpu()
        return torch.device('cpu')
    device_id = ids[local_rank % len(ids)]
    _config.set_device(device_id)
    _config.set_mode_gpu()
    return _config.device()
