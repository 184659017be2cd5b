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

from caffe import protoio
from caffe.proto import caffe_pb2
from e2e_helpers import (REPO, TOY_END2END_CFG, TOY_END2END_DIR, iteration_losses, run,
                         set_args, snapshot_path)

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
