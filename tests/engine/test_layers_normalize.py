"""Normalize (SSD's L2 normalisation with a learned scale): Caffe's fixture, NumPy
references for the four modes, eps placement, gradients, parameter handling, errors."""
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients, forward_net

R = np.random.RandomState(11)
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'conformance_fixtures',
                       'ssd_normalize_permute_prior')
MODES = [(a, c) for a in (True, False) for c in (True, False)]


def norm_net(shape, norm_param='', lr=''):
    dims = ' '.join('dim: %d' % d for d in shape)
    return ('force_backward: true\ninput: "x" input_shape { %s }\n'
            'layer { name: "norm" type: "Normalize" bottom: "x" top: "y" %s norm_param { %s } }'
            % (dims, lr, norm_param))


def build(text, x, dtype=torch.float64, weights=None):
    return forward_net(text, {'x': x}, dtype=dtype, weights=weights)


def reference(x, scale, across, shared, eps):
    """SSD's normalize_layer.cpp forward, on (num, channels, height*width) as Caffe views it."""
    n = x.shape[0]
    c = x.shape[1] if x.ndim > 1 else 1
    x3 = x.reshape(n, c, -1).astype(np.float64)
    axes = (1, 2) if across else (1,)
    norm = np.sqrt((x3 ** 2).sum(axis=axes, keepdims=True) + eps)
    s = np.float64(scale).reshape(1, 1, 1) if shared else np.asarray(scale, np.float64).reshape(1, -1, 1)
    return (x3 / norm * s).reshape(x.shape), norm


def reference_backward(x, dy, scale, across, shared, eps):
    """Caffe's backward: bottom diff, and the scale diff as top . dy / scale."""
    n = x.shape[0]
    c = x.shape[1]
    x3 = x.reshape(n, c, -1)
    d3 = dy.reshape(n, c, -1)
    axes = (1, 2) if across else (1,)
    top, norm = reference(x, scale, across, shared, eps)
    top3 = top.reshape(n, c, -1)
    s = np.float64(scale).reshape(1, 1, 1) if shared else np.asarray(scale, np.float64).reshape(1, -1, 1)
    dot = (x3 * d3).sum(axis=axes, keepdims=True)
    dx = (d3 - x3 * dot / norm ** 2) / norm * s
    if shared:
        ds = (top3 * d3).sum() / float(scale)
    else:
        ds = (top3 * d3).sum(axis=(0, 2)) / np.asarray(scale, np.float64)
    return dx.reshape(x.shape), ds


# ---- against RefineDet's Caffe -----------------------------------------------------------------

def test_matches_refinedet_caffe_fixture_layer_alone():
    """The `norm` layer of the ssd_normalize_permute_prior fixture (across_spatial false,
    channel_shared false, scale 20), run alone with the fixture's input and top diff."""
    arr = np.load(os.path.join(FIXTURE, 'arrays.npz'))
    x = arr['input/feat']
    text = norm_net(x.shape, 'across_spatial: false channel_shared: false '
                             'scale_filler { type: "constant" value: 20 }').replace('top: "y"', 'top: "norm"')
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TEST)
    np.testing.assert_array_equal(net.params['norm'][0].data, arr['param/norm/0'])
    net.blobs['x'].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs['norm'].data, arr['data/norm'], rtol=2e-6, atol=1e-6)
    net.params['norm'][0].diff[...] = 0
    net.blobs['norm'].diff[...] = arr['diff/norm']
    net.backward()
    # The feat split's first branch feeds the Normalize layer (the second feeds PriorBox).
    np.testing.assert_allclose(net.blobs['x'].diff, arr['diff/feat_input_0_split_0'],
                               rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(net.params['norm'][0].diff, arr['param_diff/norm/0'],
                               rtol=2e-5, atol=2e-5)


def test_fixture_agrees_with_the_numpy_reference():
    """The reference used below reproduces the fixture (so it is Caffe's arithmetic)."""
    arr = np.load(os.path.join(FIXTURE, 'arrays.npz'))
    x = arr['input/feat'].astype(np.float64)
    scale = arr['param/norm/0'].astype(np.float64)
    top, _ = reference(x, scale, False, False, 1e-10)
    np.testing.assert_allclose(top, arr['data/norm'], rtol=1e-5, atol=1e-5)
    dx, ds = reference_backward(x, arr['diff/norm'].astype(np.float64), scale, False, False, 1e-10)
    np.testing.assert_allclose(dx, arr['diff/feat_input_0_split_0'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds, arr['param_diff/norm/0'], rtol=1e-4, atol=1e-4)


# ---- NumPy references ---------------------------------------------------------------------------

@pytest.mark.parametrize('across,shared', MODES)
@pytest.mark.parametrize('shape', [(2, 3, 4, 5), (3, 4, 6), (4, 5)])
def test_forward_backward_match_reference(across, shared, shape):
    x = R.randn(*shape)
    c = shape[1]
    # A large eps shows where it is added (inside the square root, to the sum of squares).
    eps = 0.75
    fill = 'scale_filler { type: "gaussian" mean: 2 std: 0.5 }'
    net = build(norm_net(shape, 'across_spatial: %s channel_shared: %s eps: %g %s'
                         % (str(across).lower(), str(shared).lower(), eps, fill)), x)
    scale = net.params['norm'][0].data.copy()
    assert scale.shape == (() if shared else (c,))
    want, _ = reference(x, scale, across, shared, eps)
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12)
    dy = R.randn(*shape)
    net.params['norm'][0].diff[...] = 0
    net.blobs['y'].diff[...] = dy
    net.backward()
    dx, ds = reference_backward(x, dy, scale, across, shared, eps)
    np.testing.assert_allclose(net.blobs['x'].diff, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.params['norm'][0].diff, ds, rtol=1e-10, atol=1e-12)


def test_hand_values_and_default_eps():
    # One pixel, channels (3, 4): per-pixel norm 5 (+1e-10 inside the root), scale 10.
    x = np.array([3., 4.]).reshape(1, 2, 1, 1)
    net = build(norm_net(x.shape, 'across_spatial: false scale_filler { type: "constant" '
                                  'value: 10 }'), x)
    eps = float(np.float32(1e-10))  # the proto's float default
    np.testing.assert_allclose(net.blobs['y'].data.ravel(), np.array([30., 40.]) / np.sqrt(25 + eps),
                               rtol=1e-15)
    assert net.blobs['y'].data.ravel()[0] != 6.0  # eps is inside the root, even here
    # Default eps is 1e-10: an all-zero map gives 0 (not NaN), a tiny one is damped.
    z = np.zeros((1, 2, 2, 2))
    z[0, 0, 0, 0] = 1e-5
    net = build(norm_net(z.shape, 'across_spatial: true'), z)
    want = 1e-5 / np.sqrt(1e-10 + eps)
    np.testing.assert_allclose(net.blobs['y'].data[0, 0, 0, 0], want, rtol=1e-9)
    assert np.all(np.isfinite(net.blobs['y'].data))
    zeros = build(norm_net(z.shape), np.zeros_like(z))
    np.testing.assert_array_equal(zeros.blobs['y'].data, 0)


def test_defaults_across_spatial_channel_shared_scale_one():
    x = R.randn(2, 3, 2, 2)
    net = build(norm_net(x.shape), x)
    assert net.params['norm'][0].data.shape == ()
    assert float(net.params['norm'][0].data) == 1.0
    want, _ = reference(x, 1.0, True, True, 1e-10)
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12)
    for i in range(2):
        np.testing.assert_allclose(np.sum(net.blobs['y'].data[i] ** 2), 1.0, rtol=1e-9)


# ---- gradients -------------------------------------------------------------------------------

@pytest.mark.parametrize('across,shared', MODES)
def test_gradients_all_modes(across, shared):
    # One scale value for every channel (uniform scale blob, or channel_shared): there
    # Caffe's bottom diff is the exact gradient (see the next test for differing scales).
    shape = (2, 3, 3, 2)
    filler = ('type: "uniform" min: 0.5 max: 2' if shared else 'type: "constant" value: 1.7')
    text = norm_net(shape, 'across_spatial: %s channel_shared: %s eps: 0.01 scale_filler { %s }'
                    % (str(across).lower(), str(shared).lower(), filler))
    check_net_gradients(text, {'x': R.randn(*shape)})


@pytest.mark.parametrize('across', [True, False])
def test_per_channel_scales_keep_caffes_bottom_diff(across):
    """With differing per-channel scales SSD's bottom diff is scale * (dy - x (x.dy)/n^2)/n,
    not the exact gradient (which weighs the dot product by the scales): Caffe's is kept.
    The scale's own gradient is exact and is checked by finite differences."""
    shape = (2, 3, 3, 2)
    text = norm_net(shape, 'across_spatial: %s channel_shared: false eps: 0.01 scale_filler { '
                           'type: "uniform" min: 0.5 max: 2 }' % str(across).lower())
    x = R.randn(*shape)
    net = check_net_gradients(text, {'x': x}, skip_inputs=['x'])
    scale = net.params['norm'][0].data.copy()
    dy = R.randn(*shape)
    net.blobs['y'].diff[...] = dy
    net.backward()
    caffes, _ = reference_backward(x, dy, scale, across, False, np.float32(0.01))
    np.testing.assert_allclose(net.blobs['x'].diff, caffes, rtol=1e-9, atol=1e-12)
    # The exact gradient differs.
    x3, d3 = x.reshape(2, 3, -1), dy.reshape(2, 3, -1)
    axes = (1, 2) if across else (1,)
    s = scale.reshape(1, -1, 1)
    n = np.sqrt((x3 ** 2).sum(axis=axes, keepdims=True) + np.float32(0.01))
    exact = s * d3 / n - x3 * (s * x3 * d3).sum(axis=axes, keepdims=True) / n ** 3
    assert not np.allclose(net.blobs['x'].diff, exact.reshape(shape), rtol=1e-3)


def test_gradient_two_axis_bottom():
    check_net_gradients(norm_net((3, 5), 'across_spatial: false channel_shared: false'),
                        {'x': R.randn(3, 5)})


def test_scale_diff_accumulates_and_lr_mult_zero_freezes():
    x = R.randn(2, 3, 2, 2)
    text = norm_net(x.shape, 'channel_shared: false')
    net = build(text, x)
    net.params['norm'][0].diff[...] = 0
    net.blobs['y'].diff[...] = 1.0
    net.backward()
    once = net.params['norm'][0].diff.copy()
    assert np.abs(once).max() > 0
    net.blobs['y'].diff[...] = 1.0
    net.backward()
    np.testing.assert_allclose(net.params['norm'][0].diff, 2 * once, rtol=1e-12)
    # lr_mult 0 (no force_backward; a learned Scale before it makes the bottom need a
    # gradient, loss_weight makes y a loss): the bottom diff flows, the scale gets none.
    text = ('input: "x" input_shape { dim: 2 dim: 3 dim: 2 dim: 2 }\n'
            'layer { name: "s" type: "Scale" bottom: "x" top: "xs" }\n'
            'layer { name: "norm" type: "Normalize" bottom: "xs" top: "y" param { lr_mult: 0 } '
            'loss_weight: 1 '
            'norm_param { channel_shared: false } }')
    frozen = build(text, x)
    frozen.params['norm'][0].diff[...] = 0
    frozen.backward()
    np.testing.assert_array_equal(frozen.params['norm'][0].diff, 0)
    assert np.abs(frozen.blobs['xs'].diff).max() > 0
    assert np.abs(frozen.params['s'][0].diff).max() > 0


def test_float32_and_bf16_agree_with_float64():
    x = R.randn(2, 8, 5, 6).astype(np.float32) * 30
    text = norm_net(x.shape, 'across_spatial: false channel_shared: false '
                             'scale_filler { type: "constant" value: 20 }')
    want = build(text, x.astype(np.float64)).blobs['y'].data
    got32 = build(text, x, dtype=torch.float32).blobs['y'].data
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5)
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    caffe.set_precision('bf16')
    try:
        net = caffe.Net(param, caffe.TRAIN)
        net.blobs['x'].data[...] = x
        net.forward()
        np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-5, atol=1e-4)
    finally:
        caffe.set_precision('float32')


# ---- parameters: caffemodel round trip, shapes, errors ---------------------------------------

@pytest.mark.parametrize('shared', [True, False])
def test_caffemodel_round_trip(tmp_path, shared):
    x = R.randn(1, 4, 3, 3)
    text = norm_net(x.shape, 'channel_shared: %s scale_filler { type: "gaussian" std: 3 }'
                    % str(shared).lower())
    a = build(text, x, dtype=torch.float32)
    path = str(tmp_path / 'norm.caffemodel')
    a.save(path)
    saved = caffe_pb2.NetParameter()
    with open(path, 'rb') as f:
        saved.ParseFromString(f.read())
    blob = saved.layer[-1].blobs[0]
    assert list(blob.shape.dim) == ([] if shared else [4])
    assert len(blob.data) == (1 if shared else 4)
    b = build(text.replace('std: 3', 'std: 0.1'), x, dtype=torch.float32, weights=path)
    np.testing.assert_array_equal(b.params['norm'][0].data, a.params['norm'][0].data)
    b.forward()
    np.testing.assert_array_equal(b.blobs['y'].data, a.blobs['y'].data)


def test_errors_name_the_layer(tmp_path):
    with pytest.raises(caffe.ShapeError, match="'norm'.*>=2"):
        build(norm_net((5,)), R.randn(5))
    with pytest.raises(caffe.ShapeError, match="'norm'.*> 4"):
        build(norm_net((1, 2, 2, 2, 2)), R.randn(1, 2, 2, 2, 2))
    # A caffemodel whose scale does not fit the prototxt's channel_shared setting.
    x = R.randn(1, 4, 2, 2)
    shared = build(norm_net(x.shape, 'channel_shared: true'), x, dtype=torch.float32)
    path = str(tmp_path / 'shared.caffemodel')
    shared.save(path)
    with pytest.raises(Exception, match='norm'):
        build(norm_net(x.shape, 'channel_shared: false'), x, weights=path)
    # Scale blobs given in the prototxt are checked at set-up.
    text = norm_net(x.shape, 'channel_shared: false').replace(
        'norm_param', 'blobs { shape { dim: 3 } data: 1 data: 1 data: 1 } norm_param')
    with pytest.raises(caffe.ShapeError, match="'norm'.*inconsistent"):
        build(text, x)
