"""fast_rcnn.bbox_transform against hand-computed values."""
import numpy as np
import pytest

from fast_rcnn.bbox_transform import bbox_transform, bbox_transform_inv, clip_boxes


def test_bbox_transform_hand_case():
    ex = np.array([[0., 0., 9., 9.]])     # w = h = 10, centre (5, 5)
    gt = np.array([[5., 0., 24., 4.]])    # w = 20, h = 5, centre (15, 2.5)
    t = bbox_transform(ex, gt)
    np.testing.assert_allclose(t, [[1.0, -0.25, np.log(2.0), np.log(0.5)]])


def test_identity_gives_zero_targets():
    boxes = np.array([[3., 4., 30., 60.], [0., 0., 0., 0.]])
    np.testing.assert_array_equal(bbox_transform(boxes, boxes), np.zeros((2, 4)))


def test_inverse_hand_case_and_original_plus_one_quirk():
    boxes = np.array([[0., 0., 9., 9.]], dtype=np.float32)
    deltas = np.array([[1.0, -0.25, np.log(2.0), np.log(0.5)]], dtype=np.float32)
    pred = bbox_transform_inv(boxes, deltas)
    # centre (15, 2.5), size 20 x 5; x2/y2 are ctr + 0.5*size as in the original
    np.testing.assert_allclose(pred, [[5., 0., 25., 5.]], rtol=1e-6)
    assert pred.dtype == np.float32


def test_round_trip_up_to_the_original_plus_one():
    rng = np.random.default_rng(0)
    ex = rng.uniform(0, 200, (50, 2))
    ex = np.hstack([ex, ex + rng.uniform(1, 100, (50, 2))])
    gt = rng.uniform(0, 200, (50, 2))
    gt = np.hstack([gt, gt + rng.uniform(1, 100, (50, 2))])
    back = bbox_transform_inv(ex, bbox_transform(ex, gt))
    np.testing.assert_allclose(back, gt + [0, 0, 1, 1], rtol=1e-9, atol=1e-9)


def test_inverse_per_class_columns_and_empty():
    boxes = np.array([[10., 10., 19., 29.]])
    deltas = np.zeros((1, 8))
    deltas[0, 4] = 0.5  # class 1 moves right by half a width
    pred = bbox_transform_inv(boxes, deltas)
    np.testing.assert_allclose(pred[0, :4], [10, 10, 20, 30])
    np.testing.assert_allclose(pred[0, 4:], [15, 10, 25, 30])
    out = bbox_transform_inv(np.zeros((0, 4)), np.zeros((0, 8), np.float32))
    assert out.shape == (0, 8) and out.dtype == np.float32


def test_clip_boxes_in_place():
    boxes = np.array([[-5., -1., 700., 20., 3., 4., 5., 500.]])
    out = clip_boxes(boxes, (480, 640, 3))
    assert out is boxes
    np.testing.assert_array_equal(boxes, [[0, 0, 639, 20, 3, 4, 5, 479]])


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match='bbox_transform: ex_rois has 1 rows but gt_rois has 2'):
        bbox_transform(np.zeros((1, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r'bbox_transform_inv\(deltas\)'):
        bbox_transform_inv(np.zeros((1, 4)), np.zeros((1, 3)))
