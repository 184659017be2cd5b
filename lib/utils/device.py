"""Choosing where the engine runs from the tools' `--gpu` flag.

py-faster-rcnn's tools take `--gpu N` (default 0). Here `--gpu -1` (or `--cpu`) means
the CPU; a GPU id selects that PyTorch device; and when the machine has no GPU, a GPU id
falls back to the CPU with a warning instead of failing, so the original commands and
experiment scripts run unchanged on a laptop.
"""
from __future__ import annotations

import sys

import caffe
import torch


def gpu_available() -> bool:
    return torch.cuda.is_available() or bool(
        getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())


def setup_caffe_device(gpu_id: int, force_cpu: bool = False) -> int:
    """Set caffe's mode and device; returns the GPU id in use or -1 for the CPU."""
    from fast_rcnn.config import cfg
    if force_cpu or gpu_id is None or gpu_id < 0:
        caffe.set_mode_cpu()
        cfg.USE_GPU_NMS = False
        cfg.GPU_ID = -1
        return -1
    if not gpu_available():
        sys.stderr.write('Warning: --gpu %d requested but PyTorch sees no GPU here; running on '
                         'the CPU (pass --gpu -1 to silence this)\n' % gpu_id)
        caffe.set_mode_cpu()
        cfg.USE_GPU_NMS = False
        cfg.GPU_ID = -1
        return -1
    caffe.set_mode_gpu()
    caffe.set_device(gpu_id)
    cfg.GPU_ID = gpu_id
    return gpu_id
