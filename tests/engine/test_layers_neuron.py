"""Neuron layers: forward values against hand-computed ones, float64 gradient checks,
Caffe's parameters, defaults and errors, in-place use, and Dropout's mask handling."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
import gradcheck
from gradcheck import check_net_gradients

R = np.random.RandomState(7)
X = np.array([[-2.0, -0.5, 0.0], [0.25, 1.0, 3.0]])


def make_net(text, phase=caffe.TEST):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, phase)


def run_layer(layer_text, x, phase=caffe.TEST):
    """Forward one layer on x (bottom "x", top "y"); returns the top's data."""
    shape = ' '.join('dim: %d' % d for d in x.shape)
    with caffe.precision(torch.float64):
        net = make_net('input: "x" input_shape { %s }\nlayer { name: "l" bottom: "x" top: "y" %s }'
                       % (shape, layer_text), phase)
        net.blobs['x'].data[...] = x
        net.forward()
        return net.blobs['y'].data.copy()


def one_layer_net(layer_text, shape, in_place=False):
    """A gradient-check net: input x, a copy (Power with defaults), then the layer.

    The copy lets the layer work in place without overwriting the net input.
    """
    dims = ' '.join('dim: %d' % d for d in shape)
    top = 'c' if in_place else 'y'
    return ('force_backward: true\ninput: "x" input_shape { %s }\n'
            'layer { name: "copy" type: "Power" bottom: "x" top: "c" }\n'
            'layer { name: "l" bottom: "c" top: "%s" %s }\n' % (dims, top, layer_text))


# ---- forward values -----------------------------------------------------------------------------

def test_sigmoid_tanh_absval_forward():
    np.testing.assert_allclose(run_layer('type: "Sigmoid"', X), 1 / (1 + np.exp(-X)), rtol=1e-12)
    np.testing.assert_allclose(run_layer('type: "TanH"', X), np.tanh(X), rtol=1e-12)
    np.testing.assert_array_equal(run_layer('type: "AbsVal"', X), [[2, .5, 0], [.25, 1, 3]])
    assert run_layer('type: "Sigmoid"', np.zeros((1, 1)))[0, 0] == 0.5


def test_power_forward_cases():
    x = np.array([[1.0, 2.0, -1.0]])
    # (1 + 0.5 x)^2 at 1, 2, -1 = 2.25, 4, 0.25
    np.testing.assert_allclose(run_layer('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', x),
                               [[2.25, 4.0, 0.25]])
    np.testing.assert_allclose(run_layer('type: "Power" power_param { scale: 3 shift: -1 }', x),
                               [[2.0, 5.0, -4.0]])
    np.testing.assert_allclose(run_layer('type: "Power" power_param { power: 0.5 shift: 2 }', x),
                               np.sqrt([[3.0, 4.0, 1.0]]))
    # power 0 gives 1 everywhere; scale 0 gives shift^power everywhere.
    np.testing.assert_array_equal(run_layer('type: "Power" power_param { power: 0 }', x), [[1, 1, 1]])
    np.testing.assert_array_equal(run_layer('type: "Power" power_param { power: 3 scale: 0 shift: 2 }', x),
                                  [[8, 8, 8]])


def test_exp_and_log_forward():
    x = np.array([[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(run_layer('type: "Exp"', x), np.exp(x), rtol=1e-12)
    # 2^(1 + 3x) = 2, 16, 128
    np.testing.assert_allclose(run_layer('type: "Exp" exp_param { base: 2 scale: 3 shift: 1 }', x),
                               [[2.0, 16.0, 128.0]], rtol=1e-12)
    y = np.array([[1.0, 4.0, 16.0]])
    np.testing.assert_allclose(run_layer('type: "Log"', y), np.log(y), rtol=1e-12)
    # log2(0.5 * y + 0) = -1, 1, 3
    np.testing.assert_allclose(run_layer('type: "Log" log_param { base: 2 scale: 0.5 }', y),
                               [[-1.0, 1.0, 3.0]], rtol=1e-12)
    # log10(y + 6) at y = 4 is 1
    assert abs(run_layer('type: "Log" log_param { base: 10 shift: 6 }', y)[0, 1] - 1.0) < 1e-12


def test_bnll_elu_threshold_clip_swish_forward():
    np.testing.assert_allclose(run_layer('type: "BNLL"', X), np.log1p(np.exp(X)), rtol=1e-12)
    big = np.array([[60.0, -60.0]])
    np.testing.assert_allclose(run_layer('type: "BNLL"', big), [[60.0, np.log1p(np.exp(-60.0))]])
    np.testing.assert_allclose(run_layer('type: "ELU" elu_param { alpha: 0.5 }', X),
                               np.where(X > 0, X, 0.5 * (np.exp(X) - 1)), rtol=1e-12)
    np.testing.assert_array_equal(run_layer('type: "Threshold" threshold_param { threshold: 0.25 }', X),
                                  [[0, 0, 0], [0, 1, 1]])  # strictly greater: 0.25 -> 0
    np.testing.assert_array_equal(run_layer('type: "Threshold"', X), [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(run_layer('type: "Clip" clip_param { min: -1 max: 2 }', X),
                                  [[-1, -.5, 0], [.25, 1, 2]])
    np.testing.assert_allclose(run_layer('type: "Swish" swish_param { beta: 2 }', X),
                               X / (1 + np.exp(-2 * X)), rtol=1e-12)


def test_prelu_forward_default_filler_and_shared():
    x = R.randn(2, 3, 2, 2)
    with caffe.precision(torch.float64):
        net = make_net('input: "x" input_shape { dim: 2 dim: 3 dim: 2 dim: 2 }\n'
                       'layer { name: "p" type: "PReLU" bottom: "x" top: "y" }\n'
                       'layer { name: "q" type: "PReLU" bottom: "x" top: "z" '
                       '        prelu_param { channel_shared: true filler { type: "constant" value: 0.1 } } }')
        assert net.params['p'][0].data.shape == (3,)
        np.testing.assert_array_equal(net.params['p'][0].data, [0.25, 0.25, 0.25])
        assert net.params['q'][0].data.shape == ()
        net.params['p'][0].data[...] = [0.1, 0.2, 0.3]
        net.blobs['x'].data[...] = x
        net.forward()
        slope = np.array([0.1, 0.2, 0.3])[None, :, None, None]
        np.testing.assert_allclose(net.blobs['y'].data, np.where(x > 0, x, slope * x), rtol=1e-12)
        np.testing.assert_allclose(net.blobs['z'].data, np.where(x > 0, x, float(np.float32(0.1)) * x), rtol=1e-12)


# ---- gradients ----------------------------------------------------------------------------------

SHAPE = (2, 3, 2, 2)
AWAY_FROM_ZERO = np.sign(R.randn(*SHAPE)) * (0.2 + R.rand(*SHAPE))
SMOOTH = [
    ('type: "Sigmoid"', None),
    ('type: "TanH"', None),
    ('type: "AbsVal"', AWAY_FROM_ZERO),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', None),
    ('type: "Power" power_param { power: 3 scale: -1.5 }', None),
    ('type: "Power" power_param { power: 0.7 scale: 0.5 shift: 3 }', None),
    ('type: "Power" power_param { power: -1.5 scale: 2 shift: 5 }', None),
    ('type: "Power" power_param { scale: 2.5 shift: 1 }', None),
    ('type: "Power" power_param { power: 0 scale: 2 }', None),
    ('type: "Exp"', None),
    ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: -1 }', None),
    ('type: "Log" log_param { shift: 4 }', None),
    ('type: "Log" log_param { base: 2 scale: 0.5 shift: 3 }', None),
    ('type: "BNLL"', None),
    ('type: "ELU" elu_param { alpha: 0.7 }', AWAY_FROM_ZERO),
    ('type: "ReLU" relu_param { negative_slope: 0.2 }', AWAY_FROM_ZERO),
    ('type: "Clip" clip_param { min: -0.5 max: 0.8 }', None),
    ('type: "Swish" swish_param { beta: 1.5 }', None),
]


def _avoid(values, points, margin=0.05):
    """Move values off non-smooth points so finite differences do not straddle them."""
    v = values.copy()
    for p in points:
        close = np.abs(v - p) < margin
        v[close] = p + np.where(v[close] >= p, margin, -margin)
    return v


GRAD_CASES = [pytest.param(layer, x, in_place, id='%s%s' % (layer, ' in place' if in_place else ''))
              for layer, x in SMOOTH for in_place in (False, True)
              if not (in_place and 'AbsVal' in layer)]  # Caffe refuses AbsVal in place


@pytest.mark.parametrize('layer,x,in_place', GRAD_CASES)
def test_gradients(layer, x, in_place):
    if x is None:
        x = _avoid(R.randn(*SHAPE), [-0.5, 0.8])
    check_net_gradients(one_layer_net(layer, SHAPE, in_place=in_place), {'x': x})


@pytest.mark.parametrize('shared', [False, True])
@pytest.mark.parametrize('in_place', [False, True])
def test_prelu_gradients_including_slope(shared, in_place):
    layer = ('type: "PReLU" prelu_param { channel_shared: %s filler { type: "uniform" min: 0.1 max: 0.5 } }'
             % ('true' if shared else 'false'))
    net = check_net_gradients(one_layer_net(layer, SHAPE, in_place=in_place), {'x': AWAY_FROM_ZERO})
    assert net.params['l'][0].diff.any()


def test_prelu_on_two_axes_and_bad_slope_blob():
    layer = 'type: "PReLU"'
    check_net_gradients(one_layer_net(layer, (4, 3)), {'x': AWAY_FROM_ZERO.reshape(-1)[:12].reshape(4, 3)})
    with pytest.raises(caffe.ShapeError, match='Negative slope size'):
        make_net('input: "x" input_shape { dim: 2 dim: 3 }\n'
                 'layer { name: "p" type: "PReLU" bottom: "x" top: "y" '
                 '        blobs { shape { dim: 2 } data: 1 data: 2 } }')
    with pytest.raises(caffe.ShapeError, match='>=2'):
        make_net('input: "x" input_shape { dim: 5 }\n'
                 'layer { name: "p" type: "PReLU" bottom: "x" top: "y" }')


def test_caffe_gradient_values_at_kinks():
    """At exactly 0: AbsVal 0, ELU alpha, PReLU the slope, BNLL 1/2; Clip passes on its bounds."""
    cases = [('type: "AbsVal"', 0.0, 0.0), ('type: "ELU" elu_param { alpha: 0.3 }', 0.0, 0.3),
             ('type: "PReLU"', 0.0, 0.25), ('type: "BNLL"', 0.0, 0.5),
             ('type: "Clip" clip_param { min: -1 max: 1 }', 1.0, 1.0),
             ('type: "Clip" clip_param { min: -1 max: 1 }', -1.0, 1.0),
             ('type: "Clip" clip_param { min: -1 max: 1 }', 1.5, 0.0)]
    for layer, at, want in cases:
        with caffe.precision(torch.float64):
            net = make_net(one_layer_net(layer, (1, 1)))
            net.blobs['x'].data[...] = at
            net.forward()
            net.backward(y=np.ones((1, 1)))
            assert net.blobs['x'].diff[0, 0] == pytest.approx(want), layer


# ---- Caffe's checks ------------------------------------------------------------------------------

def test_errors_name_the_layer():
    with pytest.raises(caffe.NetError, match="'l'.*in-place"):
        make_net(one_layer_net('type: "AbsVal"', (2, 2), in_place=True))
    with pytest.raises(caffe.NetError, match="'l'.*strictly positive"):
        make_net(one_layer_net('type: "Exp" exp_param { base: -2 }', (2, 2)))
    with pytest.raises(caffe.NetError, match="'l'.*strictly positive"):
        make_net(one_layer_net('type: "Log" log_param { base: 0 }', (2, 2)))
    with pytest.raises(caffe.NetError, match="'l'.*dropout_ratio"):
        make_net(one_layer_net('type: "Dropout" dropout_param { dropout_ratio: 1 }', (2, 2)))


def test_threshold_has_no_backward():
    text = ('force_backward: true\ninput: "x" input_shape { dim: 2 dim: 3 }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" '
            '        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }\n'
            'layer { name: "t" type: "Threshold" bottom: "ip" top: "t" loss_weight: 1 }\n')
    net = make_net(text, caffe.TRAIN)
    net.blobs['x'].data[...] = R.randn(2, 3)
    net.forward()
    with pytest.raises(caffe.LayerError, match="'t'.*no backward"):
        net.backward()
    # Without a loss above it, force_backward does not reach through it.
    net = make_net(text.replace(' loss_weight: 1', ''), caffe.TRAIN)
    net.forward()
    net.backward(t=np.ones((2, 3)))
    assert not net.blobs['ip'].diff.any()


# ---- Dropout -------------------------------------------------------------------------------------

DROP = 'type: "Dropout" dropout_param { dropout_ratio: %s %s }'


def _dropout_net(ratio, scale_train, phase, in_place=False, shape=(50, 40)):
    extra = '' if scale_train else 'scale_train: false'
    return make_net(one_layer_net(DROP % (ratio, extra), shape, in_place=in_place), phase)


@pytest.mark.parametrize('in_place', [False, True])
def test_dropout_train_mask_scale_and_backward(in_place):
    caffe.set_random_seed(3)
    net = _dropout_net(0.3, True, caffe.TRAIN, in_place)
    x = R.rand(50, 40) + 0.5  # never 0, so y == 0 marks dropped values
    net.blobs['x'].data[...] = x
    net.forward()
    y = net.blobs['c' if in_place else 'y'].data.copy()
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], (x / 0.7)[kept], rtol=1e-6)
    dy = R.randn(50, 40)
    net.backward(**{('c' if in_place else 'y'): dy})
    np.testing.assert_allclose(net.blobs['x'].diff, np.where(kept, dy / 0.7, 0), rtol=1e-6)
    # Same seed, same mask; the next forward draws a new one.
    caffe.set_random_seed(3)
    net2 = _dropout_net(0.3, True, caffe.TRAIN, in_place)
    net2.blobs['x'].data[...] = x
    net2.forward()
    np.testing.assert_array_equal(net2.blobs['c' if in_place else 'y'].data, y)
    net2.forward()
    assert (net2.blobs['c' if in_place else 'y'].data != y).any()


def test_dropout_without_scale_train_and_test_phase():
    x = R.rand(50, 40) + 0.5
    caffe.set_random_seed(1)
    net = _dropout_net(0.25, False, caffe.TRAIN)
    net.blobs['x'].data[...] = x
    net.forward()
    y = net.blobs['y'].data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept], rtol=1e-6)  # unscaled in TRAIN
    net.backward(y=np.ones_like(x))
    np.testing.assert_array_equal(net.blobs['x'].diff, kept.astype(np.float32))

    for scale_train, factor in ((False, 0.75), (True, 1.0)):
        net = _dropout_net(0.25, scale_train, caffe.TEST)
        net.blobs['x'].data[...] = x
        net.forward()
        np.testing.assert_allclose(net.blobs['y'].data, x * factor, rtol=1e-6)
        dy = R.randn(50, 40)
        net.backward(y=dy)
        np.testing.assert_allclose(net.blobs['x'].diff, dy * factor, rtol=1e-6)


def test_dropout_gradient_check_with_a_fixed_mask(monkeypatch):
    """Finite differences need the same mask in every forward: reseed before each one."""
    objective = gradcheck._objective

    def reseeded(net, top_diffs):
        caffe.set_random_seed(11)
        return objective(net, top_diffs)
    monkeypatch.setattr(gradcheck, '_objective', reseeded)
    text = one_layer_net(DROP % (0.4, ''), (3, 5), in_place=True)
    check_net_gradients(text, {'x': R.randn(3, 5)}, seed=11)
    text = one_layer_net(DROP % (0.4, 'scale_train: false'), (3, 5))
    check_net_gradients(text, {'x': R.randn(3, 5)}, seed=11)
    check_net_gradients(text, {'x': R.randn(3, 5)}, phase=caffe.TEST)


def test_layer_types_are_registered():
    types = caffe.layer_type_list()
    for t in ('ReLU', 'Sigmoid', 'TanH', 'AbsVal', 'Power', 'Exp', 'Log', 'BNLL', 'Threshold',
              'ELU', 'PReLU', 'Dropout', 'Clip', 'Swish'):
        assert t in types


@pytest.mark.parametrize('slope', [0.0, 0.2, -0.3])
def test_relu_in_place_backward_is_caffes_formula_on_the_output(slope):
    """In place Caffe only has the output y: bottom_diff = top_diff where y > 0, else
    slope * top_diff (for a negative slope that is not the true gradient; Caffe's result)."""
    x = np.array([[-2.0, -0.5, 0.0], [0.25, 1.0, 3.0]])
    dy = np.array([[1.0, -2.0, 3.0], [4.0, -5.0, 6.0]])
    text = one_layer_net('type: "ReLU" relu_param { negative_slope: %g }' % slope, x.shape,
                         in_place=True)
    with caffe.precision(torch.float64):
        net = caffe.Net(text_format.Merge(text, caffe_pb2.NetParameter()), caffe.TRAIN)
        net.blobs['x'].data[...] = x
        net.forward()
        net.backward(c=dy)
    slope = float(np.float32(slope))      # the proto field is a float
    y = np.where(x > 0, x, slope * x)
    np.testing.assert_allclose(net.blobs['c'].data, y, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['x'].diff, np.where(y > 0, dy, slope * dy), rtol=1e-12)
