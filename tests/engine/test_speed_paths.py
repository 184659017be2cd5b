"""The engine's speed paths keep Caffe's semantics.

Parameter gradients accumulate as in Caffe, through the engine's fast paths.

InnerProduct accumulates its weight gradient with a GEMM straight into the diff
(Blob.accumulate_diff_mm) and TorchLayers add autograd's gradients with
Blob.accumulate_diff, which adopts a fresh gradient tensor when the blob has none yet.
These tests pin the semantics those shortcuts must keep: gradients are right (float64
finite differences), they add up over backward passes until cleared, clearing zeroes the
very memory a NumPy view holds, and a gradient autograd passes straight through (the
top diff itself) is never adopted as a parameter diff.

Host memory: `import caffe` makes glibc reuse freed blocks (no page faults for a tensor
allocated where one was just freed), unless CAFFE_MALLOC_REUSE=0.
"""
import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import caffe
from caffe.blob import Blob
from gradcheck import check_net_gradients

R = np.random.RandomState(5)


def _ip_net(extra: str, shape=(3, 4, 5)) -> str:
    dims = ' '.join('dim: %d' % d for d in shape)
    return """
    force_backward: true
    input: "x" input_shape { %s }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
            inner_product_param { num_output: 3 %s
              weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
    """ % (dims, extra)


@pytest.mark.parametrize('extra', ['', 'transpose: true', 'axis: 2', 'bias_term: false',
                                   'axis: 2 transpose: true'])
def test_inner_product_gradients(extra):
    check_net_gradients(_ip_net(extra), {'x': R.randn(3, 4, 5)})


def _net(tmp_path, text, name='net.prototxt'):
    path = tmp_path / name
    path.write_text(text)
    caffe.set_random_seed(1)
    return caffe.Net(str(path), caffe.TRAIN)


LOSS_NET = """
input: "x" input_shape { dim: 4 dim: 6 }
input: "t" input_shape { dim: 4 dim: 2 }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 2 transpose: true weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_diffs_add_up_until_cleared(tmp_path, precision):
    net = _net(tmp_path, LOSS_NET)
    net.blobs['x'].data[...] = R.randn(4, 6)
    net.blobs['t'].data[...] = R.randn(4, 2)
    caffe.set_precision(precision)
    try:
        net.forward()
        net.backward()
        views = {(n, i): p.diff for n, ps in net.params.items() for i, p in enumerate(ps)}
        once = {k: v.copy() for k, v in views.items()}
        assert all(np.abs(v).max() > 0 for v in once.values())
        net.forward()
        net.backward()
        for k, v in views.items():
            # Accumulated in place: the view taken after the first pass sees the sum.
            np.testing.assert_allclose(v, 2 * once[k], rtol=1e-6, atol=1e-7)
            assert net.params[k[0]][k[1]].diff is not None
            np.testing.assert_array_equal(net.params[k[0]][k[1]].diff, v)
        net.clear_param_diffs()
        assert all(not v.any() for v in views.values())
        net.forward()
        net.backward()
        for k, v in views.items():
            np.testing.assert_allclose(net.params[k[0]][k[1]].diff, once[k], rtol=1e-6, atol=1e-7)
    finally:
        caffe.set_precision('fp32')


def test_pass_through_gradient_is_not_adopted(tmp_path):
    """Bias with a bias as large as its bottom: autograd hands back the top diff itself."""
    net = _net(tmp_path, """
    force_backward: true
    input: "x" input_shape { dim: 2 dim: 3 }
    layer { name: "b" type: "Bias" bottom: "x" top: "y"
            bias_param { axis: 0 num_axes: -1 filler { type: "gaussian" std: 1 } } }
    """)
    net.blobs['x'].data[...] = R.randn(2, 3)
    top = R.randn(2, 3).astype(np.float32)
    net.forward()
    net.backward(y=top)
    np.testing.assert_array_equal(net.params['b'][0].diff, top)
    net.forward()
    net.backward(y=top)
    np.testing.assert_array_equal(net.params['b'][0].diff, 2 * top)
    np.testing.assert_array_equal(net.blobs['y'].diff, top)
    np.testing.assert_array_equal(net.blobs['x'].diff, top)


def test_blob_accumulate_diff():
    b = Blob((2, 3))
    g = torch.ones(2, 3)
    b.accumulate_diff(g, take=True)
    assert b.diff_tensor is g  # a fresh gradient becomes the diff, no zero buffer made
    view = b.diff
    b.accumulate_diff(torch.full((6,), 2.0))
    np.testing.assert_array_equal(view, np.full((2, 3), 3.0))
    c = Blob((2, 3))
    h = torch.ones(2, 3)
    c.accumulate_diff(h)  # not ours to keep: copied
    assert c.diff_tensor is not h
    h += 1
    np.testing.assert_array_equal(c.diff, np.ones((2, 3)))


def test_blob_accumulate_diff_mm():
    a, m = torch.randn(3, 4), torch.randn(4, 5)
    b = Blob((3, 5))
    b.accumulate_diff_mm(a, m)
    np.testing.assert_allclose(b.diff, (a @ m).numpy(), rtol=1e-5, atol=1e-6)
    view = b.diff
    b.accumulate_diff_mm(a, m)
    np.testing.assert_allclose(view, 2 * (a @ m).numpy(), rtol=1e-5, atol=1e-6)
    # A weight kept as (15,) or any shape with the same count takes the product too.
    flat = Blob((15,))
    flat.accumulate_diff_mm(a, m)
    np.testing.assert_allclose(flat.diff, (a @ m).numpy().ravel(), rtol=1e-5, atol=1e-6)
    # Other float types fall back to an add.
    wide = Blob((3, 5), dtype=torch.float64)
    wide.accumulate_diff_mm(a, m)
    np.testing.assert_allclose(wide.diff, (a @ m).numpy(), rtol=1e-5, atol=1e-6)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc allocator setting')
def test_freed_big_blocks_are_reused_without_page_faults():
    from caffe import _config
    assert _config.reuse_freed_memory()  # done by `import caffe`; idempotent
    assert _config.memory_reuse_enabled()
    n = 96 * 1024 * 1024 // 4  # 96 MB: far above glibc's largest mmap threshold (32 MB)
    counts = []
    for _ in range(3):  # best of three: the kernel may reclaim idle pages at any moment
        torch.empty(n).fill_(1.0)  # allocated, touched, freed
        before = _faults()
        t = torch.empty(n)
        t.fill_(2.0)
        counts.append(_faults() - before)
        del t
    # Reused: a handful of faults; fresh memory faults 24576 times (4 KB pages) every time.
    assert min(counts) < 3000, counts


def test_memory_reuse_opt_out():
    path = os.path.join(os.path.dirname(caffe.__file__), '_config.py')
    code = textwrap.dedent('''
        import importlib.util
        spec = importlib.util.spec_from_file_location('cfg', %r)
        cfg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg)
        print(cfg.memory_reuse_enabled())
    ''' % path)
    env = dict(os.environ, CAFFE_MALLOC_REUSE='0')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == 'False', out.stderr


# ---- in-place ReLU: Caffe's in-place computation, without a second buffer --------------------

INPLACE_NET = """
force_backward: true
input: "x" input_shape { dim: 2 dim: 2 dim: 3 dim: 3 }
layer { name: "c" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 2 kernel_size: 2 pad: 1
          weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "r" type: "ReLU" bottom: "c" top: "c" %s }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
"""


@pytest.mark.parametrize('relu_param', ['', 'relu_param { negative_slope: 0.2 }'])
def test_inplace_relu_gradients(relu_param):
    net = check_net_gradients(INPLACE_NET % relu_param, {'x': R.randn(2, 2, 3, 3)})
    assert net.layer_dict['r'].inplace


def test_inplace_relu_overwrites_its_bottom(tmp_path):
    net = _net(tmp_path, INPLACE_NET % '')
    net.blobs['x'].data[...] = R.randn(2, 2, 3, 3)
    conv_index = list(net._layer_names).index('c')
    seen = {}

    def after(li):  # the convolution's own output tensor, as its forward left it
        if li == conv_index:
            seen['out'] = net.blobs['c'].tensor
    net._after_forward.append(after)
    net.forward()
    out = seen['out']
    assert net.blobs['c'].tensor.data_ptr() == out.data_ptr()
    assert (out.detach() >= 0).all() and (net.blobs['c'].data >= 0).all()
    net.backward(y=np.ones((2, 2), np.float32))  # conv's backward never reads its output
    assert np.abs(net.params['c'][0].diff).max() > 0


def test_no_inplace_on_net_inputs(tmp_path):
    net = _net(tmp_path, """
    input: "x" input_shape { dim: 2 dim: 3 }
    layer { name: "r0" type: "ReLU" bottom: "x" top: "x" }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "a" type: "ReLU" bottom: "h" top: "h" }
    """)
    assert not net.layer_dict['r0'].inplace  # would overwrite the caller's array
    assert net.layer_dict['a'].inplace
    x = R.randn(2, 3).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.forward()
    h = np.maximum(x, 0) @ net.params['ip'][0].data.T + net.params['ip'][1].data
    np.testing.assert_allclose(net.blobs['h'].data, np.maximum(h, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.blobs['x'].data, np.maximum(x, 0))


def test_inplace_after_a_layer_that_keeps_its_output():
    """TanH's autograd keeps its output; the ReLU overwrites it, so TanH recomputes."""
    check_net_gradients("""
    force_backward: true
    input: "x" input_shape { dim: 3 dim: 4 }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h"
            inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "t" type: "TanH" bottom: "h" top: "t" }
    layer { name: "r" type: "ReLU" bottom: "t" top: "t" }
    """, {'x': R.randn(3, 4)})


def test_lazy_clear_is_invisible():
    """Blob.clear_diff only marks the gradient as zero: the next gradient overwrites it,
    and anyone who looks first sees zeros (in the memory their NumPy view holds)."""
    a, m = torch.randn(3, 4), torch.randn(4, 5)
    b = Blob((3, 5))
    b.diff[...] = 7.0
    view = b.diff
    b.clear_diff()
    b.accumulate_diff_mm(a, m)            # beta = 0: the 7s are not added
    np.testing.assert_allclose(view, (a @ m).numpy(), rtol=1e-5, atol=1e-6)
    b.accumulate_diff_mm(a, m)            # then it accumulates again
    np.testing.assert_allclose(view, 2 * (a @ m).numpy(), rtol=1e-5, atol=1e-6)
    b.clear_diff()
    b.accumulate_diff(torch.ones(15), take=True)   # copied into the same buffer
    np.testing.assert_array_equal(view, np.ones((3, 5)))
    assert b.diff_tensor.data_ptr() == torch.from_numpy(view).data_ptr()
    b.clear_diff()
    np.testing.assert_array_equal(b.diff, np.zeros((3, 5)))   # looked at first: zeros
    np.testing.assert_array_equal(view, np.zeros((3, 5)))
    b.accumulate_diff(torch.ones(3, 5))
    np.testing.assert_array_equal(view, np.ones((3, 5)))
    b.clear_diff()
    assert not b.diff_tensor.any()        # a layer asking for the tensor sees zeros too
    # Two blobs sharing one gradient share its pending zero.
    c = Blob((3, 5))
    c.share_diff(b)
    b.diff[...] = 3.0
    c.clear_diff()
    b.accumulate_diff(torch.ones(3, 5))
    np.testing.assert_array_equal(c.diff, np.ones((3, 5)))


def test_solver_lazy_clear_keeps_views_right(tmp_path):
    """A step clears lazily: the gradient each step uses is this step's alone (not a sum
    with the last one), the diff a step leaves is Caffe's (h), and a parameter that got
    no gradient reads zeros."""
    net_file = tmp_path / 'net.prototxt'
    net_file.write_text(textwrap.dedent("""
    input: "x" input_shape { dim: 4 dim: 3 }
    input: "y" input_shape { dim: 4 dim: 2 }
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "h"
            param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "z"
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "y" top: "loss" }
    """))
    solver_file = tmp_path / 'solver.prototxt'
    solver_file.write_text('net: "%s" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 '
                           'weight_decay: 0.001 display: 0 snapshot: 0 max_iter: 10' % net_file)
    solver = caffe.SGDSolver(str(solver_file))
    net = solver.net
    net.blobs['x'].data[...] = R.randn(4, 3)
    net.blobs['y'].data[...] = R.randn(4, 2)
    ref = caffe.Net(str(net_file), caffe.TRAIN)
    hist = [np.zeros(p.data.shape) for p in net.params['ip']]
    for _ in range(3):
        for name in ('frozen', 'ip'):
            for i in range(2):
                ref.params[name][i].data[...] = net.params[name][i].data
        for name in ('x', 'y'):
            ref.blobs[name].data[...] = net.blobs[name].data
        ref.forward()
        ref.clear_param_diffs()
        ref.backward()
        for i in range(2):                   # h = m*h + lr*(g + decay*w), w and b alike
            w, g = ref.params['ip'][i].data, ref.params['ip'][i].diff
            hist[i] = 0.9 * hist[i] + 0.01 * (g + 0.001 * w)
        solver.step(1)
        for i in range(2):
            np.testing.assert_allclose(net.params['ip'][i].diff, hist[i], rtol=1e-5, atol=1e-7)
            assert not net.params['frozen'][i].diff.any()


# ---- Convolution's written-out backward is autograd's, bit for bit ---------------------------

CONV_CASES = [
    ('dim: 2 dim: 6 dim: 9 dim: 11', 'num_output: 8 kernel_size: 3 pad: 1'),
    ('dim: 2 dim: 6 dim: 9 dim: 11', 'num_output: 8 kernel_size: 5 stride: 2 pad: 2 group: 2'),
    ('dim: 2 dim: 6 dim: 9 dim: 11', 'num_output: 8 kernel_size: 3 dilation: 2 bias_term: false'),
    ('dim: 2 dim: 4 dim: 9', 'num_output: 3 kernel_size: 3'),
    ('dim: 2 dim: 3 dim: 4 dim: 5 dim: 6', 'num_output: 3 kernel_size: 2'),
    ('dim: 2 dim: 3 dim: 4 dim: 7 dim: 6', 'num_output: 5 kernel_size: 3 axis: 2'),
]


@pytest.mark.parametrize('kind', ['Convolution', 'Deconvolution'])
@pytest.mark.parametrize('shape,conv', CONV_CASES)
def test_conv_backward_is_autograds_bit_for_bit(tmp_path, kind, shape, conv):
    """fp32 results are unchanged by the written-out path: forward, bottom and parameter
    diffs equal those of the generic TorchLayer path (autograd's ConvolutionBackward)."""
    from caffe.layers.base import TorchLayer
    text = ('force_backward: true\ninput: "x" input_shape { %s }\nlayer { name: "c" type: "%s" '
            'bottom: "x" top: "y" convolution_param { %s weight_filler { type: "gaussian" '
            'std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }' % (shape, kind, conv))
    results = []
    for explicit in (True, False):
        net = _net(tmp_path, text)
        if not explicit:
            c = net.layers[0]
            c.run_forward = lambda b, t, c=c: TorchLayer.run_forward(c, b, t)
            c.run_backward = lambda t, p, b, c=c: TorchLayer.run_backward(c, t, p, b)
        r = np.random.RandomState(0)
        net.blobs['x'].data[...] = r.randn(*net.blobs['x'].shape)
        net.forward()
        net.clear_param_diffs(lazy=True)
        net.backward(y=r.randn(*net.blobs['y'].shape))
        results.append([net.blobs['y'].data.copy(), net.blobs['x'].diff.copy()]
                       + [p.diff.copy() for p in net.params['c']])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_cleared_diff_takes_a_fresh_gradient_unless_python_holds_it():
    """A cleared diff that no NumPy view shares is replaced by a fresh gradient (no copy);
    one handed to Python as `.diff` gets the values copied in, so the view stays live."""
    b = Blob((2, 3))
    b.accumulate_diff(torch.ones(2, 3), take=True)
    b.clear_diff()
    g = torch.full((2, 3), 5.0)
    b.accumulate_diff(g, take=True)
    assert b.diff_tensor is g
    view = b.diff                      # Python now shares the buffer
    b.clear_diff()
    h = torch.full((2, 3), 7.0)
    b.accumulate_diff(h, take=True)
    assert b.diff_tensor is not h
    np.testing.assert_array_equal(view, np.full((2, 3), 7.0))
    # not cleared: added, never replaced
    b.accumulate_diff(torch.ones(2, 3), take=True)
    np.testing.assert_array_equal(view, np.full((2, 3), 8.0))
