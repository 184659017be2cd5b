"""eval_type "detection": the solver's test pass computes mAP from DetectionEvaluate rows as
SSD's Solver::TestDetection does, and logs it so that tools/extra/parse_log.py reads it."""
import os
import re
import sys

import numpy as np
import pytest

import caffe
from caffe.solvers.detection_eval import DetectionAccumulator, detection_map

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'tools', 'extra'))
import parse_log  # noqa: E402

NET = '''name: "det"
layer { name: "in" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } include { phase: TRAIN } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 } include { phase: TRAIN } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss"
        include { phase: TRAIN } }
layer { name: "tin" type: "Input" top: "det" top: "label"
        input_param { shape { dim: 1 dim: 1 dim: 4 dim: 7 } shape { dim: 1 dim: 1 dim: 3 dim: 8 } }
        include { phase: TEST } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "det" bottom: "label"
        top: "detection_eval" include { phase: TEST }
        detection_evaluate_param { num_classes: 3 background_label_id: 0 overlap_threshold: 0.5 } }
'''
# Class 1: one box, found (0.9) and found again (0.8: a duplicate). Class 2: two boxes; a miss
# (0.7) then a hit (0.6), the other box never found.
LABEL = np.array([[0, 1, 0, .1, .1, .3, .3, 0], [0, 2, 0, .5, .5, .7, .7, 0],
                  [0, 2, 1, .6, .1, .9, .3, 0]]).reshape(1, 1, 3, 8)
DET = np.array([[0, 1, .9, .1, .1, .3, .3], [0, 1, .8, .1, .11, .3, .3],
                [0, 2, .7, 0, .6, .1, .7], [0, 2, .6, .5, .5, .7, .7]]).reshape(1, 1, 4, 7)
# AP class 1 = 1 (any version). Class 2: precision (0, 1/2), recall (0, 1/2):
# Integral 0.25, MaxIntegral 0.25, 11point 6 * 0.5 / 11.
@pytest.fixture(autouse=True)
def _info_logs(monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')


EXPECTED = {'Integral': (1 + 0.25) / 2, 'MaxIntegral': (1 + 0.25) / 2,
            '11point': (1 + 3 / 11) / 2}


def make_solver(ap_version, extra='', test_interval=1000):
    text = ('net_param { %s } base_lr: 0.01 lr_policy: "fixed" test_iter: 1 test_interval: %d '
            'eval_type: "detection" ap_version: "%s" display: 1 %s'
            % (NET, test_interval, ap_version, extra))
    s = caffe.get_solver_from_string(text)
    s.test_nets[0].blobs['det'].data[...] = DET
    s.test_nets[0].blobs['label'].data[...] = LABEL
    return s


@pytest.mark.parametrize('ap_version', sorted(EXPECTED))
def test_detection_eval_logs_map(ap_version, capfd):
    s = make_solver(ap_version)
    capfd.readouterr()
    s.test_all()
    err = capfd.readouterr().err
    m = re.search(r'Test net output #0: detection_eval = (\S+)', err)
    assert m, err
    assert float(m.group(1)) == pytest.approx(EXPECTED[ap_version], abs=1e-6)
    assert s.test_detection(0) == [pytest.approx(EXPECTED[ap_version], abs=1e-6)]


def test_per_class_results_and_parse_log(tmp_path, capfd):
    s = make_solver('Integral', 'show_per_class_result: true max_iter: 2 snapshot_after_train: '
                    'false', test_interval=1)
    capfd.readouterr()
    s.solve()                               # tests at iterations 0, 1 and 2
    err = capfd.readouterr().err
    assert re.search(r'solver\.cpp:\d+\] class1: 1$', err, re.M), err
    assert re.search(r'solver\.cpp:\d+\] class2: 0\.25$', err, re.M), err
    log = tmp_path / 'train.log'
    log.write_text(err)
    train, test = parse_log.parse_log(str(log))
    assert [r['NumIters'] for r in test][:1] == [0]
    assert test[0]['detection_eval'] == pytest.approx(0.625)
    assert [r['NumIters'] for r in train][:1] == [0]


def test_classification_eval_unchanged(capfd):
    text = ('net_param { %s } base_lr: 0.01 lr_policy: "fixed" test_iter: 1 test_interval: 1000'
            % NET)
    s = caffe.get_solver_from_string(text)
    s.test_nets[0].blobs['det'].data[...] = DET
    s.test_nets[0].blobs['label'].data[...] = LABEL
    capfd.readouterr()
    means = s.test(0)
    assert len(means) == 6 * 5                           # every value of the rows blob
    assert 'Test net output #29: detection_eval' in capfd.readouterr().err


def test_unknown_eval_type():
    with pytest.raises(caffe.solvers.errors.SolverError, match='Unknown evaluation type: segm'):
        caffe.get_solver_from_string('net_param { %s } base_lr: 0.01 eval_type: "segm"' % NET)


def test_outputs_must_be_rows_of_five():
    net = NET + ('layer { name: "extra" type: "Reshape" bottom: "det" top: "odd" '
            'reshape_param { shape { dim: 4 dim: 7 } } include { phase: TEST } }')
    s = caffe.get_solver_from_string('net_param { %s } base_lr: 0.01 lr_policy: "fixed" '
                                     'test_iter: 1 test_interval: 10 eval_type: "detection"' % net)
    s.test_nets[0].blobs['det'].data[...] = DET
    s.test_nets[0].blobs['label'].data[...] = LABEL
    with pytest.raises(caffe.solvers.errors.SolverError, match=r"output #1 'odd' has shape"):
        s.test_detection(0)


def test_two_iterations_pool_their_rows(capfd):
    """test_iter 2 over the same rows: class 2 ranks fp, fp, tp, tp of 4 positives."""
    s = make_solver('Integral')
    s._param.test_iter[0] = 2
    assert s.test_detection(0) == [pytest.approx((1 + 0.25 / 3 + 0.25 / 2) / 2, abs=1e-6)]


def test_accumulator_counts_and_skips():
    acc = DetectionAccumulator()
    rows = np.array([[-1, 1, 2, -1, -1], [-1, 2, 0, -1, -1],
                     [0, 1, .9, 1, 0], [0, 1, .5, 0, 0], [1, 1, .4, 0, 1]])
    acc.add(0, rows)
    acc.add(0, rows[:1])
    assert acc.num_pos[0] == {1: 4, 2: 0}
    assert acc.true_pos[0][1] == [(pytest.approx(.9), 1), (pytest.approx(.4), 0)]
    # class 1: tp then fp, 4 positives: Integral 1 * 0.25; class 2: no detection -> 0.
    assert detection_map([[rows], [rows[:1]]], 'Integral') == pytest.approx(0.125)
    assert detection_map([], 'Integral') is None
