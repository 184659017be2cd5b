"""`--bf16` on the tools and CAFFE_BF16=1: both put the nets in bf16, here and in the
processes a tool starts; im_detect runs a Faster R-CNN test net in bf16 end to end."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import caffe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

# Each tool and the arguments it needs besides --bf16.
TOOL_ARGS = {
    'train_net': ['--solver', 's.prototxt'],
    'test_net': ['--def', 'd.prototxt', '--net', 'm.caffemodel'],
    'demo': [],
    'train_faster_rcnn_alt_opt': ['--net_name', 'ZF'],
    'rpn_generate': ['--def', 'd.prototxt', '--net', 'm.caffemodel'],
}


@pytest.fixture(autouse=True)
def _restore_precision(monkeypatch):
    monkeypatch.delenv('CAFFE_BF16', raising=False)
    yield
    caffe.set_precision('fp32')


@pytest.mark.parametrize('tool', sorted(TOOL_ARGS))
def test_every_tool_takes_bf16(tool):
    mod = importlib.import_module(tool)
    assert mod.parse_args(TOOL_ARGS[tool] + ['--bf16']).bf16 is True
    assert mod.parse_args(TOOL_ARGS[tool]).bf16 is False
    # --set takes the rest of the line: --bf16 goes before it
    args = mod.parse_args(TOOL_ARGS[tool] + ['--bf16', '--set', 'RNG_SEED', '7'])
    assert args.bf16 and args.set_cfgs == ['RNG_SEED', '7']


def test_apply_precision(capsys):
    import _tool_args
    import train_net
    assert _tool_args.apply_precision(train_net.parse_args(TOOL_ARGS['train_net'])) == 'fp32'
    assert caffe.get_precision() == 'fp32'
    assert 'CAFFE_BF16' not in os.environ
    assert _tool_args.apply_precision(train_net.parse_args(TOOL_ARGS['train_net'] + ['--bf16'])) == 'bf16'
    assert caffe.get_precision() == 'bf16'
    assert os.environ['CAFFE_BF16'] == '1'  # inherited by the alt-opt stages' processes
    out = capsys.readouterr().out
    assert 'Compute precision: bf16' in out and 'inner products in' in out


def test_env_var_reaches_a_tool_process():
    """CAFFE_BF16=1 alone (no flag): a tool's process starts in bf16."""
    code = ('import sys, argparse; sys.path.insert(0, %r); import _tool_args; '
            'print(_tool_args.apply_precision(argparse.Namespace(bf16=False)))' % TOOLS)
    env = dict(os.environ, CAFFE_BF16='1', GLOG_minloglevel='2')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == 'bf16', out.stderr


@pytest.mark.parametrize('gemm', ['on', 'off'])
def test_im_detect_in_bf16(gemm):
    """The toy Faster R-CNN test net (RPN, ProposalLayer, RoI pooling, heads) in bf16 gives
    float32 scores and boxes of the right shapes, and RPN outputs close to fp32's for the
    same weights (the proposals after them may rank differently)."""
    from fast_rcnn.config import cfg, cfg_from_file, cfg_restore, cfg_snapshot
    from fast_rcnn.test import im_detect
    saved = cfg_snapshot()
    try:
        cfg_from_file(os.path.join(ROOT, 'experiments', 'cfgs', 'toy_faster_rcnn_end2end.yml'))
        cfg.TEST.HAS_RPN = True
        proto = os.path.join(ROOT, 'models', 'toy', 'ToyNet', 'faster_rcnn_end2end', 'test.prototxt')
        im = (np.random.RandomState(0).rand(120, 160, 3) * 255).astype(np.uint8)
        caffe.set_random_seed(3)
        net = caffe.Net(proto, caffe.TEST)
        results = {}
        caffe.set_bf16_matmuls(gemm)
        for precision in ('fp32', 'bf16'):
            caffe.set_precision(precision)
            np.random.seed(0)
            scores, boxes = im_detect(net, im)
            results[precision] = (scores, boxes, {n: net.blobs[n].data.copy() for n in
                                                  ('rpn_cls_prob_reshape', 'rpn_bbox_pred')})
            assert scores.dtype == np.float32 and boxes.dtype == np.float32
            assert np.isfinite(scores).all() and np.isfinite(boxes).all()
            np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-3)
        conv = [n for n, l in zip(net._layer_names, net.layers) if l.type == 'Convolution'][0]
        assert net.blobs[conv]._data.tensor.dtype == torch.bfloat16  # it did run in bf16
        (s32, b32, rpn32), (s16, b16, rpn16) = results['fp32'], results['bf16']
        assert s16.shape[1] == s32.shape[1] and b16.shape[1] == b32.shape[1] and len(s16)
        for name, ref in rpn32.items():
            err = np.linalg.norm(rpn16[name] - ref) / np.linalg.norm(ref)
            assert 0 < err < 3e-2, (name, err)
    finally:
        caffe.set_precision('fp32')
        caffe.set_bf16_matmuls('auto')
        cfg_restore(saved)
