"""RoIDataLayer through caffe.Net: tops, shapes, the roidb walk, OHEM and prefetching."""
import os

import numpy as np
import pytest

import caffe
from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot
from roi_data_layer import roidb as rdl_roidb
from roi_fixtures import NUM_CLASSES, ToyImdb

FAST_TOPS = ('data', 'rois', 'labels', 'bbox_targets', 'bbox_inside_weights',
             'bbox_outside_weights')
RPN_TOPS = ('data', 'im_info', 'gt_boxes')


@pytest.fixture(autouse=True)
def _cfg():
    saved = cfg_snapshot()
    cfg.TRAIN.SCALES = (100,)
    cfg.TRAIN.MAX_SIZE = 200
    cfg.TRAIN.IMS_PER_BATCH = 1
    cfg.TRAIN.BATCH_SIZE = 8
    yield
    cfg_restore(saved)


def _net(tmp_path, tops, num_classes=NUM_CLASSES):
    text = ("name: 'roi_data'\n"
            "layer { name: 'input-data' type: 'Python' %s\n"
            "  python_param { module: 'roi_data_layer.layer' layer: 'RoIDataLayer'\n"
            "                 param_str: \"'num_classes': %d\" } }\n"
            % (' '.join("top: '%s'" % t for t in tops), num_classes))
    path = tmp_path / 'roi_data.prototxt'
    path.write_text(text)
    return caffe.Net(str(path), caffe.TRAIN)


@pytest.fixture
def roidb(tmp_path):
    db = ToyImdb(tmp_path)
    rdl_roidb.prepare_roidb(db)
    rdl_roidb.add_bbox_regression_targets(db.roidb)
    return db.roidb


def test_fast_rcnn_tops(tmp_path, roidb):
    net = _net(tmp_path, FAST_TOPS)
    shapes = {k: net.blobs[k].shape for k in FAST_TOPS}
    assert shapes == {'data': (1, 3, 100, 200), 'rois': (1, 5), 'labels': (1,),
                      'bbox_targets': (1, 12), 'bbox_inside_weights': (1, 12),
                      'bbox_outside_weights': (1, 12)}
    layer = net.layers[0]
    layer.set_roidb(roidb[:1])
    out = net.forward()
    assert out['data'].shape == (1, 3, 100, 160)
    assert out['rois'].shape == (6, 5) and out['labels'].shape == (6,)
    assert out['bbox_targets'].shape == (6, 12)
    assert (out['labels'][:2] > 0).all() and not out['labels'][2:].any()
    np.testing.assert_array_equal(out['bbox_outside_weights'], out['bbox_inside_weights'] > 0)


def test_rpn_tops(tmp_path, roidb):
    cfg.TRAIN.HAS_RPN = True
    net = _net(tmp_path, RPN_TOPS)
    assert net.blobs['im_info'].shape == (1, 3) and net.blobs['gt_boxes'].shape == (1, 4)
    net.layers[0].set_roidb(roidb[1:])
    out = net.forward()
    assert out['data'].shape == (1, 3, 150, 100)
    np.testing.assert_allclose(out['im_info'], [[150, 100, 2.5]])
    np.testing.assert_allclose(out['gt_boxes'], [[12.5, 25, 60, 110, 1]])


def test_ohem_takes_every_roi(tmp_path, roidb):
    cfg.TRAIN.USE_OHEM = True
    cfg.TRAIN.BG_THRESH_LO = 0.0
    net = _net(tmp_path, FAST_TOPS)
    net.layers[0].set_roidb(roidb[:1])
    assert net.forward()['rois'].shape == (10, 5)


def test_top_count_and_param_errors(tmp_path, roidb):
    with pytest.raises(caffe.CaffeError, match=r"input-data.*6 tops.*gives 3"):
        _net(tmp_path, RPN_TOPS)
    with pytest.raises(caffe.CaffeError, match='num_classes'):
        _net(tmp_path, FAST_TOPS, num_classes=0)
    net = _net(tmp_path, FAST_TOPS)
    with pytest.raises(caffe.CaffeError, match='set_roidb'):
        net.forward()


def _grouping_roidb():
    # 4 landscape, 4 portrait, interleaved
    return [{'width': 80, 'height': 50} if i % 2 == 0 else {'width': 40, 'height': 60}
            for i in range(8)]


def test_aspect_grouping_is_seeded_and_draws_the_original_numbers(tmp_path):
    cfg.TRAIN.IMS_PER_BATCH = 2
    layer = _net(tmp_path, FAST_TOPS).layers[0]
    db = _grouping_roidb()
    perms = []
    for _ in range(2):
        np.random.seed(cfg.RNG_SEED)
        layer.set_roidb(db)
        perms.append(layer._perm.copy())
    np.testing.assert_array_equal(perms[0], perms[1])
    # The original's draws for groups of two: permute each orientation, then the pairs
    np.random.seed(cfg.RNG_SEED)
    inds = np.hstack((np.random.permutation([0, 2, 4, 6]), np.random.permutation([1, 3, 5, 7])))
    pairs = inds.reshape(-1, 2)
    expect = pairs[np.random.permutation(4)].reshape(-1)
    np.testing.assert_array_equal(perms[0], expect)
    # every minibatch is one orientation, and one permutation visits every image once
    np.random.seed(cfg.RNG_SEED)
    layer.set_roidb(db)
    batches = [layer._get_next_minibatch_inds() for _ in range(4)]
    assert all(len({i % 2 for i in b}) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    fifth = layer._get_next_minibatch_inds()      # a new permutation starts
    assert layer._cur == 2 and len(fifth) == 2


def test_plain_shuffle_without_grouping(tmp_path):
    cfg.TRAIN.ASPECT_GROUPING = False
    layer = _net(tmp_path, FAST_TOPS).layers[0]
    np.random.seed(7)
    layer.set_roidb(_grouping_roidb())
    np.random.seed(7)
    np.testing.assert_array_equal(layer._perm, np.random.permutation(8))


def test_prefetch_process_is_seeded_and_stops(tmp_path, roidb):
    cfg.TRAIN.USE_PREFETCH = True
    nets = [_net(tmp_path, FAST_TOPS) for _ in range(2)]
    seen = []
    try:
        for net in nets:
            net.layers[0].set_roidb(roidb)
            rois = []
            for _ in range(3):
                out = net.forward()
                assert out['rois'].shape[1] == 5 and out['data'].shape[:2] == (1, 3)
                assert out['labels'].shape[0] == out['rois'].shape[0]
                rois.append(out['rois'].copy())
            seen.append(rois)
        # both fetchers started from cfg.RNG_SEED: the same minibatches in the same order
        for a, b in zip(*seen):
            np.testing.assert_array_equal(a, b)
    finally:
        procs = [net.layers[0]._prefetch_process for net in nets]
        for net in nets:
            net.layers[0].stop_prefetch()
    assert all(p is not None and not p.is_alive() for p in procs)


def test_prefetch_reports_the_fetchers_error(tmp_path, roidb):
    cfg.TRAIN.USE_PREFETCH = True
    os.remove(roidb[0]['image'])
    net = _net(tmp_path, FAST_TOPS)
    layer = net.layers[0]
    layer.set_roidb(roidb[:1])
    try:
        with pytest.raises(caffe.CaffeError, match=r'BlobFetcher failed.*im0\.png'):
            net.forward()
    finally:
        layer.stop_prefetch()


def test_ohem_layer_is_reachable_under_the_module_the_prototxts_name():
    from roi_data_layer import layer, ohem
    assert layer.OHEMDataLayer is ohem.OHEMDataLayer
    with pytest.raises(AttributeError):
        layer.NoSuchLayer
