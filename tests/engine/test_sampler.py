"""SSD's box-side sampling maths (caffe/sampler.py) on hand-made boxes."""
import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import sampler
from caffe.proto import caffe_pb2


def msg(cls, text):
    m = cls()
    text_format.Parse(text, m)
    return m


def test_project_clip_and_drop():
    src = np.array([0.2, 0.2, 0.6, 0.7])
    boxes = np.array([[0.3, 0.3, 0.5, 0.5],      # inside
                      [0.1, 0.1, 0.3, 0.4],      # overlaps the corner: clipped
                      [0.6, 0.2, 0.9, 0.5],      # touches the right edge only: dropped
                      [0.0, 0.0, 0.1, 0.1]])     # outside: dropped
    proj, keep = sampler.project_bbox(src, boxes)
    assert list(keep) == [True, True, False, False]
    np.testing.assert_allclose(proj[0], [0.25, 0.2, 0.75, 0.6])
    np.testing.assert_allclose(proj[1], [0, 0, 0.25, 0.4])


def test_coverage_and_emit_constraints():
    crop = np.array([0.0, 0.0, 0.5, 0.5])
    boxes = np.array([[0.4, 0.4, 0.8, 0.8],     # centre (0.6, 0.6) outside, 1/16 inside
                      [0.1, 0.1, 0.6, 0.3],     # centre inside, 4/5 inside
                      [0.5, 0.1, 0.7, 0.2]])    # touches: centre outside, nothing inside
    np.testing.assert_allclose(sampler.bbox_coverage(boxes, crop.reshape(1, 4))[:, 0],
                               [1 / 16, 0.8, 0])
    center = caffe_pb2.EmitConstraint(emit_type=caffe_pb2.EmitConstraint.CENTER)
    assert list(sampler.meet_emit_constraint(crop, boxes, center)) == [False, True, False]
    overlap = caffe_pb2.EmitConstraint(emit_type=caffe_pb2.EmitConstraint.MIN_OVERLAP,
                                       emit_overlap=0.05)
    assert list(sampler.meet_emit_constraint(crop, boxes, overlap)) == [True, True, False]


def test_sampled_boxes_respect_scale_and_aspect_ranges():
    s = caffe_pb2.Sampler(min_scale=0.3, max_scale=1.0, min_aspect_ratio=0.5,
                          max_aspect_ratio=2.0)
    b = sampler.sample_bboxes(s, 5000, np.random.default_rng(0))
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert (b >= 0).all() and (b <= 1 + 1e-12).all()
    scale, ratio = np.sqrt(w * h), w / h
    assert scale.min() >= 0.3 - 1e-9 and scale.max() <= 1 + 1e-9
    assert ratio.min() >= 0.5 - 1e-9 and ratio.max() <= 2 + 1e-9
    # The aspect ratio is clamped to [s^2, 1/s^2]: a full-size crop is square.
    assert np.allclose(ratio[scale > 0.999], 1, atol=0.005)


def test_a_default_sampler_with_one_trial_is_the_whole_image():
    bs = msg(caffe_pb2.BatchSampler, 'sampler { } max_trials: 1 max_sample: 1')
    out = sampler.generate_batch_samples(np.zeros((0, 4)), [bs], np.random.default_rng(1))
    np.testing.assert_array_equal(out, [[0, 0, 1, 1]])


def test_constraints_keep_the_first_max_sample_that_satisfy():
    objects = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])
    bs = msg(caffe_pb2.BatchSampler, 'sampler { min_scale: 0.3 max_scale: 1.0 '
             'min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 } sample_constraint { '
             'min_jaccard_overlap: 0.3 } max_trials: 200 max_sample: 2')
    out = sampler.generate_batch_samples(objects, [bs], np.random.default_rng(2))
    assert len(out) == 2
    iou = sampler._iou(out, objects)
    assert (iou.max(axis=1) >= 0.3).all()
    # Without objects a constrained sampler finds nothing; without max_sample all are kept.
    assert len(sampler.generate_batch_samples(np.zeros((0, 4)), [bs],
                                              np.random.default_rng(2))) == 0
    bs.ClearField('max_sample')
    bs.ClearField('sample_constraint')
    assert len(sampler.generate_batch_samples(objects, [bs], np.random.default_rng(2))) == 200
    bs.use_original_image = False
    assert len(sampler.generate_batch_samples(objects, [bs], np.random.default_rng(2))) == 0


def test_only_the_first_kind_of_bound_decides_as_in_caffe():
    samples = np.array([[0.0, 0.0, 0.5, 0.5]])
    objects = np.array([[0.0, 0.0, 0.5, 0.5]])   # IoU 1, sample coverage 1
    c = caffe_pb2.SampleConstraint(min_jaccard_overlap=0.9, max_sample_coverage=0.1)
    assert sampler.satisfy_sample_constraint(samples, objects, c).tolist() == [True]
    c = caffe_pb2.SampleConstraint(max_jaccard_overlap=0.5, min_sample_coverage=0.1)
    assert sampler.satisfy_sample_constraint(samples, objects, c).tolist() == [False]
    c = caffe_pb2.SampleConstraint(min_object_coverage=0.99)
    assert sampler.satisfy_sample_constraint(samples, objects, c).tolist() == [True]


def test_resize_policies_move_boxes():
    box = np.array([[0.1, 0.2, 0.5, 0.9]])
    p = caffe_pb2.ResizeParameter(height=50, width=50)
    np.testing.assert_allclose(sampler.update_bbox_by_resize_policy(p, 200, 100, box), box)
    p.resize_mode = caffe_pb2.ResizeParameter.FIT_SMALL_SIZE
    np.testing.assert_allclose(sampler.update_bbox_by_resize_policy(p, 200, 100, box), box)
    assert sampler.infer_new_size(p, 200, 100) == (100, 50)
    assert sampler.infer_new_size(p, 100, 300) == (50, 150)
    p.resize_mode = caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD
    # 200 x 100 into 50 x 50: a 25-row band between 12.5-row paddings.
    np.testing.assert_allclose(sampler.update_bbox_by_resize_policy(p, 200, 100, box),
                               [[0.1, 0.25 + 0.2 / 2, 0.5, 0.25 + 0.9 / 2]])
    np.testing.assert_allclose(sampler.update_bbox_by_resize_policy(p, 100, 200, box),
                               [[0.25 + 0.1 / 2, 0.2, 0.25 + 0.5 / 2, 0.9]])
    assert sampler.infer_new_size(p, 200, 100) == (50, 50)


def test_extrapolate_only_with_scales_and_fit_small_size():
    p = caffe_pb2.ResizeParameter(height=50, width=50, height_scale=25, width_scale=25,
                                  resize_mode=caffe_pb2.ResizeParameter.FIT_SMALL_SIZE)
    box = np.array([[0.1, 0.2, 0.5, 0.9]])
    out = sampler.extrapolate_bbox(p, 100, 100, np.array([0, 0, 1, 1.0]), box)
    np.testing.assert_allclose(out, box * 2)
    p.resize_mode = caffe_pb2.ResizeParameter.WARP
    np.testing.assert_array_equal(sampler.extrapolate_bbox(p, 100, 100, np.array([0, 0, 1, 1.0]),
                                                           box), box)


def test_bad_sampler_is_reported():
    bs = msg(caffe_pb2.BatchSampler, 'sampler { min_scale: 0.5 max_scale: 0.4 }')
    with pytest.raises(caffe.NetError, match='here: max_scale 0.4 < min_scale 0.5'):
        sampler.check_batch_sampler(bs, 'here')
