"""datasets.voc_eval: voc_ap on hand cases, voc_eval on a tiny VOC folder."""
import os

import numpy as np
import pytest

from datasets.ds_utils import AnnotationError
from datasets.voc_eval import parse_rec, voc_ap, voc_eval


def test_voc_ap_area_metric_hand_case():
    # envelope: precision 1 up to recall .5, then .5 up to recall 1
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_voc_ap_11_point_hand_case():
    ap = voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]), use_07_metric=True)
    assert ap == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_voc_ap_11_point_uses_the_devkits_float_thresholds():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 > 0.3: recall 0.3 reaches 3 points
    assert voc_ap(np.array([0.3]), np.array([1.0]), True) == pytest.approx(3 / 11)


def test_voc_ap_empty_curve_is_zero():
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0


def reference_voc_eval(recs, imagenames, dets, classname, ovthresh, use_07):
    """The sequential algorithm, transcribed for comparison (stable sort)."""
    class_recs, npos = {}, 0
    for name in imagenames:
        R = [o for o in recs[name] if o['name'] == classname]
        diff = np.array([bool(o['difficult']) for o in R], dtype=bool)
        class_recs[name] = {'bbox': np.array([o['bbox'] for o in R], float).reshape(-1, 4),
                            'difficult': diff, 'det': [False] * len(R)}
        npos += int((~diff).sum())
    conf = np.array([d[1] for d in dets])
    order = np.argsort(-conf, kind='stable')
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for k, d in enumerate(order):
        R = class_recs[dets[d][0]]
        bb = np.array(dets[d][2:], float)
        ovmax, G = -np.inf, R['bbox']
        if G.size:
            iw = np.maximum(np.minimum(G[:, 2], bb[2]) - np.maximum(G[:, 0], bb[0]) + 1., 0.)
            ih = np.maximum(np.minimum(G[:, 3], bb[3]) - np.maximum(G[:, 1], bb[1]) + 1., 0.)
            inter = iw * ih
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (G[:, 2] - G[:, 0] + 1.) * (G[:, 3] - G[:, 1] + 1.) - inter)
            ov = inter / uni
            ovmax, jmax = np.max(ov), np.argmax(ov)
        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[k] = 1.
                    R['det'][jmax] = True
                else:
                    fp[k] = 1.
        else:
            fp[k] = 1.
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, voc_ap(rec, prec, use_07)


def _write_dets(path, dets):
    with open(path, 'w') as f:
        for d in dets:
            f.write('{:s} {:.3f} {:.1f} {:.1f} {:.1f} {:.1f}\n'.format(*d))


@pytest.fixture
def tiny_voc(tmp_path, voc_writer):
    images = {
        'img1': (100, 100, [('cat', (1, 1, 10, 10)), ('cat', (50, 50, 60, 60), 1),
                            ('dog', (20, 20, 40, 40))]),
        'img2': (100, 100, [('cat', (5, 5, 20, 20))]),
        'img3': (100, 100, [('dog', (1, 1, 30, 30))]),
    }
    root = voc_writer(tmp_path / 'VOCdevkit', '2007', images,
                      {'test': ['img1', 'img2', 'img3'], 'small': ['img2']})
    return {'annopath': os.path.join(root, 'Annotations', '{:s}.xml'),
            'imageset': os.path.join(root, 'ImageSets', 'Main', 'test.txt'),
            'small': os.path.join(root, 'ImageSets', 'Main', 'small.txt'),
            'cachedir': str(tmp_path / 'cache'), 'tmp': tmp_path}


def test_voc_eval_hand_case(tiny_voc):
    dets = [('img1', 0.9, 1, 1, 10, 10),     # TP
            ('img1', 0.8, 1, 1, 10, 10),     # duplicate: FP
            ('img1', 0.7, 50, 50, 60, 60),   # difficult box: ignored
            ('img2', 0.6, 30, 30, 40, 40),   # no overlap: FP
            ('img3', 0.5, 1, 1, 5, 5),       # no cat in the image: FP
            ('img2', 0.4, 5, 5, 20, 20)]     # TP
    detpath = str(tiny_voc['tmp'] / 'det_{:s}.txt')
    _write_dets(detpath.format('cat'), dets)
    rec, prec, ap = voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'cat',
                             tiny_voc['cachedir'])
    np.testing.assert_allclose(rec, [.5, .5, .5, .5, .5, 1.])
    np.testing.assert_allclose(prec, [1., .5, .5, 1 / 3, 1 / 4, 2 / 5])
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 0.4)
    _, _, ap07 = voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'cat',
                          tiny_voc['cachedir'], use_07_metric=True)
    assert ap07 == pytest.approx((6 * 1.0 + 5 * 0.4) / 11)
    # a stricter IoU threshold changes nothing for exact boxes
    _, _, ap_strict = voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'cat',
                               tiny_voc['cachedir'], ovthresh=0.99)
    assert ap_strict == pytest.approx(ap)


def test_voc_eval_equals_sequential_reference(tmp_path, voc_writer):
    rng = np.random.default_rng(5)
    images = {}
    for i in range(25):
        objs = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.integers(1, 80, 2)
            w, h = rng.integers(5, 40, 2)
            objs.append((str(rng.choice(['cat', 'dog'])), (x, y, x + w, y + h),
                         int(rng.random() < 0.15)))
        images['im{:02d}'.format(i)] = (160, 160, objs)
    names = sorted(images)
    root = voc_writer(tmp_path / 'dk', '2007', images, {'test': names})
    annopath = os.path.join(root, 'Annotations', '{:s}.xml')
    recs = {n: parse_rec(annopath.format(n)) for n in names}
    dets = []
    for n in names:
        for o in recs[n]:  # jittered copies of the truth, some of them twice
            for _ in range(int(rng.integers(0, 3))):
                b = np.array(o['bbox'], float) + rng.normal(0, 3, 4)
                dets.append((n, float(rng.random())) + tuple(np.round(b, 1)))
        for _ in range(3):  # pure false positives
            x, y = rng.integers(1, 100, 2)
            dets.append((n, float(rng.random()), x, y, x + 20.0, y + 20.0))
    dets = [(d[0], round(d[1], 3)) + tuple(d[2:]) for d in dets]
    detpath = str(tmp_path / 'det_{:s}.txt')
    _write_dets(detpath.format('cat'), dets)
    for use_07 in (False, True):
        rec, prec, ap = voc_eval(detpath, annopath, os.path.join(root, 'ImageSets', 'Main',
                                                                 'test.txt'),
                                 'cat', str(tmp_path / 'cache'), 0.5, use_07)
        r_rec, r_prec, r_ap = reference_voc_eval(recs, names, dets, 'cat', 0.5, use_07)
        np.testing.assert_array_equal(rec, r_rec)
        np.testing.assert_array_equal(prec, r_prec)
        assert ap == r_ap and 0 < ap < 1


def test_voc_eval_empty_detections_and_unknown_image(tiny_voc):
    detpath = str(tiny_voc['tmp'] / 'det_{:s}.txt')
    _write_dets(detpath.format('cat'), [])
    rec, prec, ap = voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'cat',
                             tiny_voc['cachedir'])
    assert ap == 0.0 and rec.size == 0
    _write_dets(detpath.format('dog'), [('img9', 0.5, 1, 1, 5, 5)])
    with pytest.raises(ValueError, match=r"det_dog\.txt: detection for image 'img9'"):
        voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'dog',
                 tiny_voc['cachedir'])
    with open(detpath.format('dog'), 'w') as f:
        f.write('img1 0.5 1 1 5\n')
    with pytest.raises(ValueError, match='line 1 does not have 6 fields'):
        voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'dog',
                 tiny_voc['cachedir'])


def test_annotation_cache_is_json_and_per_image_set(tiny_voc):
    detpath = str(tiny_voc['tmp'] / 'det_{:s}.txt')
    _write_dets(detpath.format('cat'), [('img2', 0.9, 5, 5, 20, 20)])
    voc_eval(detpath, tiny_voc['annopath'], tiny_voc['small'], 'cat', tiny_voc['cachedir'])
    voc_eval(detpath, tiny_voc['annopath'], tiny_voc['imageset'], 'cat', tiny_voc['cachedir'])
    files = sorted(os.listdir(tiny_voc['cachedir']))
    assert len(files) == 2 and all(f.endswith('.json') for f in files)
    # the cache is used on the next call (the XML may even be gone)
    os.remove(tiny_voc['annopath'].format('img2'))
    _, _, ap = voc_eval(detpath, tiny_voc['annopath'], tiny_voc['small'], 'cat',
                        tiny_voc['cachedir'])
    assert ap == 1.0


def test_parse_rec_defaults_and_errors(tmp_path):
    path = tmp_path / 'a.xml'
    path.write_text('<annotation><object><name>cat</name><bndbox><xmin>1</xmin>'
                    '<ymin>2</ymin><xmax>3.5</xmax><ymax>4</ymax></bndbox></object>'
                    '</annotation>')
    (rec,) = parse_rec(str(path))
    assert rec == {'name': 'cat', 'pose': 'Unspecified', 'truncated': 0, 'difficult': 0,
                   'bbox': [1, 2, 3.5, 4]}
    path.write_text('<annotation><object><name>cat</name></object></annotation>')
    with pytest.raises(AnnotationError, match=r'a\.xml \(object #0\): object has no <bndbox>'):
        parse_rec(str(path))
    path.write_text('<annotation>')
    with pytest.raises(AnnotationError, match='not a valid XML'):
        parse_rec(str(path))
