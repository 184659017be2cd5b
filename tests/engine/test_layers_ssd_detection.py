"""DetectionOutput and DetectionEvaluate (SSD/RefineDet): hand-made exact values, the
loop-based reference over settings, result files, errors."""

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

import ssd_reference as ref

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def build(text, phase=caffe.TEST, dtype=torch.float64):
    with caffe.precision(dtype):
        return caffe.Net(protoio.parse_text(text, caffe_pb2.NetParameter()), phase)


def inputs_text(inputs):
    return '\n'.join('input: "%s" input_shape { %s }' % (k, ' '.join('dim: %d' % d for d in v.shape))
                     for k, v in inputs.items())


def run_output(params, inputs, dtype=torch.float64):
    text = inputs_text(inputs) + (
        '\nlayer { name: "det" type: "DetectionOutput" %s top: "out" '
        'detection_output_param { %s } }' % (' '.join('bottom: "%s"' % k for k in inputs), params))
    net = build(text, dtype=dtype)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net.blobs['out'].data.copy(), net


# ---- hand-made ------------------------------------------------------------------------------

A, B, C = [0, 0, .4, .4], [.05, .05, .45, .45], [.6, .6, .9, .9]   # IoU(A, B) = 0.62


def hand_inputs():
    priors = np.array([A + B + C, [0.1] * 12], np.float64)[None]
    conf = np.array([[.2, .7, .1], [.1, .6, .3], [.1, .1, .8]]).reshape(1, -1)
    return {'loc': np.zeros((1, 12)), 'conf': conf, 'priors': priors}


def test_hand_values_nms_and_order():
    out, _ = run_output('num_classes: 3 code_type: CORNER nms_param { nms_threshold: 0.45 } '
                        'confidence_threshold: 0.05', hand_inputs())
    # class 1: A (B suppressed by A), C; class 2: C, B (A suppressed by B).
    np.testing.assert_allclose(out[0, 0], [[0, 1, .7] + A, [0, 1, .1] + C,
                                           [0, 2, .8] + C, [0, 2, .3] + B], atol=1e-7)


def test_hand_values_keep_top_k_and_threshold():
    out, _ = run_output('num_classes: 3 code_type: CORNER nms_param { nms_threshold: 0.45 } '
                        'confidence_threshold: 0.05 keep_top_k: 3', hand_inputs())
    np.testing.assert_allclose(out[0, 0], [[0, 1, .7] + A, [0, 2, .8] + C, [0, 2, .3] + B],
                               atol=1e-7)
    out, _ = run_output('num_classes: 3 code_type: CORNER nms_param { nms_threshold: 0.45 } '
                        'confidence_threshold: 0.5', hand_inputs())
    np.testing.assert_allclose(out[0, 0], [[0, 1, .7] + A, [0, 2, .8] + C], atol=1e-7)


def test_no_detection_rows():
    inputs = hand_inputs()
    for k in ('loc', 'conf'):
        inputs[k] = np.concatenate([inputs[k], inputs[k]])
    out, _ = run_output('num_classes: 3 code_type: CORNER confidence_threshold: 0.95', inputs)
    np.testing.assert_array_equal(out, [[[[0] + [-1] * 6, [1] + [-1] * 6]]])


def test_objectness_replaces_scores():
    inputs = hand_inputs()
    inputs['arm_conf'] = np.array([[.9, .1, .995, .005, .2, .8]])  # prior B is background
    out, _ = run_output('num_classes: 3 code_type: CORNER nms_param { nms_threshold: 0.45 } '
                        'confidence_threshold: 0.05', inputs)
    # B scores (1, 0, 0): class 2 keeps A now (nothing suppresses it).
    np.testing.assert_allclose(out[0, 0], [[0, 1, .7] + A, [0, 1, .1] + C,
                                           [0, 2, .8] + C, [0, 2, .1] + A], atol=1e-7)


# ---- against the reference ------------------------------------------------------------------

def random_inputs(seed, n=2, p=30, c=4, share=True, arm=0, scale=0.3):
    rng = np.random.RandomState(seed)
    lo = rng.randint(0, 8, (p, 2)) / 10.0
    pri = np.concatenate([lo, lo + rng.randint(1, 4, (p, 2)) / 10.0], 1)
    lc = 1 if share else c
    logits = rng.randn(n, p, c) * 2
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    conf = np.round(conf * 20) / 20                               # ties in scores
    out = {'loc': rng.randn(n, p * lc * 4) * scale, 'conf': conf.reshape(n, -1),
           'priors': np.stack([pri.reshape(-1), np.tile([.1, .1, .2, .2], p)])[None]}
    if arm >= 1:
        a = rng.rand(n, p, 2)
        out['arm_conf'] = (a / a.sum(-1, keepdims=True)).reshape(n, -1)
    if arm >= 2:
        out['arm_loc'] = rng.randn(n, p * 4) * 0.2
    return out


CASES = {
    'ssd': ('code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 20 } keep_top_k: 12 '
            'confidence_threshold: 0.1', dict(code_type=2, nms_threshold=0.45, top_k=20,
                                               keep_top_k=12, confidence_threshold=0.1), {}),
    'corner_no_threshold': ('code_type: CORNER nms_param { nms_threshold: 0.3 }',
                            dict(code_type=1, nms_threshold=0.3), {}),
    'unshared_corner_size': ('code_type: CORNER_SIZE share_location: false nms_param { '
                             'nms_threshold: 0.5 } confidence_threshold: 0.2',
                             dict(code_type=3, share_location=False, nms_threshold=0.5,
                                  confidence_threshold=0.2), dict(share=False)),
    'eta': ('code_type: CENTER_SIZE nms_param { nms_threshold: 0.7 eta: 0.8 top_k: 15 } '
            'confidence_threshold: 0.05', dict(code_type=2, nms_threshold=0.7, eta=0.8, top_k=15,
                                               confidence_threshold=0.05), {}),
    'background_2': ('code_type: CENTER_SIZE background_label_id: 2 nms_param { nms_threshold: '
                     '0.45 } confidence_threshold: 0.1 variance_encoded_in_target: true',
                     dict(code_type=2, background_label_id=2, nms_threshold=0.45,
                          confidence_threshold=0.1, variance_encoded_in_target=True), {}),
    'refinedet_4': ('code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 25 } '
                    'keep_top_k: 10 confidence_threshold: 0.05 objectness_score: 0.4',
                    dict(code_type=2, nms_threshold=0.45, top_k=25, keep_top_k=10,
                         confidence_threshold=0.05, objectness_score=0.4), dict(arm=1)),
    'refinedet_5': ('code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 25 } '
                    'keep_top_k: 10 confidence_threshold: 0.05 objectness_score: 0.4',
                    dict(code_type=2, nms_threshold=0.45, top_k=25, keep_top_k=10,
                         confidence_threshold=0.05, objectness_score=0.4), dict(arm=2)),
}


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('seed', [0, 1])
def test_output_against_reference(name, seed):
    text, params, kw = CASES[name]
    inputs = random_inputs(seed, **kw)
    out, _ = run_output('num_classes: 4 ' + text, inputs)
    want = ref.detection_output(inputs['loc'], inputs['conf'], inputs['priors'],
                                dict(params, num_classes=4), inputs.get('arm_conf'),
                                inputs.get('arm_loc'))
    assert out.shape == (1, 1) + want.shape
    np.testing.assert_allclose(out[0, 0], want, rtol=1e-6, atol=1e-7)


def test_float32_run_agrees():
    text, params, kw = CASES['ssd']
    inputs = random_inputs(3, **kw)
    out, _ = run_output('num_classes: 4 ' + text, inputs, dtype=torch.float32)
    want = ref.detection_output(inputs['loc'], inputs['conf'], inputs['priors'],
                                dict(params, num_classes=4))
    np.testing.assert_allclose(out[0, 0], want, atol=2e-6)


# ---- result files ---------------------------------------------------------------------------

LABEL_MAP = '''item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "Cat" }
item { name: "dog" label: 2 display_name: "Dog" }
'''


def save_case(tmp_path, fmt, num_test_image=2, label_map=LABEL_MAP,
              sizes='img1 100 200\n000042 50 50\n'):
    (tmp_path / 'labelmap.prototxt').write_text(label_map)
    (tmp_path / 'sizes.txt').write_text(sizes)
    params = ('num_classes: 3 code_type: CORNER nms_param { nms_threshold: 0.45 } '
              'confidence_threshold: 0.05 save_output_param { output_directory: "%s" '
              'output_name_prefix: "comp4_" output_format: "%s" label_map_file: "%s" '
              'name_size_file: "%s" num_test_image: %d }'
              % (tmp_path / 'out', fmt, tmp_path / 'labelmap.prototxt', tmp_path / 'sizes.txt',
                 num_test_image))
    priors = np.array([[.1, .2, .5, .6, .3, .3, .9, .5], [.1] * 8])[None]
    inputs = {'loc': np.zeros((1, 8)), 'conf': np.array([[.3, .7, 0, .2, 0, .8]]),
              'priors': priors}
    text = inputs_text(inputs) + (
        '\nlayer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
        'bottom: "priors" top: "out" detection_output_param { %s } }' % params)
    net = build(text, dtype=torch.float32)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    return net


def test_save_voc(tmp_path):
    net = save_case(tmp_path, 'VOC')
    net.forward()
    out = tmp_path / 'out'
    assert (out / 'comp4_cat.txt').read_text() == ''           # the pass is not over yet
    net.forward()
    # img1 (100 x 200): cat at [.1,.2,.5,.6] -> 20 20 100 60; dog at [.3,.3,.9,.5] -> 60 30 180 50.
    # 000042 (50 x 50): the same boxes -> 5 10 25 30 and 15 15 45 25.
    assert (out / 'comp4_cat.txt').read_text() == 'img1 0.7 20 20 100 60\n000042 0.7 5 10 25 30\n'
    assert (out / 'comp4_dog.txt').read_text() == 'img1 0.8 60 30 180 50\n000042 0.8 15 15 45 25\n'
    assert not (out / 'comp4_none_of_the_above.txt').exists()


def test_voc_files_are_emptied_by_the_first_forward_of_a_pass_not_by_building_the_net(tmp_path):
    (tmp_path / 'out').mkdir()
    earlier = tmp_path / 'out' / 'comp4_cat.txt'
    earlier.write_text('img9 0.5 1 2 3 4\n')              # the results of an earlier run
    net = save_case(tmp_path, 'VOC')
    assert earlier.read_text() == 'img9 0.5 1 2 3 4\n'    # as Caffe: set-up leaves them
    net.forward()
    assert earlier.read_text() == ''


def test_save_coco(tmp_path):
    net = save_case(tmp_path, 'COCO', num_test_image=1)
    net.forward()
    text = (tmp_path / 'out' / 'comp4_.json').read_text()
    want = ('[\n'
            '        {\n'
            '            "image_id": "img1",\n'
            '            "category_id": "cat",\n'
            '            "bbox": [\n'
            '                20,\n'
            '                20,\n'
            '                80,\n'
            '                40\n'
            '            ],\n'
            '            "score": 0.699999988\n'
            '        },\n'
            '        {\n'
            '            "image_id": "img1",\n'
            '            "category_id": "dog",\n'
            '            "bbox": [\n'
            '                60,\n'
            '                30,\n'
            '                120,\n'
            '                20\n'
            '            ],\n'
            '            "score": 0.800000012\n'
            '        }\n'
            '    \n'
            ']\n')
    assert text == want


def test_save_coco_numeric_names_and_passes(tmp_path):
    """Numbers lose their quotes (SSD's regex, COCO image ids); each pass rewrites the file."""
    net = save_case(tmp_path, 'COCO', num_test_image=1, sizes='000042 50 50\n')
    net.forward()
    first = (tmp_path / 'out' / 'comp4_.json').read_text()
    assert '"image_id": 000042,' in first and '"category_id": "cat",' in first
    net.forward()
    assert (tmp_path / 'out' / 'comp4_.json').read_text() == first


def test_save_ilsvrc(tmp_path):
    net = save_case(tmp_path, 'ILSVRC', num_test_image=1)
    net.forward()
    assert (tmp_path / 'out' / 'comp4_.txt').read_text() == \
        'img1 1 0.7 20 20 100 60\nimg1 2 0.8 60 30 180 50\n'


def test_save_label_map_missing_class(tmp_path):
    with pytest.raises(caffe.LayerError, match=r"'det' \(DetectionOutput\).*no name for "
                                               r"label\(s\) \[2\]"):
        save_case(tmp_path, 'VOC', label_map=LABEL_MAP.replace('label: 2', 'label: 5'))


def test_save_label_map_duplicate_label(tmp_path):
    with pytest.raises(caffe.LayerError, match='many duplicates of label 1'):
        save_case(tmp_path, 'VOC', label_map=LABEL_MAP.replace('label: 2', 'label: 1'))


# ---- DetectionOutput errors -----------------------------------------------------------------

def test_output_error_priors_vs_loc():
    inputs = hand_inputs()
    inputs['loc'] = np.zeros((1, 16))
    with pytest.raises(caffe.LayerError, match=r"'det'.*3 priors x 1 x 4 = 12.*holds 16"):
        run_output('num_classes: 3', inputs)


def test_output_error_num_classes_vs_conf():
    with pytest.raises(caffe.LayerError, match=r"'det'.*num_classes 4 = 12.*holds 9"):
        run_output('num_classes: 4', hand_inputs())


# ---- DetectionEvaluate ----------------------------------------------------------------------

def run_evaluate(params, det, label):
    inputs = {'det': det.reshape(1, 1, -1, 7), 'label': label.reshape(1, 1, -1, 8)}
    text = inputs_text(inputs) + (
        '\nlayer { name: "eval" type: "DetectionEvaluate" bottom: "det" bottom: "label" '
        'top: "rows" detection_evaluate_param { %s } }' % params)
    net = build(text)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net.blobs['rows'].data[0, 0].copy(), net


GT = np.array([[0, 1, 0, .1, .1, .3, .3, 0], [0, 2, 0, .5, .5, .7, .7, 0],
               [0, 2, 1, .6, .1, .9, .3, 1], [1, 1, 0, .2, .2, .4, .4, 0]])


def test_evaluate_hand_values():
    det = np.array([[0, 1, .8, .1, .1, .3, .31],      # tp
                    [0, 1, .9, .11, .1, .3, .3],      # tp (higher score: first)
                    [0, 2, .7, .6, .1, .9, .3],        # on the difficult box: ignored
                    [0, 2, .6, .0, .6, .1, .7],        # fp
                    [1, 2, .5, .2, .2, .4, .4],        # image 1 has no class 2: fp
                    [2, -1, -1, -1, -1, -1, -1]])      # an image without detections
    rows, _ = run_evaluate('num_classes: 3 evaluate_difficult_gt: false', det, GT)
    np.testing.assert_allclose(rows, [[-1, 1, 2, -1, -1], [-1, 2, 1, -1, -1],
                                      [0, 1, .9, 1, 0], [0, 1, .8, 0, 1],
                                      [0, 2, .7, 0, 0], [0, 2, .6, 0, 1],
                                      [1, 2, .5, 0, 1]], atol=1e-7)
    rows, _ = run_evaluate('num_classes: 3 evaluate_difficult_gt: true', det, GT)
    assert rows[1, 2] == 2 and list(rows[4, 3:]) == [1, 0]


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('difficult', [False, True])
def test_evaluate_against_reference(seed, difficult):
    rng = np.random.RandomState(seed)
    gts = []
    for i in range(3):
        for k in range(rng.randint(1, 4)):
            lo = rng.randint(0, 6, 2) / 10
            gts.append([i, rng.randint(1, 4), k, lo[0], lo[1], lo[0] + .3, lo[1] + .3,
                        rng.rand() < 0.3])
    dets = []
    for i in range(4):
        for k in range(rng.randint(0, 6)):
            lo = rng.randint(0, 7, 2) / 10
            dets.append([i, rng.randint(1, 4), np.round(rng.rand(), 1), lo[0], lo[1],
                         lo[0] + .3, lo[1] + .3])
    det = np.array(dets or [[0, -1, -1, -1, -1, -1, -1]])
    label = np.array(gts, np.float64)
    rows, _ = run_evaluate('num_classes: 4 overlap_threshold: 0.4 evaluate_difficult_gt: %s'
                           % ('true' if difficult else 'false'), det, label)
    want = ref.detection_evaluate(det, label, 4, 0, 0.4, difficult)
    np.testing.assert_allclose(rows[:len(want)], want, atol=1e-7)


def test_evaluate_name_size_file_uses_pixels(tmp_path):
    """In pixels (with Caffe's "+ 1") this detection overlaps 0.75, normalised only 0.5."""
    (tmp_path / 'sizes.txt').write_text('a 10 10\n')
    det = np.array([[0, 1, .9, 0, 0, .05, .1]])
    gt = np.array([[0, 1, 0, 0, 0, .1, .1, 0]])
    rows, _ = run_evaluate('num_classes: 2 overlap_threshold: 0.6', det, gt)
    assert list(rows[1, 3:]) == [0, 1]
    rows, _ = run_evaluate('num_classes: 2 overlap_threshold: 0.6 name_size_file: "%s"'
                           % (tmp_path / 'sizes.txt'), det, gt)
    assert list(rows[1, 3:]) == [1, 0]


def test_evaluate_errors():
    with pytest.raises(caffe.LayerError, match=r"'eval'.*detections must be \(1, 1, rows, 7\)"):
        inputs = {'det': np.zeros((1, 1, 2, 6)), 'label': np.zeros((1, 1, 1, 8))}
        build(inputs_text(inputs) + '\nlayer { name: "eval" type: "DetectionEvaluate" '
              'bottom: "det" bottom: "label" top: "r" detection_evaluate_param { num_classes: 2 } }')
    det = np.array([[0, 0, .9, 0, 0, .1, .1]])
    with pytest.raises(caffe.LayerError, match='Found background label in the detection results'):
        run_evaluate('num_classes: 2', det, GT)
