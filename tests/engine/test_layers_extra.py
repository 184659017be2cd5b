"""Parameter, BatchReindex, Filter, ContrastiveLoss, SPP and Im2col.

Forward values against NumPy references written here from Caffe's definitions (loops over
windows and kernel offsets, independent of the layers' vectorised code), Caffe's backward
formulas where they are not the true gradient (ContrastiveLoss), float64 finite-difference
checks through caffe.Net, Caffe's checks, and NetSpec / prototxt round trips.
"""
import itertools
import math

import numpy as np
import pytest
import torch

import caffe
from caffe import layers as L
from caffe import params as P
from caffe import protoio
from caffe.proto import caffe_pb2

import gradcheck
from gradcheck import check_net_gradients

R = np.random.RandomState(5)


def inputs(**shapes):
    return ''.join('input: "%s" input_shape { %s }\n' % (n, ' '.join('dim: %d' % d for d in s))
                   for n, s in shapes.items())


def make_net(text, phase=caffe.TEST):
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    return caffe.Net(param, phase)


def forward(layer, phase=caffe.TEST, backward_diffs=None, **arrays):
    """A float64 net of input blobs shaped like `arrays` plus `layer`; runs forward (and,
    given top diffs, backward) and returns the net."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    text = ('force_backward: true\n' if backward_diffs is not None else '') + \
        inputs(**{k: v.shape for k, v in arrays.items()}) + layer
    with caffe.precision(torch.float64):
        net = make_net(text, phase)
        for k, v in arrays.items():
            net.blobs[k].data[...] = v
        net.forward()
        if backward_diffs is not None:
            net.backward(**backward_diffs)
    return net


def grad(layer, skip=(), phase=caffe.TRAIN, **arrays):
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    text = 'force_backward: true\n' + inputs(**{k: v.shape for k, v in arrays.items()}) + layer
    return check_net_gradients(text, arrays, skip_inputs=skip, phase=phase)


# ---- Parameter --------------------------------------------------------------------------------

PARAM = 'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { %s } } %s }\n'


def test_parameter_starts_at_zero_and_is_its_top():
    with caffe.precision(torch.float64):
        net = make_net(PARAM % ('dim: 2 dim: 3', ''))
        assert net.blobs['p'].shape == (2, 3) and net.params['p'][0].data.shape == (2, 3)
        net.params['p'][0].data[...] = np.arange(6).reshape(2, 3)
        net.forward()
    np.testing.assert_array_equal(net.blobs['p'].data, np.arange(6).reshape(2, 3))


def test_parameter_gradient_accumulates_until_cleared():
    with caffe.precision(torch.float64):
        # (loss_weight: a top that reaches no loss would get no backward at all.)
        net = make_net(PARAM % ('dim: 4', 'loss_weight: 1'), caffe.TRAIN)
        net.forward()
        d = np.array([1., -2., 3., 0.5])
        net.backward(p=d)
        np.testing.assert_array_equal(net.params['p'][0].diff, d)
        net.backward(p=d)
        np.testing.assert_array_equal(net.params['p'][0].diff, 2 * d)
        # lr_mult 0: no gradient at all.
        frozen = make_net(PARAM % ('dim: 4', 'loss_weight: 1 param { lr_mult: 0 }'), caffe.TRAIN)
        frozen.forward()
        frozen.backward(p=d)
        assert not frozen.params['p'][0].diff.any()


def test_parameter_gradcheck_with_values_given_in_the_net():
    blob = 'blobs { shape { dim: 2 dim: 3 } %s }' % ' '.join('data: %g' % v for v in
                                                           R.randn(6).round(3))
    layer = (PARAM % ('dim: 2 dim: 3', blob) +
             'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "p" top: "y" '
             '        eltwise_param { operation: PROD } }\n')
    net = grad(layer, x=R.randn(2, 3))
    assert np.abs(net.params['p'][0].data).sum() > 0


def test_parameter_errors(tmp_path):
    with pytest.raises(caffe.ShapeError, match=r"'p' \(Parameter\).*blob\(s\) of shape 3 \(3\).*2 3"):
        make_net(PARAM % ('dim: 2 dim: 3', 'blobs { shape { dim: 3 } data: 1 data: 2 data: 3 }'))
    with pytest.raises(caffe.NetError, match="'p' .*0 bottom"):
        make_net(inputs(x=(2,)) + 'layer { name: "p" type: "Parameter" bottom: "x" top: "p" '
                                  'parameter_param { shape { dim: 2 } } }')


def test_parameter_saves_and_loads(tmp_path):
    with caffe.precision(torch.float64):
        net = make_net(PARAM % ('dim: 3', ''))
        net.params['p'][0].data[...] = [1, 2, 3]
        net.save(str(tmp_path / 'p.caffemodel'))
        other = make_net(PARAM % ('dim: 3', ''))
        other.copy_from(str(tmp_path / 'p.caffemodel'))
        other.forward()
    np.testing.assert_array_equal(other.blobs['p'].data, [1, 2, 3])


# ---- BatchReindex -----------------------------------------------------------------------------

REINDEX = 'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "i" top: "y" }\n'


def test_batch_reindex_forward_backward():
    x = R.randn(4, 2, 3)
    idx = np.array([2, 0.7, 2, 3.9, 1])       # truncated: 2, 0, 2, 3, 1
    dy = R.randn(5, 2, 3)
    net = forward(REINDEX, backward_diffs={'y': dy}, x=x, i=idx)
    taken = idx.astype(int)
    np.testing.assert_array_equal(net.blobs['y'].data, x[taken])
    want = np.zeros_like(x)
    np.add.at(want, taken, dy)                 # item 2 gets two diffs
    np.testing.assert_allclose(net.blobs['x'].diff, want)
    assert not net.blobs['i'].diff.any()       # force_backward leaves the index alone


def test_batch_reindex_gradcheck():
    grad(REINDEX, skip=['i'], x=R.randn(3, 4), i=np.array([1, 1, 0, 2, 1, 0]))


def test_batch_reindex_errors():
    with pytest.raises(caffe.ShapeError, match=r"'r'.*1 == bottom\[1\]->num_axes\(\) \(1 vs. 2\)"):
        forward(REINDEX, x=np.zeros((3, 2)), i=np.zeros((2, 1)))
    with pytest.raises(caffe.ShapeError, match="'r'.*was negative"):
        forward(REINDEX, x=np.zeros((3, 2)), i=[0, -0.5])
    with pytest.raises(caffe.ShapeError, match="'r'.*was greater than batch size"):
        forward(REINDEX, x=np.zeros((3, 2)), i=[0, 3])
    # An index that would need a gradient (a learnable one): Caffe's check.
    text = (inputs(x=(3, 2)) + PARAM % ('dim: 2', '') +
            'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "p" top: "y" '
            'loss_weight: 1 }\n')
    net = make_net(text, caffe.TRAIN)
    net.forward()
    with pytest.raises(caffe.NetError, match="'r'.*Cannot backprop to index."):
        net.backward(y=np.ones((2, 2), np.float32))


# ---- Filter -----------------------------------------------------------------------------------

FILTER = ('layer { name: "f" type: "Filter" bottom: "a" bottom: "b" bottom: "s" '
          'top: "fa" top: "fb" }\n')


@pytest.mark.parametrize('sel_shape', [(5,), (5, 1, 1, 1)])
def test_filter_forward_backward(sel_shape):
    a, b = R.randn(5, 3), R.randn(5, 2, 2)
    sel = np.array([0, 1, 0.5, 0, -2]).reshape(sel_shape)   # any non-zero value keeps
    keep = np.array([1, 2, 4])
    da, db = R.randn(3, 3), R.randn(3, 2, 2)
    net = forward(FILTER, backward_diffs={'fa': da, 'fb': db}, a=a, b=b, s=sel)
    np.testing.assert_array_equal(net.blobs['fa'].data, a[keep])
    np.testing.assert_array_equal(net.blobs['fb'].data, b[keep])
    want_a, want_b = np.zeros_like(a), np.zeros_like(b)
    want_a[keep], want_b[keep] = da, db
    np.testing.assert_array_equal(net.blobs['a'].diff, want_a)
    np.testing.assert_array_equal(net.blobs['b'].diff, want_b)
    assert not net.blobs['s'].diff.any()


def test_filter_first_reshape_keeps_all_then_follows_the_selector():
    with caffe.precision(torch.float64):
        net = make_net(inputs(a=(4, 2), s=(4,)) +
                       'layer { name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa" }')
        assert net.blobs['fa'].shape == (4, 2)      # Caffe's set-up shape: every item
        net.forward()                               # the selector is all zero
        assert net.blobs['fa'].shape == (0, 2)
        net.blobs['s'].data[...] = [0, 0, 7, 0]
        net.blobs['a'].data[...] = np.arange(8).reshape(4, 2)
        net.forward()
    np.testing.assert_array_equal(net.blobs['fa'].data, [[4, 5]])


def test_filter_gradcheck():
    grad(FILTER, skip=['s'], a=R.randn(4, 3), b=R.randn(4, 2), s=np.array([1., 0, 1, 1]))


def test_filter_errors():
    two = 'layer { name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa" top: "x" }'
    with pytest.raises(caffe.NetError, match=r"'f'.*top.size\(\) == bottom.size\(\) - 1 \(2 vs. 1\)"):
        forward(two, a=np.zeros((2, 1)), s=np.zeros(2))
    one = 'layer { name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa" }'
    with pytest.raises(caffe.ShapeError, match="'f'.*Selector blob dimensions must be singletons"):
        forward(one, a=np.zeros((2, 1)), s=np.zeros((2, 2)))
    with pytest.raises(caffe.ShapeError, match="'f'.*same 0th dimension as the selector"):
        forward(one, a=np.zeros((3, 1)), s=np.zeros(2))
    learnable_selector = (inputs(a=(2, 3)) + PARAM % ('dim: 2', '') +
                          'layer { name: "f" type: "Filter" bottom: "a" bottom: "p" top: "fa" '
                          'loss_weight: 1 }')
    net = make_net(learnable_selector, caffe.TRAIN)
    net.params['p'][0].data[...] = [1, 1]
    net.forward()
    with pytest.raises(caffe.NetError, match="'f'.*FilterLayer cannot backpropagate to filter "
                                             "index inputs"):
        net.backward(fa=np.ones((2, 3), np.float32))


# ---- ContrastiveLoss --------------------------------------------------------------------------

CONTRAST = ('layer { name: "c" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" '
            'top: "loss" %s }\n')


def contrastive_reference(a, b, y, margin, legacy, lw=1.0):
    """Caffe's forward and (its own, not the exact) backward, pair by pair."""
    n = a.shape[0]
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    loss, ga = 0.0, np.zeros_like(a2)
    for i in range(n):
        d = a2[i] - b2[i]
        dsq = float(d @ d)
        if int(y[i]):
            loss += dsq
            ga[i] = d * lw / n
        elif legacy:
            loss += max(margin - dsq, 0.0)
            ga[i] = -d * lw / n if margin - dsq > 0 else 0
        else:
            dist = math.sqrt(dsq)
            loss += max(margin - dist, 0.0) ** 2
            ga[i] = -(lw / n) * (margin - dist) / (dist + 1e-4) * d if margin - dist > 0 else 0
    return lw * loss / n / 2, ga.reshape(a.shape)


@pytest.mark.parametrize('legacy', [False, True])
def test_contrastive_loss_values_and_caffe_backward(legacy):
    a, b = R.randn(6, 4, 1, 1), R.randn(6, 4, 1, 1)
    b[1] = a[1]                                  # a dissimilar pair at distance 0
    y = np.array([1, 0, 0, 0.5, 1.5, 0]).reshape(6, 1, 1, 1)   # int(): 1 0 0 0 1 0
    margin = 2.5 if not legacy else 6.0
    param = ('loss_weight: 0.5 contrastive_loss_param { margin: %g legacy_version: %s }'
             % (margin, 'true' if legacy else 'false'))
    net = forward(CONTRAST % param, phase=caffe.TRAIN, backward_diffs={}, a=a, b=b, y=y)
    loss, ga = contrastive_reference(a, b, y.ravel(), margin, legacy, lw=0.5)
    assert float(net.blobs['loss'].data) * 0.5 == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(net.blobs['a'].diff, ga, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.blobs['b'].diff, -ga, rtol=1e-12, atol=1e-15)
    assert not net.blobs['y'].diff.any()
    assert np.isfinite(net.blobs['a'].diff).all()


def test_contrastive_loss_default_margin_is_one():
    a, b = np.zeros((1, 2)), np.array([[0.6, 0.0]])
    net = forward(CONTRAST % '', a=a, b=b, y=np.zeros(1))
    assert float(net.blobs['loss'].data) == pytest.approx(0.4 ** 2 / 2)


@pytest.mark.parametrize('legacy', ['false', 'true'])
def test_contrastive_loss_gradcheck(legacy):
    a, b = R.randn(5, 3), R.randn(5, 3)
    y = np.array([1., 0, 0, 1, 0])
    text = ('force_backward: true\n' + inputs(a=(5, 3), b=(5, 3), y=(5,)) +
            CONTRAST % ('loss_weight: 1.5 contrastive_loss_param { margin: 4 legacy_version: %s }'
                        % legacy))
    # Caffe's non-legacy gradient divides by d + 1e-4, d the pair distance (here 1 to 3): a
    # relative difference of at most ~1e-4 from the true gradient.
    rtol = 1e-4 if legacy == 'true' else 5e-4
    check_net_gradients(text, {'a': a, 'b': b, 'y': y}, skip_inputs=['y'], rtol=rtol)


def test_contrastive_loss_errors():
    cases = [(dict(a=(2, 3), b=(2, 4), y=(2,)), r'channels\(\) == bottom\[1\]->channels\(\) \(3 vs. 4\)'),
             (dict(a=(2, 3, 2), b=(2, 3, 2), y=(2,)), r'bottom\[0\]->height\(\) == 1 \(2 vs. 1\)'),
             (dict(a=(2, 3), b=(2, 3), y=(2, 2)), r'bottom\[2\]->channels\(\) == 1 \(2 vs. 1\)'),
             (dict(a=(2, 3), b=(3, 3), y=(2,)), 'same first dimension')]
    for shapes, msg in cases:
        with pytest.raises(caffe.ShapeError, match="'c'.*" + msg):
            make_net(inputs(**shapes) + CONTRAST % '')


# ---- SPP --------------------------------------------------------------------------------------

def caffe_pool_reference(x, k, pad, method):
    """Caffe's PoolingLayer (stride = kernel, CEIL rounding) window by window."""
    n, c, h, w = x.shape
    outs = []
    for size, kk, p in zip((h, w), k, pad):
        o = int(math.ceil((size + 2 * p - kk) / kk)) + 1
        if p and (o - 1) * kk >= size + p:
            o -= 1
        outs.append(o)
    y = np.zeros((n, c, outs[0], outs[1]))
    for i in range(outs[0]):
        for j in range(outs[1]):
            hs, ws = i * k[0] - pad[0], j * k[1] - pad[1]
            he, we = min(hs + k[0], h + pad[0]), min(ws + k[1], w + pad[1])
            area = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            if method == 'MAX':
                y[:, :, i, j] = win.max(axis=(2, 3))
            elif method == 'AVE':
                y[:, :, i, j] = win.sum(axis=(2, 3)) / area
            else:  # STOCHASTIC, TEST phase
                s, v = win.sum(axis=(2, 3)), (win * win).sum(axis=(2, 3))
                y[:, :, i, j] = np.where(s > 0, v / np.where(s > 0, s, 1), 0)
    return y


def spp_reference(x, height, method):
    n, c, h, w = x.shape
    levels = []
    for level in range(height):
        bins = 2 ** level
        k = [int(math.ceil(h / bins)), int(math.ceil(w / bins))]
        pad = [(k[0] * bins - h + 1) // 2, (k[1] * bins - w + 1) // 2]
        levels.append(caffe_pool_reference(x, k, pad, method))
    if height == 1:
        return levels[0]
    return np.concatenate([l.reshape(n, -1) for l in levels], axis=1)


SPP = 'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { %s } }\n'


@pytest.mark.parametrize('method', ['MAX', 'AVE'])
@pytest.mark.parametrize('shape,height', [((2, 3, 9, 6), 3), ((1, 2, 7, 6), 3), ((2, 2, 5, 3), 2),
                                          ((2, 3, 4, 5), 1)])
def test_spp_forward_matches_caffe_pooling(method, shape, height):
    x = R.randn(*shape)
    net = forward(SPP % ('pyramid_height: %d pool: %s' % (height, method)), x=x)
    want = spp_reference(x, height, method)
    n, c = shape[:2]
    bins = sum(4 ** l for l in range(height))
    assert want.shape == ((n, c, 1, 1) if height == 1 else (n, c * bins))
    assert net.blobs['y'].shape == want.shape
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('method', ['MAX', 'AVE'])
def test_spp_gradcheck(method):
    # 9 rows at 4 bins: kernel 3, pad 2 (more than half the kernel; torch's pooling refuses it).
    grad(SPP % ('pyramid_height: 3 pool: %s' % method), x=R.randn(1, 2, 9, 6))


def test_spp_max_gradient_goes_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0] = [[1, 3], [3, 0]]
    net = forward(SPP % 'pyramid_height: 1', backward_diffs={'y': np.full((1, 1, 1, 1), 2.0)}, x=x)
    np.testing.assert_array_equal(net.blobs['x'].diff[0, 0], [[0, 2], [0, 0]])


def test_spp_stochastic_test_phase_matches_reference():
    x = np.abs(R.randn(2, 3, 4, 8))
    x[0, 0] = 0                                    # sums of 0: output 0
    net = forward(SPP % 'pyramid_height: 3 pool: STOCHASTIC', x=x)
    np.testing.assert_allclose(net.blobs['y'].data, spp_reference(x, 3, 'STOCHASTIC'), rtol=1e-12)


def test_spp_stochastic_train_samples_a_cell_and_routes_its_gradient():
    caffe.set_random_seed(3)
    x = np.abs(R.randn(2, 3, 4, 4)) + 0.1
    x[1, 2] = 0
    x[1, 2, 3, 1] = 5.0                            # the only positive cell: always sampled
    dy = R.rand(2, 3 * 21) + 0.5
    net = forward(SPP % 'pyramid_height: 3 pool: STOCHASTIC', phase=caffe.TRAIN,
                  backward_diffs={'y': dy}, x=x)
    y = net.blobs['y'].data
    # Top layout: level 0 (one value per channel), then level 1 (4 per channel), then
    # level 2 (16 per channel), each flattened channel-major.
    lv0, lv1, lv2 = y[:, :3], y[:, 3:15].reshape(2, 3, 4), y[:, 15:].reshape(2, 3, 16)
    # Level 2 (4x4 bins of one cell) is the input itself; level 1 picks one cell of each
    # 2x2 block; level 0 one cell of the whole map.
    np.testing.assert_array_equal(lv2, x.reshape(2, 3, 16))
    for b in range(2):
        for c in range(3):
            assert lv0[b, c] in x[b, c]
            for blk in range(4):
                i, j = divmod(blk, 2)
                assert lv1[b, c, blk] in x[b, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
    # The map with one positive cell (row 3, column 1: level-1 block 2): that cell wins
    # wherever it can; an all-zero block gives 0 (Caffe's first cell, 0 >= 0 * u).
    assert lv0[1, 2] == 5
    np.testing.assert_array_equal(lv1[1, 2], [0, 0, 5, 0])
    # Backward: each level's diff lands on the sampled cell, so the bottom diff totals the
    # top diff's; the positive cell collects its three levels' diffs, a zero block's diff
    # goes to the block's first cell.
    dx = net.blobs['x'].diff
    d0, d1, d2 = dy[:, :3], dy[:, 3:15].reshape(2, 3, 4), dy[:, 15:].reshape(2, 3, 16)
    np.testing.assert_allclose(dx.sum(axis=(2, 3)), d0 + d1.sum(axis=2) + d2.sum(axis=2))
    assert dx[1, 2, 3, 1] == pytest.approx(d0[1, 2] + d1[1, 2, 2] + d2[1, 2, 13])
    assert dx[1, 2, 0, 0] == pytest.approx(d1[1, 2, 0] + d2[1, 2, 0])
    assert dx[1, 2, 0, 1] == pytest.approx(d2[1, 2, 1])


def test_spp_stochastic_train_gradcheck(monkeypatch):
    objective = gradcheck._objective

    def reseeded(net, top_diffs):                  # the same draws for every evaluation
        caffe.set_random_seed(7)
        return objective(net, top_diffs)
    monkeypatch.setattr(gradcheck, '_objective', reseeded)
    text = 'force_backward: true\n' + inputs(x=(1, 2, 4, 4)) + SPP % 'pyramid_height: 2 pool: STOCHASTIC'
    check_net_gradients(text, {'x': np.abs(R.randn(1, 2, 4, 4)) + 0.5}, seed=7)


def test_spp_errors():
    with pytest.raises(caffe.ShapeError, match="'s'.*Input must have 4 axes"):
        make_net(inputs(x=(2, 3, 8)) + SPP % 'pyramid_height: 2')
    with pytest.raises(caffe.NetError, match="'s'.*pyramid_height must be at least 1"):
        make_net(inputs(x=(1, 1, 4, 4)) + SPP % '')
    # 5 columns at 4 bins: kernel 2, pad 2 -- Caffe's pooling refuses pad >= kernel.
    with pytest.raises(caffe.ShapeError, match=r"'s'.*level 2.*pad_w_ < kernel_w_ \(2 vs. 2\)"):
        make_net(inputs(x=(1, 1, 8, 5)) + SPP % 'pyramid_height: 3')
    with pytest.raises(caffe.NetError, match="'s'.*Padding implemented only for average and max"):
        make_net(inputs(x=(1, 1, 7, 6)) + SPP % 'pyramid_height: 2 pool: STOCHASTIC')
    # Shapes are re-planned when the bottom changes.
    net = make_net(inputs(x=(1, 1, 8, 8)) + SPP % 'pyramid_height: 3')
    net.blobs['x'].reshape(1, 1, 8, 5)
    with pytest.raises(caffe.ShapeError, match='pad_w_ < kernel_w_'):
        net.forward()


def test_spp_net_spec_round_trip(tmp_path):
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3, 6, 7]))
    n.y = L.SPP(n.x, spp_param=dict(pyramid_height=2, pool=P.SPP.AVE))
    text = str(n.to_proto())
    assert 'type: "SPP"' in text and 'pool: AVE' in text and 'pyramid_height: 2' in text
    path = tmp_path / 'spp.prototxt'
    path.write_text(text)
    parsed = protoio.parse_text(path.read_text(), caffe_pb2.NetParameter())
    assert parsed.layer[1].spp_param.pool == caffe_pb2.SPPParameter.AVE
    net = caffe.Net(str(path), caffe.TEST)
    x = R.randn(2, 3, 6, 7).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs['y'].data, spp_reference(x.astype(np.float64), 2, 'AVE'),
                               rtol=1e-5, atol=1e-6)


# ---- Im2col -----------------------------------------------------------------------------------

def im2col_reference(x, kernel, stride, pad, dilation, axis=1):
    """Caffe's im2col_nd: column c * prod(kernel) + kernel offset (last axis fastest) at each
    output position reads x[c, o * stride - pad + k * dilation], or 0 outside the image."""
    lead, c, spatial = x.shape[:axis], x.shape[axis], x.shape[axis + 1:]
    x = x.reshape((-1, c) + spatial)
    outs = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
            for s, k, st, p, d in zip(spatial, kernel, stride, pad, dilation)]
    offsets = list(itertools.product(*[range(k) for k in kernel]))
    y = np.zeros((x.shape[0], c * len(offsets)) + tuple(outs))
    for ch in range(c):
        for ki, off in enumerate(offsets):
            for pos in itertools.product(*[range(o) for o in outs]):
                where = [o * st - p + k * d for o, st, p, k, d in zip(pos, stride, pad, off, dilation)]
                if all(0 <= w < s for w, s in zip(where, spatial)):
                    y[(slice(None), ch * len(offsets) + ki) + pos] = x[(slice(None), ch) + tuple(where)]
    return y.reshape(lead + y.shape[1:])


IM2COL = 'layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { %s } }\n'

IM2COL_CASES = [
    # (input shape, convolution_param, kernel, stride, pad, dilation, axis)
    ((2, 3, 5, 6), 'kernel_size: 3 stride: 2 pad: 1', [3, 3], [2, 2], [1, 1], [1, 1], 1),
    ((2, 3, 5, 7), 'kernel_size: 3 stride: 2 pad: 1', [3, 3], [2, 2], [1, 1], [1, 1], 1),
    ((1, 2, 7, 6), 'kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1 dilation: 2',
     [2, 3], [1, 2], [0, 1], [2, 2], 1),
    ((2, 2, 4, 5, 6), 'kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 stride: 1 '
                      'pad: 1 pad: 0 pad: 1 dilation: 1 dilation: 1 dilation: 2',
     [2, 3, 2], [1, 2, 1], [1, 0, 1], [1, 1, 2], 1),
    ((2, 3, 9), 'kernel_size: 4 stride: 3 pad: 2', [4], [3], [2], [1], 1),
    ((2, 2, 3, 5, 4), 'axis: 2 kernel_size: 2 pad: 1 stride: 2', [2, 2], [2, 2], [1, 1], [1, 1], 2),
    ((1, 2, 5, 5), 'kernel_size: 2 stride: 2 force_nd_im2col: true', [2, 2], [2, 2], [0, 0], [1, 1], 1),
]


@pytest.mark.parametrize('case', IM2COL_CASES, ids=[c[1] for c in IM2COL_CASES])
def test_im2col_forward_matches_reference(case):
    shape, param, kernel, stride, pad, dilation, axis = case
    x = R.randn(*shape)
    net = forward(IM2COL % param, x=x)
    want = im2col_reference(x, kernel, stride, pad, dilation, axis)
    assert net.blobs['y'].shape == want.shape
    np.testing.assert_array_equal(net.blobs['y'].data, want)


def test_im2col_channel_order_by_hand():
    # One channel pair, 2x2 kernel over a 3x3 image: column 0 is every window's top-left cell.
    x = np.arange(18.).reshape(1, 2, 3, 3)
    y = forward(IM2COL % 'kernel_size: 2', x=x).blobs['y'].data
    np.testing.assert_array_equal(y[0, 0], [[0, 1], [3, 4]])
    np.testing.assert_array_equal(y[0, 3], [[4, 5], [7, 8]])        # bottom-right of channel 0
    np.testing.assert_array_equal(y[0, 4], [[9, 10], [12, 13]])     # channel 1 starts at 4


@pytest.mark.parametrize('case', [IM2COL_CASES[0], IM2COL_CASES[1], IM2COL_CASES[2]],
                         ids=['2d-uneven', '2d-even', '2d-dilated'])
def test_im2col_gradcheck_2d(case):
    shape, param = case[0], case[1]
    grad(IM2COL % param, x=R.randn(1, *shape[1:]))


def test_im2col_gradcheck_3d():
    grad(IM2COL % 'kernel_size: 2 stride: 2 stride: 1 stride: 1 pad: 1 dilation: 1 dilation: 2 '
                  'dilation: 1', x=R.randn(1, 2, 3, 4, 3))


@pytest.mark.parametrize('size', [(4, 4), (5, 5)])
def test_im2col_backward_is_col2im(size):
    h, w = size
    oh, ow = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    x = R.randn(1, 2, h, w)
    dy = R.randn(1, 2 * 9, oh, ow)
    net = forward(IM2COL % 'kernel_size: 3 stride: 2 pad: 1', backward_diffs={'y': dy}, x=x)
    # col2im by hand: add every column entry back to the cell it was read from.
    want = np.zeros_like(x)
    for c, ki, kj, oi, oj in itertools.product(range(2), range(3), range(3), range(oh), range(ow)):
        i, j = oi * 2 - 1 + ki, oj * 2 - 1 + kj
        if 0 <= i < h and 0 <= j < w:
            want[0, c, i, j] += dy[0, c * 9 + ki * 3 + kj, oi, oj]
    np.testing.assert_allclose(net.blobs['x'].diff, want, rtol=1e-12)


def test_im2col_errors():
    x2, x3 = inputs(x=(1, 2, 5, 5)), inputs(x=(1, 2, 4, 4, 4))
    cases = [
        (x2, '', caffe.NetError, r'kernel_size must be specified once, or once per spatial '
                                 r'dimension \(kernel_size specified 0 times; 2 spatial dims\);'),
        (x3, 'kernel_size: 2 kernel_size: 3', caffe.NetError, r'specified 2 times; 3 spatial dims'),
        (x3, 'kernel_h: 2 kernel_w: 2', caffe.NetError,
         'kernel_h & kernel_w can only be used for 2D convolution.'),
        (x2, 'kernel_size: 2 kernel_h: 2 kernel_w: 2', caffe.NetError,
         'Either kernel_size or kernel_h/w should be specified; not both.'),
        (x2, 'kernel_h: 2', caffe.NetError, 'Filter dimensions must be nonzero.'),
        (x2, 'kernel_size: 2 stride: 0', caffe.NetError, 'Stride dimensions must be nonzero.'),
        (x2, 'kernel_size: 2 pad: 1 pad: 1 pad: 1', caffe.NetError,
         r'pad must be specified once.*\(pad specified 3 times; 2 spatial dims\);'),
        (x2, 'kernel_size: 2 dilation: 1 dilation: 1 dilation: 1', caffe.NetError,
         r'\(dilation specified 3 times; 2 spatial dims\)\.'),
        (x2, 'kernel_size: 2 axis: 3', caffe.ShapeError, r'num_spatial_axes_ >= 1 \(0 vs. 1\)'),
        (x2, 'kernel_size: 9', caffe.ShapeError, 'too small for kernel'),
    ]
    for net_inputs, param, err, msg in cases:
        with pytest.raises(err, match="'i'.*" + msg):
            make_net(net_inputs + IM2COL % param)


def test_im2col_net_spec_round_trip(tmp_path):
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.y = L.Im2col(n.x, convolution_param=dict(kernel_size=[2], stride=[2]))
    path = tmp_path / 'im2col.prototxt'
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    x = R.randn(1, 2, 4, 4).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs['y'].data, im2col_reference(x, [2, 2], [2, 2], [0, 0],
                                                                        [1, 1]))


def test_layer_types_are_registered():
    for t in ('Parameter', 'BatchReindex', 'Filter', 'ContrastiveLoss', 'SPP', 'Im2col'):
        assert t in caffe.layer_type_list()
