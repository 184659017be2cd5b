"""datasets.coco on a two-image COCO file; datasets.ds_utils helpers."""
import json
import os

import numpy as np
import pytest

from datasets import ds_utils
from datasets.ds_utils import AnnotationError

pytest.importorskip('pycocotools')


@pytest.fixture
def tiny_coco(isolated_cfg):
    ann_dir = os.path.join(isolated_cfg.DATA_DIR, 'coco', 'annotations')
    os.makedirs(ann_dir)
    data = {
        'images': [{'id': 10, 'width': 100, 'height': 80, 'file_name': 'a.jpg'},
                   {'id': 20, 'width': 100, 'height': 80, 'file_name': 'b.jpg'}],
        'categories': [{'id': 1, 'name': 'cat'}, {'id': 3, 'name': 'dog'}],
        'annotations': [
            {'id': 1, 'image_id': 10, 'category_id': 1, 'bbox': [10, 10, 20, 30],
             'area': 600, 'iscrowd': 0},
            {'id': 2, 'image_id': 10, 'category_id': 3, 'bbox': [50, 20, 30, 30],
             'area': 900, 'iscrowd': 1},
            {'id': 3, 'image_id': 20, 'category_id': 3, 'bbox': [0, 0, 100, 80],
             'area': 8000, 'iscrowd': 0},
            # zero area: dropped from the roidb (crowd, so COCOeval ignores it too)
            {'id': 4, 'image_id': 20, 'category_id': 1, 'bbox': [5, 5, 0, 0],
             'area': 0, 'iscrowd': 1},
        ]}
    with open(os.path.join(ann_dir, 'instances_minival2014.json'), 'w') as f:
        json.dump(data, f)
    from datasets.factory import get_imdb
    d = get_imdb('coco_2014_minival')
    d.set_proposal_method('gt')
    return d


def test_coco_gt_roidb(tiny_coco):
    d = tiny_coco
    assert d.classes == ('__background__', 'cat', 'dog')
    assert d.image_index == [10, 20]
    a, b = d.roidb
    np.testing.assert_array_equal(a['boxes'], [[10, 10, 29, 39], [50, 20, 79, 49]])
    np.testing.assert_array_equal(a['gt_classes'], [1, 2])
    # crowd box: overlap -1 with every class
    np.testing.assert_array_equal(a['gt_overlaps'].toarray(), [[0, 1, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(b['boxes'], [[0, 0, 99, 79]])  # zero-area object dropped
    assert d._get_widths() == [100, 100]
    assert d._get_box_file(10).endswith(os.path.join(
        'COCO_val2014_0', 'COCO_val2014_000000000', 'COCO_val2014_000000000010.mat'))


def test_coco_evaluation_perfect_detections(tiny_coco, tmp_path, capsys):
    d = tiny_coco
    all_boxes = [[[] for _ in range(2)] for _ in range(3)]
    all_boxes[1][0] = np.array([[10, 10, 29, 39, 0.9]], np.float32)
    all_boxes[2][1] = np.array([[0, 0, 99, 79, 0.8]], np.float32)
    d.competition_mode(True)
    coco_eval = d.evaluate_detections(all_boxes, str(tmp_path))
    out = capsys.readouterr().out
    assert '~~~~ Mean and per-category AP @ IoU=[0.50,0.95] ~~~~' in out
    assert '\n100.0\n' in out
    assert coco_eval.stats[0] == pytest.approx(1.0)
    res = [f for f in os.listdir(str(tmp_path)) if f.endswith('.json')]
    assert res == ['detections_minival2014_results.json']  # kept, unsalted
    with open(os.path.join(str(tmp_path), res[0])) as f:
        first = json.load(f)[0]
    assert first == {'image_id': 10, 'category_id': 1, 'bbox': [10.0, 10.0, 20.0, 30.0],
                     'score': pytest.approx(0.9)}


def test_coco_missing_annotations(isolated_cfg):
    from datasets.factory import get_imdb
    with pytest.raises(FileNotFoundError, match=r'instances_train2014\.json'):
        get_imdb('coco_2014_train')


def test_unique_boxes_keeps_first_and_has_no_hash_collisions():
    boxes = np.array([[0, 0, 10, 10], [1, 2, 3, 4], [0, 0, 10, 10], [0.2, 0, 10, 10]])
    np.testing.assert_array_equal(ds_utils.unique_boxes(boxes), [0, 1])
    # x1 + 1e3*y1 collides for these under the original hash; they differ
    boxes = np.array([[1000, 0, 5, 5], [0, 1, 5, 5]], float)
    np.testing.assert_array_equal(ds_utils.unique_boxes(boxes), [0, 1])
    np.testing.assert_array_equal(ds_utils.unique_boxes(np.array([[0, 0, 32, 32],
                                                                  [0, 0, 31, 33]]), 1 / 16.),
                                  [0])


def test_box_format_conversions():
    xyxy = np.array([[10, 20, 19, 39]])
    np.testing.assert_array_equal(ds_utils.xyxy_to_xywh(xyxy), [[10, 20, 10, 20]])
    np.testing.assert_array_equal(ds_utils.xywh_to_xyxy(ds_utils.xyxy_to_xywh(xyxy)), xyxy)


def test_filter_small_boxes_original_rule():
    boxes = np.array([[0, 0, 2, 3], [0, 0, 2, 2], [0, 0, 1, 9]])
    # width (x2 - x1) >= 2 and height (y2 - y1) > 2
    np.testing.assert_array_equal(ds_utils.filter_small_boxes(boxes, 2), [0])


def test_validate_boxes_messages():
    ds_utils.validate_boxes(np.array([[0, 0, 9, 9]]), width=10, height=10)
    ds_utils.validate_boxes(np.array([[0, 0, 900, 9]]))  # size unknown: no right edge check
    with pytest.raises(AnnotationError, match=r'img7: 2 invalid box\(es\): box 1 .*x2 < x1; '
                                              r'box 2 .*x2 >= image width 10'):
        ds_utils.validate_boxes(np.array([[0, 0, 9, 9], [5, 0, 4, 9], [0, 0, 10, 9]]),
                                width=10, height=10, where='img7')
