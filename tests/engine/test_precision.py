"""caffe.set_precision('bf16'): convolutions and inner products in bfloat16, float32 outside.

The option must give results within bf16's tolerance of float32, actually compute in bf16
(else it is not an option), and keep the NumPy boundary float32: blob data and diffs,
parameters and their gradients, losses, and what Python layers see.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import caffe

NET = """
name: "tiny"
input: "x" input_shape { dim: 2 dim: 3 dim: 12 dim: 14 }
input: "y" input_shape { dim: 2 }
input: "t" input_shape { dim: 2 dim: 4 }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
          weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
%(python)s
layer { name: "fc" type: "InnerProduct" bottom: "%(fc_in)s" top: "fc"
        inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu3" type: "ReLU" bottom: "fc" top: "fc" }
layer { name: "score" type: "InnerProduct" bottom: "fc" top: "score"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "box" type: "InnerProduct" bottom: "fc" top: "box"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "y" top: "loss" }
layer { name: "loss_box" type: "EuclideanLoss" bottom: "box" bottom: "t" top: "loss_box"
        loss_weight: 0.5 }
"""

PY_LAYER = """
layer { name: "probe" type: "Python" bottom: "conv2" top: "probed"
        python_param { module: "precision_probe" layer: "Probe" } }
"""

PROBE_MODULE = '''
import caffe

SEEN = []


class Probe(caffe.Layer):
    """Identity that records the dtypes Python code is handed."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        SEEN.append(('data', bottom[0].data.dtype))
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        SEEN.append(('diff', top[0].diff.dtype))
        bottom[0].diff[...] = top[0].diff
'''


@pytest.fixture(autouse=True)
def _fp32_after():
    yield
    caffe.set_precision('fp32')


def _inputs():
    r = np.random.RandomState(3)
    return {'x': r.randn(2, 3, 12, 14), 'y': np.array([1., 4.]), 't': r.randn(2, 4)}


def _run(tmp_path, precision, python_layer=False):
    """Build the net with the same seed, run forward+backward in `precision`."""
    text = NET % {'python': PY_LAYER if python_layer else '',
                  'fc_in': 'probed' if python_layer else 'conv2'}
    path = tmp_path / 'net.prototxt'
    path.write_text(text)
    caffe.set_precision(precision)
    caffe.set_random_seed(7)
    net = caffe.Net(str(path), caffe.TRAIN)
    for k, v in _inputs().items():
        net.blobs[k].data[...] = v
    out = net.forward()
    net.backward()
    return net, {k: float(v) for k, v in out.items()}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture
def bf16_matmuls(monkeypatch):
    """Inner products in bf16 too, as on GPUs and CPUs with AMX or AVX512-BF16, whatever
    this CPU has."""
    from caffe import _config
    monkeypatch.setitem(_config._state, 'bf16_gemm', None)
    caffe.set_bf16_matmuls('on')


def test_bf16_close_to_fp32_and_really_bf16(tmp_path, bf16_matmuls):
    ref, ref_loss = _run(tmp_path, 'fp32')
    low, low_loss = _run(tmp_path, 'bf16')
    # It did compute in bf16: the convolutions' outputs are bf16 inside the blobs ...
    assert low.blobs['conv2']._data.tensor.dtype == torch.bfloat16
    assert ref.blobs['conv2']._data.tensor.dtype == torch.float32
    # ... so results differ from float32, by bf16's rounding (8 bits of mantissa) only.
    assert low_loss != ref_loss
    for k in ref_loss:
        assert abs(low_loss[k] - ref_loss[k]) <= 2e-2 * abs(ref_loss[k]), k
    for name in ('conv2', 'fc', 'score', 'box'):
        assert _rel(low.blobs[name].data, ref.blobs[name].data) < 3e-2, name
    # (AVE pooling: with MAX, bf16 rounding can move an argmax and so a whole gradient entry.)
    for name, ps in ref.params.items():
        for i, p in enumerate(ps):
            assert np.abs(p.diff).max() > 0
            assert _rel(low.params[name][i].diff, p.diff) < 3e-2, (name, i)


def test_bf16_keeps_float32_at_the_numpy_boundary(tmp_path):
    net, losses = _run(tmp_path, 'bf16')
    for name, blob in net.blobs.items():
        assert blob.data.dtype == np.float32, name
        assert blob.diff.dtype == np.float32, name
    for name, ps in net.params.items():
        for p in ps:
            assert p.data.dtype == np.float32 and p.diff.dtype == np.float32
            assert p.tensor.dtype == torch.float32 and p.diff_tensor.dtype == torch.float32
    # Losses are computed in float32 from float32 bottoms.
    assert net.blobs['loss']._data.tensor.dtype == torch.float32
    assert net.blobs['score']._data.tensor.dtype == torch.float32


def test_python_layers_see_float32(tmp_path, monkeypatch):
    (tmp_path / 'precision_probe.py').write_text(PROBE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'precision_probe', raising=False)
    import precision_probe
    ref, ref_loss = _run(tmp_path, 'fp32', python_layer=True)
    del precision_probe.SEEN[:]
    low, low_loss = _run(tmp_path, 'bf16', python_layer=True)
    assert ('data', np.float32) in precision_probe.SEEN
    assert ('diff', np.float32) in precision_probe.SEEN
    assert all(dt == np.float32 for _, dt in precision_probe.SEEN)
    for k in ref_loss:
        assert abs(low_loss[k] - ref_loss[k]) <= 2e-2 * abs(ref_loss[k])


def test_inner_products_stay_float32_where_bf16_gemms_are_slower(tmp_path, monkeypatch):
    from caffe import _config
    monkeypatch.setitem(_config._state, 'bf16_gemm', None)
    caffe.set_bf16_matmuls('off')
    assert not _config.low_precision_matmuls_pay(torch.device('cpu'))
    assert not _config.low_precision_matmuls_pay(torch.device('cuda'))
    ref, ref_loss = _run(tmp_path, 'fp32')
    low, low_loss = _run(tmp_path, 'bf16')
    assert low.blobs['conv1']._data.tensor.dtype == torch.bfloat16   # convolutions: bf16
    assert low.blobs['fc']._data.tensor.dtype == torch.float32       # inner product: fp32
    assert low.blobs['conv2']._data.tensor.dtype == torch.float32    # its bottom, converted
    for k in ref_loss:
        assert abs(low_loss[k] - ref_loss[k]) <= 2e-2 * abs(ref_loss[k]), k
    for name, ps in ref.params.items():
        for i, p in enumerate(ps):
            assert _rel(low.params[name][i].diff, p.diff) < 3e-2, (name, i)


def test_bf16_matmuls_follow_the_hardware_unless_forced(monkeypatch):
    """'auto': GPUs and CPUs with native bf16 dot products (AMX, AVX512-BF16) multiply in
    bf16, other CPUs in float32; 'on'/'off' (or CAFFE_BF16_GEMM) force either path."""
    from caffe import _config
    cpu, gpu = torch.device('cpu'), torch.device('cuda')
    monkeypatch.setitem(_config._state, 'bf16_gemm', None)
    for kind, want in (('amx', True), ('avx512_bf16', True), (None, False)):
        monkeypatch.setitem(_config._state, 'cpu_bf16', kind)
        assert _config.low_precision_matmuls_pay(cpu) is want, kind
        assert _config.low_precision_matmuls_pay(gpu)
        caffe.set_bf16_matmuls('on')
        assert _config.low_precision_matmuls_pay(cpu)
        caffe.set_bf16_matmuls(False)
        assert not _config.low_precision_matmuls_pay(cpu) and not _config.low_precision_matmuls_pay(gpu)
        caffe.set_bf16_matmuls('auto')
    with pytest.raises(ValueError, match='auto'):
        caffe.set_bf16_matmuls('sometimes')
    # The real probe answers one of the three.
    monkeypatch.delitem(_config._state, 'cpu_bf16')
    assert _config.cpu_bf16_support() in ('amx', 'avx512_bf16', None)


def test_bf16_gemm_env_var_is_read_at_import():
    path = os.path.join(os.path.dirname(caffe.__file__), '_config.py')
    code = textwrap.dedent('''
        import importlib.util, torch
        spec = importlib.util.spec_from_file_location('cfg', %r)
        cfg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg)
        print(cfg.low_precision_matmuls_pay(torch.device('cpu')),
              cfg.low_precision_matmuls_pay(torch.device('cuda')))
    ''' % path)
    for value, want in (('1', 'True True'), ('off', 'False False')):
        env = dict(os.environ, CAFFE_BF16_GEMM=value)
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.strip() == want, (value, out.stderr)


def test_python_writes_reach_a_bf16_blob(tmp_path, bf16_matmuls):
    net, _ = _run(tmp_path, 'bf16')
    assert net.blobs['conv2']._data.tensor.dtype == torch.bfloat16
    net.blobs['conv2'].data[...] = 0  # through the float32 mirror
    net.forward(start='fc')
    # With a zero input the fc output is its bias (0) through ReLU: all zero.
    assert not net.blobs['fc'].data.any()
    assert not net.blobs['conv2'].data.any()


def test_switching_back_to_fp32_is_exact(tmp_path):
    _run(tmp_path, 'bf16')
    a, la = _run(tmp_path, 'fp32')
    b, lb = _run(tmp_path, 'fp32')
    assert la == lb
    np.testing.assert_array_equal(a.params['conv1'][0].diff, b.params['conv1'][0].diff)


def test_float64_nets_ignore_bf16(tmp_path):
    with caffe.precision(torch.float64):
        ref, ref_loss = _run(tmp_path, 'fp32')
        low, low_loss = _run(tmp_path, 'bf16')
    assert ref_loss == low_loss
    assert low.blobs['conv2']._data.tensor.dtype == torch.float64


def test_precision_setters():
    assert caffe.get_precision() == 'fp32'
    caffe.set_precision('bf16')
    assert caffe.get_precision() == 'bf16'
    caffe.set_precision('FP32')
    assert caffe.get_precision() == 'fp32'
    with caffe.autocast():
        assert caffe.get_precision() == 'bf16'
        with caffe.autocast(False):
            assert caffe.get_precision() == 'fp32'
        assert caffe.get_precision() == 'bf16'
    assert caffe.get_precision() == 'fp32'
    with pytest.raises(ValueError, match='fp32'):
        caffe.set_precision('fp16')


def test_env_var(monkeypatch):
    from caffe import _config
    for value, want in (('1', torch.bfloat16), ('yes', torch.bfloat16), ('0', None),
                        ('', None), ('false', None)):
        monkeypatch.setenv('CAFFE_BF16', value)
        assert _config._env_precision() is want, value
    monkeypatch.delenv('CAFFE_BF16')
    assert _config._env_precision() is None


def test_env_var_is_read_at_import():
    """A fresh interpreter with CAFFE_BF16=1 starts in bf16 (the config module alone)."""
    path = os.path.join(os.path.dirname(caffe.__file__), '_config.py')
    code = textwrap.dedent('''
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location('cfg', %r)
        cfg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg)
        print(cfg.get_precision())
    ''' % path)
    env = dict(os.environ, CAFFE_BF16='1')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == 'bf16', out.stderr
