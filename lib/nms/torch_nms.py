"""Non-maximum suppression with py-faster-rcnn's semantics on torchvision's kernel.

py-faster-rcnn's NMS (``py_cpu_nms``, the Cython ``cpu_nms`` and the CUDA
``gpu_nms``) measures boxes with the +1 convention, ``area = (x2 - x1 + 1) *
(y2 - y1 + 1)``, and drops a box when its IoU with an already kept box is
*greater than* the threshold.  ``torchvision.ops.nms`` uses the same greater-than
rule but no +1.  Shifting ``x2`` and ``y2`` by +1 before the call makes every
width, height, intersection and union equal to the +1 ones, so the kept set is
the same (exactly so for integer coordinates; for fractional ones the shifted
sum may round differently in the last bit).

Ties.  The originals visit boxes in ``scores.argsort()[::-1]`` order, whose
order among equal scores depends on NumPy's sort algorithm.  Here the order is
fixed: highest score first and, among equal scores, the *higher index first*
(reversed stable sort -- what the originals did whenever NumPy's sort was
stable).  To stop torchvision from re-ordering ties its own way, the boxes are
handed over already sorted, with strictly decreasing stand-in scores.

The arithmetic runs in the dtype of ``dets`` (float32 or float64), as the
originals did; other dtypes are computed in float32 like the Cython code.

On the CPU the engine's compiled kernel (caffe/bbox_util/nms_kernel.c, built by `make
setup`, used through nms.compiled with the +1 convention) does the work: it computes
exactly what py_cpu_nms computes, branch-free and vectorised, and can stop after
``max_keep`` kept boxes. torchvision's kernel is used on GPUs, and on the CPU
if the kernel could not be built.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torchvision

from nms import compiled

DeviceLike = Union[str, torch.device, None]


def as_dets(dets: np.ndarray, who: str) -> np.ndarray:
    """Check that ``dets`` is an (N, >=5) array ``[x1, y1, x2, y2, score, ...]``."""
    if isinstance(dets, torch.Tensor):
        dets = dets.detach().cpu().numpy()
    dets = np.asarray(dets)
    if dets.ndim != 2 or (dets.shape[0] > 0 and dets.shape[1] < 5):
        raise ValueError('{}: dets must be an (N, 5) array [x1, y1, x2, y2, score], '
                         'got shape {}'.format(who, dets.shape))
    return dets


def nms_order(scores: np.ndarray) -> np.ndarray:
    """Visiting order of NMS: score descending, ties broken by higher index first."""
    return np.argsort(scores, kind='stable')[::-1]


def torch_nms(dets: np.ndarray, thresh: float, device: DeviceLike = None,
              who: str = 'nms', max_keep: Optional[int] = None) -> np.ndarray:
    """Return the indices (int64 array, in visiting order) of the boxes NMS keeps.

    ``device`` is any PyTorch device (None = CPU); results do not depend on it.
    ``max_keep`` stops after that many boxes are kept: the result is the first
    ``max_keep`` of the full answer, at a fraction of the cost (the RPN keeps 2000
    of 12000 boxes).
    """
    dets = as_dets(dets, who)
    n = dets.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    dtype = dets.dtype if dets.dtype in (np.float32, np.float64) else np.float32

    order = nms_order(dets[:, 4])
    boxes = np.array(dets[order, :4], dtype=dtype, copy=True)
    dev = torch.device(device) if device is not None else torch.device('cpu')
    if dev.type == 'cpu' and compiled.available():
        keep_sorted = compiled.nms_sorted(boxes, float(thresh), max_keep)
    else:
        boxes[:, 2:4] += 1  # +1 convention -> torchvision's half-open convention
        boxes_t = torch.from_numpy(boxes).to(dev)
        # Strictly decreasing stand-in scores: torchvision then visits the boxes in
        # exactly the order chosen above, ties included.
        rank = torch.arange(n, 0, -1, dtype=boxes_t.dtype, device=dev)
        keep_sorted = torchvision.ops.nms(boxes_t, rank, float(thresh)).cpu().numpy()
        if max_keep is not None and max_keep >= 0:
            keep_sorted = keep_sorted[:max_keep]
    return order[keep_sorted].astype(np.int64, copy=False)


def resolve_device(use_gpu: bool, device_id: int = 0, explicit: str = '') -> torch.device:
    """Pick the device NMS runs on.

    ``explicit`` (e.g. cfg.NMS_DEVICE = 'cuda:1' or 'cpu') wins when set.  Else
    ``cuda:<device_id>`` when ``use_gpu`` and CUDA is available, else the CPU --
    results are identical, only speed differs.
    """
    if explicit:
        try:
            return torch.device(explicit)
        except (RuntimeError, ValueError) as exc:
            raise ValueError('cfg.NMS_DEVICE = {!r} is not a PyTorch device '
                             '({})'.format(explicit, exc)) from None
    if use_gpu and torch.cuda.is_available():
        if not 0 <= int(device_id) < torch.cuda.device_count():
            raise ValueError('GPU id {} requested for NMS but only {} CUDA device(s) '
                             'exist'.format(device_id, torch.cuda.device_count()))
        return torch.device('cuda', int(device_id))
    return torch.device('cpu')
