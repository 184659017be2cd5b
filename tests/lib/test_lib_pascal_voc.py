"""datasets.pascal_voc / imdb on a synthetic VOC folder written to tmp_path."""
import os
import pickle

import numpy as np
import pytest

from datasets.ds_utils import AnnotationError
from datasets.pascal_voc import pascal_voc
from datasets.roidb_io import load_box_list, save_box_list

IMAGES = {
    # width 40: xmin=1 -> x1=0 and xmax=40 -> x2=39 touch both borders
    'a': (40, 30, [('cat', (1, 1, 40, 10)), ('dog', (11, 5, 20, 30)),
                   ('cat', (5, 5, 8, 8), 1)]),
    'b': (50, 20, [('Dog ', (2, 3, 12, 13))]),
    'c': (20, 20, []),
}


@pytest.fixture
def voc(isolated_cfg, tmp_path, voc_writer):
    devkit = tmp_path / 'VOCdevkit'
    voc_writer(devkit, '2007', IMAGES, {'trainval': ['a', 'b', 'c'], 'test': ['a']})
    return str(devkit)


def _imdb(devkit, split='trainval', **kw):
    d = pascal_voc(split, '2007', devkit_path=devkit, classes=['cat', 'dog'], **kw)
    d.set_proposal_method('gt')
    return d


def test_gt_roidb_contents(voc):
    d = _imdb(voc)
    assert d.name == 'voc_2007_trainval'
    assert d.classes == ('__background__', 'cat', 'dog') and d.num_classes == 3
    assert d.image_index == ['a', 'b', 'c'] and d.num_images == 3
    r = d.roidb
    a = r[0]
    assert a['boxes'].dtype == np.uint16
    np.testing.assert_array_equal(a['boxes'], [[0, 0, 39, 9], [10, 4, 19, 29]])
    np.testing.assert_array_equal(a['gt_classes'], [1, 2])
    np.testing.assert_array_equal(a['gt_overlaps'].toarray(), [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(a['seg_areas'], [400, 260])
    assert a['flipped'] is False
    # class names are matched case- and space-insensitively
    np.testing.assert_array_equal(r[1]['gt_classes'], [2])
    assert r[2]['boxes'].shape == (0, 4) and r[2]['gt_overlaps'].shape == (0, 3)
    assert os.path.basename(d.image_path_at(1)) == 'b.jpg'


def test_use_diff_keeps_difficult_objects(voc):
    d = _imdb(voc)
    d.config['use_diff'] = True
    assert d.roidb[0]['boxes'].shape[0] == 3


def test_flipped_images_stay_valid_at_the_borders(voc):
    d = _imdb(voc)
    d.append_flipped_images()
    r = d.roidb
    assert len(r) == 6 and d.num_images == 6 and d.image_index[3:] == ['a', 'b', 'c']
    fa = r[3]
    assert fa['flipped'] is True and fa['boxes'].dtype == np.uint16
    # x1' = 40 - x2 - 1, x2' = 40 - x1 - 1
    np.testing.assert_array_equal(fa['boxes'], [[0, 0, 39, 9], [20, 4, 29, 29]])
    np.testing.assert_array_equal(r[4]['boxes'], [[38, 2, 48, 12]])  # 0-based [1, 11] in width 50
    assert fa['gt_overlaps'] is r[0]['gt_overlaps']
    assert (fa['boxes'][:, 2] >= fa['boxes'][:, 0]).all()


def test_zero_based_user_boxes_are_clamped_not_wrapped(isolated_cfg, tmp_path, voc_writer):
    devkit = tmp_path / 'dk'
    # xmin = ymin = 0 (0-based tool) and xmax = width + 1: one pixel outside
    voc_writer(devkit, '2007', {'z': (30, 30, [('cat', (0, 0, 31, 10))])},
               {'trainval': ['z']})
    d = _imdb(str(devkit))
    with pytest.warns(UserWarning, match='3 box coordinate'):
        boxes = d.roidb[0]['boxes']
    np.testing.assert_array_equal(boxes, [[0, 0, 29, 9]])
    d.append_flipped_images()
    np.testing.assert_array_equal(d.roidb[1]['boxes'], [[0, 0, 29, 9]])


@pytest.mark.parametrize('obj, message', [
    (('dog', (20, 5, 10, 10)), r"object #1 \('dog'\).*x2 < x1"),
    (('dog', (5, 5, 10, 90)), r"object #1 \('dog'\).*y2 >= image height 30"),
    (('dog', (-5, 5, 10, 10)), r"object #1 \('dog'\).*x1 < 0"),
    (('bird', (1, 1, 5, 5)), r"object #1 \('bird'\): class 'bird' is not one of"),
])
def test_bad_annotation_names_file_and_object(isolated_cfg, tmp_path, voc_writer, obj, message):
    devkit = tmp_path / 'dk'
    voc_writer(devkit, '2007', {'bad': (40, 30, [('cat', (1, 1, 5, 5)), obj])},
               {'trainval': ['bad']})
    d = _imdb(str(devkit))
    with pytest.raises(AnnotationError, match=r'(?s)bad\.xml.*' + message):
        d.roidb


def test_non_numeric_coordinate(isolated_cfg, tmp_path, voc_writer):
    devkit = tmp_path / 'dk'
    voc_writer(devkit, '2007', {'n': (40, 30, [('cat', ('one', 1, 5, 5))])}, {'trainval': ['n']})
    with pytest.raises(AnnotationError, match=r"n\.xml: object #0 \('cat'\): <bndbox> needs"):
        _imdb(str(devkit)).roidb


def test_flip_checks_image_width_against_boxes(voc):
    d = _imdb(voc)
    d.roidb
    d._get_widths = lambda: [30, 50, 20]  # image 'a' narrower than its annotation says
    with pytest.raises(AnnotationError, match=r'cannot flip image 0 .*a\.jpg, width 30'):
        d.append_flipped_images()


def test_missing_paths_say_what_to_put_where(isolated_cfg, tmp_path, voc_writer):
    with pytest.raises(FileNotFoundError, match=r'VOCdevkit folder not found.*VOCdevkit2007'
                                                r'[\s\S]*make_toy_dataset'):
        pascal_voc('trainval', '2007')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r'VOC2007 folder.*JPEGImages'):
        pascal_voc('trainval', '2007', devkit_path=str(tmp_path / 'empty'))
    voc_writer(tmp_path / 'dk', '2007', {'a': IMAGES['a']}, {'train': ['a']})
    with pytest.raises(FileNotFoundError, match=r"image set file not found.*present: \['train'\]"):
        pascal_voc('val', '2007', devkit_path=str(tmp_path / 'dk'))


def test_gt_cache_is_npz_reused_and_invalidated(voc, capsys):
    d = _imdb(voc)
    d.roidb
    cache = os.path.join(d.cache_path, 'voc_2007_trainval_gt_roidb.npz')
    assert os.path.exists(cache) and 'wrote gt roidb' in capsys.readouterr().out
    with np.load(cache, allow_pickle=False) as z:  # loads without pickle
        assert int(z['counts'].sum()) == 3
    d2 = _imdb(voc)
    r2 = d2.roidb
    assert 'gt roidb loaded from' in capsys.readouterr().out
    for x, y in zip(d.roidb, r2):
        np.testing.assert_array_equal(x['boxes'], y['boxes'])
        np.testing.assert_array_equal(x['gt_overlaps'].toarray(), y['gt_overlaps'].toarray())
        np.testing.assert_array_equal(x['seg_areas'], y['seg_areas'])
    # other classes -> the cache no longer fits and is rebuilt
    d3 = pascal_voc('trainval', '2007', devkit_path=voc, classes=['cat', 'dog', 'cow'])
    d3.set_proposal_method('gt')
    assert d3.roidb[0]['gt_overlaps'].shape == (2, 4)
    assert 'wrote gt roidb' in capsys.readouterr().out


def test_rpn_roidb_from_npz_and_legacy_pickle(voc, tmp_path):
    d = _imdb(voc)
    proposals = [np.array([[0, 0, 39, 9], [30, 20, 35, 25]], np.float32),
                 np.zeros((0, 4), np.float32),
                 np.array([[1, 1, 5, 5]], np.float32)]
    path = str(tmp_path / 'props.npz')
    save_box_list(path, proposals)
    for p in (path, str(tmp_path / 'props.pkl')):
        if p.endswith('.pkl'):
            with open(p, 'wb') as f:
                pickle.dump(proposals, f)
        d = _imdb(voc)
        d.config['rpn_file'] = p
        d.set_proposal_method('rpn')
        r = d.roidb
        e = r[0]
        assert e['boxes'].shape == (4, 4) and e['boxes'].dtype == np.float32
        np.testing.assert_array_equal(e['gt_classes'], [1, 2, 0, 0])
        ov = e['gt_overlaps'].toarray()
        assert ov[2, 1] == 1.0 and ov[3].max() == 0.0
        assert r[1]['boxes'].shape == (1, 4) and r[2]['boxes'].shape == (1, 4)


def test_proposal_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    path = str(tmp_path / 'evil.pkl')
    with open(path, 'wb') as f:
        pickle.dump([Evil()], f)
    with pytest.raises(ValueError, match='refusing to load'):
        load_box_list(path)


def test_rpn_roidb_length_mismatch(voc, tmp_path):
    path = str(tmp_path / 'p.npz')
    save_box_list(path, [np.zeros((1, 4), np.float32)])
    d = _imdb(voc)
    d.config['rpn_file'] = path
    d.set_proposal_method('rpn')
    with pytest.raises(ValueError, match='proposals for 1 images but the data set has 3'):
        d.roidb


def test_set_proposal_method_unknown(voc):
    with pytest.raises(ValueError, match=r"unknown proposal method 'sliding'.*'gt'"):
        _imdb(voc).set_proposal_method('sliding')


def _perfect_detections(d):
    all_boxes = [[[] for _ in range(d.num_images)] for _ in range(d.num_classes)]
    for i, e in enumerate(d.roidb):
        for c in range(1, d.num_classes):
            m = e['gt_classes'] == c
            if m.any():
                all_boxes[c][i] = np.hstack([e['boxes'][m].astype(np.float32),
                                             np.full((m.sum(), 1), 0.9, np.float32)])
    return all_boxes


def test_results_files_and_python_eval_log(voc, tmp_path, capsys):
    d = _imdb(voc)
    d.competition_mode(True)
    out = str(tmp_path / 'out')
    aps = d.evaluate_detections(_perfect_detections(d), out)
    log = capsys.readouterr().out
    assert aps == [pytest.approx(1.0)] * 2
    assert 'VOC07 metric? Yes' in log
    assert 'AP for cat = 1.0000' in log and 'AP for dog = 1.0000' in log
    assert 'Mean AP = 1.0000' in log
    res = os.path.join(voc, 'results', 'VOC2007', 'Main', 'comp4_det_trainval_cat.txt')
    with open(res) as f:  # competition mode: no salt, files kept; 1-based coordinates
        assert f.read() == 'a 0.900 1.0 1.0 40.0 10.0\n'
    with open(os.path.join(out, 'cat_pr.pkl'), 'rb') as f:
        assert pickle.load(f)['ap'] == pytest.approx(1.0)


def test_evaluation_cleans_up_salted_files(voc, tmp_path):
    d = _imdb(voc)
    d.evaluate_detections(_perfect_detections(d), str(tmp_path / 'out'))
    assert os.listdir(os.path.join(voc, 'results', 'VOC2007', 'Main')) == []
    assert d._get_comp_id().startswith('comp4_')


def test_evaluate_recall_with_candidates(voc):
    d = _imdb(voc)
    cands = [np.array([[0, 0, 39, 9], [10, 4, 19, 20]], float),
             np.array([[30, 2, 40, 12]], float), np.zeros((0, 4))]
    res = d.evaluate_recall(candidate_boxes=cands)
    # gt a0 found exactly, a1 with IoU 170/260, b missed entirely
    np.testing.assert_allclose(res['gt_overlaps'], [0, 170 / 260, 1.0])
    assert res['recalls'][0] == pytest.approx(2 / 3) and res['recalls'][-1] == pytest.approx(1 / 3)


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickled_box_lists_load_for_every_protocol(tmp_path, protocol):
    boxes = [np.arange(8, dtype=np.float32).reshape(2, 4), np.zeros((0, 4), np.uint16)]
    path = str(tmp_path / 'p.pkl')
    with open(path, 'wb') as f:
        pickle.dump(boxes, f, protocol)
    out = load_box_list(path)
    assert [b.dtype for b in out] == [np.float32, np.uint16]
    np.testing.assert_array_equal(out[0], boxes[0])
    assert out[1].shape == (0, 4)
