"""Loss layers: hand-computed values, Caffe's backward formulas, gradient checks, errors."""
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio, weights
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients

R = np.random.RandomState(11)


def net_text(layer, **inputs):
    lines = ['force_backward: true']
    for name, shape in inputs.items():
        lines.append('input: "%s" input_shape { %s }'
                     % (name, ' '.join('dim: %d' % d for d in shape)))
    return '\n'.join(lines + [layer])


def run(text, inputs, backward=True, phase=caffe.TRAIN):
    """Build in float64, forward, and (optionally) backward; returns the net."""
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    with caffe.precision(torch.float64):
        net = caffe.Net(param, phase)
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        net.forward()
        if backward:
            net.backward()
    return net


# ---- SmoothL1Loss ---------------------------------------------------------------------------

def smooth_l1(d, sigma):
    s2 = float(np.float32(sigma)) ** 2
    return np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)


def test_smooth_l1_hand_values():
    # d = 0.5 -> 0.5 * 0.25 = 0.125; d = -2 -> 2 - 0.5 = 1.5; d = 0 -> 0; two items: / 2.
    layer = 'layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" top: "loss" }'
    net = run(net_text(layer, p=(2, 3), t=(2, 3)),
              {'p': [[0.5, 0, 1], [0, 0, 0]], 't': [[0, 2, 1], [0, 0, 0]]})
    assert float(net.blobs['loss'].data) == pytest.approx((0.125 + 1.5) / 2)
    # Caffe's gradient: sigma^2 * d inside, sign(d) outside, / num; the target gets the negative.
    np.testing.assert_allclose(net.blobs['p'].diff, [[0.25, -0.5, 0], [0, 0, 0]])
    np.testing.assert_allclose(net.blobs['t'].diff, [[-0.25, 0.5, 0], [0, 0, 0]])


def test_smooth_l1_weights_and_sigma():
    layer = ('layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" bottom: "wi" '
             'bottom: "wo" top: "loss" loss_weight: 2 smooth_l1_loss_param { sigma: 3 } }')
    shape = (3, 4, 2, 2)
    p, t = R.randn(*shape), R.randn(*shape)
    wi, wo = R.rand(*shape) * (R.rand(*shape) > 0.3), R.rand(*shape) * 2
    net = run(net_text(layer, p=shape, t=shape, wi=shape, wo=shape), {'p': p, 't': t, 'wi': wi, 'wo': wo})
    d = wi * (p - t)
    assert float(net.blobs['loss'].data) == pytest.approx((wo * smooth_l1(d, 3)).sum() / 3, rel=1e-12)
    s2 = float(np.float32(3)) ** 2
    g = np.where(np.abs(d) < 1 / s2, s2 * d, np.sign(d)) * wi * wo * 2 / 3
    np.testing.assert_allclose(net.blobs['p'].diff, g, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['t'].diff, -g, rtol=1e-12)
    np.testing.assert_array_equal(net.blobs['wi'].diff, 0)  # never to the weights
    np.testing.assert_array_equal(net.blobs['wo'].diff, 0)


def test_smooth_l1_gradient():
    shape = (2, 8)
    p = R.randn(*shape)
    t = p + np.where(R.rand(*shape) > 0.5, 1, -1) * R.uniform(0.02, 0.08, shape)  # inside
    t[:, ::2] = p[:, ::2] + R.choice([-1, 1], (2, 4)) * R.uniform(0.3, 2, (2, 4))  # outside
    layer = ('layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" bottom: "wi" '
             'bottom: "wo" top: "loss" smooth_l1_loss_param { sigma: 3 } }')
    check_net_gradients(net_text(layer, p=shape, t=shape, wi=shape, wo=shape),
                        {'p': p, 't': t, 'wi': np.ones(shape), 'wo': R.rand(*shape)},
                        skip_inputs=['wi', 'wo'])


def test_smooth_l1_three_bottoms_is_an_error():
    layer = ('layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" bottom: "wi" '
             'top: "loss" }')
    with pytest.raises(caffe.NetError, match='inside and outside'):
        run(net_text(layer, p=(2, 3), t=(2, 3), wi=(2, 3)), {}, backward=False)
    layer = 'layer { name: "l" type: "SmoothL1Loss" bottom: "p" bottom: "t" top: "loss" }'
    with pytest.raises(caffe.ShapeError, match="'l'"):
        run(net_text(layer, p=(2, 3), t=(2, 4)), {}, backward=False)


# ---- EuclideanLoss ----------------------------------------------------------------------------

def test_euclidean_values_and_gradient():
    layer = 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }'
    net = run(net_text(layer, a=(2, 2), b=(2, 2)), {'a': [[1, 2], [3, 4]], 'b': [[0, 0], [3, 2]]})
    assert float(net.blobs['loss'].data) == pytest.approx((1 + 4 + 0 + 4) / 2 / 2)
    np.testing.assert_allclose(net.blobs['a'].diff, [[0.5, 1], [0, 1]])
    np.testing.assert_allclose(net.blobs['b'].diff, [[-0.5, -1], [0, -1]])
    layer = ('layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" '
             'loss_weight: 0.3 }')
    check_net_gradients(net_text(layer, a=(3, 2, 2), b=(3, 4)),
                        {'a': R.randn(3, 2, 2), 'b': R.randn(3, 4)})


# ---- SigmoidCrossEntropyLoss ------------------------------------------------------------------

def sce_terms(x, t):
    return -(x * t - np.log1p(np.exp(x)))  # -log likelihood, the naive form


def test_sigmoid_cross_entropy_values_and_normalization():
    x = R.randn(3, 4) * 4
    t = (R.rand(3, 4) > 0.5).astype(float)
    t[0, 1] = t[2, 3] = -1  # ignored when ignore_label is -1
    base = 'layer { name: "l" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" %s }'
    net = run(net_text(base % '', x=(3, 4), t=(3, 4)), {'x': x, 't': np.abs(t)})
    # Default normalisation: BATCH_SIZE.
    assert float(net.blobs['loss'].data) == pytest.approx(sce_terms(x, np.abs(t)).sum() / 3, rel=1e-12)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(net.blobs['x'].diff, (sig - np.abs(t)) / 3, rtol=1e-12)
    valid = t != -1
    for extra, norm in [('loss_param { ignore_label: -1 normalize: true }', valid.sum()),
                        ('loss_param { ignore_label: -1 }', 3),
                        ('loss_param { ignore_label: -1 normalization: FULL }', 12),
                        ('loss_param { ignore_label: -1 normalization: NONE }', 1),
                        ('loss_param { ignore_label: -1 normalize: false normalization: VALID }',
                         valid.sum())]:
        net = run(net_text(base % extra, x=(3, 4), t=(3, 4)), {'x': x, 't': t})
        want = np.where(valid, sce_terms(x, t), 0).sum() / norm
        assert float(net.blobs['loss'].data) == pytest.approx(want, rel=1e-12), extra
        np.testing.assert_allclose(net.blobs['x'].diff, np.where(valid, sig - t, 0) / norm,
                                   rtol=1e-12)


def test_sigmoid_cross_entropy_is_stable():
    layer = 'layer { name: "l" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" }'
    net = run(net_text(layer, x=(1, 2), t=(1, 2)), {'x': [[800.0, -800.0]], 't': [[0.0, 1.0]]})
    assert float(net.blobs['loss'].data) == pytest.approx(1600.0)


def test_sigmoid_cross_entropy_gradient_and_label_refusal():
    layer = ('layer { name: "l" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" '
             'top: "loss" loss_param { ignore_label: 2 normalize: true } }')
    t = R.rand(2, 5)
    t[1, 2] = 2
    check_net_gradients(net_text(layer, x=(2, 5), t=(2, 5)), {'x': R.randn(2, 5), 't': t},
                        skip_inputs=['t'])
    layer = ('layer { name: "l" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" '
             'top: "loss" propagate_down: true propagate_down: true }')
    with pytest.raises(caffe.CaffeError, match='cannot backpropagate to label'):
        run(net_text(layer, x=(2, 5), t=(2, 5)), {'x': R.randn(2, 5), 't': R.rand(2, 5)})


# ---- HingeLoss ----------------------------------------------------------------------------------

def test_hinge_hand_values():
    # scores [2, -0.5, 0.2], label 0: margins max(0, 1 - 2), max(0, 1 - 0.5), max(0, 1 + 0.2)
    # = 0, 0.5, 1.2; L1 = 1.7, L2 = 0.25 + 1.44 = 1.69 (one item).
    x = np.array([[2.0, -0.5, 0.2]])
    for norm, want, grad in [('L1', 1.7, [0, 1, 1]), ('L2', 1.69, [0, 1.0, 2.4])]:
        layer = ('layer { name: "l" type: "HingeLoss" bottom: "x" bottom: "y" top: "loss" '
                 'hinge_loss_param { norm: %s } }' % norm)
        net = run(net_text(layer, x=(1, 3), y=(1,)), {'x': x, 'y': [0]})
        assert float(net.blobs['loss'].data) == pytest.approx(want)
        np.testing.assert_allclose(net.blobs['x'].diff, [grad])


@pytest.mark.parametrize('norm', ['L1', 'L2'])
def test_hinge_gradient(norm):
    x = R.uniform(-3, 3, (4, 5))
    y = np.array([0, 4, 2, 2.0])
    # keep every margin away from the kink at 0
    sign = np.ones_like(x)
    sign[np.arange(4), y.astype(int)] = -1
    m = 1 + x * sign
    x = np.where(np.abs(m) < 0.05, x + 0.2 * sign, x)
    layer = ('layer { name: "l" type: "HingeLoss" bottom: "x" bottom: "y" top: "loss" '
             'hinge_loss_param { norm: %s } }' % norm)
    check_net_gradients(net_text(layer, x=(4, 5), y=(4,)), {'x': x, 'y': y}, skip_inputs=['y'])


def test_hinge_label_out_of_range():
    layer = 'layer { name: "l" type: "HingeLoss" bottom: "x" bottom: "y" top: "loss" }'
    with pytest.raises(caffe.CaffeError, match='out of range'):
        run(net_text(layer, x=(1, 3), y=(1,)), {'x': np.zeros((1, 3)), 'y': [3]})


# ---- MultinomialLogisticLoss --------------------------------------------------------------------

def test_multinomial_logistic_values_clamp_and_gradient():
    layer = ('layer { name: "l" type: "MultinomialLogisticLoss" bottom: "p" bottom: "y" '
             'top: "loss" }')
    p = np.array([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]])
    net = run(net_text(layer, p=(2, 3), y=(2,)), {'p': p, 'y': [2, 1]})
    want = (-np.log(1e-20) - np.log(0.25)) / 2
    assert float(net.blobs['loss'].data) == pytest.approx(want)
    # Caffe's backward: -1 / max(p, 1e-20) / num at the label, even where the clamp bites.
    np.testing.assert_allclose(net.blobs['p'].diff, [[0, 0, -0.5e20], [0, -2.0, 0]])
    check_net_gradients(net_text(layer, p=(3, 4), y=(3,)),
                        {'p': R.uniform(0.1, 1, (3, 4)), 'y': [3, 0, 1]}, skip_inputs=['y'])
    with pytest.raises(caffe.ShapeError, match="'l'"):
        run(net_text(layer, p=(2, 3), y=(2, 2)), {}, backward=False)


# ---- InfogainLoss -------------------------------------------------------------------------------

def infogain_reference(x, labels, H, axis, ignore=None, norm='VALID'):
    x = np.moveaxis(x, axis, -1)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    lab = labels.reshape(p.shape[:-1]).astype(int)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    rows = H[safe]
    loss = -(rows * np.log(np.maximum(p, 1e-20))).sum(axis=-1)
    count = {'VALID': valid.sum(), 'FULL': lab.size, 'BATCH_SIZE': int(np.prod(x.shape[:axis])),
             'NONE': 1}[norm]
    count = max(count, 1)
    grad = (p * rows.sum(axis=-1, keepdims=True) - rows) * valid[..., None] / count
    return np.where(valid, loss, 0).sum() / count, np.moveaxis(grad, -1, axis), np.moveaxis(p, -1, axis)


def test_infogain_from_file_matches_reference(tmp_path):
    H = R.rand(4, 4)
    path = os.path.join(str(tmp_path), 'H.binaryproto')
    protoio.write_binary(path, weights.blob_to_proto(H.astype(np.float32).reshape(1, 1, 4, 4)))
    H = H.astype(np.float32).astype(np.float64)
    x = R.randn(3, 4) * 2
    y = np.array([1, 3, 0.0])
    layer = ('layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" top: "loss" top: "prob" '
             'infogain_loss_param { source: "%s" } }' % path)
    net = run(net_text(layer, x=(3, 4), y=(3,)), {'x': x, 'y': y})
    loss, grad, prob = infogain_reference(x, y, H, 1)
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(net.blobs['prob'].data, prob, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['x'].diff, grad, rtol=1e-10, atol=1e-14)


def test_infogain_identity_is_softmax_loss():
    # With H = I the loss is SoftmaxWithLoss's.
    x = R.randn(2, 3, 2)
    y = np.array([[0, 2], [1, 1.0]])
    layer = ('layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "H" top: "loss" }\n'
             'layer { name: "s" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "sloss" }')
    net = run(net_text(layer, x=(2, 3, 2), y=(2, 2), H=(3, 3)), {'x': x, 'y': y, 'H': np.eye(3)},
              backward=False)
    assert float(net.blobs['loss'].data) == pytest.approx(float(net.blobs['sloss'].data), rel=1e-12)


@pytest.mark.parametrize('axis,extra,norm', [(1, '', 'VALID'),
                                             (2, 'loss_param { ignore_label: 1 }', 'VALID'),
                                             (1, 'loss_param { normalization: BATCH_SIZE }', 'BATCH_SIZE')])
def test_infogain_third_bottom_axis_ignore_and_gradient(axis, extra, norm):
    shape = (2, 3, 3)
    x = R.randn(*shape)
    lab_shape = (2, 3)  # outer * inner = 6 for either axis
    y = R.randint(0, 3, lab_shape).astype(float)
    H = R.rand(3, 3)
    layer = ('layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "H" '
             'top: "loss" infogain_loss_param { axis: %d } %s }' % (axis, extra))
    text = net_text(layer, x=shape, y=lab_shape, H=(3, 3))
    net = run(text, {'x': x, 'y': y, 'H': H})
    ignore = 1 if 'ignore' in extra else None
    loss, grad, _ = infogain_reference(x, y, H, axis, ignore, norm)
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(net.blobs['x'].diff, grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(net.blobs['H'].diff, 0)  # force_backward does not reach H
    check_net_gradients(text, {'x': x, 'y': y, 'H': H}, skip_inputs=['y', 'H'])


def test_infogain_errors():
    layer = 'layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" top: "loss" }'
    with pytest.raises(caffe.NetError, match='source must be specified'):
        run(net_text(layer, x=(2, 3), y=(2,)), {}, backward=False)
    layer = ('layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "H" '
             'top: "loss" loss_param { normalize: true } }')
    with pytest.raises(caffe.NetError, match='normalize is deprecated'):
        run(net_text(layer, x=(2, 3), y=(2,), H=(3, 3)), {}, backward=False)
    layer = 'layer { name: "l" type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "H" top: "loss" }'
    with pytest.raises(caffe.ShapeError, match='H must be 3x3'):
        run(net_text(layer, x=(2, 3), y=(2,), H=(2, 2)), {}, backward=False)


def test_losses_default_to_weight_one_and_scalar_top():
    layer = 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }'
    net = run(net_text(layer, a=(2, 3), b=(2, 3)), {'a': R.randn(2, 3), 'b': R.randn(2, 3)},
              backward=False)
    assert net.blobs['loss'].shape == ()
    assert net.blob_loss_weights['loss'] == 1
