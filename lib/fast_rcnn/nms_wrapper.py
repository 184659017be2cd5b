"""``nms(dets, thresh)``: the one NMS call the detector uses, device chosen by cfg.

Kept boxes are returned as a list of indices into ``dets``, best score first,
as py-faster-rcnn's wrapper did, so ``dets[keep, :]`` works unchanged.

Device: ``cfg.NMS_DEVICE`` if set; otherwise CUDA device ``cfg.GPU_ID`` when
``cfg.USE_GPU_NMS`` and CUDA is available; otherwise the CPU.  ``force_cpu``
always uses the CPU.  All choices return the same indices.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from fast_rcnn.config import cfg
from nms.torch_nms import resolve_device, torch_nms


def nms(dets: np.ndarray, thresh: float, force_cpu: bool = False,
        max_keep: Optional[int] = None) -> List[int]:
    """Return the indices of ``dets`` (N, 5: x1, y1, x2, y2, score) kept by NMS.

    ``max_keep`` (new): only the first that many kept boxes are wanted; NMS stops there.
    """
    if force_cpu:
        device = resolve_device(False)
    else:
        device = resolve_device(bool(cfg.USE_GPU_NMS), int(cfg.GPU_ID),
                                str(cfg.get('NMS_DEVICE', '') or ''))
    return torch_nms(dets, thresh, device=device, who='nms', max_keep=max_keep).tolist()
