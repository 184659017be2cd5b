"""Data-parallel Faster R-CNN end to end, Python layers included, through tools/train_net.py.

`--gpu 0,1` on this GPU-less machine trains with 2 gloo CPU ranks. With the sampling made
deterministic by the config (every anchor and every RoI kept, no dropout), 2 ranks x 1 image
for 5 SGD-with-momentum steps must give the weights of 1 process with iter_size 2 on the
same 2 images per step: the RoIDataLayer hands rank r the r-th image of each pair of its
permutation, which all ranks draw from the shared seed. (Gradient clipping is left out: see
_solver.)
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from caffe import protoio
from caffe.proto import caffe_pb2
from e2e_helpers import (NUM_TEST, NUM_TRAINVAL, REPO, TOY_END2END_CFG, TOY_END2END_DIR,
                         check_evaluation, iteration_losses, run, set_args, snapshot_path,
                         tool_env)
from utils.safe_pickle import load_arrays

ALT_OPT_DIR = REPO / 'models' / 'toy' / 'ToyNet' / 'faster_rcnn_alt_opt'
ALT_OPT_CFG = 'experiments/cfgs/toy_faster_rcnn_alt_opt.yml'

ITERS = 5
# Deterministic sampling: RPN keeps every labelled anchor, the RoI head every RoI.
FIXED_SAMPLING = ['TRAIN.RPN_BATCHSIZE', '1000000', 'TRAIN.RPN_FG_FRACTION', '1.0',
                  'TRAIN.BATCH_SIZE', '-1', 'TRAIN.SNAPSHOT_ITERS', '0']


def _net_without_dropout(dst: Path) -> Path:
    net = protoio.read_text(str(TOY_END2END_DIR / 'train.prototxt'), caffe_pb2.NetParameter)
    kept = [layer for layer in net.layer if layer.type != 'Dropout']
    assert len(kept) == len(net.layer) - 2      # both are in place: nothing to rewire
    del net.layer[:]
    net.layer.extend(kept)
    from google.protobuf import text_format
    dst.write_text(text_format.MessageToString(net))
    return dst


def _solver(dst: Path, net: Path, iter_size: int) -> Path:
    text = (TOY_END2END_DIR / 'solver.prototxt').read_text()
    text = re.sub(r'train_net:.*', 'train_net: "%s"' % net, text)
    # Caffe clips the gradient summed over the iter_size passes, but the mean over ranks
    # (BVLC's multi-GPU semantics): with clipping, N ranks and iter_size N differ by
    # design, so the comparison runs without it.
    text = re.sub(r'(display|average_loss|clip_gradients):.*', '', text)
    dst.write_text(text + '\ndisplay: 1\naverage_loss: 1\niter_size: %d\n' % iter_size)
    return dst


def _weights(path: Path) -> dict:
    m = protoio.read_binary(str(path), caffe_pb2.NetParameter)
    return {(layer.name, i): np.array(b.data, np.float64)
            for layer in m.layer for i, b in enumerate(layer.blobs)}


def test_two_ranks_train_toynet_like_one_process_with_iter_size_2(toy_data, exps, tmp_path):
    net = _net_without_dropout(tmp_path / 'train.prototxt')
    models = {}
    logs = {}
    for name, gpu, iter_size in (('one', '-1', 2), ('two', '0,1', 1)):
        solver = _solver(tmp_path / ('solver_%s.prototxt' % name), net, iter_size)
        exp = exps.new('dp_' + name)
        logs[name] = run(['tools/train_net.py', '--gpu', gpu, '--solver', solver,
                          '--imdb', 'toy_2007_trainval', '--iters', ITERS,
                          '--cfg', TOY_END2END_CFG] + set_args(toy_data, exp, *FIXED_SAMPLING),
                         tmp_path / ('%s.log' % name))
        models[name] = snapshot_path(logs[name])
        assert models[name].parent.parent == REPO / "output" / exp
    one, two = _weights(models['one']), _weights(models['two'])
    assert one.keys() == two.keys() and len(one) > 10
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-6, err_msg=str(k))
    # The logged losses (the mean over ranks / over iter_size passes) match too, and the
    # training moved the weights.
    l1, l2 = iteration_losses(logs['one']), iteration_losses(logs['two'])
    assert [i for i, _ in l2] == list(range(ITERS))
    np.testing.assert_allclose([v for _, v in l2], [v for _, v in l1], rtol=1e-4)
    # One process printed: the second rank's stdout is silent.
    assert len(re.findall(r'^Wrote snapshot to', logs['two'], re.M)) == 1


@pytest.mark.slow
def test_alt_opt_every_stage_on_two_ranks(toy_data, exps, tmp_path):
    """All four stages on 2 ranks; proposal generation split between them and gathered on
    rank 0 gives exactly what tools/rpn_generate.py computes in one process."""
    exp = exps.new('dp_alt_opt')
    log = run(['tools/train_faster_rcnn_alt_opt.py', '--gpu', '0,1', '--net_name', 'ToyNet',
               '--imdb', 'toy_2007_trainval', '--cfg', ALT_OPT_CFG, '--iters', '2,2,2,2']
              + set_args(toy_data, exp), tmp_path / 'alt_opt.log')
    assert len(re.findall(r'broadcast from rank 0 to 2 ranks', log)) == 4
    assert len(re.findall(r'^Gathered the proposals of 2 ranks$', log, re.M)) == 2
    assert re.search(r'^Final model: \S+ToyNet_faster_rcnn_final.caffemodel$', log, re.M)
    out = REPO / 'output' / exp / 'toy_2007_trainval'
    rpn1 = out / 'toynet_rpn_stage1_iter_2.caffemodel'
    gathered = load_arrays(str(out / 'toynet_rpn_stage1_iter_2_proposals.pkl'))
    ref_log = run(['tools/rpn_generate.py', '--gpu', '-1', '--def', ALT_OPT_DIR / 'rpn_test.pt',
                   '--net', rpn1, '--imdb', 'toy_2007_trainval', '--cfg', ALT_OPT_CFG,
                   '--wait', '0'] + set_args(toy_data, exp), tmp_path / 'rpn_generate.log')
    ref_file = re.findall(r'^Wrote RPN proposals to (\S+)$', ref_log, re.M)[-1]
    ref = load_arrays(ref_file)
    assert len(gathered) == len(ref) == NUM_TRAINVAL
    for g, r in zip(gathered, ref):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_experiment_script_takes_a_gpu_list(toy_data, exps, tmp_path):
    """faster_rcnn_end2end.sh 0,1 ToyNet toy: trains on 2 ranks, tests on the first device."""
    exp = exps.new('dp_script')
    logs_dir = REPO / 'experiments' / 'logs'
    had_logs_dir = logs_dir.is_dir()
    try:
        out = run(['bash', 'experiments/scripts/faster_rcnn_end2end.sh', '0,1', 'ToyNet', 'toy']
                  + set_args(toy_data, exp), tmp_path / 'script.log', env=tool_env(TOY_ITERS='4'))
        assert re.search(r'train_net.py --gpu 0,1 ', out)
        assert re.search(r'test_net.py --gpu 0 ', out)
        assert 'broadcast from rank 0 to 2 ranks' in out
        assert re.search(r'^im_detect: %d/%d ' % (NUM_TEST, NUM_TEST), out, re.M)
        check_evaluation(out, toy_data)
    finally:
        for f in logs_dir.glob('faster_rcnn_end2end_ToyNet_*%s*' % exp):
            f.unlink()
        if not had_logs_dir:
            try:
                logs_dir.rmdir()
            except OSError:
                pass
