"""The other tools on the session's trained toy model: demo.py, rpn_generate.py, reval.py,
and compress_net.py on a small net with an SVD prototxt.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from e2e_helpers import (NUM_TEST, REPO, TOY_END2END_CFG, TOY_END2END_DIR, check_evaluation,
                         check_proposals, class_aps, mean_ap, run, set_args, split_images)
from utils.safe_pickle import load_arrays


def test_demo_writes_pictures_of_detections(end2end_run, logs, tmp_path):
    r = end2end_run
    images = split_images(r.data, 'test')[:2]
    out = tmp_path / 'demo'
    log = run(['tools/demo.py', '--gpu', '-1', '--def', TOY_END2END_DIR / 'test.prototxt',
               '--caffemodel', r.model, '--imdb', 'toy_2007_test', '--images'] + images
              + ['--out', out, '--conf', '0.05', '--cfg', TOY_END2END_CFG]
              + set_args(r.data, r.exp), logs / 'demo.log')
    counts = [int(n) for n in re.findall(r'^Detection took \S+ for .*: (\d+) objects$', log, re.M)]
    assert len(counts) == len(images)
    # a briefly trained detector still finds something at a low score threshold
    assert sum(counts) > 0, counts
    for image in images:
        png = out / (image.stem + '_detections.png')
        assert 'Wrote %s' % png in log
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        picture = cv2.imread(str(png))
        assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100
        # not a blank canvas: the photo (and the boxes) are drawn on it
        assert picture.std() > 10


def test_rpn_generate_writes_proposals(end2end_run, logs):
    """RPN proposals of the end2end model through the alt-opt RPN test net (same layer names)."""
    r = end2end_run
    log = run(['tools/rpn_generate.py', '--gpu', '-1',
               '--def', REPO / 'models' / 'toy' / 'ToyNet' / 'faster_rcnn_alt_opt' / 'rpn_test.pt',
               '--net', r.model, '--imdb', 'toy_2007_test', '--cfg', TOY_END2END_CFG,
               '--wait', '0'] + set_args(r.data, r.exp), logs / 'rpn_generate.log')
    path = REPO / 'output' / r.exp / 'toy_2007_test' / r.model.stem / (
        r.model.stem + '_rpn_proposals.pkl')
    assert 'Wrote RPN proposals to %s' % path in log
    boxes = load_arrays(str(path))
    assert len(boxes) == NUM_TEST
    # rpn_generate lifts TEST.RPN_POST_NMS_TOP_N to 2000 (the toy cfg has 100)
    check_proposals(boxes, split_images(r.data, 'test'), 101, 2000)


def test_reval_reproduces_test_net_evaluation(end2end_run, end2end_eval, logs):
    r = end2end_run
    expected = class_aps(end2end_eval.log)
    base = ['tools/reval.py', end2end_eval.det_dir, '--imdb', 'toy_2007_test']
    log = run(base + ['--cfg', TOY_END2END_CFG] + set_args(r.data, r.exp), logs / 'reval.log')
    check_evaluation(log, r.data)
    assert class_aps(log) == expected
    assert mean_ap(log) == mean_ap(end2end_eval.log)
    # test_net already applied per-class NMS at TEST.NMS: applying it again changes nothing
    log = run(base + ['--nms', '--cfg', TOY_END2END_CFG] + set_args(r.data, r.exp),
              logs / 'reval_nms.log')
    assert 'Applying NMS to all detections' in log
    assert class_aps(log) == expected


_SMALL_NET = '''name: "small"
layer {{ name: "data" type: "Input" top: "data"
  input_param {{ shape {{ dim: 5 dim: 3 dim: 4 dim: 4 }} }} }}
{fc6}
layer {{ name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }}
{fc7}
layer {{ name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }}
layer {{ name: "cls_score" type: "InnerProduct" bottom: "fc7" top: "cls_score"
  inner_product_param {{ num_output: 3 }} }}
'''


def _fc(name: str, bottom: str, n: int) -> str:
    return ('layer { name: "%s" type: "InnerProduct" bottom: "%s" top: "%s"\n'
            '  inner_product_param { num_output: %d } }' % (name, bottom, name, n))


def _fc_svd(name: str, bottom: str, n: int, rank: int) -> str:
    return ('layer { name: "%s_L" type: "InnerProduct" bottom: "%s" top: "%s_L"\n'
            '  inner_product_param { num_output: %d bias_term: false } }\n'
            'layer { name: "%s_U" type: "InnerProduct" bottom: "%s_L" top: "%s"\n'
            '  inner_product_param { num_output: %d } }'
            % (name, bottom, name, rank, name, name, name, n))


def _best_rank(W: np.ndarray, rank: int) -> np.ndarray:
    U, s, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    return (U[:, :rank] * s[:rank]) @ Vt[:rank]


def test_compress_net_svd_approximates_the_original(tmp_path, logs):
    import caffe
    caffe.set_mode_cpu()
    proto = tmp_path / 'small.prototxt'
    proto.write_text(_SMALL_NET.format(fc6=_fc('fc6', 'data', 32), fc7=_fc('fc7', 'fc6', 16)))
    proto_svd = tmp_path / 'small_svd.prototxt'
    proto_svd.write_text(_SMALL_NET.format(fc6=_fc_svd('fc6', 'data', 32, 6),
                                           fc7=_fc_svd('fc7', 'fc6', 16, 4)))
    rng = np.random.default_rng(0)
    net = caffe.Net(str(proto), caffe.TEST)
    # fc6 and fc7 close to rank 6 and 4, as trained fc layers are close to low rank
    W6 = rng.normal(size=(32, 6)) @ rng.normal(size=(6, 48)) / 7 + 1e-3 * rng.normal(size=(32, 48))
    W7 = rng.normal(size=(16, 4)) @ rng.normal(size=(4, 32)) / 6 + 1e-3 * rng.normal(size=(16, 32))
    for name, W in (('fc6', W6), ('fc7', W7), ('cls_score', rng.normal(size=(3, 16)))):
        net.params[name][0].data[...] = W
        net.params[name][1].data[...] = rng.normal(size=W.shape[0])
    model = tmp_path / 'small.caffemodel'
    net.save(str(model))

    log = run(['tools/compress_net.py', '--def', proto, '--def-svd', proto_svd, '--net', model],
              logs / 'compress_net.log')
    assert 'fc6 compressed to 6' in log and 'fc7 compressed to 4' in log
    out = tmp_path / 'small_svd_fc6_6_fc7_4.caffemodel'
    assert 'Wrote svd model to: %s' % out in log

    svd = caffe.Net(str(proto_svd), str(out), caffe.TEST)
    for name, W, rank in (('fc6', W6, 6), ('fc7', W7, 4)):
        L = svd.params[name + '_L'][0].data
        U = svd.params[name + '_U'][0].data
        assert L.shape == (rank, W.shape[1]) and U.shape == (W.shape[0], rank)
        # U L is the best rank-r approximation of W (Eckart-Young), the bias is kept
        np.testing.assert_allclose(U @ L, _best_rank(net.params[name][0].data, rank),
                                   atol=1e-5)
        np.testing.assert_array_equal(svd.params[name + '_U'][1].data, net.params[name][1].data)
    np.testing.assert_array_equal(svd.params['cls_score'][0].data,
                                  net.params['cls_score'][0].data)

    x = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    outputs = []
    for n in (net, svd):
        n.blobs['data'].data[...] = x
        outputs.append(n.forward()['cls_score'].copy())
    scale = np.abs(outputs[0]).max()
    assert scale > 0.1
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-2 * scale)
