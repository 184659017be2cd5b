"""NMS: every entry point equals a plain reference with the original semantics.

The reference below is written for clarity only: +1 box areas, suppression when
IoU > thresh, boxes visited by score descending and, among equal scores, higher
index first.
"""
import numpy as np
import pytest
import torch
import torchvision

import nms.gpu_nms as gpu_nms_module
from fast_rcnn.nms_wrapper import nms
from nms.cpu_nms import cpu_nms
from nms.gpu_nms import gpu_nms
from nms.py_cpu_nms import py_cpu_nms


def reference_nms(dets, thresh):
    n = len(dets)
    order = sorted(range(n), key=lambda i: (-float(dets[i][4]), -i))
    suppressed = [False] * n
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        x1, y1, x2, y2 = (float(v) for v in dets[i][:4])
        area_i = (x2 - x1 + 1) * (y2 - y1 + 1)
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            a1, b1, a2, b2 = (float(v) for v in dets[j][:4])
            w = max(0.0, min(x2, a2) - max(x1, a1) + 1)
            h = max(0.0, min(y2, b2) - max(y1, b1) + 1)
            inter = w * h
            area_j = (a2 - a1 + 1) * (b2 - b1 + 1)
            if inter / (area_i + area_j - inter) > thresh:
                suppressed[j] = True
    return keep


def all_impls(dets, thresh):
    return {
        'nms': nms(dets, thresh),
        'nms_force_cpu': nms(dets, thresh, force_cpu=True),
        'cpu_nms': cpu_nms(dets, thresh),
        'gpu_nms': gpu_nms(dets, thresh, device_id=0),
        'py_cpu_nms': py_cpu_nms(dets, thresh),
    }


@pytest.fixture(autouse=True)
def _quiet_gpu_fallback(monkeypatch):
    monkeypatch.setattr(gpu_nms_module, '_warned_no_cuda', True)


def test_hand_case():
    dets = np.array([[0, 0, 9, 9, 0.9],
                     [0, 0, 9, 8, 0.8],      # IoU with box 0 = 90/100
                     [20, 20, 29, 29, 0.7],
                     [0, 0, 9, 4, 0.95]],    # IoU with box 0 = 50/100 exactly
                    dtype=np.float32)
    for name, keep in all_impls(dets, 0.5).items():
        # box 3 first (best score); box 0 has IoU exactly 0.5 with it: kept (not >)
        assert keep == [3, 0, 2], name
    for name, keep in all_impls(dets, 0.3).items():
        assert keep == [3, 2], name
    assert all(isinstance(i, int) for i in nms(dets, 0.5))


def test_plus_one_convention_matters_and_is_followed():
    # 2x2 pixel boxes touching at one pixel: +1 IoU = 1/7; torchvision's own IoU = 0
    dets = np.array([[0, 0, 1, 1, 0.9], [1, 1, 2, 2, 0.8]], dtype=np.float32)
    t = torch.from_numpy(dets)
    assert torchvision.ops.nms(t[:, :4], t[:, 4], 0.1).tolist() == [0, 1]
    assert reference_nms(dets, 0.1) == [0]
    for name, keep in all_impls(dets, 0.1).items():
        assert keep == [0], name
    for name, keep in all_impls(dets, 0.15).items():
        assert keep == [0, 1], name


def test_ties_visit_higher_index_first():
    dets = np.array([[0, 0, 9, 9, 0.5],
                     [0, 0, 9, 9, 0.5],
                     [1, 1, 9, 9, 0.5],
                     [50, 50, 60, 60, 0.5]], dtype=np.float32)
    assert reference_nms(dets, 0.5) == [3, 2]
    for name, keep in all_impls(dets, 0.5).items():
        assert keep == [3, 2], name


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('thresh', [0.0, 0.3, 0.5, 0.7, 1.0])
def test_random_sets_equal_reference(dtype, thresh):
    rng = np.random.default_rng(int(thresh * 10) + (dtype == np.float64))
    for trial in range(6):
        n = int(rng.integers(1, 120))
        xy = rng.integers(0, 60, (n, 2))
        wh = rng.integers(0, 30, (n, 2))
        if trial % 2:
            # integer corners with many tied scores
            scores = rng.integers(0, 4, n) / 4.0
            boxes = np.hstack([xy, xy + wh]).astype(np.float64)
        else:
            scores = rng.random(n)
            boxes = np.hstack([xy, xy + wh]) + rng.random((n, 4)) * [1, 1, 0, 0]
        dets = np.hstack([boxes, scores[:, None]]).astype(dtype)
        expected = reference_nms(dets, thresh)
        for name, keep in all_impls(dets, thresh).items():
            assert keep == expected, (name, trial)


def test_empty_and_bad_input():
    empty = np.zeros((0, 5), np.float32)
    for name, keep in all_impls(empty, 0.5).items():
        assert keep == [], name
    with pytest.raises(ValueError, match=r'nms: dets must be an \(N, 5\) array'):
        nms(np.zeros((3, 4), np.float32), 0.5)
    with pytest.raises(ValueError, match='py_cpu_nms'):
        py_cpu_nms(np.zeros(5), 0.5)


def test_device_choice_from_cfg(isolated_cfg):
    dets = np.array([[0, 0, 9, 9, 0.9], [0, 0, 9, 8, 0.8]], dtype=np.float32)
    isolated_cfg.NMS_DEVICE = 'cpu'
    assert nms(dets, 0.5) == [0]
    isolated_cfg.NMS_DEVICE = 'not-a-device'
    with pytest.raises(ValueError, match='cfg.NMS_DEVICE'):
        nms(dets, 0.5)
    isolated_cfg.NMS_DEVICE = ''
    isolated_cfg.USE_GPU_NMS = False
    assert nms(dets, 0.5) == [0]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-CUDA fallback')
def test_gpu_nms_without_cuda_warns_once(monkeypatch):
    monkeypatch.setattr(gpu_nms_module, '_warned_no_cuda', False)
    dets = np.array([[0, 0, 9, 9, 0.9]], dtype=np.float32)
    with pytest.warns(RuntimeWarning, match='CUDA is not available'):
        assert gpu_nms(dets, 0.5) == [0]
    assert gpu_nms_module._warned_no_cuda is True
