"""LRN, BatchNorm, Scale, Bias and MVN: hand-computed forwards, Caffe references, gradients."""
import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients, forward_net as make_net

R = np.random.RandomState(7)


def one_layer(layer, shape, extra=''):
    dims = ' '.join('dim: %d' % d for d in shape)
    return ('force_backward: true\ninput: "x" input_shape { %s }\n%s\n%s'
            % (dims, extra, layer))


# ---- LRN ------------------------------------------------------------------------------------

def f32(*values):
    """Parameters as the float32 fields of the proto hold them."""
    return [float(np.float32(v)) for v in values]


def lrn_across_reference(x, n, alpha, beta, k):
    """Caffe's cross-channel LRN written as loops over channels."""
    alpha, beta, k = f32(alpha, beta, k)
    out = np.empty_like(x)
    c = x.shape[1]
    half = (n - 1) // 2
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


def lrn_within_reference(x, n, alpha, beta):
    """Caffe's within-channel LRN: AVE pooling of x^2 (kernel n, stride 1, pad (n-1)/2,
    Caffe's ceil output size and pool_size rule), then (1 + alpha * avg)^-beta."""
    alpha, beta = f32(alpha, beta)
    num, c, h, w = x.shape
    pad = (n - 1) // 2
    ph_out = int(np.ceil((h + 2 * pad - n) / 1.0)) + 1
    pw_out = int(np.ceil((w + 2 * pad - n) / 1.0)) + 1
    sq = x ** 2
    avg = np.zeros((num, c, ph_out, pw_out))
    for ph in range(ph_out):
        for pw in range(pw_out):
            hs, ws = ph - pad, pw - pad
            he, we = min(hs + n, h + pad), min(ws + n, w + pad)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            avg[:, :, ph, pw] = sq[:, :, hs:he, ws:we].sum(axis=(2, 3)) / pool_size
    return x * (1 + alpha * avg) ** -beta


def test_lrn_across_hand_values():
    # x = [1, 2, 3] over channels, n = 3, alpha = 3 (alpha/n = 1), beta = 1, k = 1:
    # scales 1 + (0+1+4), 1 + (1+4+9), 1 + (4+9) = 6, 15, 14.
    net = make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" '
                             'lrn_param { local_size: 3 alpha: 3 beta: 1 k: 1 } }', (1, 3, 1, 1)),
                   {'x': np.array([1., 2., 3.]).reshape(1, 3, 1, 1)})
    np.testing.assert_allclose(net.blobs['y'].data.ravel(), [1 / 6., 2 / 15., 3 / 14.], rtol=1e-12)


def test_lrn_within_hand_values():
    # x = [1, 2, 3] along a row, 3x3 window, alpha = 9, beta = 1: avg = (sum of squares)/9,
    # scale = 1 + 9 * avg = 1 + sum = 6, 15, 14 (zero padding at both ends; k is unused).
    net = make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" '
                             'lrn_param { local_size: 3 alpha: 9 beta: 1 k: 5 '
                             'norm_region: WITHIN_CHANNEL } }', (1, 1, 1, 3)),
                   {'x': np.array([1., 2., 3.]).reshape(1, 1, 1, 3)})
    np.testing.assert_allclose(net.blobs['y'].data.ravel(), [1 / 6., 2 / 15., 3 / 14.], rtol=1e-12)


@pytest.mark.parametrize('n,alpha,beta,k', [(5, 1e-1, 0.75, 2.0), (3, 0.5, 0.6, 1.0), (1, 2.0, 0.5, 1.5),
                                            (7, 0.3, 1.3, 1.0)])
def test_lrn_across_matches_reference(n, alpha, beta, k):
    x = R.randn(2, 6, 3, 4)
    net = make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { '
                             'local_size: %d alpha: %g beta: %g k: %g } }' % (n, alpha, beta, k),
                             x.shape), {'x': x})
    np.testing.assert_allclose(net.blobs['y'].data, lrn_across_reference(x, n, alpha, beta, k),
                               rtol=1e-10)


@pytest.mark.parametrize('n,alpha,beta', [(3, 0.5, 0.75), (5, 2.0, 0.6), (1, 1.0, 0.5)])
def test_lrn_within_matches_caffe_pooling(n, alpha, beta):
    x = R.randn(2, 3, 5, 7)
    net = make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { '
                             'local_size: %d alpha: %g beta: %g norm_region: WITHIN_CHANNEL } }'
                             % (n, alpha, beta), x.shape), {'x': x})
    np.testing.assert_allclose(net.blobs['y'].data, lrn_within_reference(x, n, alpha, beta),
                               rtol=1e-10)


@pytest.mark.parametrize('region,n', [('ACROSS_CHANNELS', 3), ('ACROSS_CHANNELS', 5),
                                      ('WITHIN_CHANNEL', 3), ('WITHIN_CHANNEL', 5)])
def test_lrn_gradient(region, n):
    layer = ('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: %d '
             'alpha: 0.7 beta: 0.75 k: 1.5 norm_region: %s } }' % (n, region))
    check_net_gradients(one_layer(layer, (2, 4, 3, 5)), {'x': R.randn(2, 4, 3, 5)})


@pytest.mark.parametrize('region,n', [('ACROSS_CHANNELS', 5), ('WITHIN_CHANNEL', 3)])
def test_lrn_block_by_block_equals_whole(monkeypatch, region, n):
    # Large maps are processed in slabs; cut this small one into many (one or two rows
    # or channels each) and compare with the reference and the finite differences.
    import importlib
    monkeypatch.setattr(importlib.import_module('caffe.layers.normalization'), '_BLOCK', 25)
    x = R.randn(2, 5, 4, 6)
    layer = ('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: %d '
             'alpha: 0.5 beta: 0.8 k: 1.5 norm_region: %s } }' % (n, region))
    net = make_net(one_layer(layer, x.shape), {'x': x})
    if region == 'WITHIN_CHANNEL':
        want = lrn_within_reference(x, n, 0.5, 0.8)
    else:
        want = lrn_across_reference(x, n, 0.5, 0.8, 1.5)
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-10)
    check_net_gradients(one_layer(layer, x.shape), {'x': x})


def test_lrn_float32_matches_float64():
    x = R.randn(1, 8, 6, 5)
    text = one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { '
                     'local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }', x.shape)
    y32 = make_net(text, {'x': x}, dtype=torch.float32).blobs['y'].data
    np.testing.assert_allclose(y32, lrn_within_reference(x, 3, 0.5, 0.75), rtol=1e-5, atol=1e-6)


def test_lrn_errors():
    with pytest.raises(caffe.NetError, match='odd'):
        make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" '
                           'lrn_param { local_size: 4 } }', (1, 3, 2, 2)), {'x': np.ones((1, 3, 2, 2))})
    with pytest.raises(caffe.ShapeError, match='4 axes'):
        make_net(one_layer('layer { name: "n" type: "LRN" bottom: "x" top: "y" }', (3, 2)),
                 {'x': np.ones((3, 2))})


# ---- BatchNorm ---------------------------------------------------------------------------------

BN = 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" %s }'


def test_batchnorm_train_statistics_and_running_average():
    x = R.randn(3, 2, 2, 2) * 3 + 1
    net = make_net(one_layer(BN % 'batch_norm_param { moving_average_fraction: 0.5 eps: 0.125 }',
                             x.shape), {'x': x})
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    want = (x - mean[None, :, None, None]) / np.sqrt(var + 0.125)[None, :, None, None]
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-10)
    m = x.size // 2  # values per channel
    bn = net.params['bn']
    np.testing.assert_allclose(bn[0].data, mean, rtol=1e-12)
    np.testing.assert_allclose(bn[1].data, var * m / (m - 1.0), rtol=1e-12)
    np.testing.assert_allclose(bn[2].data, [1.0])
    # A second pass: s = 0.5 * 1 + 1, blobs = batch stat + 0.5 * old blob; updated in
    # place, so an array taken from .data before the pass sees the new values.
    x2 = R.randn(3, 2, 2, 2)
    held = bn[0].data
    net.blobs['x'].data[...] = x2
    net.forward()
    np.testing.assert_allclose(held, x2.mean(axis=(0, 2, 3)) + 0.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn[2].data, [1.5])
    np.testing.assert_allclose(bn[0].data, x2.mean(axis=(0, 2, 3)) + 0.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn[1].data, x2.var(axis=(0, 2, 3)) * m / (m - 1.0)
                               + 0.5 * var * m / (m - 1.0), rtol=1e-12)


def test_batchnorm_test_phase_uses_stored_statistics():
    x = R.randn(2, 3, 2, 1)
    text = one_layer(BN % 'batch_norm_param { eps: 0.0625 }', x.shape)
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    with caffe.precision(torch.float64):
        net = caffe.Net(param, caffe.TEST)
        net.params['bn'][0].data[...] = [2.0, 4.0, 6.0]
        net.params['bn'][1].data[...] = [8.0, 2.0, 0.5]
        net.params['bn'][2].data[...] = [2.0]
        net.blobs['x'].data[...] = x
        net.forward()
    mean = np.array([1.0, 2.0, 3.0])[None, :, None, None]
    var = np.array([4.0, 1.0, 0.25])[None, :, None, None]
    np.testing.assert_allclose(net.blobs['y'].data, (x - mean) / np.sqrt(var + 0.0625), rtol=1e-12)
    # Scale factor 0 means "no statistics yet": mean and variance 0.
    with caffe.precision(torch.float64):
        net.params['bn'][2].data[...] = 0
        net.forward()
    np.testing.assert_allclose(net.blobs['y'].data, x / np.sqrt(0.0625), rtol=1e-12)
    # use_global_stats: false overrides the phase.
    text = one_layer(BN % 'batch_norm_param { use_global_stats: false }', x.shape)
    net = make_net(text, {'x': x}, phase=caffe.TEST)
    np.testing.assert_allclose(net.blobs['y'].data.mean(axis=(0, 2, 3)), 0, atol=1e-12)


def test_batchnorm_blobs_are_frozen_like_caffe():
    x = R.randn(2, 3)
    net = make_net(one_layer(BN % '', x.shape), {'x': x})
    layer = net.layers[list(net._layer_names).index('bn')]
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    assert [b.shape for b in net.params['bn']] == [(3,), (3,), (1,)]
    with pytest.raises(caffe.NetError, match='Cannot configure batch normalization statistics'):
        make_net(one_layer(BN % 'param { lr_mult: 0 } param { lr_mult: 1 }', x.shape), {'x': x})


@pytest.mark.parametrize('shape', [(4, 3, 2, 2), (5, 3), (3, 2, 4)])
def test_batchnorm_gradient_batch_statistics(shape):
    text = one_layer(BN % 'batch_norm_param { eps: 0.1 }', shape)
    check_net_gradients(text, {'x': R.randn(*shape)})


def test_batchnorm_gradient_in_place_global_statistics():
    shape = (3, 2, 2, 2)
    text = one_layer('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                     'batch_norm_param { use_global_stats: true eps: 0.5 } }\n'
                     'layer { name: "e" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "l" }',
                     shape, 'input: "t" input_shape { dim: 3 dim: 2 dim: 2 dim: 2 }')
    # Global statistics: blobs are zero, so y = x / sqrt(eps) and dL/dx = (y - t)/num/sqrt(eps).
    x, t = R.randn(*shape), R.randn(*shape)
    net = make_net(text, {'x': x, 't': t})
    with caffe.precision(torch.float64):
        net.backward()
    np.testing.assert_allclose(net.blobs['x'].diff, (x / np.sqrt(0.5) - t) / 3 / np.sqrt(0.5),
                               rtol=1e-10)


# ---- Scale and Bias ------------------------------------------------------------------------------

def test_scale_defaults_and_hand_values():
    x = np.arange(12.0).reshape(2, 3, 2)
    net = make_net(one_layer('layer { name: "s" type: "Scale" bottom: "x" top: "y" '
                             'scale_param { bias_term: true } }', x.shape), {'x': x})
    s, b = net.params['s']
    assert s.shape == (3,) and b.shape == (3,)
    np.testing.assert_array_equal(s.data, 1)
    np.testing.assert_array_equal(b.data, 0)
    with caffe.precision(torch.float64):
        s.data[...] = [1.0, -2.0, 0.5]
        b.data[...] = [10.0, 20.0, 30.0]
        net.forward()
    want = x * np.array([1.0, -2.0, 0.5])[None, :, None] + np.array([10.0, 20.0, 30.0])[None, :, None]
    np.testing.assert_allclose(net.blobs['y'].data, want)


@pytest.mark.parametrize('param,pshape', [('', (3,)), ('axis: 0 num_axes: 2', (2, 3)),
                                          ('axis: 1 num_axes: -1', (3, 4)), ('num_axes: 0', ()),
                                          ('axis: -1', (4,))])
def test_scale_learned_gradient(param, pshape):
    text = one_layer('layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { %s '
                     'bias_term: true filler { type: "gaussian" std: 1 } '
                     'bias_filler { type: "gaussian" std: 1 } } }' % param, (2, 3, 4))
    net = check_net_gradients(text, {'x': R.randn(2, 3, 4)})
    assert net.params['s'][0].shape == pshape


def test_scale_second_bottom_gradient():
    text = one_layer('layer { name: "s" type: "Scale" bottom: "x" bottom: "f" top: "y" '
                     'scale_param { axis: 1 bias_term: true bias_filler { type: "gaussian" std: 1 } } }',
                     (2, 3, 4), 'input: "f" input_shape { dim: 3 dim: 4 }')
    net = check_net_gradients(text, {'x': R.randn(2, 3, 4), 'f': R.randn(3, 4)})
    assert [p.shape for p in net.params['s']] == [(3, 4)]


def test_scale_shape_mismatch_is_an_error():
    text = one_layer('layer { name: "s" type: "Scale" bottom: "x" bottom: "f" top: "y" }',
                     (2, 3, 4), 'input: "f" input_shape { dim: 4 }')
    with pytest.raises(caffe.ShapeError, match='dimension mismatch'):
        make_net(text, {'x': np.ones((2, 3, 4)), 'f': np.ones(4)})


def test_bias_forward_and_gradients():
    x = R.randn(2, 3, 2)
    net = make_net(one_layer('layer { name: "b" type: "Bias" bottom: "x" top: "y" }', x.shape),
                   {'x': x})
    np.testing.assert_array_equal(net.params['b'][0].data, 0)  # default filler: constant 0
    text = one_layer('layer { name: "b" type: "Bias" bottom: "x" top: "y" bias_param { axis: 0 '
                     'num_axes: 2 filler { type: "gaussian" std: 1 } } }', (2, 3, 2))
    net = check_net_gradients(text, {'x': R.randn(2, 3, 2)})
    assert net.params['b'][0].shape == (2, 3)
    text = one_layer('layer { name: "b" type: "Bias" bottom: "x" bottom: "c" top: "y" }',
                     (2, 3, 2), 'input: "c" input_shape { dim: 3 }')
    x, c = R.randn(2, 3, 2), R.randn(3)
    net = check_net_gradients(text, {'x': x, 'c': c})
    np.testing.assert_allclose(net.blobs['y'].data, x + c[None, :, None])


# ---- MVN ---------------------------------------------------------------------------------------

def test_mvn_caffe_eps_placement_and_shape():
    x = R.randn(2, 3, 4, 5) * 2 + 3
    net = make_net(one_layer('layer { name: "m" type: "MVN" bottom: "x" top: "y" '
                             'mvn_param { eps: 0.5 } }', x.shape), {'x': x})
    mean = x.mean(axis=(2, 3), keepdims=True)
    std = x.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(net.blobs['y'].data, (x - mean) / (std + 0.5), rtol=1e-10)
    net = make_net(one_layer('layer { name: "m" type: "MVN" bottom: "x" top: "y" mvn_param { '
                             'across_channels: true normalize_variance: false } }', x.shape), {'x': x})
    np.testing.assert_allclose(net.blobs['y'].data, x - x.mean(axis=(1, 2, 3), keepdims=True),
                               rtol=1e-10)
    # Caffe shapes the top as (num, channels, height, width).
    x2 = R.randn(3, 4)
    net = make_net(one_layer('layer { name: "m" type: "MVN" bottom: "x" top: "y" '
                             'mvn_param { across_channels: true } }', x2.shape), {'x': x2})
    assert net.blobs['y'].shape == (3, 4, 1, 1)


@pytest.mark.parametrize('param', ['', 'across_channels: true', 'normalize_variance: false',
                                   'across_channels: true normalize_variance: false'])
def test_mvn_gradient(param):
    text = one_layer('layer { name: "m" type: "MVN" bottom: "x" top: "y" mvn_param { %s } }'
                     % param, (2, 3, 2, 3))
    check_net_gradients(text, {'x': R.randn(2, 3, 2, 3)})


def test_mvn_backward_is_caffes_formula():
    # With a large eps Caffe's backward (which treats sqrt(var) + eps as a constant in the
    # variance term) differs from the true gradient; the layer must give Caffe's.
    x = R.randn(1, 1, 2, 3)
    dy = R.randn(1, 1, 2, 3)
    net = make_net(one_layer('layer { name: "m" type: "MVN" bottom: "x" top: "y" '
                             'mvn_param { eps: 1 } }', x.shape), {'x': x})
    with caffe.precision(torch.float64):
        net.backward(y=dy)
    y = net.blobs['y'].data.ravel()
    d = dy.ravel()
    want = (d - d.mean() - y * (d * y).mean()) / (x.std() + 1.0)
    np.testing.assert_allclose(net.blobs['x'].diff.ravel(), want, rtol=1e-10)


@pytest.mark.parametrize('region', ['ACROSS_CHANNELS', 'WITHIN_CHANNEL'])
def test_lrn_under_bf16_takes_channels_last_bf16_maps(monkeypatch, region):
    """Under bf16 a convolution hands LRN a channels-last bf16 map: LRN works on it in
    float32 slabs (rows for ACROSS, the map made contiguous for WITHIN) and its value and
    gradient stay those of float32 on the same (bf16-rounded) input."""
    import importlib
    monkeypatch.setattr(importlib.import_module('caffe.layers.normalization'), '_BLOCK', 40)
    text = ('force_backward: true\ninput: "x" input_shape { dim: 2 dim: 3 dim: 6 dim: 7 }\n'
            'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { '
            'num_output: 5 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }\n'
            'layer { name: "n" type: "LRN" bottom: "c" top: "y" lrn_param { local_size: 3 '
            'alpha: 0.5 beta: 0.75 k: 1.5 norm_region: %s } }' % region)
    x = R.randn(2, 3, 6, 7).astype(np.float32)
    top = R.randn(2, 5, 6, 7).astype(np.float32)
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    caffe.set_precision('bf16')
    try:
        low = caffe.Net(param, caffe.TRAIN)
        low.blobs['x'].data[...] = x
        low.forward()
        c = low.blobs['c']._data.tensor
        assert c.dtype == torch.bfloat16 and c.is_contiguous(memory_format=torch.channels_last)
        c_value = low.blobs['c'].data.copy()
        low.backward(y=top)
        y_low, dc_low = low.blobs['y'].data.copy(), low.blobs['c'].diff.copy()
    finally:
        caffe.set_precision('fp32')
    ref = caffe.Net(protoio.parse_text(one_layer(
        'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 '
        'alpha: 0.5 beta: 0.75 k: 1.5 norm_region: %s } }' % region, c_value.shape),
        caffe_pb2.NetParameter()), caffe.TRAIN)
    ref.blobs['x'].data[...] = c_value
    ref.forward()
    ref.backward(y=top)
    np.testing.assert_allclose(y_low, ref.blobs['y'].data, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(dc_low, ref.blobs['x'].diff, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('region,n', [('ACROSS_CHANNELS', 5), ('WITHIN_CHANNEL', 3),
                                      ('WITHIN_CHANNEL', 5)])
def test_lrn_channels_last_slabs_equal_contiguous(monkeypatch, region, n):
    """Row slabs of a channels-last map (with halo rows for WITHIN_CHANNEL windows) give
    what the contiguous map gives, and leave the top's diff untouched."""
    import importlib
    monkeypatch.setattr(importlib.import_module('caffe.layers.normalization'), '_BLOCK', 30)
    x = R.randn(2, 4, 7, 5)
    top = R.randn(2, 4, 7, 5)
    layer = ('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: %d '
             'alpha: 0.5 beta: 0.8 k: 1.5 norm_region: %s } }' % (n, region))
    results = []
    for channels_last in (False, True):
        net = make_net(one_layer(layer, x.shape), {'x': x})
        if channels_last:
            t = net.blobs['x'].tensor.contiguous(memory_format=torch.channels_last)
            net.blobs['x'].set_tensor(t)
        with caffe.precision(torch.float64):
            net.forward()
            net.backward(y=top)
        assert net.blobs['y'].tensor.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        np.testing.assert_array_equal(net.blobs['y'].diff, top)
        results.append((net.blobs['y'].data.copy(), net.blobs['x'].diff.copy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-14)
