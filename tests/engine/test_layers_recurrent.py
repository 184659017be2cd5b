"""RNN, LSTM and LSTMUnit: forwards against NumPy versions of Caffe's unrolled equations
(cont resets, static input, exposed and carried state), float64 gradient checks, Caffe's
parameter order and shapes, .caffemodel round trips and Caffe's shape checks."""
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients

R = np.random.RandomState(11)
FILLERS = ('weight_filler { type: "gaussian" std: 0.6 } '
           'bias_filler { type: "gaussian" std: 0.4 }')


# ---- NumPy references (Caffe's unrolled nets, written from the equations) -------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm_unit(c_prev, gates, cont):
    """c_prev (N, H), gates (N, 4H) as i, f, o, g; cont (N,)."""
    h_dim = c_prev.shape[1]
    i = sigmoid(gates[:, :h_dim])
    f = sigmoid(gates[:, h_dim:2 * h_dim]) * cont[:, None]
    o = sigmoid(gates[:, 2 * h_dim:3 * h_dim])
    g = np.tanh(gates[:, 3 * h_dim:])
    c = f * c_prev + i * g
    return c, o * np.tanh(c)


def np_lstm(x, cont, params, x_static=None, h0=None, c0=None):
    """Returns h (T, N, H), h_T, c_T (N, H). params in Caffe's blob order."""
    t_steps, n = x.shape[:2]
    w_xc, b_c = params[0], params[1]
    w_s = params[2] if x_static is not None else None
    w_hc = params[-1]
    h_dim = w_hc.shape[1]
    h = np.zeros((n, h_dim)) if h0 is None else h0
    c = np.zeros((n, h_dim)) if c0 is None else c0
    out = []
    for t in range(t_steps):
        gate_in = (w_hc @ (cont[t][:, None] * h).T).T + x[t].reshape(n, -1) @ w_xc.T + b_c
        if x_static is not None:
            gate_in = gate_in + x_static.reshape(n, -1) @ w_s.T
        c, h = np_lstm_unit(c, gate_in, cont[t])
        out.append(h)
    return np.stack(out), h, c


def np_rnn(x, cont, params, x_static=None, h0=None):
    """Returns o (T, N, H), h_T (N, H). params: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o."""
    t_steps, n = x.shape[:2]
    w_xh, b_h = params[0], params[1]
    k = 3 if x_static is not None else 2
    w_hh, w_ho, b_o = params[k], params[k + 1], params[k + 2]
    h = np.zeros((n, w_hh.shape[0])) if h0 is None else h0
    out = []
    for t in range(t_steps):
        pre = x[t].reshape(n, -1) @ w_xh.T + b_h + (cont[t][:, None] * h) @ w_hh.T
        if x_static is not None:
            pre = pre + x_static.reshape(n, -1) @ params[2].T
        h = np.tanh(pre)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(out), h


# ---- helpers -------------------------------------------------------------------------------

def dims(shape):
    return ' '.join('dim: %d' % d for d in shape)


def recurrent_net(kind, x_shape, num_output, static_shape=None, expose=False, extra=''):
    """A net with inputs x, cont, [xs], [h0, c0] and one RNN/LSTM layer named 'r'."""
    t, n = x_shape[:2]
    states = ['h0', 'c0'] if kind == 'LSTM' else ['h0']
    text = 'force_backward: true\n'
    text += 'input: "x" input_shape { %s }\n' % dims(x_shape)
    text += 'input: "cont" input_shape { dim: %d dim: %d }\n' % (t, n)
    bottoms = ['x', 'cont']
    if static_shape is not None:
        text += 'input: "xs" input_shape { %s }\n' % dims(static_shape)
        bottoms.append('xs')
    tops = ['y']
    if expose:
        for s in states:
            text += 'input: "%s" input_shape { dim: 1 dim: %d dim: %d }\n' % (s, n, num_output)
        bottoms += states
        tops += ['hT', 'cT'][:len(states)]
    text += ('layer { name: "r" type: "%s" %s %s recurrent_param { num_output: %d %s %s } }\n'
             % (kind, ' '.join('bottom: "%s"' % b for b in bottoms),
                ' '.join('top: "%s"' % t for t in tops), num_output, FILLERS,
                'expose_hidden: true' if expose else ''))
    return text + extra


def build(text, inputs, phase=caffe.TRAIN, dtype=torch.float64, forward=True):
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    with caffe.precision(dtype):
        caffe.set_random_seed(3)
        net = caffe.Net(param, phase)
        for k, v in inputs.items():
            net.blobs[k].reshape(*np.shape(v))
            net.blobs[k].data[...] = v
        if forward:
            net.forward()
    return net


def params(net, name='r'):
    return [p.data.copy() for p in net.params[name]]


CONT = np.array([[0., 0., 0.],
                 [1., 1., 0.],     # stream 2 restarts at t = 1
                 [1., 0., 1.],     # stream 1 restarts at t = 2
                 [1., 1., 1.]])


# ---- forward --------------------------------------------------------------------------------

@pytest.mark.parametrize('static', [False, True])
def test_lstm_forward_matches_reference(static):
    x = R.randn(4, 3, 2, 3)   # inputs with two trailing axes: I = 6
    xs = R.randn(3, 5) if static else None
    inputs = {'x': x, 'cont': CONT}
    if static:
        inputs['xs'] = xs
    net = build(recurrent_net('LSTM', x.shape, 4, (3, 5) if static else None), inputs)
    h, _, _ = np_lstm(x, CONT, params(net), xs)
    assert net.blobs['y'].data.shape == (4, 3, 4)
    np.testing.assert_allclose(net.blobs['y'].data, h, rtol=1e-10, atol=1e-12)


def test_lstm_cont_zero_forgets_everything_before():
    # A stream restarted at t (cont 0) gives the same outputs from t on as a fresh run of
    # the steps from t alone.
    x = R.randn(4, 3, 2)
    net = build(recurrent_net('LSTM', x.shape, 3), {'x': x, 'cont': CONT})
    tail = build(recurrent_net('LSTM', (2, 3, 2), 3), {'x': x[2:], 'cont': np.zeros((2, 3))},
                 forward=False)
    for a, b in zip(tail.params['r'], net.params['r']):
        a.data[...] = b.data
    tail.blobs['cont'].data[...] = [[0., 0., 0.], [1., 1., 1.]]  # CONT's stream 1 from t = 2
    tail.forward()
    np.testing.assert_allclose(tail.blobs['y'].data[:, 1], net.blobs['y'].data[2:, 1], rtol=1e-12)


def test_lstm_float32_forward():
    x = R.randn(3, 2, 4)
    cont = np.array([[0., 0.], [1., 1.], [0., 1.]])
    net = build(recurrent_net('LSTM', x.shape, 5), {'x': x, 'cont': cont}, dtype=torch.float32)
    assert net.blobs['y'].data.dtype == np.float32
    h, _, _ = np_lstm(x, cont, [p.astype(np.float64) for p in params(net)])
    np.testing.assert_allclose(net.blobs['y'].data, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('static', [False, True])
def test_rnn_forward_matches_reference(static):
    x = R.randn(4, 3, 5)
    xs = R.randn(3, 2, 2) if static else None
    inputs = {'x': x, 'cont': CONT}
    if static:
        inputs['xs'] = xs
    net = build(recurrent_net('RNN', x.shape, 4, (3, 2, 2) if static else None), inputs)
    o, _ = np_rnn(x, CONT, params(net), xs)
    np.testing.assert_allclose(net.blobs['y'].data, o, rtol=1e-10, atol=1e-12)


def test_lstm_expose_hidden_uses_and_returns_states():
    x, xs = R.randn(4, 3, 2), R.randn(3, 3)
    h0, c0 = R.randn(1, 3, 4), R.randn(1, 3, 4)
    cont = np.ones((4, 3))
    cont[2, 0] = 0
    net = build(recurrent_net('LSTM', x.shape, 4, (3, 3), expose=True),
                {'x': x, 'cont': cont, 'xs': xs, 'h0': h0, 'c0': c0})
    h, h_t, c_t = np_lstm(x, cont, params(net), xs, h0[0], c0[0])
    np.testing.assert_allclose(net.blobs['y'].data, h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.blobs['hT'].data[0], h_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.blobs['cT'].data[0], c_t, rtol=1e-10, atol=1e-12)
    # Exposed states do not carry over: the same bottoms give the same tops again.
    net.forward()
    np.testing.assert_allclose(net.blobs['y'].data, h, rtol=1e-10, atol=1e-12)


def test_rnn_expose_hidden():
    x, h0 = R.randn(3, 2, 3), R.randn(1, 2, 4)
    cont = np.array([[1., 1.], [1., 0.], [1., 1.]])
    net = build(recurrent_net('RNN', x.shape, 4, expose=True), {'x': x, 'cont': cont, 'h0': h0})
    o, h_t = np_rnn(x, cont, params(net), h0=h0[0])
    np.testing.assert_allclose(net.blobs['y'].data, o, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.blobs['hT'].data[0], h_t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('kind', ['LSTM', 'RNN'])
def test_state_carries_over_between_forward_passes(kind):
    # Without expose_hidden, a pass starts where the previous one ended (Caffe copies h_T,
    # c_T into h_0, c_0): two passes of 3 steps equal one pass of 6 steps.
    x = R.randn(6, 2, 3)
    cont = np.ones((6, 2))
    cont[0] = 0
    cont[4, 1] = 0
    net = build(recurrent_net(kind, (3, 2, 3), 4), {'x': x[:3], 'cont': cont[:3]})
    first = net.blobs['y'].data.copy()
    net.blobs['x'].data[...] = x[3:]
    net.blobs['cont'].data[...] = cont[3:]
    net.forward()
    ref = (np_lstm if kind == 'LSTM' else np_rnn)(x, cont, params(net))[0]
    np.testing.assert_allclose(first, ref[:3], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.blobs['y'].data, ref[3:], rtol=1e-10, atol=1e-12)
    # cont 0 at the first step discards the carried state; reset() zeroes it.
    net.blobs['cont'].data[...] = np.vstack([np.zeros((1, 2)), np.ones((2, 2))])
    net.forward()
    fresh = net.blobs['y'].data.copy()
    net.layer_dict['r'].reset()
    net.blobs['cont'].data[...] = 1
    net.forward()
    np.testing.assert_allclose(net.blobs['y'].data, fresh, rtol=1e-12)


def test_carried_state_when_streams_change():
    # Caffe's state blob keeps its first values when N shrinks and starts from zeros when
    # it grows past its size.
    x = R.randn(2, 3, 2)
    net = build(recurrent_net('LSTM', (2, 3, 2), 3), {'x': x, 'cont': np.ones((2, 3))})
    _, h_t, c_t = np_lstm(x, np.ones((2, 3)), params(net))
    x2 = R.randn(2, 2, 2)
    net.blobs['x'].reshape(2, 2, 2)
    net.blobs['cont'].reshape(2, 2)
    net.blobs['x'].data[...] = x2
    net.blobs['cont'].data[...] = 1
    net.forward()
    ref, _, _ = np_lstm(x2, np.ones((2, 2)), params(net), h0=h_t[:2], c0=c_t[:2])
    np.testing.assert_allclose(net.blobs['y'].data, ref, rtol=1e-10, atol=1e-12)
    x3 = R.randn(2, 4, 2)
    net.blobs['x'].reshape(2, 4, 2)
    net.blobs['cont'].reshape(2, 4)
    net.blobs['x'].data[...] = x3
    net.blobs['cont'].data[...] = 1
    net.forward()
    ref, _, _ = np_lstm(x3, np.ones((2, 4)), params(net))
    np.testing.assert_allclose(net.blobs['y'].data, ref, rtol=1e-10, atol=1e-12)


def test_lstm_unit_forward():
    c_prev, gates = R.randn(1, 4, 3), R.randn(1, 4, 12)
    cont = np.array([[1., 0., 1., 0.5]])
    text = ('force_backward: true\ninput: "c0" input_shape { dim: 1 dim: 4 dim: 3 }\n'
            'input: "g" input_shape { dim: 1 dim: 4 dim: 12 }\n'
            'input: "cont" input_shape { dim: 1 dim: 4 }\n'
            'layer { name: "u" type: "LSTMUnit" bottom: "c0" bottom: "g" bottom: "cont" '
            'top: "c" top: "h" }\n')
    net = build(text, {'c0': c_prev, 'g': gates, 'cont': cont})
    c, h = np_lstm_unit(c_prev[0], gates[0], cont[0])
    np.testing.assert_allclose(net.blobs['c'].data[0], c, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['h'].data[0], h, rtol=1e-12)


# ---- gradients ------------------------------------------------------------------------------

def test_lstm_gradients_with_static_input_and_resets():
    cont = np.array([[0., 0.], [1., 0.], [1., 1.]])   # cont 0 at t = 0: carried state unused
    net = check_net_gradients(recurrent_net('LSTM', (3, 2, 3), 2, (2, 2)),
                              {'x': R.randn(3, 2, 3), 'cont': cont, 'xs': R.randn(2, 2)},
                              skip_inputs=['cont'])
    assert not net.blobs['cont'].diff.any()


def test_lstm_gradients_expose_hidden():
    # Caffe shares only the data of exposed states: h0/c0 get zero gradient and the final
    # states' diffs are ignored (here they go to a Silence layer, whose zero diffs would
    # not show that; see the next test).
    extra = 'layer { name: "s" type: "Silence" bottom: "hT" bottom: "cT" }\n'
    net = check_net_gradients(recurrent_net('LSTM', (3, 2, 2), 2, expose=True, extra=extra),
                              {'x': R.randn(3, 2, 2), 'cont': np.array([[1., 1.], [0., 1.], [1., 1.]]),
                               'h0': R.randn(1, 2, 2), 'c0': R.randn(1, 2, 2)},
                              skip_inputs=['cont', 'h0', 'c0'])
    assert not net.blobs['h0'].diff.any() and not net.blobs['c0'].diff.any()


def test_exposed_final_state_diffs_are_ignored():
    x = R.randn(3, 2, 2)
    net = build(recurrent_net('LSTM', x.shape, 3, expose=True),
                {'x': x, 'cont': np.ones((3, 2)), 'h0': R.randn(1, 2, 3), 'c0': R.randn(1, 2, 3)})
    net.blobs['y'].diff[...] = R.randn(3, 2, 3)
    net.backward()
    dx = net.blobs['x'].diff.copy()
    net.forward()
    net.blobs['hT'].diff[...] = 5.0
    net.blobs['cT'].diff[...] = -3.0
    net.backward()
    np.testing.assert_array_equal(net.blobs['x'].diff, dx)


def test_rnn_gradients_with_static_input():
    cont = np.array([[0., 0.], [1., 1.], [0., 1.]])
    check_net_gradients(recurrent_net('RNN', (3, 2, 2), 3, (2, 3)),
                        {'x': R.randn(3, 2, 2), 'cont': cont, 'xs': R.randn(2, 3)},
                        skip_inputs=['cont'])


LSTM_UNIT_NET = ('force_backward: true\ninput: "c0" input_shape { dim: 1 dim: 3 dim: 2 }\n'
                 'input: "g" input_shape { dim: 1 dim: 3 dim: 8 }\n'
                 'input: "cont" input_shape { dim: 1 dim: 3 }\n'
                 'layer { name: "u" type: "LSTMUnit" bottom: "c0" bottom: "g" bottom: "cont" '
                 'top: "c" top: "h" }\n')


def test_lstm_unit_gradients():
    check_net_gradients(LSTM_UNIT_NET, {'c0': R.randn(1, 3, 2), 'g': R.randn(1, 3, 8),
                                        'cont': np.array([[1., 0., 1.]])}, skip_inputs=['cont'])


def test_lstm_unit_backward_is_caffes_formula_for_fractional_cont():
    # Caffe's forget-gate gradient uses f * (1 - f) with f already scaled by cont: not the
    # true derivative when cont is fractional, but what Caffe computes.
    c_prev, gates, cont = R.randn(1, 3, 2), R.randn(1, 3, 8), np.array([[0.5, 1., 0.]])
    net = build(LSTM_UNIT_NET, {'c0': c_prev, 'g': gates, 'cont': cont})
    dc, dh = R.randn(1, 3, 2), R.randn(1, 3, 2)
    net.blobs['c'].diff[...] = dc
    net.blobs['h'].diff[...] = dh
    net.backward()
    i = sigmoid(gates[0, :, :2])
    f = sigmoid(gates[0, :, 2:4]) * cont[0][:, None]
    o = sigmoid(gates[0, :, 4:6])
    g = np.tanh(gates[0, :, 6:])
    tc = np.tanh(f * c_prev[0] + i * g)
    c_term = dc[0] + dh[0] * o * (1 - tc ** 2)
    want = np.concatenate([c_term * g * i * (1 - i), c_term * c_prev[0] * f * (1 - f),
                           dh[0] * tc * o * (1 - o), c_term * i * (1 - g ** 2)], axis=1)
    np.testing.assert_allclose(net.blobs['g'].diff[0], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.blobs['c0'].diff[0], c_term * f, rtol=1e-12, atol=1e-15)
    true_df = c_term[0] * c_prev[0, 0] * 0.5 * sigmoid(gates[0, 0, 2:4]) * (1 - sigmoid(gates[0, 0, 2:4]))
    assert not np.allclose(net.blobs['g'].diff[0, 0, 2:4], true_df)


def test_lstm_unit_refuses_gradient_to_cont():
    # cont computed by a learnable layer, under a loss: Caffe's CHECK fails in backward.
    text = ('input: "c0" input_shape { dim: 1 dim: 3 dim: 2 }\n'
            'input: "g" input_shape { dim: 1 dim: 3 dim: 8 }\n'
            'input: "z" input_shape { dim: 1 dim: 2 }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "z" top: "cont" inner_product_param '
            '{ num_output: 3 weight_filler { type: "constant" value: 0.5 } } }\n'
            'layer { name: "u" type: "LSTMUnit" bottom: "c0" bottom: "g" bottom: "cont" '
            'top: "c" top: "h" }\n'
            'layer { name: "l" type: "Reduction" bottom: "h" top: "l" loss_weight: 1 }\n')
    net = build(text, {'c0': R.randn(1, 3, 2), 'g': R.randn(1, 3, 8), 'z': np.ones((1, 2))})
    with pytest.raises(caffe.NetError, match="'u'.*Cannot backpropagate to sequence indicators"):
        net.backward()


# ---- parameters and weights files ----------------------------------------------------------

def test_blob_shapes_order_and_fillers():
    text = ('input: "x" input_shape { dim: 2 dim: 3 dim: 2 dim: 3 }\n'
            'input: "cont" input_shape { dim: 2 dim: 3 }\n'
            'input: "xs" input_shape { dim: 3 dim: 5 }\n'
            'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param '
            '{ num_output: 4 weight_filler { type: "constant" value: 0.5 } '
            'bias_filler { type: "constant" value: 0.25 } } }\n'
            'layer { name: "ls" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "hs" '
            'recurrent_param { num_output: 4 } }\n'
            'layer { name: "r" type: "RNN" bottom: "x" bottom: "cont" top: "o" '
            'recurrent_param { num_output: 4 } }\n'
            'layer { name: "rs" type: "RNN" bottom: "x" bottom: "cont" bottom: "xs" top: "os" '
            'recurrent_param { num_output: 4 } }\n')
    net = build(text, {}, forward=False)
    shapes = {k: [p.data.shape for p in v] for k, v in net.params.items()}
    assert shapes['l'] == [(16, 6), (16,), (16, 4)]                    # W_xc, b_c, W_hc
    assert shapes['ls'] == [(16, 6), (16,), (16, 5), (16, 4)]          # ..., W_xc_static, W_hc
    assert shapes['r'] == [(4, 6), (4,), (4, 4), (4, 4), (4,)]         # W_xh b_h W_hh W_ho b_o
    assert shapes['rs'] == [(4, 6), (4,), (4, 5), (4, 4), (4, 4), (4,)]
    w_xc, b_c, w_hc = params(net, 'l')
    assert (w_xc == 0.5).all() and (b_c == 0.25).all() and (w_hc == 0.5).all()
    assert not any(p.any() for p in params(net, 'r'))  # no filler given: Caffe's constant 0


def test_caffemodel_written_in_caffes_layout_loads(tmp_path):
    # A weights file laid out as Caffe saves an LSTM (blobs W_xc, b_c, W_xc_static, W_hc)
    # and an RNN (W_xh, b_h, W_hh, W_ho, b_o) gives the reference outputs.
    text = ('input: "x" input_shape { dim: 3 dim: 2 dim: 3 }\n'
            'input: "cont" input_shape { dim: 3 dim: 2 }\n'
            'input: "xs" input_shape { dim: 2 dim: 2 }\n'
            'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h" '
            'recurrent_param { num_output: 2 } }\n'
            'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" '
            'recurrent_param { num_output: 3 } }\n')
    lstm_w = [R.randn(8, 3), R.randn(8), R.randn(8, 2), R.randn(8, 2)]
    rnn_w = [R.randn(3, 3), R.randn(3), R.randn(3, 3), R.randn(3, 3), R.randn(3)]
    model = caffe_pb2.NetParameter()
    for name, kind, ws in (('lstm', 'LSTM', lstm_w), ('rnn', 'RNN', rnn_w)):
        layer = model.layer.add(name=name, type=kind)
        for w in ws:
            bp = layer.blobs.add()
            bp.shape.dim.extend(w.shape)
            bp.data.extend(w.astype(np.float32).ravel().tolist())
    weights = str(tmp_path / 'caffe.caffemodel')
    with open(weights, 'wb') as f:
        f.write(model.SerializeToString())
    proto = str(tmp_path / 'net.prototxt')
    with open(proto, 'w') as f:
        f.write(text)
    net = caffe.Net(proto, weights, caffe.TEST)
    x, xs, cont = R.randn(3, 2, 3), R.randn(2, 2), np.array([[0., 0.], [1., 0.], [1., 1.]])
    net.blobs['x'].data[...] = x
    net.blobs['xs'].data[...] = xs
    net.blobs['cont'].data[...] = cont
    net.forward()
    f32 = lambda ws: [w.astype(np.float32).astype(np.float64) for w in ws]  # noqa: E731
    np.testing.assert_allclose(net.blobs['h'].data, np_lstm(x, cont, f32(lstm_w), xs)[0],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.blobs['o'].data, np_rnn(x, cont, f32(rnn_w))[0],
                               rtol=1e-4, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    text = recurrent_net('LSTM', (3, 2, 3), 3, (2, 2)) + (
        'layer { name: "r2" type: "RNN" bottom: "y" bottom: "cont" top: "o" '
        'recurrent_param { num_output: 2 %s } }\n' % FILLERS)
    proto = str(tmp_path / 'net.prototxt')
    with open(proto, 'w') as f:
        f.write(text)
    inputs = {'x': R.randn(3, 2, 3), 'cont': np.array([[0., 0.], [1., 1.], [1., 0.]]),
              'xs': R.randn(2, 2)}
    caffe.set_random_seed(5)
    net = caffe.Net(proto, caffe.TEST)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    weights = str(tmp_path / 'w.caffemodel')
    net.save(weights)
    caffe.set_random_seed(6)
    net2 = caffe.Net(proto, weights, caffe.TEST)
    for name in ('r', 'r2'):
        for a, b in zip(net.params[name], net2.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    for k, v in inputs.items():
        net2.blobs[k].data[...] = v
    net2.forward()
    np.testing.assert_array_equal(net2.blobs['o'].data, net.blobs['o'].data)
    assert os.path.getsize(weights) > 0


# ---- errors ---------------------------------------------------------------------------------

def lstm_error_net(x_shape, cont_shape, extra_bottoms='', expose=False, num_output=3):
    text = 'input: "x" input_shape { %s }\ninput: "cont" input_shape { %s }\n' % (
        dims(x_shape), dims(cont_shape))
    for name, shape in extra_bottoms:
        text += 'input: "%s" input_shape { %s }\n' % (name, dims(shape))
    bottoms = ' '.join('bottom: "%s"' % n for n, _ in extra_bottoms)
    tops = 'top: "y"' + (' top: "hT" top: "cT"' if expose else '')
    return text + ('layer { name: "bad" type: "LSTM" bottom: "x" bottom: "cont" %s %s '
                   'recurrent_param { num_output: %d %s } }\n'
                   % (bottoms, tops, num_output, 'expose_hidden: true' if expose else ''))


@pytest.mark.parametrize('net_args, error, pattern', [
    (((3, 2, 4), (2, 2)), caffe.ShapeError, r"'bad'.*T_ == bottom\[1\]->shape\(0\) \(3 vs\. 2\)"),
    (((3, 2, 4), (3, 4)), caffe.ShapeError, r"'bad'.*N_ == bottom\[1\]->shape\(1\) \(2 vs\. 4\)"),
    (((3, 2, 4), (3, 2, 1)), caffe.ShapeError, r"'bad'.*bottom\[1\] must have exactly 2 axes"),
    (((6,), (6, 1)), caffe.ShapeError, r"'bad'.*bottom\[0\] must have at least 2 axes"),
    (((3, 2), (3, 2)), caffe.ShapeError, r"'bad'.*axis 2 out of range for 2-D Blob"),
    (((3, 2, 4), (3, 2), [('xs', (3, 5))]), caffe.ShapeError,
     r"'bad'.*N_ == bottom\[2\]->shape\(0\) \(2 vs\. 3\)"),
    (((3, 2, 4), (3, 2), [('h0', (1, 2, 3)), ('c0', (1, 2, 4))], True), caffe.ShapeError,
     r"'bad'.*bottom\[3\] shape must match hidden state input shape: 1 2 3 \(6\)"),
    (((3, 2, 4), (3, 2), [('h0', (1, 2, 3))], True), caffe.NetError,
     r"'bad'.*at least 4 bottom"),
    (((3, 2, 4), (3, 2), (), False, 0), caffe.NetError, r"'bad'.*num_output must be positive"),
])
def test_setup_errors(net_args, error, pattern):
    with pytest.raises(error, match=pattern):
        build(lstm_error_net(*net_args), {}, forward=False)


def test_reshape_errors():
    net = build(lstm_error_net((3, 2, 4), (3, 2)), {}, forward=False)
    net.blobs['x'].reshape(4, 2, 4)
    net.blobs['cont'].reshape(4, 2)
    with pytest.raises(caffe.ShapeError, match="'bad'.*input number of timesteps changed"):
        net.forward()
    net.blobs['x'].reshape(3, 2, 5)
    net.blobs['cont'].reshape(3, 2)
    with pytest.raises(caffe.ShapeError, match="'bad'.*Input size incompatible"):
        net.forward()


@pytest.mark.parametrize('shapes, pattern', [
    (((1, 3, 2), (1, 3, 6), (1, 3)), r"4 \* hidden_dim_ == bottom\[1\]->shape\(2\) \(8 vs\. 6\)"),
    (((1, 3, 2), (1, 3, 8), (1, 3, 1)), r"2 == bottom\[2\]->num_axes\(\) \(2 vs\. 3\)"),
    (((2, 3, 2), (2, 3, 8), (2, 3)), r"1 == bottom\[0\]->shape\(0\) \(1 vs\. 2\)"),
    (((1, 3, 2), (1, 2, 8), (1, 3)), r"num_instances == bottom\[1\]->shape\(1\) \(3 vs\. 2\)"),
])
def test_lstm_unit_shape_errors(shapes, pattern):
    text = ''.join('input: "%s" input_shape { %s }\n' % (n, dims(s))
                   for n, s in zip(('c0', 'g', 'cont'), shapes))
    text += ('layer { name: "u" type: "LSTMUnit" bottom: "c0" bottom: "g" bottom: "cont" '
             'top: "c" top: "h" }\n')
    with pytest.raises(caffe.ShapeError, match="'u'.*" + pattern):
        build(text, {}, forward=False)
