"""``from nms.gpu_nms import gpu_nms`` -- the GPU NMS entry point of py-faster-rcnn.

Runs torchvision's NMS on CUDA device ``device_id``.  On a machine without CUDA
it runs the same kernel on the CPU (with a one-time warning) instead of failing:
the kept indices are identical, only slower for very large inputs.
"""

from __future__ import annotations

import warnings
from typing import List

import numpy as np
import torch

from nms.torch_nms import torch_nms

_warned_no_cuda = False


def gpu_nms(dets: np.ndarray, thresh: float, device_id: int = 0) -> List[int]:
    """Return the indices of ``dets`` (N, 5) kept by NMS at ``thresh``, best first."""
    global _warned_no_cuda
    if torch.cuda.is_available():
        if not 0 <= int(device_id) < torch.cuda.device_count():
            raise ValueError('gpu_nms: device_id {} requested but only {} CUDA '
                             'device(s) exist'.format(device_id, torch.cuda.device_count()))
        device = torch.device('cuda', int(device_id))
    else:
        if not _warned_no_cuda:
            warnings.warn('gpu_nms: CUDA is not available, running NMS on the CPU '
                          '(same results)', RuntimeWarning, stacklevel=2)
            _warned_no_cuda = True
        device = torch.device('cpu')
    return torch_nms(dets, thresh, device=device, who='gpu_nms').tolist()
