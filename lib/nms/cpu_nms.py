"""``from nms.cpu_nms import cpu_nms`` -- the CPU NMS entry point of py-faster-rcnn.

The original was a compiled Cython module; here it runs torchvision's C++ NMS
kernel on the CPU with the original +1 / greater-than semantics (see
:mod:`nms.torch_nms`).
"""

from __future__ import annotations

from typing import List

import numpy as np

from nms.torch_nms import torch_nms


def cpu_nms(dets: np.ndarray, thresh: float) -> List[int]:
    """Return the indices of ``dets`` (N, 5) kept by NMS at ``thresh``, best first."""
    return torch_nms(dets, thresh, device='cpu', who='cpu_nms').tolist()
