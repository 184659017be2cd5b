"""roi_data_layer.roidb and .minibatch on a hand-made data set with real image files.

The expected overlaps, counts and regression targets are worked out by hand in
roi_fixtures.py (BOXES_0 / BOXES_1) and repeated here as literals.
"""
import math

import cv2
import numpy as np
import pytest

from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot
from fast_rcnn.train import filter_roidb, get_training_roidb
from roi_data_layer import minibatch
from roi_data_layer import roidb as rdl_roidb
from roi_fixtures import BG_0, BOXES_0, FG_0, LOW_0, NUM_CLASSES, ToyImdb, make_entry
from utils.blob import prep_im_for_blob


@pytest.fixture(autouse=True)
def _cfg():
    saved = cfg_snapshot()
    cfg.TRAIN.SCALES = (100,)
    cfg.TRAIN.MAX_SIZE = 200
    cfg.TRAIN.IMS_PER_BATCH = 1
    yield
    cfg_restore(saved)


@pytest.fixture
def imdb(tmp_path):
    db = ToyImdb(tmp_path)
    rdl_roidb.prepare_roidb(db)
    return db


def _box_index(entry, roi, scale):
    """Which box of the entry a (5,) rois row is (rows are scaled boxes)."""
    d = np.abs(entry['boxes'].astype(np.float64) * scale - roi[1:]).sum(axis=1)
    assert d.min() < 1e-3
    return int(d.argmin())


# ---- prepare_roidb --------------------------------------------------------------------------

def test_prepare_roidb_adds_sizes_classes_and_overlaps(imdb):
    e0, e1 = imdb.roidb
    assert (e0['width'], e0['height']) == (80, 50)
    assert (e1['width'], e1['height']) == (40, 60)
    assert e0['image'] == imdb.image_path_at(0)
    np.testing.assert_allclose(e0['max_overlaps'][FG_0], [1, 1, 324 / 476, 400 / 600], rtol=1e-6)
    np.testing.assert_allclose(e0['max_overlaps'][BG_0], [1 / 7, 1 / 7, 225 / 575, 1 / 3],
                               rtol=1e-6)
    assert list(e0['max_classes'][FG_0]) == [1, 2, 1, 2]
    assert e0['max_overlaps'][6] == 0 and e0['max_classes'][6] == 0


def test_prepare_roidb_rejects_overlap_in_background_column(tmp_path):
    db = ToyImdb(tmp_path)
    dense = db.roidb[1]['gt_overlaps'].toarray()
    dense[3, 0] = 0.9          # box 3 claims to overlap the background "class"
    dense[3, 1] = 0.0
    db.roidb[1]['gt_overlaps'] = dense
    with pytest.raises(ValueError, match=r'image 1 .*im1\.png.*box 3'):
        rdl_roidb.prepare_roidb(db)


def test_prepare_roidb_names_an_unreadable_image(tmp_path):
    db = ToyImdb(tmp_path)
    with open(db.image_path_at(1), 'wb') as f:
        f.write(b'not an image')
    with pytest.raises(OSError, match=r'im1\.png'):
        rdl_roidb.prepare_roidb(db)


# ---- bbox regression targets ----------------------------------------------------------------

def test_raw_targets_by_hand(imdb):
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS = False
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    t0 = imdb.roidb[0]['bbox_targets']
    t1 = imdb.roidb[1]['bbox_targets']
    np.testing.assert_allclose(t0[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(t0[1], [2, 0, 0, 0, 0])
    np.testing.assert_allclose(t0[2], [1, -0.1, -0.1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(t0[3], [2, 0, -1 / 6, 0, math.log(2 / 3)], atol=1e-6)
    assert not t0[BG_0 + LOW_0].any()
    np.testing.assert_allclose(t1[1], [1, -1 / 20, -1 / 33, 0, math.log(35 / 33)], atol=1e-6)
    assert not t1[2:].any()


def test_empirical_normalisation_by_hand(imdb, capsys):
    means, stds = rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    means, stds = means.reshape(NUM_CLASSES, 4), stds.reshape(NUM_CLASSES, 4)
    # class 1: four examples (0,0,0,0), (-.1,-.1,0,0), (0,0,0,0), (-.05,-1/33,0,log(35/33))
    c1 = np.array([[0, 0, 0, 0], [-.1, -.1, 0, 0], [0, 0, 0, 0],
                   [-.05, -1 / 33, 0, math.log(35 / 33)]])
    np.testing.assert_allclose(means[1], c1.mean(0), atol=1e-6)
    np.testing.assert_allclose(stds[1, [0, 1, 3]], c1.std(0)[[0, 1, 3]], atol=1e-6)
    # class 2: (0,0,0,0) and (0,-1/6,0,log(2/3)): dy mean -1/12, std 1/12
    np.testing.assert_allclose(means[2], [0, -1 / 12, 0, math.log(2 / 3) / 2], atol=1e-6)
    np.testing.assert_allclose(stds[2, [1, 3]], [1 / 12, -math.log(2 / 3) / 2], atol=1e-6)
    # zero spread (every dw is 0): std 1 instead of a division by zero
    assert stds[1, 2] == 1 and stds[2, 0] == 1 and stds[2, 2] == 1
    assert not means[0].any() and not stds[0].any()
    # p1 of image 0 is one std below the class-2 mean in dy and dh
    np.testing.assert_allclose(imdb.roidb[0]['bbox_targets'][3], [2, 0, -1, 0, -1], atol=1e-5)
    assert np.isfinite(imdb.roidb[0]['bbox_targets']).all()
    assert 'Normalizing targets' in capsys.readouterr().out


def test_precomputed_normalisation(imdb):
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = True
    means, stds = rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    np.testing.assert_allclose(means, np.zeros(4 * NUM_CLASSES))
    np.testing.assert_allclose(stds, np.tile([.1, .1, .2, .2], NUM_CLASSES))
    np.testing.assert_allclose(imdb.roidb[0]['bbox_targets'][2], [1, -1, -1, 0, 0], atol=1e-5)


def test_targets_of_an_image_without_ground_truth():
    rois = np.array([[0, 0, 9, 9], [2, 2, 9, 9]], dtype=np.uint16)
    out = rdl_roidb._compute_targets(rois, np.zeros(2), np.zeros(2, np.int64))
    assert out.shape == (2, 5) and not out.any()


def test_add_targets_needs_prepare(tmp_path):
    with pytest.raises(ValueError, match='prepare_roidb'):
        rdl_roidb.add_bbox_regression_targets(ToyImdb(tmp_path).roidb)


# ---- get_minibatch (Fast R-CNN) ----------------------------------------------------------

def _check_sampled(entry, blobs, scale, n_fg, n_bg, batch_index=0, rows=None):
    rows = np.flatnonzero(blobs['rois'][:, 0] == batch_index) if rows is None else rows
    assert rows.size == n_fg + n_bg
    idx = [_box_index(entry, blobs['rois'][r], scale) for r in rows]
    labels = blobs['labels'][rows]
    fg, bg = idx[:n_fg], idx[n_fg:]
    assert len(set(idx)) == len(idx)  # without replacement
    assert all(entry['max_overlaps'][i] >= 0.5 for i in fg)
    assert all(0.1 <= entry['max_overlaps'][i] < 0.5 for i in bg)
    np.testing.assert_array_equal(labels[:n_fg], entry['max_classes'][fg])
    assert not labels[n_fg:].any()
    # expanded targets: only the RoI's class has its four columns set
    for r, i, lab in zip(rows, idx, labels.astype(int)):
        t = blobs['bbox_targets'][r].reshape(NUM_CLASSES, 4)
        w = blobs['bbox_inside_weights'][r].reshape(NUM_CLASSES, 4)
        if lab > 0:
            np.testing.assert_allclose(t[lab], entry['bbox_targets'][i, 1:])
            assert w[lab].tolist() == [1, 1, 1, 1]
        assert not np.delete(t, lab, axis=0).any() and not np.delete(w, lab, axis=0).any()
    np.testing.assert_array_equal(blobs['bbox_outside_weights'], blobs['bbox_inside_weights'] > 0)


def test_minibatch_samples_the_right_counts(imdb):
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    cfg.TRAIN.BATCH_SIZE = 8                 # 2 fg (of 4 candidates) + 4 bg (all there is)
    np.random.seed(0)
    blobs = minibatch.get_minibatch([imdb.roidb[0]], NUM_CLASSES)
    assert blobs['data'].shape == (1, 3, 100, 160)      # 50 x 80 at scale 2
    assert blobs['rois'].shape == (6, 5) and blobs['labels'].shape == (6,)
    assert blobs['bbox_targets'].shape == (6, 4 * NUM_CLASSES)
    _check_sampled(imdb.roidb[0], blobs, 2.0, n_fg=2, n_bg=4)

    cfg.TRAIN.BATCH_SIZE = 16
    cfg.TRAIN.FG_FRACTION = 0.5              # wants 8 fg: only 4 exist
    blobs = minibatch.get_minibatch([imdb.roidb[0]], NUM_CLASSES)
    _check_sampled(imdb.roidb[0], blobs, 2.0, n_fg=4, n_bg=4)


def test_minibatch_of_two_images(imdb):
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    cfg.TRAIN.BATCH_SIZE = 8                 # 4 per image, 1 of them fg
    cfg.TRAIN.IMS_PER_BATCH = 2
    blobs = minibatch.get_minibatch(imdb.roidb, NUM_CLASSES)
    # image 1 (60 x 40) scales by 2.5 to 150 x 100; the blob pads to 150 x 160
    assert blobs['data'].shape == (2, 3, 150, 160)
    assert blobs['rois'][:, 0].tolist() == [0, 0, 0, 0, 1, 1]
    _check_sampled(imdb.roidb[0], blobs, 2.0, n_fg=1, n_bg=3, batch_index=0)
    _check_sampled(imdb.roidb[1], blobs, 2.5, n_fg=1, n_bg=1, batch_index=1)
    with pytest.raises(ValueError, match='must divide BATCH_SIZE'):
        cfg.TRAIN.BATCH_SIZE = 7
        minibatch.get_minibatch(imdb.roidb, NUM_CLASSES)


def test_minibatch_is_reproducible_with_a_seed(imdb):
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    cfg.TRAIN.BATCH_SIZE = 8
    runs = []
    for _ in range(2):
        np.random.seed(5)
        runs.append(minibatch.get_minibatch([imdb.roidb[0]], NUM_CLASSES)['rois'])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_minibatch_without_bbox_reg(imdb):
    cfg.TRAIN.BBOX_REG = False
    cfg.TRAIN.BATCH_SIZE = 8
    blobs = minibatch.get_minibatch([imdb.roidb[0]], NUM_CLASSES)
    assert sorted(blobs) == ['data', 'labels', 'rois']


def test_rpn_minibatch(imdb):
    cfg.TRAIN.HAS_RPN = True
    blobs = minibatch.get_minibatch([imdb.roidb[0]], NUM_CLASSES)
    assert sorted(blobs) == ['data', 'gt_boxes', 'im_info']
    np.testing.assert_allclose(blobs['gt_boxes'], [[20, 20, 58, 58, 1], [80, 20, 118, 58, 2]])
    np.testing.assert_allclose(blobs['im_info'], [[100, 160, 2]])
    with pytest.raises(ValueError, match='single image'):
        cfg.TRAIN.BATCH_SIZE = 2
        minibatch.get_minibatch(imdb.roidb, NUM_CLASSES)


def test_flipped_entry_reads_the_mirrored_image(imdb):
    cfg.TRAIN.HAS_RPN = True
    entry = dict(imdb.roidb[0], flipped=True)
    blobs = minibatch.get_minibatch([entry], NUM_CLASSES)
    expect, scale = prep_im_for_blob(imdb.images[0][:, ::-1, :], cfg.PIXEL_MEANS, 100, 200)
    assert scale == 2.0
    np.testing.assert_allclose(blobs['data'][0], expect.transpose(2, 0, 1))
    assert not np.allclose(expect, prep_im_for_blob(imdb.images[0], cfg.PIXEL_MEANS, 100, 200)[0])


def test_unreadable_image_is_named(imdb, tmp_path):
    cfg.TRAIN.HAS_RPN = True
    entry = dict(imdb.roidb[0], image=str(tmp_path / 'gone.jpg'))
    with pytest.raises(IOError, match=r'gone\.jpg'):
        minibatch.get_minibatch([entry], NUM_CLASSES)


def test_regression_labels_match_a_loop():
    rng = np.random.RandomState(0)
    data = np.hstack((rng.randint(0, 5, (50, 1)), rng.randn(50, 4))).astype(np.float32)
    targets, weights = minibatch._get_bbox_regression_labels(data, 5)
    ref = np.zeros((50, 20), np.float32)
    for i, row in enumerate(data):
        c = int(row[0])
        if c:
            ref[i, 4 * c:4 * c + 4] = row[1:]
    np.testing.assert_array_equal(targets, ref)
    np.testing.assert_array_equal(weights != 0, ref != 0)
    with pytest.raises(ValueError, match='num_classes 4'):
        minibatch._get_bbox_regression_labels(data, 4)


# ---- get_allrois_minibatch (OHEM) ---------------------------------------------------------

def test_allrois_minibatch_takes_every_roi(imdb):
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    cfg.TRAIN.BG_THRESH_LO = 0.0
    blobs = minibatch.get_allrois_minibatch([imdb.roidb[0]], NUM_CLASSES)
    # 4 fg, then every box below 0.5: the 4 usual bg and the 2 below 0.1
    idx = [_box_index(imdb.roidb[0], r, 2.0) for r in blobs['rois']]
    assert idx == FG_0 + sorted(BG_0 + LOW_0)
    assert blobs['labels'].tolist() == [1, 2, 1, 2] + [0] * 6
    _check_sampled(imdb.roidb[0], blobs, 2.0, n_fg=4, n_bg=0, rows=np.arange(4))


def test_allrois_minibatch_ignores_bg_thresh_lo(imdb):
    rdl_roidb.add_bbox_regression_targets(imdb.roidb)
    cfg.TRAIN.BG_THRESH_LO = 0.1
    with pytest.warns(UserWarning, match='BG_THRESH_LO'):
        minibatch._warned_bg_lo = False
        blobs = minibatch.get_allrois_minibatch([imdb.roidb[0]], NUM_CLASSES)
    assert blobs['rois'].shape == (10, 5)
    cfg.TRAIN.HAS_RPN = True
    with pytest.raises(ValueError, match='HAS_RPN'):
        minibatch.get_allrois_minibatch([imdb.roidb[0]], NUM_CLASSES)


# ---- training roidb helpers ---------------------------------------------------------------

def test_filter_roidb_drops_images_without_usable_rois(imdb, capsys):
    useless = make_entry([([60, 30, 79, 49], 0), ([0, 0, 9, 9], 0)])
    useless['max_overlaps'] = np.zeros(2)
    kept = filter_roidb(imdb.roidb + [useless])
    assert kept == imdb.roidb
    assert 'Filtered 1 roidb entries: 3 -> 2' in capsys.readouterr().out


def test_get_training_roidb_flips_and_prepares(tmp_path):
    from datasets.imdb import imdb as imdb_base

    toy = ToyImdb(tmp_path)

    class FlipImdb(imdb_base):
        def __init__(self):
            imdb_base.__init__(self, 'flip_toy', toy.classes)
            self._image_index = list(toy.image_index)
            self.set_proposal_method('gt')

        def image_path_at(self, i):
            return toy.image_path_at(self._image_index[i])

        def gt_roidb(self):
            return [dict(e) for e in toy.roidb]

    cfg.TRAIN.USE_FLIPPED = True
    roidb = get_training_roidb(FlipImdb())
    assert len(roidb) == 4 and [e['flipped'] for e in roidb] == [False, False, True, True]
    # box [10, 10, 29, 29] in an 80-wide image mirrors to [50, 10, 69, 29]
    assert roidb[2]['boxes'][0].tolist() == [50, 10, 69, 29]
    assert (roidb[3]['width'], roidb[3]['height']) == (40, 60)
    assert roidb[3]['image'] == toy.image_path_at(1)
    np.testing.assert_array_equal(roidb[2]['max_classes'], roidb[0]['max_classes'])
