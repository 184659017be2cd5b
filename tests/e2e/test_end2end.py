"""End-to-end Faster R-CNN (approximate joint training) on a tiny toy set, as a user runs it:
tools/train_net.py, tools/test_net.py and experiments/scripts/faster_rcnn_end2end.sh.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from e2e_helpers import (NUM_TEST, REPO, assert_finite, check_evaluation, iteration_losses,
                         output_losses, run, set_args, snapshot_path, tool_env, toy_classes,
                         window_means, write_solver)
from utils.safe_pickle import load_arrays

#: Loss components of the end2end train net (RPN and Fast R-CNN heads).
END2END_LOSSES = {'rpn_cls_loss', 'rpn_loss_bbox', 'loss_cls', 'loss_bbox'}
WINDOW = 20


def _check_training_log(log: str, iters: int) -> dict:
    """Every iteration logged with finite losses; returns the loss components."""
    losses = iteration_losses(log)
    assert [i for i, _ in losses] == list(range(iters))
    assert_finite([v for _, v in losses], 'loss')
    parts = output_losses(log)
    assert set(parts) == END2END_LOSSES, sorted(parts)
    for name, values in parts.items():
        assert len(values) == iters, name
        assert_finite(values, name)
    # the logged total is the sum of the weighted outputs (all loss weights are 1 here)
    total = np.sum([parts[n] for n in sorted(parts)], axis=0)
    np.testing.assert_allclose(total, [v for _, v in losses], rtol=1e-4, atol=1e-5)
    assert 'done solving' in log
    return parts


def _check_loss_decreases(log: str) -> None:
    losses = [v for _, v in iteration_losses(log)]
    first, last = window_means(losses, WINDOW)
    assert last < first, 'mean loss of the first %d iterations %.4f, of the last %.4f' % (
        WINDOW, first, last)
    # the RPN objectness loss starts at ln 2 (random init) and must clearly fall
    rpn = output_losses(log)['rpn_cls_loss']
    assert abs(rpn[0] - np.log(2)) < 0.05, rpn[0]
    first, last = window_means(rpn, WINDOW)
    assert last < 0.8 * first, (first, last)


def _check_detections(det_dir: Path, data_dir: Path) -> None:
    """detections.pkl: [class][image] arrays of (x1, y1, x2, y2, score) rows."""
    all_boxes = load_arrays(str(det_dir / 'detections.pkl'))
    assert len(all_boxes) == len(toy_classes(data_dir)) + 1
    assert all(len(per_class) == NUM_TEST for per_class in all_boxes)
    rows = 0
    for per_class in all_boxes[1:]:
        for dets in per_class:
            dets = np.asarray(dets)
            assert dets.ndim == 2 and dets.shape[1] == 5, dets.shape
            assert np.all(dets[:, 2] >= dets[:, 0]) and np.all(dets[:, 3] >= dets[:, 1])
            assert np.all((dets[:, 4] >= 0) & (dets[:, 4] <= 1))
            rows += len(dets)
    assert rows > 0


def test_end2end_training_writes_snapshot_and_loss_goes_down(end2end_run):
    r = end2end_run
    _check_training_log(r.log, r.iters)
    _check_loss_decreases(r.log)
    expected = REPO / 'output' / r.exp / 'toy_2007_trainval' / (
        'toynet_faster_rcnn_iter_%d.caffemodel' % r.iters)
    assert r.model == expected
    assert expected.stat().st_size > 100000
    # TRAIN.SNAPSHOT_ITERS of the toy cfg is larger than the run: one snapshot, at the end
    assert len(re.findall('Wrote snapshot to', r.log)) == 1


def test_end2end_test_net_writes_detections_and_map(end2end_run, end2end_eval):
    assert re.search(r'^im_detect: %d/%d ' % (NUM_TEST, NUM_TEST), end2end_eval.log, re.M)
    check_evaluation(end2end_eval.log, end2end_run.data)
    _check_detections(end2end_eval.det_dir, end2end_run.data)


def test_end2end_ohem_trains_and_tests(toy_data, exps, logs):
    """faster_rcnn_end2end_ohem: hard RoIs chosen by the read-only copy of the head."""
    exp = exps.new('end2end_ohem')
    cfg = 'experiments/cfgs/toy_faster_rcnn_end2end_ohem.yml'
    prototxts = REPO / 'models' / 'toy' / 'ToyNet' / 'faster_rcnn_end2end_ohem'
    solver = write_solver(prototxts / 'solver.prototxt', logs / 'ohem_solver.prototxt')
    iters = 40
    log = run(['tools/train_net.py', '--gpu', '-1', '--solver', solver, '--imdb',
               'toy_2007_trainval', '--iters', iters, '--cfg', cfg] + set_args(toy_data, exp),
              logs / 'end2end_ohem_train.log')
    assert re.search(r"'USE_OHEM': True", log)
    for layer in ('hard_roi_mining', 'cls_score_readonly', 'bbox_pred_readonly', 'roi_pool5'):
        assert re.search(r'Creating Layer %s$' % re.escape(layer), log, re.M), layer
    parts = _check_training_log(log, iters)
    first, last = window_means(parts['rpn_cls_loss'], 10)
    assert last < first, (first, last)
    model = snapshot_path(log)
    assert model.name == 'toynet_faster_rcnn_ohem_iter_%d.caffemodel' % iters

    log = run(['tools/test_net.py', '--gpu', '-1', '--def', prototxts / 'test.prototxt', '--net',
               model, '--imdb', 'toy_2007_test', '--cfg', cfg, '--wait', '0']
              + set_args(toy_data, exp), logs / 'end2end_ohem_test.log')
    check_evaluation(log, toy_data)
    _check_detections(REPO / 'output' / exp / 'toy_2007_test' / model.stem, toy_data)


def test_experiment_script_end2end(toy_data, exps, logs):
    """experiments/scripts/faster_rcnn_end2end.sh GPU NET DATASET --set ...: train, then test
    the snapshot it found in its own log; both runs get the --set arguments."""
    exp = exps.new('script')
    logs_dir = REPO / 'experiments' / 'logs'
    had_logs_dir = logs_dir.is_dir()
    out = None
    try:
        out = run(['bash', 'experiments/scripts/faster_rcnn_end2end.sh', '-1', 'ToyNet', 'toy']
                  + set_args(toy_data, exp), logs / 'script.log', env=tool_env(TOY_ITERS='6'))
        found = re.findall(r'^Logging output to (\S+)$', out, re.M)
        assert found, 'the script did not say where it logs'
        script_log = REPO / found[0]
        assert script_log.parent == logs_dir and exp in script_log.name
        text = script_log.read_text()
        assert 'Wrote snapshot to: ' in text and 'toynet_faster_rcnn_iter_6.caffemodel' in text
        assert re.search(r'^im_detect: %d/%d ' % (NUM_TEST, NUM_TEST), text, re.M)
        check_evaluation(text, toy_data)
    finally:
        for f in logs_dir.glob('faster_rcnn_end2end_ToyNet_*%s*' % exp):
            f.unlink()
        if not had_logs_dir:
            try:
                logs_dir.rmdir()
            except OSError:
                pass
