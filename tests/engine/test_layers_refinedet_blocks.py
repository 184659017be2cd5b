"""The existing layers as RefineDet's and SSD's nets use them: Deconvolution (the TCB's
2x2 stride-2 upsampling, bias_term false, groups, Caffe's fillers on its weights),
dilated Convolution (VGG16's reduced fc6), Pooling as VGG/SSD/ResNet place it, the
Convolution -> BatchNorm -> Scale -> ReLU chain written in place by ConvBNLayer, and a
whole transfer-connection block, each against NumPy and by finite differences."""
import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients, forward_net as net_from

R = np.random.RandomState(5)


def header(**shapes):
    lines = ['force_backward: true']
    for name, shape in shapes.items():
        lines.append('input: "%s" input_shape { %s }'
                     % (name, ' '.join('dim: %d' % d for d in shape)))
    return '\n'.join(lines) + '\n'


# ---- NumPy references ------------------------------------------------------------------------

def conv_reference(x, w, b, stride, pad, dilation, group):
    """Caffe's convolution: out = (in + 2 pad - dilation (k - 1) - 1) / stride + 1."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * dilation:i * dilation + stride * (oh - 1) + 1:stride,
                           j * dilation:j * dilation + stride * (ow - 1) + 1:stride]
                y[:, g * og:(g + 1) * og] += np.einsum('nchw,oc->nohw', patch,
                                                       w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def deconv_reference(x, w, b, stride, pad, dilation, group):
    """Caffe's deconvolution (the convolution's backward-data): every input cell adds its
    value times the kernel into the output at (i * stride + k * dilation - pad);
    weights are (channels, num_output / group, kh, kw)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    full_h = stride * (h - 1) + dilation * (kh - 1) + 1
    full_w = stride * (wd - 1) + dilation * (kw - 1) + 1
    y = np.zeros((n, og * group, full_h, full_w))
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                y[:, g * og:(g + 1) * og,
                  i * dilation:i * dilation + stride * (h - 1) + 1:stride,
                  j * dilation:j * dilation + stride * (wd - 1) + 1:stride] += np.einsum(
                      'nchw,co->nohw', x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg, :, i, j])
    y = y[:, :, pad:full_h - pad, pad:full_w - pad]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def max_pool_reference(x, k, s, p):
    """Caffe's MAX pooling, round_mode CEIL, the last window dropped if it starts in the pad."""
    n, c, h, w = x.shape

    def size(length):
        out = int(np.ceil((length + 2 * p - k) / s)) + 1
        if p and (out - 1) * s >= length + p:
            out -= 1
        return out
    oh, ow = size(h), size(w)
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h), min(ws + k, w)
            hs, ws = max(hs, 0), max(ws, 0)
            y[:, :, i, j] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
    return y


def bilinear_kernel(k):
    """Caffe's BilinearFiller (SSD's and RefineDet's version): f = ceil(k / 2),
    c = (2f - 1 - f % 2) / 2f, w(x, y) = (1 - |x/f - c|)(1 - |y/f - c|)."""
    f = int(np.ceil(k / 2.0))
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(k) / f - c)
    return ramp[:, None] * ramp[None, :]


# ---- Deconvolution ----------------------------------------------------------------------------

DECONV = ('layer { name: "up" type: "Deconvolution" bottom: "x" top: "y" convolution_param { '
          'num_output: %d kernel_size: %d stride: %d pad: %d %s '
          'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }')

DECONV_CASES = [
    # (input, num_output, kernel, stride, pad, extra, group, dilation)
    ((2, 4, 3, 5), 6, 2, 2, 0, 'bias_term: false', 1, 1),   # RefineDet's TCB upsampling
    ((1, 4, 4, 3), 6, 4, 2, 1, 'group: 2', 2, 1),
    ((1, 3, 4, 4), 3, 3, 1, 1, 'dilation: 2', 1, 2),
    ((1, 4, 3, 3), 4, 4, 2, 1, 'group: 4 bias_term: false', 4, 1),  # depthwise upsampling
    ((2, 2, 3, 4), 5, 3, 3, 2, '', 1, 1),
]


@pytest.mark.parametrize('case', DECONV_CASES)
def test_deconvolution_matches_reference(case):
    shape, nout, k, s, p, extra, group, dil = case
    x = R.randn(*shape)
    net = net_from(header(x=shape) + DECONV % (nout, k, s, p, extra), {'x': x})
    params = net.params['up']
    bias_term = 'bias_term: false' not in extra
    assert len(params) == (2 if bias_term else 1)
    assert params[0].data.shape == (shape[1], nout // group, k, k)
    want = deconv_reference(x, params[0].data, params[1].data if bias_term else None, s, p, dil,
                            group)
    assert net.blobs['y'].data.shape == want.shape
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('case', [DECONV_CASES[0], DECONV_CASES[1], DECONV_CASES[2]])
def test_deconvolution_gradients(case):
    shape, nout, k, s, p, extra, group, dil = case
    check_net_gradients(header(x=shape) + DECONV % (nout, k, s, p, extra), {'x': R.randn(*shape)})


def test_deconvolution_bilinear_upsampling_as_caffe_documents():
    """Caffe's recipe: kernel 2f - f%2, stride f, pad ceil((f-1)/2), group = channels,
    bilinear weights, no bias: a factor-2 upsampling that keeps a constant map constant
    away from the border."""
    x = R.randn(1, 3, 4, 5)
    text = header(x=x.shape) + (
        'layer { name: "up" type: "Deconvolution" bottom: "x" top: "y" param { lr_mult: 0 } '
        'convolution_param { num_output: 3 group: 3 kernel_size: 4 stride: 2 pad: 1 '
        'bias_term: false weight_filler { type: "bilinear" } } }')
    net = net_from(text, {'x': x})
    w = net.params['up'][0].data
    assert w.shape == (3, 1, 4, 4)
    for ch in range(3):
        np.testing.assert_allclose(w[ch, 0], bilinear_kernel(4), rtol=1e-7)
    np.testing.assert_allclose(bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(net.blobs['y'].data, deconv_reference(x, w, None, 2, 1, 1, 3),
                               rtol=1e-10, atol=1e-12)
    ones = net_from(text, {'x': np.ones((1, 3, 4, 5))})
    np.testing.assert_allclose(ones.blobs['y'].data[:, :, 1:-1, 1:-1], 1.0, rtol=1e-6)


@pytest.mark.parametrize('k', [2, 3, 4, 5])
def test_bilinear_filler_values(k):
    text = header(x=(1, 2, 3, 3)) + (
        'layer { name: "up" type: "Deconvolution" bottom: "x" top: "y" convolution_param { '
        'num_output: 2 kernel_size: %d stride: 2 bias_term: false weight_filler { type: '
        '"bilinear" } } }' % k)
    net = net_from(text, {'x': np.zeros((1, 2, 3, 3))})
    w = net.params['up'][0].data
    assert w.shape == (2, 2, k, k)
    np.testing.assert_allclose(w, np.broadcast_to(bilinear_kernel(k), w.shape), rtol=1e-7)


@pytest.mark.parametrize('norm,fan', [('', 'in'), ('variance_norm: FAN_OUT', 'out'),
                                      ('variance_norm: AVERAGE', 'avg')])
def test_xavier_and_msra_on_deconvolution_weights_use_caffes_fans(norm, fan):
    """Caffe's fans are counted on the blob: fan_in = count / shape[0], fan_out =
    count / shape[1]; for a Deconvolution blob (channels, num_output, k, k) that is
    num_output k^2 and channels k^2."""
    channels, nout, k = 64, 32, 2
    fans = {'in': nout * k * k, 'out': channels * k * k, 'avg': (nout + channels) * k * k / 2.0}
    n = fans[fan]
    for kind in ('xavier', 'msra'):
        text = header(x=(1, channels, 2, 2)) + (
            'layer { name: "up" type: "Deconvolution" bottom: "x" top: "y" convolution_param { '
            'num_output: %d kernel_size: %d stride: 2 bias_term: false weight_filler { type: "%s" '
            '%s } } }' % (nout, k, kind, norm))
        w = net_from(text, {'x': np.zeros((1, channels, 2, 2))}, seed=3).params['up'][0].data
        assert w.shape == (channels, nout, k, k)
        if kind == 'xavier':
            bound = np.sqrt(3.0 / n)
            assert np.abs(w).max() <= bound * (1 + 1e-6)
            assert np.abs(w).max() > 0.98 * bound
            assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound / np.sqrt(3)
        else:
            std = np.sqrt(2.0 / n)
            assert abs(w.std() - std) < 0.05 * std and abs(w.mean()) < 0.1 * std


# ---- dilated convolution (VGG16's reduced fc6) -----------------------------------------------

CONV = ('layer { name: "fc6" type: "Convolution" bottom: "x" top: "y" convolution_param { '
        'num_output: %d kernel_size: 3 pad: %d dilation: %d weight_filler { type: "gaussian" '
        'std: 1 } bias_filler { type: "gaussian" std: 1 } } }')


@pytest.mark.parametrize('dilation', [1, 3, 6])
def test_dilated_convolution_keeps_size_and_matches_reference(dilation):
    # SSD: pool5 3x3/1 then fc6 kernel 3 dilation 6 pad 6; RefineDet: fc6 dilation 3 pad 3.
    x = R.randn(1, 4, 13, 11)
    net = net_from(header(x=x.shape) + CONV % (5, dilation, dilation), {'x': x})
    w, b = (p.data for p in net.params['fc6'])
    want = conv_reference(x, w, b, 1, dilation, dilation, 1)
    assert want.shape == (1, 5, 13, 11) == net.blobs['y'].data.shape
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-10, atol=1e-12)


def test_dilated_convolution_gradient():
    check_net_gradients(header(x=(1, 2, 7, 6)) + CONV % (3, 3, 3), {'x': R.randn(1, 2, 7, 6)})


def test_strided_grouped_convolution_matches_reference():
    x = R.randn(2, 4, 9, 8)
    text = header(x=x.shape) + (
        'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
        'num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2 bias_term: false '
        'weight_filler { type: "gaussian" std: 1 } } }')
    net = net_from(text, {'x': x})
    want = conv_reference(x, net.params['c'][0].data, None, 2, 1, 1, 2)
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-10, atol=1e-12)


# ---- pooling as the backbones place it ---------------------------------------------------------

@pytest.mark.parametrize('size,k,s,p', [((40, 40), 2, 2, 0),     # VGG pool1..4
                                        ((20, 20), 3, 1, 1),     # SSD's pool5 before fc6
                                        ((160, 160), 3, 2, 0),   # ResNet pool1 (CEIL)
                                        ((19, 19), 2, 2, 0),     # odd map, CEIL
                                        ((7, 9), 3, 2, 1)])
def test_max_pooling_matches_caffe_reference(size, k, s, p):
    x = R.randn(1, 2, *size)
    text = header(x=x.shape) + (
        'layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX '
        'kernel_size: %d stride: %d pad: %d } }' % (k, s, p))
    net = net_from(text, {'x': x})
    np.testing.assert_array_equal(net.blobs['y'].data, max_pool_reference(x, k, s, p))


def test_resnet_stem_and_stage_sizes_at_320():
    """ResNet101Body at 320x320: conv1 7x7/2 pad 3 -> 160, pool1 3x3/2 (CEIL) -> 80, and
    the stride-2 1x1 branches of res3a/res4a/res5a/res6 -> 40, 20, 10, 5 (the ARM's maps)."""
    sizes = [320]
    for k, s, p in [(7, 2, 3)]:
        sizes.append((sizes[-1] + 2 * p - k) // s + 1)
    sizes.append(int(np.ceil((sizes[-1] - 3) / 2.0)) + 1)
    for _ in range(4):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    assert sizes == [320, 160, 80, 40, 20, 10, 5]
    text = header(x=(1, 1, 320, 320)) + (
        'layer { name: "conv1" type: "Convolution" bottom: "x" top: "c" convolution_param { '
        'num_output: 1 kernel_size: 7 stride: 2 pad: 3 } }\n'
        'layer { name: "pool1" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX '
        'kernel_size: 3 stride: 2 } }')
    net = net_from(text, {'x': np.zeros((1, 1, 320, 320))}, dtype=torch.float32)
    assert net.blobs['c'].data.shape[2:] == (160, 160)
    assert net.blobs['p'].data.shape[2:] == (80, 80)


# ---- ConvBNLayer's in-place chain ----------------------------------------------------------------

CONV_BN = ('layer { name: "c" type: "Convolution" bottom: "x" top: "c" param { lr_mult: 1 '
           'decay_mult: 1 } convolution_param { num_output: 3 bias_term: false kernel_size: 3 '
           'pad: 1 stride: %d weight_filler { type: "gaussian" std: 0.5 } } }\n'
           'layer { name: "c_bn" type: "BatchNorm" bottom: "c" top: "c" %s }\n'
           'layer { name: "c_scale" type: "Scale" bottom: "c" top: "c" scale_param { '
           'bias_term: true filler { type: "uniform" min: 0.5 max: 2 } '
           'bias_filler { type: "gaussian" std: 1 } } }\n'
           'layer { name: "c_relu" type: "ReLU" bottom: "c" top: "c" }\n')


def conv_bn_reference(net, x, stride, eps, global_stats):
    w = net.params['c'][0].data
    y = conv_reference(x, w, None, stride, 1, 1, 1)
    if global_stats:
        s = net.params['c_bn'][2].data[0]
        factor = 0 if s == 0 else 1 / s
        mean = net.params['c_bn'][0].data * factor
        var = net.params['c_bn'][1].data * factor
    else:
        mean, var = y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))
    y = (y - mean[None, :, None, None]) / np.sqrt(var + eps)[None, :, None, None]
    gamma, beta = (p.data for p in net.params['c_scale'])
    return np.maximum(y * gamma[None, :, None, None] + beta[None, :, None, None], 0)


@pytest.mark.parametrize('stride', [1, 2])
def test_conv_bn_scale_relu_in_place_train_and_test(stride):
    x = R.randn(3, 2, 6, 5)
    eps = np.float32(1e-5)
    text = header(x=x.shape) + CONV_BN % (stride, '')
    train = net_from(text, {'x': x})
    np.testing.assert_allclose(train.blobs['c'].data, conv_bn_reference(train, x, stride, eps, False),
                               rtol=1e-8, atol=1e-10)
    # The statistics were accumulated (factor 1 after one pass), unbiased variance.
    bn = train.params['c_bn']
    assert [p.data.shape for p in bn] == [(3,), (3,), (1,)] and bn[2].data[0] == 1
    y = conv_reference(x, train.params['c'][0].data, None, stride, 1, 1, 1)
    m = y.size // 3
    np.testing.assert_allclose(bn[1].data, y.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-10)
    # The BatchNorm statistics get lr_mult 0 specs (Caffe adds them), the others are learned.
    layer = train.layers[list(train._layer_names).index('c_bn')]
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    # TEST: the stored statistics.
    test = net_from(text, {'x': x}, phase=caffe.TEST)
    with caffe.precision(torch.float64):
        for src, dst in zip(train.params.values(), test.params.values()):
            for a, b in zip(src, dst):
                b.data[...] = a.data
        bn = test.params['c_bn']
        bn[0].data[...] *= 3.0
        bn[1].data[...] *= 3.0
        bn[2].data[...] = 3.0
        test.forward()
    np.testing.assert_allclose(test.blobs['c'].data, conv_bn_reference(test, x, stride, eps, True),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize('bn_param', ['batch_norm_param { eps: 0.01 }',
                                      'batch_norm_param { use_global_stats: true eps: 0.5 }'])
def test_conv_bn_scale_relu_in_place_gradients(bn_param):
    shape = (3, 2, 5, 4)
    text = header(x=shape) + CONV_BN % (1, bn_param)
    check_net_gradients(text, {'x': R.randn(*shape)})


def test_batchnorm_moving_average_over_iterations_and_use_global_stats_in_train():
    f = 0.9
    xs = [R.randn(2, 3, 2, 2) * (i + 1) + i for i in range(3)]
    text = header(x=xs[0].shape) + (
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { '
        'moving_average_fraction: %g } }' % f)
    net = net_from(text, {'x': xs[0]})
    with caffe.precision(torch.float64):
        for x in xs[1:]:
            net.blobs['x'].data[...] = x
            net.forward()
    m = xs[0].size // 3
    s = sum(f ** i for i in range(3))
    mean = sum(f ** (2 - i) * x.mean(axis=(0, 2, 3)) for i, x in enumerate(xs))
    var = sum(f ** (2 - i) * x.var(axis=(0, 2, 3)) * m / (m - 1) for i, x in enumerate(xs))
    bn = net.params['bn']
    np.testing.assert_allclose(bn[2].data, [s], rtol=1e-6)  # the fraction is a float32 field
    np.testing.assert_allclose(bn[0].data, mean, rtol=1e-6)
    np.testing.assert_allclose(bn[1].data, var, rtol=1e-6)
    # use_global_stats: true in TRAIN normalises with the stored statistics, leaves them.
    text_g = text.replace('moving_average_fraction', 'use_global_stats: true moving_average_fraction')
    g = net_from(text_g, {'x': xs[0]}, seed=0)
    with caffe.precision(torch.float64):
        for a, b in zip(bn, g.params['bn']):
            b.data[...] = a.data
        g.forward()
    eps = np.float32(1e-5)
    want = (xs[0] - (mean / s)[None, :, None, None]) / np.sqrt(var / s + eps)[None, :, None, None]
    np.testing.assert_allclose(g.blobs['y'].data, want, rtol=1e-6)
    np.testing.assert_allclose(g.params['bn'][2].data, [s], rtol=1e-6)


def test_batchnorm_loads_legacy_shaped_statistics(tmp_path):
    """Old caffemodels (e.g. the converted ResNet-101 weights) store BatchNorm statistics
    with the legacy num/channels/height/width fields, (1, 1, 1, C): they load."""
    text = header(x=(2, 3, 2, 2)) + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }'
    model = caffe_pb2.NetParameter()
    layer = model.layer.add(name='bn', type='BatchNorm')
    for values in ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [2.0]):
        b = layer.blobs.add(num=1, channels=1, height=1, width=len(values))
        b.data.extend(values)
    path = tmp_path / 'bn.caffemodel'
    path.write_bytes(model.SerializeToString())
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TEST)
    net.copy_from(str(path))
    x = R.randn(2, 3, 2, 2).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.forward()
    want = (x - np.array([0.5, 1, 1.5])[None, :, None, None]) / np.sqrt(2 + 1e-5)
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-5)


# ---- Scale as the blocks use it -------------------------------------------------------------------

SCALE_CASES = [
    # (scale_param, learned scale shape, broadcast view of it on a (2, 3, 4, 5) bottom)
    ('bias_term: true', (3,), (1, 3, 1, 1)),
    ('axis: 0 num_axes: 2', (2, 3), (2, 3, 1, 1)),
    ('axis: 2 num_axes: -1 bias_term: true', (4, 5), (1, 1, 4, 5)),
    ('num_axes: 0 bias_term: true', (), (1, 1, 1, 1)),
    ('axis: -2 num_axes: 1', (4,), (1, 1, 4, 1)),
]


@pytest.mark.parametrize('param,shape,view', SCALE_CASES)
def test_scale_learned_forms_match_numpy(param, shape, view):
    x = R.randn(2, 3, 4, 5)
    text = header(x=x.shape) + (
        'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { %s filler { '
        'type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }' % param)
    net = net_from(text, {'x': x})
    params = net.params['s']
    assert params[0].data.shape == shape
    want = x * params[0].data.reshape(view)
    if 'bias_term: true' in param:
        assert params[1].data.shape == shape
        want = want + params[1].data.reshape(view)
    else:
        assert len(params) == 1
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12)


def test_scale_default_filler_is_one_and_bias_zero():
    x = R.randn(1, 3, 2, 2)
    net = net_from(header(x=x.shape) + 'layer { name: "s" type: "Scale" bottom: "x" top: "y" '
                   'scale_param { bias_term: true } }', {'x': x})
    np.testing.assert_array_equal(net.params['s'][0].data, 1)
    np.testing.assert_array_equal(net.params['s'][1].data, 0)
    np.testing.assert_array_equal(net.blobs['y'].data, x)


def test_scale_two_bottoms_with_bias_matches_numpy_and_gradients():
    x, f = R.randn(2, 3, 4), R.randn(2, 3)
    text = header(x=x.shape, f=f.shape) + (
        'layer { name: "s" type: "Scale" bottom: "x" bottom: "f" top: "y" scale_param { '
        'axis: 0 bias_term: true bias_filler { type: "gaussian" std: 1 } } }')
    net = net_from(text, {'x': x, 'f': f})
    (bias,) = (p.data for p in net.params['s'])
    assert bias.shape == (2, 3)
    np.testing.assert_allclose(net.blobs['y'].data, x * f[:, :, None] + bias[:, :, None],
                               rtol=1e-12)
    check_net_gradients(text, {'x': x, 'f': f})


# ---- the transfer-connection block ----------------------------------------------------------------

def tcb_text(c_in, c_up, width, use_bn):
    """RefineDet's TCB for level k as AddExtraLayers writes it (no BatchNorm: VGG16; with:
    ResNet): TLk_1 conv3x3+ReLU, TLk_2 conv3x3, P(k+1)-up deconv 2x2/2, Eltk = sum,
    Eltk_relu in place, Pk conv3x3+ReLU."""
    def conv(name, bottom, relu):
        if use_bn:
            s = ('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s" param { lr_mult: 1 '
                 'decay_mult: 1 } convolution_param { num_output: %d bias_term: false pad: 1 '
                 'kernel_size: 3 stride: 1 weight_filler { type: "gaussian" std: 0.3 } } }\n'
                 'layer { name: "%s_bn" type: "BatchNorm" bottom: "%s" top: "%s" }\n'
                 'layer { name: "%s_scale" type: "Scale" bottom: "%s" top: "%s" scale_param { '
                 'bias_term: true } }\n' % (name, bottom, name, width, name, name, name, name,
                                            name, name))
        else:
            s = ('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s" param { lr_mult: 1 '
                 'decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 } convolution_param { '
                 'num_output: %d pad: 1 kernel_size: 3 stride: 1 weight_filler { type: "xavier" } '
                 'bias_filler { type: "gaussian" std: 0.1 } } }\n' % (name, bottom, name, width))
        if relu:
            s += 'layer { name: "%s_relu" type: "ReLU" bottom: "%s" top: "%s" }\n' % (name, name, name)
        return s
    text = conv('TL5_1', 'src', True) + conv('TL5_2', 'TL5_1', False)
    up = ('layer { name: "P6-up" type: "Deconvolution" bottom: "P6" top: "P6-up" param { '
          'lr_mult: 1 decay_mult: 1 } %s convolution_param { num_output: %d %s pad: 0 '
          'kernel_size: 2 stride: 2 weight_filler { type: "%s" %s } %s } }\n'
          % ('' if use_bn else 'param { lr_mult: 2 decay_mult: 0 }', width,
             'bias_term: false' if use_bn else '', 'gaussian' if use_bn else 'xavier',
             'std: 0.3' if use_bn else '', '' if use_bn else 'bias_filler { type: "gaussian" std: 0.1 }'))
    if use_bn:
        up += ('layer { name: "P6-up_bn" type: "BatchNorm" bottom: "P6-up" top: "P6-up" }\n'
               'layer { name: "P6-up_scale" type: "Scale" bottom: "P6-up" top: "P6-up" '
               'scale_param { bias_term: true } }\n')
    text += up
    text += ('layer { name: "Elt5" type: "Eltwise" bottom: "TL5_2" bottom: "P6-up" top: "Elt5" }\n'
             'layer { name: "Elt5_relu" type: "ReLU" bottom: "Elt5" top: "Elt5" }\n')
    text += conv('P5', 'Elt5', True)
    return header(src=(2, c_in, 4, 6), P6=(2, c_up, 2, 3)) + text


def relu(a):
    return np.maximum(a, 0)


def test_tcb_forward_matches_numpy_composition():
    src, p6 = R.randn(2, 3, 4, 6), R.randn(2, 2, 2, 3)
    net = net_from(tcb_text(3, 2, 4, False), {'src': src, 'P6': p6})
    par = {k: [b.data for b in v] for k, v in net.params.items()}
    tl1 = relu(conv_reference(src, *par['TL5_1'], 1, 1, 1, 1))
    tl2 = conv_reference(tl1, *par['TL5_2'], 1, 1, 1, 1)
    up = deconv_reference(p6, *par['P6-up'], 2, 0, 1, 1)
    assert up.shape == tl2.shape == (2, 4, 4, 6)
    elt = relu(tl2 + up)
    p5 = relu(conv_reference(elt, *par['P5'], 1, 1, 1, 1))
    np.testing.assert_allclose(net.blobs['P5'].data, p5, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.blobs['Elt5'].data, elt, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('use_bn', [False, True])
def test_tcb_gradients(use_bn):
    check_net_gradients(tcb_text(2, 2, 3, use_bn), {'src': R.randn(2, 2, 4, 6),
                                                     'P6': R.randn(2, 2, 2, 3)})


def test_eltwise_sum_coefficients_prod_and_max_match_numpy():
    a, b, c = R.randn(2, 3, 2), R.randn(2, 3, 2), R.randn(2, 3, 2)
    base = header(a=a.shape, b=b.shape, c=c.shape)
    cases = {
        'operation: SUM coeff: 0.5 coeff: -2 coeff: 3': 0.5 * a - 2 * b + 3 * c,
        'operation: PROD': a * b * c,
        'operation: MAX': np.maximum(np.maximum(a, b), c),
    }
    for param, want in cases.items():
        text = base + ('layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" '
                       'top: "y" eltwise_param { %s } }' % param)
        net = net_from(text, {'a': a, 'b': b, 'c': c})
        np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12)
        check_net_gradients(text, {'a': a, 'b': b, 'c': c})
