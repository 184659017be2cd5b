"""The engine's compiled greedy NMS (bbox_util/nms_kernel.c) and bbox_util.nms's fixed-threshold
path on it, against a plain one-box-at-a-time NumPy version of SSD's ApplyNMSFast; the same
checks with torchvision's fallback forced; the loader's fallbacks."""
import os
import warnings

import numpy as np
import pytest
import torch

from caffe import bbox_util as bu
from caffe.bbox_util import nms as bnms
from caffe.bbox_util import nms_kernel


def caffe_jaccard(cand, kept):
    """SSD's JaccardOverlap(NormalizedBBox) of one candidate with each kept box, in the
    boxes' precision: 0 unless the intersection has positive width and height; sizes are 0
    for inverted boxes; inter / (size(cand) + size(kept) - inter)."""
    z = cand.dtype.type(0)
    disjoint = ((kept[:, 0] > cand[2]) | (kept[:, 2] < cand[0])
                | (kept[:, 1] > cand[3]) | (kept[:, 3] < cand[1]))
    w = np.minimum(cand[2], kept[:, 2]) - np.maximum(cand[0], kept[:, 0])
    h = np.minimum(cand[3], kept[:, 3]) - np.maximum(cand[1], kept[:, 1])
    positive = ~disjoint & (w > z) & (h > z)

    def size(b):
        bw, bh = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
        return np.where((bw < z) | (bh < z), z, bw * bh)

    inter = np.where(positive, w * h, z)
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / ((size(cand) + size(kept)) - inter)
    return np.where(positive, iou, z)


def reference_nms(boxes, threshold):
    """ApplyNMSFast's loop (eta 1) on boxes already in score order: positions kept."""
    thr = boxes.dtype.type(threshold)
    kept = []
    for i in range(boxes.shape[0]):
        if not kept or bool((caffe_jaccard(boxes[i], boxes[kept]) <= thr).all()):
            kept.append(i)
    return kept


def random_boxes(rng, n, dtype, grid=None):
    """Boxes in [0, 1]; on a coarse grid (grid=k) many are equal or touch each other."""
    if grid:
        lo = rng.randint(0, grid, (n, 2))
        boxes = np.concatenate([lo, lo + rng.randint(0, 4, (n, 2))], 1) / float(grid)
    else:
        c = rng.uniform(0, 1, (n, 2))
        wh = rng.uniform(0.01, 0.4, (n, 2))
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
    return boxes.astype(dtype)


@pytest.fixture(params=['kernel', 'torchvision'])
def backend(request, monkeypatch):
    if request.param == 'kernel':
        assert nms_kernel.available(), 'build it with `pip install -e .` (make setup)'
    else:
        monkeypatch.setattr(nms_kernel, 'available', lambda: False)
    return request.param


def kept_by_engine(boxes, threshold, groups=None):
    t = torch.from_numpy(boxes)
    g = torch.zeros(len(boxes), dtype=torch.long) if groups is None else torch.from_numpy(groups)
    return bu.nms_ordered_groups(t, g, threshold).tolist()


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('threshold', [0.0, 0.3, 0.45, 0.7, 1.0])
def test_same_kept_boxes_as_applynmsfast(backend, dtype, threshold):
    rng = np.random.RandomState(int(threshold * 100) + (dtype == np.float64))
    for trial, (n, grid) in enumerate([(300, None), (300, 10), (120, 5), (1, None), (2, 3)]):
        boxes = random_boxes(rng, n, dtype, grid)
        assert kept_by_engine(boxes, threshold) == reference_nms(boxes, threshold), trial


def test_ties_touching_empty_and_inverted_boxes(backend):
    f = np.float32
    same = [0.1, 0.1, 0.5, 0.5]
    boxes = np.array([same, same,                           # equal boxes: IoU 1
                      [0.5, 0.1, 0.9, 0.5],                 # touches the first: IoU 0
                      [0.2, 0.2, 0.2, 0.6],                 # zero width
                      [0.2, 0.2, 0.2, 0.6],                 # the same: 0/0, kept as Caffe's 0
                      [0.8, 0.8, 0.6, 0.6],                 # inverted: size 0, no overlap
                      [0.3, 0.1, 0.7, 0.5]], f)             # IoU 1/3 with the first
    for threshold in (0.0, 1 / 3, 0.5, 1.0):
        want = reference_nms(boxes, threshold)
        assert kept_by_engine(boxes, threshold) == want, threshold
    assert kept_by_engine(boxes, 0.5) == [0, 2, 3, 4, 5, 6]
    assert kept_by_engine(boxes, 0.3) == [0, 2, 3, 4, 5]


def test_threshold_is_compared_as_caffe_float(backend):
    # Two boxes whose float32 IoU is exactly float32(0.3) (> 0.3 as a double): Caffe keeps both.
    boxes = np.array([[0, 0, 0.140625, 0.78125], [0, 0, 0.140625, 0.234375]], np.float32)
    assert caffe_jaccard(boxes[1], boxes[:1])[0] == np.float32(0.3)
    assert kept_by_engine(boxes, 0.3) == [0, 1]
    assert reference_nms(boxes, 0.3) == [0, 1]


def test_groups_are_suppressed_on_their_own(backend):
    rng = np.random.RandomState(11)
    boxes = random_boxes(rng, 400, np.float32, 8)
    groups = np.sort(rng.choice([0, 2, 3, 7], 400))      # ordered by group, some groups empty
    want = []
    for g in np.unique(groups):
        members = np.nonzero(groups == g)[0]
        want += [int(members[k]) for k in reference_nms(boxes[members], 0.45)]
    assert kept_by_engine(boxes, 0.45, groups) == want


def test_empty_input(backend):
    empty = torch.zeros((0, 4))
    assert bu.nms_ordered_groups(empty, torch.zeros(0, dtype=torch.long), 0.45).numel() == 0
    got = bu.apply_nms_fast(empty, torch.zeros(0), 0.01, 0.45, 1.0, 100)
    assert got.numel() == 0


def test_apply_nms_fast_top_k_and_scores(backend):
    """The whole ApplyNMSFast (score threshold, stable descending order, top_k) on the
    kernel: candidates sorted as Caffe does, then the reference loop."""
    rng = np.random.RandomState(4)
    boxes = random_boxes(rng, 500, np.float32, 12)
    scores = (rng.randint(0, 20, 500) / 20.0).astype(np.float32)   # many ties
    cand = [i for i in sorted(range(500), key=lambda k: -scores[k]) if scores[i] > 0.1][:200]
    want = [cand[k] for k in reference_nms(boxes[cand], 0.45)]
    got = bu.apply_nms_fast(torch.from_numpy(boxes), torch.from_numpy(scores), 0.1, 0.45, 1.0, 200)
    assert got.tolist() == want


def test_kernel_offsets_and_max_keep():
    """Offset 1 is py-faster-rcnn's +1 pixel widths; max_keep gives a prefix."""
    rng = np.random.RandomState(2)
    x1 = rng.randint(0, 100, (200, 2))
    boxes = np.concatenate([x1, x1 + rng.randint(0, 30, (200, 2))], 1).astype(np.float32)
    full = nms_kernel.greedy_nms(boxes, 0.5, 1)
    ref = []
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for i in range(len(boxes)):
        k = np.array(ref, dtype=np.int64)
        w = np.maximum(np.float32(0), np.minimum(boxes[i, 2], boxes[k, 2])
                       - np.maximum(boxes[i, 0], boxes[k, 0]) + 1)
        h = np.maximum(np.float32(0), np.minimum(boxes[i, 3], boxes[k, 3])
                       - np.maximum(boxes[i, 1], boxes[k, 1]) + 1)
        inter = w * h
        if not bool((inter / (areas[k] + areas[i] - inter) > np.float32(0.5)).any()):
            ref.append(i)
    assert full.tolist() == ref
    assert nms_kernel.greedy_nms(boxes, 0.5, 1, max_keep=5).tolist() == ref[:5]
    assert nms_kernel.greedy_nms(boxes[:0], 0.5, 0).tolist() == []


def test_grouped_call_checks_its_ends():
    boxes = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match='ascend'):
        nms_kernel.greedy_nms_groups(boxes, [3, 2, 5], 0.5, 0)
    with pytest.raises(ValueError, match='ascend'):
        nms_kernel.greedy_nms_groups(boxes, [2, 4], 0.5, 0)
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        nms_kernel.greedy_nms(np.zeros((3, 3), np.float32), 0.5, 0)


def test_missing_or_stale_library_falls_back_to_torchvision(monkeypatch, tmp_path):
    assert nms_kernel.library_path() is not None
    # Missing: no warning, just the fallback.
    monkeypatch.setattr(nms_kernel, '_lib', None)
    monkeypatch.setattr(nms_kernel, 'library_path', lambda: None)
    assert not nms_kernel.available()
    with pytest.raises(RuntimeError, match='pip install'):
        nms_kernel.greedy_nms(np.zeros((1, 4), np.float32), 0.5, 0)
    monkeypatch.undo()
    # Stale: a source newer than the library warns once and falls back; NMS still works.
    newer = tmp_path / 'nms_kernel.c'
    newer.write_text('/* edited */\n')
    future = os.path.getmtime(nms_kernel.library_path()) + 60
    os.utime(newer, (future, future))
    monkeypatch.setattr(nms_kernel, '_lib', None)
    monkeypatch.setattr(nms_kernel, 'SOURCE', str(newer))
    with pytest.warns(UserWarning, match='older than'):
        assert not nms_kernel.available()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not nms_kernel.available()                # decided once
        rng = np.random.RandomState(0)
        boxes = random_boxes(rng, 100, np.float32)
        assert kept_by_engine(boxes, 0.45) == reference_nms(boxes, 0.45)
    monkeypatch.undo()
    assert nms_kernel.available()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16])
def test_group_order_is_caffes_stable_order(dtype):
    """Candidates by group, then descending score, equal scores by index (std::stable_sort),
    whatever the scores' sign; -0.0 and 0.0 are equal scores."""
    rng = np.random.RandomState(6)
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 7.0, np.inf])
    scores = torch.tensor(values[rng.randint(0, len(values), 3000)], dtype=dtype)
    groups = rng.randint(0, 40, 3000)
    held = scores.double().tolist()                          # the values the dtype holds
    want = sorted(range(3000), key=lambda i: (groups[i], -held[i]))     # Python's sort is stable
    assert bnms.group_order(scores, torch.from_numpy(groups)).tolist() == want
    first3, seen = [], {}
    for i in want:
        seen[groups[i]] = seen.get(groups[i], 0) + 1
        if seen[groups[i]] <= 3:
            first3.append(i)
    assert bnms.group_order(scores, torch.from_numpy(groups), top_k=3).tolist() == first3
