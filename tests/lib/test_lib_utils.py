"""utils: bbox_overlaps (+1 convention), blobs, Timer, the CSR container."""
import time

import numpy as np
import pytest

import utils.cython_bbox as cython_bbox
from utils.blob import im_list_to_blob, prep_im_for_blob
from utils.cython_bbox import bbox_overlaps
from utils.sparse import csr_matrix, vstack
from utils.timer import Timer


def reference_overlaps(boxes, query):
    """The original Cython loop, transcribed literally for comparison."""
    out = np.zeros((len(boxes), len(query)))
    for k, q in enumerate(query):
        q_area = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
        for n, b in enumerate(boxes):
            iw = min(b[2], q[2]) - max(b[0], q[0]) + 1
            if iw > 0:
                ih = min(b[3], q[3]) - max(b[1], q[1]) + 1
                if ih > 0:
                    ua = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1) + q_area - iw * ih)
                    out[n, k] = iw * ih / ua
    return out


def test_overlaps_hand_cases():
    boxes = np.array([[0, 0, 9, 9], [5, 5, 14, 14], [10, 10, 19, 19], [9, 9, 9, 9]], float)
    query = np.array([[0, 0, 9, 9]], float)
    ov = bbox_overlaps(boxes, query)
    np.testing.assert_allclose(ov[:, 0], [1.0, 25 / 175, 0.0, 1 / 100])
    assert ov.dtype == np.float64


def test_overlaps_equal_literal_reference_bitwise(monkeypatch):
    rng = np.random.default_rng(1)
    boxes = rng.integers(0, 50, (70, 2))
    boxes = np.hstack([boxes, boxes + rng.integers(-2, 30, (70, 2))]).astype(float)
    query = rng.integers(0, 50, (9, 2))
    query = np.hstack([query, query + rng.integers(0, 30, (9, 2))]).astype(float)
    query[0] += 0.25
    # tiny blocks so the blocked path is exercised too
    monkeypatch.setattr(cython_bbox, '_BLOCK_ENTRIES', 20)
    np.testing.assert_array_equal(bbox_overlaps(boxes, query), reference_overlaps(boxes, query))


def test_overlaps_accepts_ints_and_empty_and_checks_shape():
    ov = bbox_overlaps(np.array([[0, 0, 4, 4]], np.uint16), np.array([[0, 0, 4, 4]], np.int32))
    assert ov.tolist() == [[1.0]]
    assert bbox_overlaps(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    with pytest.raises(ValueError, match='query_boxes must be an'):
        bbox_overlaps(np.zeros((1, 4)), np.zeros((1, 3)))


def test_prep_im_for_blob_scales_and_subtracts():
    im = np.full((100, 200, 3), 50, np.uint8)
    out, scale = prep_im_for_blob(im, np.array([[[10., 20., 30.]]]), 50, 1000)
    assert scale == 0.5 and out.shape == (50, 100, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [40, 30, 20])
    assert im[0, 0, 0] == 50  # the caller's image is untouched
    # the longest side is capped by max_size
    _, scale = prep_im_for_blob(im, np.zeros((1, 1, 3)), 600, 1000)
    assert scale == 5.0


def test_im_list_to_blob_pads_and_transposes():
    a = np.ones((2, 3, 3), np.float32)
    b = np.full((4, 1, 3), 2, np.float32)
    blob = im_list_to_blob([a, b])
    assert blob.shape == (2, 3, 4, 3)
    assert blob[0, :, :2, :3].min() == 1 and blob[0, :, 2:, :].max() == 0
    assert blob[1, :, :, 0].min() == 2 and blob[1, :, :, 1:].max() == 0
    with pytest.raises(ValueError, match='empty'):
        im_list_to_blob([])


def test_timer_average_and_diff():
    t = Timer()
    for _ in range(2):
        t.tic()
        time.sleep(0.01)
        last = t.toc(average=False)
    assert t.calls == 2 and last == t.diff >= 0.01
    assert abs(t.average_time - t.total_time / 2) < 1e-12
    assert t.toc() == t.average_time


def test_csr_matrix_round_trip_and_vstack():
    dense = np.array([[0, 1.5, 0], [0, 0, 0], [-1, 0, 2]], np.float32)
    m = csr_matrix(dense)
    assert m.shape == (3, 3) and m.nnz == 3
    np.testing.assert_array_equal(m.toarray(), dense)
    s = vstack([m, csr_matrix(np.zeros((0, 3), np.float32)), np.eye(3, dtype=np.float32)])
    np.testing.assert_array_equal(s.toarray(), np.vstack([dense, np.eye(3)]))
    with pytest.raises(ValueError, match='different numbers of columns'):
        vstack([m, np.zeros((1, 2))])
