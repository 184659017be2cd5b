"""bf16 backward of every layer type the models use, against float64 references.

Each case builds a small net in bf16 (`caffe.set_precision('bf16')`) in which the layer
under test, named "t", is fed the way the detector's nets feed it: most after a
convolution, so they receive its bf16 channels-last output, as under bf16 training. The
net runs forward and backward from random top diffs (or the loss weights). The reference
is the same layer alone in a float64 net, given exactly the bottoms the bf16 layer saw
(bf16 values are exact in float64), the same parameters and the same top diffs: so each
case measures the layer's own bf16 arithmetic, not the rounding of the layers before it.
Gradients (bottom diffs and parameter diffs) must agree to a relative L2 error a few
bf16 roundings wide (bf16 keeps 8 bits: one rounding is up to 0.4 %).

Every case runs with bf16 matrix products forced on and off (caffe.set_bf16_matmuls), so
the inner-product path of CPUs with AMX / AVX512-BF16 (and GPUs) and the float32 path of
other CPUs are both exercised whatever this machine has.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe import _config
from caffe.proto import caffe_pb2

R = np.random.RandomState(11)

HEAD = 'force_backward: true\ninput: "x" input_shape { dim: 2 dim: 4 dim: 10 dim: 12 }\n'
FILL = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 }'
CONV0 = ('layer { name: "c0" type: "Convolution" bottom: "x" top: "c0" convolution_param { '
         'num_output: 6 kernel_size: 3 pad: 1 %s } }\n' % FILL)
CONV1 = ('layer { name: "c1" type: "Convolution" bottom: "x" top: "c1" convolution_param { '
         'num_output: 6 kernel_size: 3 pad: 1 %s } }\n' % FILL)
IP0 = ('layer { name: "f0" type: "InnerProduct" bottom: "c0" top: "f0" inner_product_param { '
       'num_output: 7 %s } }\n' % FILL)


@pytest.fixture(params=['on', 'off'], ids=['bf16_gemm', 'fp32_gemm'])
def gemm(request, monkeypatch):
    """Both inner-product paths, whatever this CPU has."""
    monkeypatch.setitem(_config._state, 'bf16_gemm', None)
    caffe.set_bf16_matmuls(request.param)
    yield request.param
    caffe.set_precision('fp32')


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _write(tmp_path, text: str, name: str = 'net.prototxt') -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _reference_net(tmp_path, net: caffe.Net, li: int, bottoms, top_names) -> caffe.Net:
    """The layer li of `net` alone, in float64, its bottoms as net inputs."""
    lp = caffe_pb2.LayerParameter()
    lp.CopyFrom(net._param.layer[li])
    lines = ['force_backward: true']
    for name, arr in bottoms.items():
        lines.append('input: "%s" input_shape { %s }'
                     % (name, ' '.join('dim: %d' % d for d in arr.shape)))
    text = '\n'.join(lines) + '\nlayer {\n' + text_format.MessageToString(lp) + '}\n'
    with caffe.precision(torch.float64):
        ref = caffe.Net(_write(tmp_path, text, 'ref.prototxt'), caffe.TRAIN)
    return ref


def check_layer(tmp_path, body: str, inputs=None, bound: float = 1e-2, low_bottoms=(0,),
                extra_check=None):
    """Run layer "t" of HEAD + body in bf16 and compare its gradients with float64."""
    caffe.set_precision('bf16')
    caffe.set_random_seed(5)
    net = caffe.Net(_write(tmp_path, HEAD + body), caffe.TRAIN)
    inputs = dict(inputs or {})
    inputs.setdefault('x', R.randn(2, 4, 10, 12))
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    li = net._layer_names.index('t')
    bnames = net.bottom_names['t']
    tnames = net.top_names['t']
    if li > 0:
        net.forward(end=net._layer_names[li - 1])
    for i in low_bottoms:  # the layer is fed bf16, as in bf16 training
        assert net.blobs[bnames[i]]._data.tensor.dtype == torch.bfloat16, bnames[i]
    bottoms = {n: net.blobs[n].data.astype(np.float64) for n in bnames}
    net.forward(start='t')
    weights = net.blob_loss_weights
    diffs = {n: R.randn(*net.blobs[n].shape) for n in tnames if not weights[n]}
    net.backward(**diffs)
    layer = net.layers[li]
    need = net._bottom_need_backward[li]
    got_b = {n: net.blobs[n].diff.copy() for n, nb in zip(bnames, need) if nb}
    got_p = [(i, p.diff.copy()) for i, p in enumerate(layer.blobs) if layer.param_propagate_down[i]]
    params = [p.data.astype(np.float64) for p in layer.blobs]
    caffe.set_precision('fp32')

    ref = _reference_net(tmp_path, net, li, bottoms, tnames)
    rl = ref.layers[ref._layer_names.index('t')]
    for p, v in zip(rl.blobs, params):
        p.data[...] = v
    for n, v in bottoms.items():
        ref.blobs[n].data[...] = v
    ref.forward()
    ref.backward(**diffs)
    compared = 0
    for n, g in got_b.items():
        want = ref.blobs[n].diff
        if not want.any():  # a bottom the layer sends nothing (labels, weights, rois)
            assert not g.any(), n
            continue
        compared += 1
        assert _rel(g, want) < bound, (n, _rel(g, want))
    for i, g in got_p:
        want = rl.blobs[i].diff
        assert np.abs(want).max() > 0, i
        compared += 1
        assert _rel(g, want) < bound, ('param', i, _rel(g, want))
    assert compared
    if extra_check is not None:
        extra_check(net, ref)
    return net


# ---- convolutions ----------------------------------------------------------------------------

@pytest.mark.parametrize('conv', [
    'num_output: 5 kernel_size: 3 pad: 1',
    'num_output: 6 kernel_size: 5 stride: 2 pad: 2 group: 2',
    'num_output: 5 kernel_size: 1 bias_term: false',
    'num_output: 4 kernel_size: 3 dilation: 2',
])
def test_convolution_on_a_bf16_map(tmp_path, gemm, conv):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Convolution" bottom: "c0" top: "t" '
                'convolution_param { %s %s } }' % (conv, FILL))


def test_convolution_on_the_float32_image(tmp_path, gemm):
    """The first convolution casts the image into bf16 channels-last itself (one pass)."""
    check_layer(tmp_path, 'layer { name: "t" type: "Convolution" bottom: "x" top: "t" '
                'convolution_param { num_output: 5 kernel_size: 3 stride: 2 %s } }' % FILL,
                low_bottoms=())


def test_deconvolution(tmp_path, gemm):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Deconvolution" bottom: "c0" top: "t" '
                'convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 %s } }' % FILL)


def test_frozen_convolution_computes_no_weight_gradient(tmp_path, gemm, monkeypatch):
    """lr_mult 0 (VGG16's conv1/conv2): the bottom gets its gradient, the weights none, and
    ATen's convolution_backward is asked for the input gradient only."""
    text = ('input: "x" input_shape { dim: 2 dim: 4 dim: 10 dim: 12 }\n'
            'input: "y" input_shape { dim: 2 dim: 5 dim: 10 dim: 12 }\n' + CONV0 +
            'layer { name: "t" type: "Convolution" bottom: "c0" top: "t" param { lr_mult: 0 } '
            'param { lr_mult: 0 } convolution_param { num_output: 5 kernel_size: 3 pad: 1 %s } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "t" bottom: "y" top: "loss" }'
            % FILL)
    caffe.set_precision('bf16')
    net = caffe.Net(_write(tmp_path, text), caffe.TRAIN)
    assert net.layer_dict['t'].param_propagate_down == [False, False]
    net.blobs['x'].data[...] = R.randn(2, 4, 10, 12)
    net.blobs['y'].data[...] = R.randn(2, 5, 10, 12)
    masks = []
    real = torch.ops.aten.convolution_backward

    def spy(*args):
        masks.append(list(args[-1]))
        return real(*args)
    monkeypatch.setattr(torch.ops.aten, 'convolution_backward', spy)
    net.forward()
    net.backward()
    assert masks[0] == [True, False, False]   # t: input gradient only
    assert masks[1] == [False, True, True]    # c0: weights only (x is a net input)
    assert all(not p.diff.any() for p in net.params['t'])
    assert net.params['c0'][0].diff.any() and net.blobs['c0'].diff.any()
    caffe.set_precision('fp32')


# ---- neurons, pooling, normalisation ---------------------------------------------------------

@pytest.mark.parametrize('relu', ['', 'relu_param { negative_slope: 0.1 }'])
@pytest.mark.parametrize('in_place', [True, False])
def test_relu(tmp_path, gemm, relu, in_place):
    top = 'c0' if in_place else 't'
    body = CONV0 + 'layer { name: "t" type: "ReLU" bottom: "c0" top: "%s" %s }' % (top, relu)
    net = check_layer(tmp_path, body)
    assert net.layer_dict['t'].inplace == in_place


@pytest.mark.parametrize('pool', ['pool: MAX kernel_size: 3 stride: 2',
                                  'pool: MAX kernel_size: 2 stride: 2 pad: 1',
                                  'pool: AVE kernel_size: 3 stride: 2'])
def test_pooling(tmp_path, gemm, pool):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Pooling" bottom: "c0" top: "t" '
                'pooling_param { %s } }' % pool)


def test_pooling_mask_top_holds_exact_indices(tmp_path, gemm):
    """The argmax top of MAX pooling stays float32 under bf16 (bf16 holds integers up to
    256 only): indices into a 10x12 map pooled 2x2 reach 118."""
    def same_mask(net, ref):
        mask = net.blobs['mask']
        assert mask._data.tensor.dtype == torch.float32
        np.testing.assert_array_equal(mask.data, ref.blobs['mask'].data)
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Pooling" bottom: "c0" top: "t" '
                'top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }',
                extra_check=same_mask)


@pytest.mark.parametrize('region', ['ACROSS_CHANNELS', 'WITHIN_CHANNEL'])
def test_lrn(tmp_path, gemm, region):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "LRN" bottom: "c0" top: "t" '
                'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: %s } }' % region)


# ---- inner products, dropout -----------------------------------------------------------------

@pytest.mark.parametrize('ip', ['num_output: 7', 'num_output: 7 transpose: true',
                                'num_output: 5 bias_term: false'])
def test_inner_product_on_a_conv_map(tmp_path, gemm, ip):
    """Flattens a bf16 channels-last map in Caffe's (C, H, W) order."""
    net = check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "InnerProduct" bottom: "c0" '
                      'top: "t" inner_product_param { %s %s } }' % (ip, FILL),
                      low_bottoms=(0,) if gemm == 'on' else ())
    want = torch.bfloat16 if gemm == 'on' else torch.float32
    assert net.blobs['t']._data.tensor.dtype == want


def test_inner_product_axis_2(tmp_path, gemm):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "InnerProduct" bottom: "c0" top: "t" '
                'inner_product_param { num_output: 3 axis: 2 %s } }' % FILL,
                low_bottoms=(0,) if gemm == 'on' else ())


def test_inner_product_after_inner_product(tmp_path, gemm):
    check_layer(tmp_path, CONV0 + IP0 + 'layer { name: "t" type: "InnerProduct" bottom: "f0" '
                'top: "t" inner_product_param { num_output: 4 %s } }' % FILL, low_bottoms=())


def test_inner_product_backward_twice_accumulates(tmp_path, gemm):
    """A second backward (Caffe accumulates parameter diffs) reuses forward's casts."""
    caffe.set_precision('bf16')
    caffe.set_random_seed(2)
    net = caffe.Net(_write(tmp_path, HEAD + CONV0 + IP0), caffe.TRAIN)
    net.blobs['x'].data[...] = R.randn(2, 4, 10, 12)
    net.forward()
    d = R.randn(2, 7).astype(np.float32)
    net.backward(f0=d)
    once = net.params['f0'][0].diff.copy()
    net.backward(f0=d)
    np.testing.assert_allclose(net.params['f0'][0].diff, 2 * once, rtol=1e-6)


def test_dropout_keeps_bf16_and_its_mask(tmp_path, gemm):
    """Dropout after a bf16 inner product stays bf16; backward applies forward's mask."""
    caffe.set_precision('bf16')
    caffe.set_random_seed(4)
    net = caffe.Net(_write(tmp_path, HEAD + CONV0 + IP0 + 'layer { name: "t" type: "Dropout" '
                           'bottom: "f0" top: "d" dropout_param { dropout_ratio: 0.3 } }'),
                    caffe.TRAIN)
    net.blobs['x'].data[...] = R.randn(2, 4, 10, 12)
    net.forward()
    x = net.blobs['f0'].data.astype(np.float64)
    layer = net.layer_dict['t']
    mask = layer._mask.double().numpy()
    assert set(np.unique(mask)) <= {0.0, float(np.float32(1 / 0.7))}
    want_dtype = torch.bfloat16 if gemm == 'on' else torch.float32
    assert net.blobs['d']._data.tensor.dtype == want_dtype
    assert _rel(net.blobs['d'].data, x * mask) < 5e-3
    dy = R.randn(2, 7)
    net.backward(d=dy)
    assert _rel(net.blobs['f0'].diff, dy * mask) < 5e-3


def test_dropout_draws_the_same_mask_in_both_precisions(tmp_path):
    masks = []
    for precision in ('fp32', 'bf16'):
        caffe.set_precision(precision)
        caffe.set_bf16_matmuls('on')
        caffe.set_random_seed(9)
        net = caffe.Net(_write(tmp_path, HEAD + CONV0 + IP0 + 'layer { name: "t" type: "Dropout" '
                               'bottom: "f0" top: "d" }'), caffe.TRAIN)
        net.blobs['x'].data[...] = np.ones((2, 4, 10, 12))
        net.forward()
        masks.append(net.layer_dict['t']._mask.float().numpy())
    caffe.set_precision('fp32')
    caffe.set_bf16_matmuls('auto')
    np.testing.assert_array_equal(masks[0], masks[1])


# ---- RoI pooling, softmax, losses ------------------------------------------------------------

def test_roi_pooling(tmp_path, gemm):
    rois = np.array([[0, 0, 0, 7, 5], [1, 2, 3, 11, 9], [0, 4, 1, 9, 9], [1, 0, 0, 11, 9]], float)
    check_layer(tmp_path, 'input: "rois" input_shape { dim: 4 dim: 5 }\n' + CONV0 +
                'layer { name: "t" type: "ROIPooling" bottom: "c0" bottom: "rois" top: "t" '
                'roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 1.0 } }',
                inputs={'rois': rois}, low_bottoms=(0,))


@pytest.mark.parametrize('after', ['conv', 'ip'])
def test_softmax(tmp_path, gemm, after):
    bottom = 'c0' if after == 'conv' else 'f0'
    body = CONV0 + (IP0 if after == 'ip' else '')
    low = (0,) if after == 'conv' or gemm == 'on' else ()
    check_layer(tmp_path, body + 'layer { name: "t" type: "Softmax" bottom: "%s" top: "t" }'
                % bottom, low_bottoms=low)


def test_softmax_with_loss_on_rpn_scores(tmp_path, gemm):
    """The RPN's objectness loss: a conv's scores reshaped to (1, 2, 9H, W), label -1 ignored."""
    labels = R.randint(-1, 2, size=(2, 1, 30, 12)).astype(float)
    check_layer(tmp_path, 'input: "y" input_shape { dim: 2 dim: 1 dim: 30 dim: 12 }\n' + CONV0 +
                'layer { name: "s" type: "Convolution" bottom: "c0" top: "s" convolution_param '
                '{ num_output: 6 kernel_size: 1 %s } }\n' % FILL +
                'layer { name: "r" type: "Reshape" bottom: "s" top: "rs" reshape_param { shape '
                '{ dim: 0 dim: 2 dim: -1 dim: 0 } } }\n'
                'layer { name: "t" type: "SoftmaxWithLoss" bottom: "rs" bottom: "y" top: "loss" '
                'propagate_down: 1 propagate_down: 0 loss_param { ignore_label: -1 normalize: true } }',
                inputs={'y': labels}, low_bottoms=())


def test_softmax_with_loss_on_class_scores(tmp_path, gemm):
    labels = np.array([3., 0.])
    check_layer(tmp_path, 'input: "y" input_shape { dim: 2 }\n' + CONV0 + IP0 +
                'layer { name: "t" type: "SoftmaxWithLoss" bottom: "f0" bottom: "y" top: "loss" '
                'propagate_down: 1 propagate_down: 0 }', inputs={'y': labels}, low_bottoms=())


def test_smooth_l1_loss(tmp_path, gemm):
    t = R.randn(2, 7)
    w = (R.rand(2, 7) > 0.3).astype(float)
    check_layer(tmp_path, 'input: "tg" input_shape { dim: 2 dim: 7 }\n'
                'input: "wi" input_shape { dim: 2 dim: 7 }\ninput: "wo" input_shape { dim: 2 dim: 7 }\n'
                + CONV0 + IP0 + 'layer { name: "t" type: "SmoothL1Loss" bottom: "f0" bottom: "tg" '
                'bottom: "wi" bottom: "wo" top: "loss" propagate_down: 1 propagate_down: 0 '
                'propagate_down: 0 propagate_down: 0 smooth_l1_loss_param { sigma: 3.0 } }',
                inputs={'tg': t, 'wi': w, 'wo': w}, low_bottoms=())


# ---- routing and reshaping -------------------------------------------------------------------

def test_concat_keeps_bf16_channels_last(tmp_path, gemm):
    def layout(net, ref):
        y = net.blobs['t']._data.tensor
        assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    check_layer(tmp_path, CONV0 + CONV1 + 'layer { name: "t" type: "Concat" bottom: "c0" '
                'bottom: "c1" top: "t" }', low_bottoms=(0, 1), extra_check=layout)


def test_slice(tmp_path, gemm):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Slice" bottom: "c0" top: "t" '
                'top: "t2" slice_param { slice_point: 2 } }')


@pytest.mark.parametrize('op', ['operation: SUM coeff: 0.5 coeff: -2', 'operation: PROD',
                                'operation: MAX'])
def test_eltwise(tmp_path, gemm, op):
    check_layer(tmp_path, CONV0 + CONV1 + 'layer { name: "t" type: "Eltwise" bottom: "c0" '
                'bottom: "c1" top: "t" eltwise_param { %s } }' % op, low_bottoms=(0, 1))


def test_split_sums_a_bf16_and_a_float32_diff(tmp_path, gemm):
    """conv5's map feeds the RPN (bf16) and RoI pooling (float32): its Split adds both."""
    rois = np.array([[0, 0, 0, 7, 5], [1, 2, 3, 11, 9]], float)
    caffe.set_precision('bf16')
    caffe.set_random_seed(6)
    net = caffe.Net(_write(tmp_path, HEAD + 'input: "rois" input_shape { dim: 2 dim: 5 }\n' +
                           CONV0 + 'layer { name: "rpn" type: "Convolution" bottom: "c0" top: "rpn"'
                           ' convolution_param { num_output: 3 kernel_size: 3 pad: 1 %s } }\n' % FILL +
                           'layer { name: "roi" type: "ROIPooling" bottom: "c0" bottom: "rois" '
                           'top: "p" roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 1 } }'),
                    caffe.TRAIN)
    split = [n for n in net._layer_names if 'split' in n]
    assert split
    net.blobs['x'].data[...] = R.randn(2, 4, 10, 12)
    net.blobs['rois'].data[...] = rois
    net.forward()
    tops = net.top_names[split[0]]
    assert net.blobs[tops[0]]._data.tensor.dtype == torch.bfloat16  # the split keeps bf16
    d_rpn, d_p = R.randn(*net.blobs['rpn'].shape), R.randn(*net.blobs['p'].shape)
    net.backward(rpn=d_rpn, p=d_p)
    total = net.blobs[tops[0]].diff.astype(np.float64) + net.blobs[tops[1]].diff
    assert _rel(net.blobs['c0'].diff, total) < 5e-3
    caffe.set_precision('fp32')


def test_reshape(tmp_path, gemm):
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Reshape" bottom: "c0" top: "t" '
                'reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }', low_bottoms=())


PY_MODULE = '''
import caffe


class Twice(caffe.Layer):
    """y = 2 x, written in NumPy as py-faster-rcnn's layers are."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


def test_python_layer(tmp_path, gemm, monkeypatch):
    (tmp_path / 'bf16_twice.py').write_text(PY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'bf16_twice', raising=False)
    check_layer(tmp_path, CONV0 + 'layer { name: "t" type: "Python" bottom: "c0" top: "t" '
                'python_param { module: "bf16_twice" layer: "Twice" } }', low_bottoms=(),
                bound=1e-6)


def test_silence_sends_zeros(tmp_path, gemm):
    caffe.set_precision('bf16')
    net = caffe.Net(_write(tmp_path, HEAD + CONV0 + CONV1 + 'layer { name: "s" type: "Silence" '
                           'bottom: "c1" }'), caffe.TRAIN)
    net.blobs['x'].data[...] = R.randn(2, 4, 10, 12)
    net.forward()
    net.backward(c0=R.randn(*net.blobs['c0'].shape))
    assert not net.blobs['c1'].diff.any()
    assert not net.params['c1'][0].diff.any()
    assert net.params['c0'][0].diff.any()
    caffe.set_precision('fp32')
