"""AnnotatedData (SSD's LMDB of AnnotatedDatum) and its transformations: boxes must follow
the pixels through every augmentation. Images hold filled rectangles of distinct colours on a
gray background, so each label row can be checked against where its colour lies in the
transformed image."""
import threading

import cv2
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import annotated_transform as at
from caffe import im_transforms, sampler
from caffe.annotated_transform import AnnotatedDataTransformer, Annotations
from caffe.proto import caffe_pb2

BG = (100, 100, 100)
COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]
MEAN = (104, 117, 123)


def picture(h, w, rects):
    """An h x w BGR image with rectangles (x0, y0, x1, y1) in pixels, colour i for rect i."""
    img = np.empty((h, w, 3), np.uint8)
    img[...] = BG
    for i, (x0, y0, x1, y1) in enumerate(rects):
        img[y0:y1, x0:x1] = COLORS[i]
    return img


def annotated(img, rects, labels, difficult=None, encoded=True, with_type=True):
    """An AnnotatedDatum as convert_annoset makes it (PNG: lossless, so colours stay exact)."""
    ad = caffe_pb2.AnnotatedDatum()
    d = ad.datum
    d.channels, d.height, d.width, d.label = 3, img.shape[0], img.shape[1], -1
    if encoded:
        d.encoded, d.data = True, cv2.imencode('.png', img)[1].tobytes()
    else:
        d.encoded, d.data = False, np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    if with_type:
        ad.type = caffe_pb2.AnnotatedDatum.BBOX
    groups = {}
    h, w = img.shape[:2]
    for i, (r, lab) in enumerate(zip(rects, labels)):
        g = groups.get(lab)
        if g is None:
            g = groups[lab] = ad.annotation_group.add(group_label=lab)
        a = g.annotation.add(instance_id=len(g.annotation))
        a.bbox.xmin, a.bbox.ymin = r[0] / w, r[1] / h
        a.bbox.xmax, a.bbox.ymax = r[2] / w, r[3] / h
        a.bbox.difficult = bool(difficult and difficult[i])
    return ad


def write_db(path, records):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, r in enumerate(records):
            txn.put(b'%08d_img%d.png' % (i, i), r.SerializeToString())
    env.close()
    return str(path)


# Three records: boxes of labels 1/2, one with a difficult box, one with none.
RECTS = [[(10, 20, 50, 60), (70, 10, 110, 40)],
         [(5, 5, 45, 35), (60, 50, 100, 90), (20, 60, 40, 95)],
         []]
LABELS = [[1, 2], [2, 2, 1], []]
SIZES = [(100, 120), (100, 120), (100, 120)]


@pytest.fixture(scope='module')
def db(tmp_path_factory):
    d = tmp_path_factory.mktemp('anno')
    recs = [annotated(picture(*SIZES[i], RECTS[i]), RECTS[i], LABELS[i],
                      difficult=[False, False, True] if i == 1 else None) for i in range(3)]
    return write_db(d / 'db', recs)


def net_text(source, transform='', anno='', batch_size=2, extra_data='', tops=('data', 'label')):
    top = ' '.join('top: "%s"' % t for t in tops)
    return ('layer { name: "d" type: "AnnotatedData" %s data_param { source: "%s" batch_size: %d '
            'backend: LMDB %s } transform_param { %s } annotated_data_param { %s } }'
            % (top, source, batch_size, extra_data, transform, anno))


def make_net(text, phase=caffe.TRAIN):
    p = caffe_pb2.NetParameter()
    text_format.Parse(text, p)
    return caffe.Net(p, phase)


def forward(net):
    net.forward()
    return net.blobs['data'].data.copy(), net.blobs['label'].data.copy()


def hwc(data_item, mean=(0, 0, 0)):
    """A C x H x W float item back to H x W x C pixel values."""
    return data_item.transpose(1, 2, 0) + np.array(mean, np.float32)


def check_follow(img, rows, colors, tol=1.01, min_px=4):
    """Each row's box covers exactly where its colour lies in `img` (within `tol` pixels)."""
    h, w = img.shape[:2]
    for (lab, inst, x0, y0, x1, y1), color in zip(rows, colors):
        mask = (np.abs(img - np.array(color, np.float32)) < 40).all(axis=2)
        ys, xs = np.nonzero(mask)
        assert len(xs) >= min_px, (lab, inst, color)
        got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        want = np.array([x0 * w, y0 * h, x1 * w, y1 * h])
        np.testing.assert_allclose(got, want, atol=tol, err_msg='label %d instance %d'
                                   % (lab, inst))


def colors_of(record, rows):
    """The colour of each output row: rectangles are coloured in record order."""
    order = {}
    for i, lab in enumerate(LABELS[record]):
        order.setdefault(lab, []).append(i)
    return [COLORS[order[int(r[1])][int(r[2])]] for r in rows]


# ---- decoding ------------------------------------------------------------------------------

def test_decoding_without_augmentation_gives_exact_pixels_and_boxes(db):
    net = make_net(net_text(db, batch_size=3))
    assert net.blobs['data'].data.shape == (3, 3, 100, 120)
    assert net.blobs['label'].data.shape == (1, 1, 2, 8)   # the first record's 2 boxes
    data, label = forward(net)
    for i in range(3):
        np.testing.assert_array_equal(hwc(data[i]), picture(*SIZES[i], RECTS[i]))
    rows = label[0, 0]
    assert rows.shape == (5, 8)
    # Item 0: group 1 then group 2; item 1: group 2 (instances 0, 1) then group 1.
    np.testing.assert_array_equal(rows[:, :3], [[0, 1, 0], [0, 2, 0], [1, 2, 0], [1, 2, 1],
                                                [1, 1, 0]])
    want = []
    for i, order in ((0, (0, 1)), (1, (0, 1, 2))):
        for k in order:
            x0, y0, x1, y1 = RECTS[i][k]
            want.append(np.float32([x0 / 120, y0 / 100, x1 / 120, y1 / 100]))
    np.testing.assert_array_equal(rows[:, 3:7], np.array(want))
    np.testing.assert_array_equal(rows[:, 7], [0, 0, 0, 0, 1])


def test_a_batch_without_boxes_is_one_row_of_minus_ones(db):
    net = make_net(net_text(db, batch_size=1, extra_data='rand_skip: 0'))
    forward(net)
    forward(net)
    _, label = forward(net)           # the third record has no box
    np.testing.assert_array_equal(label, -np.ones((1, 1, 1, 8)))


def test_raw_datums_and_class_labels_without_annotation_type(tmp_path):
    img = picture(40, 50, [(5, 5, 20, 20)])
    recs = [annotated(img, [(5, 5, 20, 20)], [3], encoded=False, with_type=False)]
    recs[0].datum.label = 7
    src = write_db(tmp_path / 'db', recs)
    net = make_net(net_text(src, batch_size=2))
    data, label = forward(net)
    assert label.shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(label.ravel(), [7, 7])
    np.testing.assert_array_equal(hwc(data[1]), img)
    # anno_type in the parameter makes them boxes.
    net = make_net(net_text(src, batch_size=1, anno='anno_type: BBOX'))
    _, label = forward(net)
    np.testing.assert_allclose(label[0, 0], [[0, 3, 0, 0.1, 0.125, 0.4, 0.5, 0]], rtol=1e-6)


# ---- augmentations, each alone ---------------------------------------------------------------

def test_mirror_flips_pixels_and_boxes(db):
    caffe.set_random_seed(3)
    net = make_net(net_text(db, 'mirror: true', batch_size=2))
    flipped = kept = 0
    for _ in range(6):
        data, label = forward(net)
        rows = label[0, 0]
        for item in range(2):
            mine = rows[rows[:, 0] == item]
            if not len(mine):
                continue
            rec = 0 if np.allclose(mine[0, 1:3], [1, 0]) and len(mine) == 2 else 1
            img = hwc(data[item])
            check_follow(img, mine[:, 1:7], colors_of(rec, mine))
            # Row 0 is the record's first rectangle (group of its first label, instance 0).
            if np.isclose(mine[0, 3], RECTS[rec][0][0] / 120, atol=1e-6):
                kept += 1
            else:
                np.testing.assert_allclose(mine[0, 3], 1 - RECTS[rec][0][2] / 120, atol=1e-6)
                flipped += 1
    assert flipped and kept


def transformer(text, phase=caffe.TRAIN, seed=0):
    p = caffe_pb2.TransformationParameter()
    text_format.Parse(text, p)
    t = AnnotatedDataTransformer(p, phase, 'd')
    t.rng = np.random.default_rng(seed)
    return t


def run_one(t, img, rects, labels, samplers=()):
    anno = Annotations.from_datum(annotated(img, rects, labels))
    out, anno = t.augment(img, anno, samplers)
    out, mirror, anno = t.finish(out, anno)
    blob = t.to_blob([out], [mirror])[0]
    rows = np.column_stack([anno.labels, anno.instances, anno.boxes])
    return blob, rows


def test_expand_places_image_and_boxes_on_a_mean_filled_canvas():
    img = picture(60, 80, [(10, 10, 30, 40), (50, 20, 75, 55)])
    t = transformer('mean_value: 104 mean_value: 117 mean_value: 123 '
                    'expand_param { prob: 1 max_expand_ratio: 3 }')
    seen = set()
    for seed in range(6):
        t.rng = np.random.default_rng(seed)
        blob, rows = run_one(t, img, [(10, 10, 30, 40), (50, 20, 75, 55)], [1, 2])
        out = hwc(blob, MEAN)
        h, w = out.shape[:2]
        assert 60 <= h <= 180 and 80 <= w <= 240
        check_follow(out, rows, COLORS[:2])
        # The canvas outside the image is the mean colour; the image is pasted whole.
        gray = (np.abs(out - np.array(BG, np.float32)) < 1).all(axis=2)
        meanc = (np.abs(out - np.array(MEAN, np.float32)) < 1).all(axis=2)
        assert meanc.sum() == h * w - 60 * 80
        assert gray.sum() == 60 * 80 - 20 * 30 - 25 * 35
        # Boxes shrink with the image.
        np.testing.assert_allclose(rows[0, 4] - rows[0, 2], 20 / w, atol=1e-6)
        seen.add((h, w))
    assert len(seen) > 1


def fixed_crop(monkeypatch, crop):
    monkeypatch.setattr(sampler, 'generate_batch_samples',
                        lambda objects, samplers, rng: np.array([crop], float))


ONE_SAMPLER = [caffe_pb2.BatchSampler(max_sample=1, max_trials=1)]


@pytest.mark.parametrize('emit, kept', [('emit_type: CENTER', [0, 1]),
                                        ('emit_type: MIN_OVERLAP emit_overlap: 0.3', [0, 2]),
                                        (None, [0, 1, 2])])
def test_crop_with_emit_constraint_keeps_the_right_boxes(monkeypatch, emit, kept):
    rects = [(10, 10, 40, 40),      # inside the crop
             (80, 45, 110, 64),     # centre (95, 54.5) inside, 28 % of its area inside
             (76, 10, 120, 40)]     # centre (98, 25) outside, 45 % of its area inside
    img = picture(100, 120, rects)
    fixed_crop(monkeypatch, [0.0, 0.0, 0.8, 0.55])   # pixels x < 96, y < 55
    t = transformer('emit_constraint { %s }' % emit if emit else '')
    blob, rows = run_one(t, img, rects, [1, 1, 1], ONE_SAMPLER)
    assert blob.shape == (3, 55, 96)
    assert list(rows[:, 1]) == kept
    check_follow(hwc(blob), rows, [COLORS[k] for k in kept])
    np.testing.assert_allclose(rows[0, 2:], [10 / 96, 10 / 55, 40 / 96, 40 / 55], rtol=1e-6)


def test_crop_of_an_expanded_image_matches_cropping_the_whole_canvas(monkeypatch):
    rects = [(10, 10, 40, 40), (60, 50, 110, 90)]
    img = picture(100, 120, rects)
    fixed_crop(monkeypatch, [0.1, 0.2, 0.6, 0.9])
    t = transformer('mean_value: 104 mean_value: 117 mean_value: 123 '
                    'expand_param { prob: 1 max_expand_ratio: 2 }', seed=5)
    blob, rows = run_one(t, img, rects, [1, 2], ONE_SAMPLER)
    # The same draws by hand: expansion, then the window of the full canvas.
    rng = np.random.default_rng(5)
    rng.random()
    ratio = rng.uniform(1, 2)
    ch, cw = int(100 * ratio), int(120 * ratio)
    top, left = int(np.floor(rng.uniform(0, ch - 100))), int(np.floor(rng.uniform(0, cw - 120)))
    canvas = np.empty((ch, cw, 3), np.uint8)
    canvas[...] = MEAN
    canvas[top:top + 100, left:left + 120] = img
    win = at.AnnotatedDataTransformer._window(np.array([0.1, 0.2, 0.6, 0.9]), ch, cw)
    want = canvas[win.y:win.y + win.h, win.x:win.x + win.w]
    np.testing.assert_array_equal(hwc(blob, MEAN), want)
    check_follow(hwc(blob, MEAN), rows, [COLORS[int(r[0]) - 1] for r in rows], tol=1.5)


def test_resize_modes_give_their_shapes_and_move_boxes_with_the_pixels():
    rects = [(20, 10, 60, 40), (100, 50, 180, 90)]
    img = picture(100, 200, rects)
    base = 'resize_param { height: 50 width: 50 interp_mode: NEAREST resize_mode: %s %s }'
    blob, rows = run_one(transformer(base % ('WARP', '')), img, rects, [1, 2])
    assert blob.shape == (3, 50, 50)
    np.testing.assert_allclose(rows[:, 2:], [[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]],
                               rtol=1e-6)
    check_follow(hwc(blob), rows, COLORS[:2])
    blob, rows2 = run_one(transformer(base % ('FIT_SMALL_SIZE', '')), img, rects, [1, 2])
    assert blob.shape == (3, 50, 100)
    np.testing.assert_allclose(rows2, rows, rtol=1e-6)
    check_follow(hwc(blob), rows2, COLORS[:2])
    blob, rows3 = run_one(transformer(base % ('FIT_LARGE_SIZE_AND_PAD', 'pad_value: 7')), img,
                          rects, [1, 2])
    assert blob.shape == (3, 50, 50)
    # 100 x 200 -> 25 x 50 band between a 12-row and a 13-row padding; boxes squeezed in.
    out = hwc(blob)
    assert (out[:12] == 7).all() and (out[37:] == 7).all()
    np.testing.assert_allclose(rows3[:, 3], 12.5 / 50 + rows[:, 3] * 25 / 50, rtol=1e-6)
    check_follow(out, rows3, COLORS[:2], tol=1.01)


def test_interpolation_is_drawn_among_the_listed_modes():
    p = caffe_pb2.ResizeParameter(height=8, width=8)
    p.interp_mode.extend([caffe_pb2.ResizeParameter.LINEAR, caffe_pb2.ResizeParameter.AREA,
                          caffe_pb2.ResizeParameter.NEAREST, caffe_pb2.ResizeParameter.CUBIC,
                          caffe_pb2.ResizeParameter.LANCZOS4])
    rng = np.random.default_rng(0)
    chosen = {im_transforms.choose_interp(p, rng) for _ in range(200)}
    assert chosen == set(im_transforms.INTERP_MODES.values())
    img = picture(30, 40, [(3, 3, 20, 20)])
    outs = {m: im_transforms.apply_resize(img, p, m) for m in chosen}
    assert all(o.shape == (8, 8, 3) for o in outs.values())
    assert len({o.tobytes() for o in outs.values()}) > 1
    assert im_transforms.choose_interp(caffe_pb2.ResizeParameter(), rng) == cv2.INTER_LINEAR


def test_distortion_changes_pixels_not_boxes():
    rects = [(20, 10, 60, 40), (100, 50, 180, 90)]
    img = picture(100, 200, rects)
    plain, rows = run_one(transformer(''), img, rects, [1, 2])
    d = ('distort_param { brightness_prob: 1 brightness_delta: 32 contrast_prob: 1 '
         'contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 1 hue_delta: 18 saturation_prob: 1 '
         'saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 1 }')
    for seed in range(3):
        blob, rows2 = run_one(transformer(d, seed=seed), img, rects, [1, 2])
        assert blob.shape == plain.shape and not np.array_equal(blob, plain)
        np.testing.assert_array_equal(rows2, rows)


def test_distortion_steps_round_and_saturate_like_convert_to():
    img = np.array([[[0, 10, 100], [128, 240, 255]]], np.uint8)
    out = im_transforms._apply_lut(img, im_transforms._lut(1.0, 32.4))
    np.testing.assert_array_equal(out, [[[32, 42, 132], [160, 255, 255]]])
    out = im_transforms._apply_lut(img, im_transforms._lut(1.5, 0))
    np.testing.assert_array_equal(out, [[[0, 15, 150], [192, 255, 255]]])
    out = im_transforms._apply_lut(img, im_transforms._lut(1.0, -20.5))
    np.testing.assert_array_equal(out, [[[0, 0, 80], [108, 220, 234]]])   # halves to even
    p = caffe_pb2.DistortionParameter(brightness_prob=0, contrast_prob=0, saturation_prob=0,
                                      hue_prob=0, random_order_prob=0)
    np.testing.assert_array_equal(im_transforms.apply_distort(img, p, np.random.default_rng(0)),
                                  img)


def test_crop_h_crop_w_centred_in_test_and_boxes_projected():
    rects = [(0, 0, 40, 30), (60, 50, 100, 80)]
    img = picture(100, 120, rects)
    t = transformer('crop_h: 60 crop_w: 80', phase=caffe.TEST)
    blob, rows = run_one(t, img, rects, [1, 2])
    assert blob.shape == (3, 60, 80)      # window x 20..100, y 20..80
    np.testing.assert_allclose(rows[:, 2:], [[0, 0, 20 / 80, 10 / 60], [0.5, 0.5, 1, 1]],
                               rtol=1e-6)
    check_follow(hwc(blob), rows, COLORS[:2])


def test_noise_param_runs_cheap_effects():
    img = picture(40, 50, [(5, 5, 20, 20)])
    p = caffe_pb2.NoiseParameter(decolorize=True, gauss_blur=True, hist_eq=True, clahe=True,
                                 jpeg=80, erode=True, posterize=True, inverse=True,
                                 saltpepper=True)
    p.saltpepper_param.fraction = 0.1
    p.saltpepper_param.value.append(255)
    out = im_transforms.apply_noise(img, p, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    inv = im_transforms.apply_noise(img, caffe_pb2.NoiseParameter(inverse=True), None)
    np.testing.assert_array_equal(inv, 255 - img)


# ---- the seed's settings, seeding, prefetch ---------------------------------------------------

SEED_TRANSFORM = """
  mirror: true mean_value: 104 mean_value: 117 mean_value: 123 force_color: true
  resize_param { prob: 1 resize_mode: WARP height: 64 width: 64 interp_mode: LINEAR
    interp_mode: AREA interp_mode: NEAREST interp_mode: CUBIC interp_mode: LANCZOS4 }
  distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5
    contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5
    saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 0.0 }
  expand_param { prob: 0.5 max_expand_ratio: 4.0 }
  emit_constraint { emit_type: CENTER }"""
SEED_SAMPLERS = "batch_sampler { sampler { } max_trials: 1 max_sample: 1 }" + ''.join(
    " batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 "
    "max_aspect_ratio: 2.0 } sample_constraint { %s: %s } max_trials: 50 max_sample: 1 }"
    % (('min_jaccard_overlap', v) if v != 1.0 else ('max_jaccard_overlap', v))
    for v in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0))


def seed_net(db, seed, prefetch=None, batch_size=4):
    caffe.set_random_seed(seed)
    extra = '' if prefetch is None else 'prefetch: %d' % prefetch
    return make_net(net_text(db, SEED_TRANSFORM, SEED_SAMPLERS, batch_size, extra))


def test_seed_pipeline_batches_are_sane_and_repeat_for_a_seed(db):
    a = [forward(seed_net(db, 11)) for _ in range(1)][0]
    net1, net2, net3 = seed_net(db, 11), seed_net(db, 11), seed_net(db, 12)
    runs = [[forward(n) for _ in range(3)] for n in (net1, net2, net3)]
    for (d1, l1), (d2, l2) in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(runs[0][0][0], a[0])
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(runs[0], runs[2]))
    for data, label in runs[0]:
        assert data.shape == (4, 3, 64, 64)
        rows = label[0, 0]
        if rows[0, 0] == -1:
            assert rows.shape == (1, 8)
            continue
        assert ((rows[:, 3:7] >= 0) & (rows[:, 3:7] <= 1)).all()
        assert (rows[:, 5] > rows[:, 3]).all() and (rows[:, 6] > rows[:, 4]).all()
        assert set(rows[:, 1].astype(int)) <= {1, 2}
        assert np.all(np.diff(rows[:, 0]) >= 0)


def test_prefetch_runs_in_a_thread_and_gives_the_same_batches(db):
    with_thread = seed_net(db, 5, prefetch=3)
    inline = seed_net(db, 5, prefetch=0)
    names = [t.name for t in threading.enumerate()]
    assert any(n.startswith('prefetch d') for n in names)
    for _ in range(3):
        (d1, l1), (d2, l2) = forward(with_thread), forward(inline)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)


def test_data_only_top(db):
    net = make_net(net_text(db, batch_size=2, tops=('data',)))
    net.forward()
    assert net.blobs['data'].data.shape == (2, 3, 100, 120)


def test_data_params_transformation_fields_are_ignored_with_a_warning_as_in_data(db, capfd,
                                                                                monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    net = make_net(net_text(db, batch_size=1, extra_data='crop_size: 10 mirror: true'))
    assert net.blobs['data'].data.shape == (1, 3, 100, 120)
    err = capfd.readouterr().err
    for field in ('crop_size', 'mirror'):
        assert 'annotated_data_layer.cpp] layer d: data_param.%s is deprecated and ignored' \
            % field in err


# ---- bad input --------------------------------------------------------------------------------

def test_empty_database_names_layer_and_source(tmp_path):
    src = write_db(tmp_path / 'empty', [])
    with pytest.raises(caffe.NetError, match=r"'d' \(AnnotatedData\).*%s.*no records" % src):
        make_net(net_text(src))


def test_a_datum_record_is_not_an_annotated_datum(tmp_path):
    env = lmdb.open(str(tmp_path / 'plain'), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'00000000_x', caffe.io.array_to_datum(np.zeros((3, 4, 5), np.uint8), 1)
                .SerializeToString())
    env.close()
    with pytest.raises(caffe.NetError, match=r"'d' \(AnnotatedData\).*00000000_x.*plain.*not an "
                                             r"AnnotatedDatum"):
        make_net(net_text(str(tmp_path / 'plain')))


def test_label_map_must_list_the_records_labels(db, tmp_path):
    lm = tmp_path / 'map.prototxt'
    lm.write_text('item { name: "none_of_the_above" label: 0 } item { name: "a" label: 1 }')
    net = make_net(net_text(db, anno='label_map_file: "%s"' % lm, batch_size=1))
    with pytest.raises(caffe.LayerError, match=r"'d'.*label\(s\) 2.*%s" % lm):
        net.forward()
    with pytest.raises(caffe.NetError, match=r"'d'.*label_map_file.*nothere"):
        make_net(net_text(db, anno='label_map_file: "%s"' % (tmp_path / 'nothere')))


def test_bad_parameters_name_the_layer(db):
    with pytest.raises(caffe.NetError, match=r"'d'.*batch_sampler 0.*min_scale"):
        make_net(net_text(db, anno='batch_sampler { sampler { min_scale: 0 } }'))
    with pytest.raises(caffe.NetError, match=r"'d'.*max_expand_ratio"):
        make_net(net_text(db, 'expand_param { max_expand_ratio: 1 }'))
    with pytest.raises(caffe.NetError, match=r"'d'.*resize_param.*height"):
        make_net(net_text(db, 'resize_param { width: 5 }'))
    with pytest.raises(caffe.NetError, match=r"'d'.*crop 200 x 10 is larger"):
        make_net(net_text(db, 'crop_h: 200 crop_w: 10'))


def test_test_phase_with_the_seeds_test_settings_only_resizes(db):
    # model_libs' CreateAnnotatedDataLayer gives TEST nets `batch_sampler {}` (100 trials of
    # the whole image): the boxes come out exactly as stored, the image only resized.
    t = ('mean_value: 104 mean_value: 117 mean_value: 123 force_color: true '
         'resize_param { prob: 1 resize_mode: WARP height: 64 width: 64 interp_mode: LINEAR }')
    net = make_net(net_text(db, t, 'batch_sampler { }', batch_size=3), caffe.TEST)
    plain = make_net(net_text(db, batch_size=3), caffe.TEST)
    data, label = forward(net)
    _, want = forward(plain)
    assert data.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(label, want)
    resized = cv2.resize(picture(*SIZES[0], RECTS[0]), (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(hwc(data[0], MEAN), resized, atol=1e-4)


def test_data_parallel_solvers_share_the_records_like_data(db, monkeypatch):
    from caffe import parallel
    monkeypatch.setattr(parallel, 'solver_rank', lambda: 1)
    monkeypatch.setattr(parallel, 'solver_count', lambda: 2)
    # Solver 1 of 2 takes stream positions 1, 3, 5: records 1, 0, 2.
    _, label = forward(make_net(net_text(db, batch_size=3)))
    rows = label[0, 0]
    assert [int((rows[:, 0] == i).sum()) for i in range(3)] == [3, 2, 0]
    _, label = forward(make_net(net_text(db, batch_size=3), caffe.TEST))   # one tester: all
    assert [int((label[0, 0][:, 0] == i).sum()) for i in range(3)] == [2, 3, 0]


def test_net_spec_writes_an_annotated_data_layer_as_model_libs_does(db):
    R = caffe_pb2.ResizeParameter
    transform = {
        'mirror': True, 'mean_value': list(MEAN), 'force_color': True,
        'resize_param': {'prob': 1, 'resize_mode': R.WARP, 'height': 32, 'width': 32,
                         'interp_mode': [R.LINEAR, R.AREA, R.NEAREST, R.CUBIC, R.LANCZOS4]},
        'distort_param': {'brightness_prob': 0.5, 'brightness_delta': 32},
        'expand_param': {'prob': 0.5, 'max_expand_ratio': 4.0},
        'emit_constraint': {'emit_type': caffe_pb2.EmitConstraint.CENTER}}
    samplers = [{'sampler': {}, 'max_trials': 1, 'max_sample': 1},
                {'sampler': {'min_scale': 0.3, 'max_scale': 1.0, 'min_aspect_ratio': 0.5,
                             'max_aspect_ratio': 2.0},
                 'sample_constraint': {'min_jaccard_overlap': 0.1}, 'max_trials': 50,
                 'max_sample': 1}]
    n = caffe.NetSpec()
    n.data, n.label = caffe.layers.AnnotatedData(
        name='d', ntop=2, include=dict(phase=caffe.TRAIN), transform_param=transform,
        data_param=dict(batch_size=2, backend=caffe_pb2.DataParameter.LMDB, source=db),
        annotated_data_param=dict(label_map_file='', batch_sampler=samplers))
    net = make_net(str(n.to_proto()))
    data, label = forward(net)
    assert data.shape == (2, 3, 32, 32) and label.shape[-1] == 8
