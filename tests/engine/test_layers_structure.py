"""Structure layers: Reshape, Flatten, Concat, Slice, Tile, Crop, Eltwise, Reduction, ArgMax,
Accuracy. Shapes and values against hand-computed ones, Caffe's checks and tie rules, and
float64 gradient checks for every layer with a backward."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from gradcheck import check_net_gradients

R = np.random.RandomState(3)


def make_net(text, phase=caffe.TEST):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, phase)


def inputs(**shapes):
    return ''.join('input: "%s" input_shape { %s }\n' % (n, ' '.join('dim: %d' % d for d in s))
                   for n, s in shapes.items())


def forward(text, phase=caffe.TEST, **arrays):
    """Build a float64 net with inputs shaped like `arrays`, run forward, return it."""
    with caffe.precision(torch.float64):
        net = make_net(inputs(**{k: v.shape for k, v in arrays.items()}) + text, phase)
        for k, v in arrays.items():
            net.blobs[k].data[...] = v
        net.forward()
    return net


def grad(text, **arrays):
    return check_net_gradients('force_backward: true\n' + inputs(**{k: v.shape for k, v in arrays.items()})
                               + text, arrays)


# ---- Reshape, Flatten ------------------------------------------------------------------------------

RESHAPES = [
    ('shape { dim: 0 dim: -1 }', (2, 60)),
    ('shape { dim: 3 dim: 2 dim: 0 dim: 0 }', (3, 2, 4, 5)),  # 0 copies the bottom's axes 2, 3
    ('shape { dim: -1 dim: 4 dim: 5 }', (6, 4, 5)),
    ('shape { dim: 1 dim: 1 } axis: 1 num_axes: 0', (2, 1, 1, 3, 4, 5)),  # inserts axes
    ('shape { dim: 12 } axis: 1 num_axes: 2', (2, 12, 5)),
    ('shape { dim: -1 } axis: -3', (2, 3, 20)),  # axis -3 replaces the last two axes
    ('shape { dim: 5 dim: 1 } axis: -2', (2, 3, 4, 5, 1)),  # axis -2 replaces the last axis
    ('shape { dim: 1 } axis: -1 num_axes: 0', (2, 3, 4, 5, 1)),
    ('shape { dim: 0 dim: 0 dim: 0 dim: 0 }', (2, 3, 4, 5)),
]


@pytest.mark.parametrize('param,want', RESHAPES, ids=[p for p, _ in RESHAPES])
def test_reshape_shapes_and_shared_memory(param, want):
    x = R.randn(2, 3, 4, 5)
    net = forward('layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { %s } }' % param, x=x)
    assert net.blobs['y'].data.shape == want
    np.testing.assert_array_equal(net.blobs['y'].data.ravel(), x.ravel())
    assert np.shares_memory(net.blobs['y'].data, net.blobs['x'].data)


def test_reshape_errors():
    base = inputs(x=(2, 3, 4)) + 'layer { name: "r" type: "Reshape" bottom: "x" top: "%s" reshape_param { %s } }'
    cases = [('shape { dim: -1 dim: -1 }', 'y', caffe.NetError, 'multiple -1'),
             ('shape { dim: 5 dim: -1 }', 'y', caffe.ShapeError, 'divisible'),
             ('shape { dim: 7 dim: 2 }', 'y', caffe.ShapeError, 'count must match'),
             ('shape { dim: 0 dim: 0 dim: 0 dim: 0 }', 'y', caffe.ShapeError, 'no corresponding'),
             ('shape { dim: 1 } axis: 5', 'y', caffe.ShapeError, 'out of range'),
             ('shape { dim: 1 } axis: 1 num_axes: 4', 'y', caffe.ShapeError, 'num_axes'),
             ('shape { dim: -1 }', 'x', caffe.NetError, 'in-place')]
    for param, top, err, msg in cases:
        with pytest.raises(err, match="'r'.*" + msg):
            make_net(base % (top, param))


@pytest.mark.parametrize('param,want', [('', (2, 60)), ('axis: 2', (2, 3, 20)),
                                        ('axis: 1 end_axis: 2', (2, 12, 5)),
                                        ('axis: 0 end_axis: -2', (24, 5)),
                                        ('axis: -1', (2, 3, 4, 5))])
def test_flatten_shapes(param, want):
    x = R.randn(2, 3, 4, 5)
    net = forward('layer { name: "f" type: "Flatten" bottom: "x" top: "y" flatten_param { %s } }' % param, x=x)
    assert net.blobs['y'].data.shape == want
    assert np.shares_memory(net.blobs['y'].data, net.blobs['x'].data)
    with pytest.raises(caffe.NetError, match='in-place'):
        make_net(inputs(x=(2, 3)) + 'layer { name: "f" type: "Flatten" bottom: "x" top: "x" }')


def test_reshape_flatten_gradients():
    grad('layer { name: "r" type: "Reshape" bottom: "x" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }\n'
         'layer { name: "s" type: "Sigmoid" bottom: "r" top: "s" }\n'
         'layer { name: "f" type: "Flatten" bottom: "s" top: "f" }\n'
         'layer { name: "t" type: "TanH" bottom: "f" top: "t" }\n', x=R.randn(2, 3, 2, 2))


# ---- Concat, Slice -------------------------------------------------------------------------------

def test_concat_forward_axes():
    a, b, c = R.randn(2, 3, 4), R.randn(2, 1, 4), R.randn(2, 2, 4)
    net = forward('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "y" }', a=a, b=b, c=c)
    np.testing.assert_array_equal(net.blobs['y'].data, np.concatenate([a, b, c], axis=1))
    a2 = R.randn(3, 3, 4)
    net = forward('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: 0 } }',
                  a=a, b=a2)
    np.testing.assert_array_equal(net.blobs['y'].data, np.concatenate([a, a2]))
    net = forward('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { concat_dim: 0 } }',
                  a=a, b=a2)
    assert net.blobs['y'].data.shape == (5, 3, 4)
    net = forward('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: -1 } }',
                  a=a, b=a)
    assert net.blobs['y'].data.shape == (2, 3, 8)


def test_concat_errors():
    with pytest.raises(caffe.NetError, match='not both'):
        make_net(inputs(a=(2, 3), b=(2, 3)) +
                 'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: 1 concat_dim: 1 } }')
    with pytest.raises(caffe.ShapeError, match="'c'.*same shape"):
        make_net(inputs(a=(2, 3), b=(3, 3)) + 'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" }')
    with pytest.raises(caffe.ShapeError, match="'c'.*#axes"):
        make_net(inputs(a=(2, 3), b=(2, 3, 1)) + 'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" }')


def test_slice_forward():
    x = R.randn(2, 6, 3)
    net = forward('layer { name: "s" type: "Slice" bottom: "x" top: "p" top: "q" top: "r" '
                  '        slice_param { slice_point: 1 slice_point: 4 } }', x=x)
    for name, part in zip('pqr', (x[:, :1], x[:, 1:4], x[:, 4:])):
        np.testing.assert_array_equal(net.blobs[name].data, part)
    net = forward('layer { name: "s" type: "Slice" bottom: "x" top: "p" top: "q" top: "r" slice_param { axis: -1 } }', x=x)
    for i, name in enumerate('pqr'):
        np.testing.assert_array_equal(net.blobs[name].data, x[:, :, i:i + 1])
    net = forward('layer { name: "s" type: "Slice" bottom: "x" top: "p" top: "q" slice_param { slice_dim: 0 } }', x=x)
    np.testing.assert_array_equal(net.blobs['q'].data, x[1:])
    # The tops are copies: writing into one leaves the bottom alone.
    net.blobs['p'].data[...] = 0
    np.testing.assert_array_equal(net.blobs['x'].data, x)


def test_slice_errors():
    base = inputs(x=(2, 6)) + 'layer { name: "s" type: "Slice" bottom: "x" %s slice_param { %s } }'
    with pytest.raises(caffe.ShapeError, match='evenly'):
        make_net(base % ('top: "p" top: "q" top: "r" top: "t"', ''))
    with pytest.raises(caffe.ShapeError, match='slice_point'):
        make_net(base % ('top: "p" top: "q"', 'slice_point: 1 slice_point: 2'))
    with pytest.raises(caffe.ShapeError, match='increasing'):
        make_net(base % ('top: "p" top: "q" top: "r"', 'slice_point: 3 slice_point: 2'))
    with pytest.raises(caffe.NetError, match='not both'):
        make_net(base % ('top: "p" top: "q"', 'axis: 1 slice_dim: 1'))


def test_concat_slice_gradients():
    grad('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }\n'
         'layer { name: "s" type: "Slice" bottom: "c" top: "p" top: "q" top: "r" '
         '        slice_param { slice_point: 1 slice_point: 3 } }\n'
         'layer { name: "sq" type: "Power" bottom: "q" top: "sq" power_param { power: 2 } }\n'
         'layer { name: "c2" type: "Concat" bottom: "r" bottom: "sq" top: "c2" concat_param { axis: 0 } }\n',
         a=R.randn(2, 2, 3), b=R.randn(2, 3, 3))


# ---- Tile, Crop ----------------------------------------------------------------------------------

def test_tile_forward_and_errors():
    x = R.randn(2, 3, 2)
    net = forward('layer { name: "t" type: "Tile" bottom: "x" top: "y" tile_param { tiles: 3 } }', x=x)
    np.testing.assert_array_equal(net.blobs['y'].data, np.tile(x, (1, 3, 1)))
    net = forward('layer { name: "t" type: "Tile" bottom: "x" top: "y" tile_param { axis: -1 tiles: 2 } }', x=x)
    np.testing.assert_array_equal(net.blobs['y'].data, np.tile(x, (1, 1, 2)))
    with pytest.raises(caffe.NetError, match='must be specified'):
        make_net(inputs(x=(2, 3)) + 'layer { name: "t" type: "Tile" bottom: "x" top: "y" }')
    with pytest.raises(caffe.NetError, match='positive'):
        make_net(inputs(x=(2, 3)) + 'layer { name: "t" type: "Tile" bottom: "x" top: "y" tile_param { tiles: 0 } }')


def test_crop_forward_and_errors():
    x, ref = R.randn(2, 3, 6, 7), np.zeros((1, 1, 3, 4))
    net = forward('layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" crop_param { offset: 2 } }',
                  x=x, ref=ref)
    np.testing.assert_array_equal(net.blobs['y'].data, x[:, :, 2:5, 2:6])
    net = forward('layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" '
                  '        crop_param { offset: 1 offset: 3 } }', x=x, ref=ref)
    np.testing.assert_array_equal(net.blobs['y'].data, x[:, :, 1:4, 3:7])
    net = forward('layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" crop_param { axis: 1 } }',
                  x=x, ref=np.zeros((1, 2, 3, 4)))
    np.testing.assert_array_equal(net.blobs['y'].data, x[:, :2, :3, :4])
    with pytest.raises(caffe.ShapeError, match="'c'.*out-of-bounds"):
        make_net(inputs(x=(2, 3, 6, 7), ref=(1, 1, 3, 4)) +
                 'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" crop_param { offset: 4 } }')
    with pytest.raises(caffe.ShapeError, match="'c'.*number of offset"):
        make_net(inputs(x=(2, 3, 6, 7), ref=(1, 1, 3, 4)) +
                 'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" '
                 '        crop_param { offset: 1 offset: 1 offset: 1 } }')


def test_tile_crop_gradients():
    net = check_net_gradients(
        'force_backward: true\n' + inputs(x=(2, 2, 4, 5), ref=(1, 1, 2, 3)) +
        'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "c" crop_param { offset: 1 offset: 2 } }\n'
        'layer { name: "t" type: "Tile" bottom: "c" top: "t" tile_param { axis: 2 tiles: 3 } }\n',
        {'x': R.randn(2, 2, 4, 5), 'ref': R.randn(1, 1, 2, 3)}, skip_inputs=['ref'])
    assert not net.blobs['ref'].diff.any()  # the reference bottom gets no gradient


# ---- Eltwise -----------------------------------------------------------------------------------

ELT3 = 'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { %s } }'


def test_eltwise_forward():
    a, b, c = R.randn(2, 3), R.randn(2, 3), R.randn(2, 3)
    net = forward(ELT3 % 'operation: SUM coeff: 1 coeff: -0.5 coeff: 2', a=a, b=b, c=c)
    np.testing.assert_allclose(net.blobs['y'].data, a - 0.5 * b + 2 * c, rtol=1e-12)
    net = forward(ELT3 % '', a=a, b=b, c=c)  # SUM is the default
    np.testing.assert_allclose(net.blobs['y'].data, a + b + c, rtol=1e-12)
    net = forward(ELT3 % 'operation: PROD', a=a, b=b, c=c)
    np.testing.assert_allclose(net.blobs['y'].data, a * b * c, rtol=1e-12)
    net = forward(ELT3 % 'operation: MAX', a=a, b=b, c=c)
    np.testing.assert_array_equal(net.blobs['y'].data, np.maximum(np.maximum(a, b), c))


def test_eltwise_max_routes_ties_like_caffes_cpu_mask():
    """Caffe's CPU mask: bottom 1 beats bottom 0 unless 0 is strictly greater; later bottoms
    take over only when strictly greater than the running max."""
    a = np.array([[1.0, 2.0, 5.0, 0.0]])
    b = np.array([[1.0, 3.0, 5.0, 0.0]])
    c = np.array([[0.0, 3.0, 5.0, 1.0]])
    net = forward('force_backward: true\n' + ELT3 % 'operation: MAX', a=a, b=b, c=c)
    net.backward(y=np.array([[10.0, 20.0, 30.0, 40.0]]))
    np.testing.assert_array_equal(net.blobs['a'].diff, [[0, 0, 0, 0]])
    np.testing.assert_array_equal(net.blobs['b'].diff, [[10, 20, 30, 0]])
    np.testing.assert_array_equal(net.blobs['c'].diff, [[0, 0, 0, 40]])


def test_eltwise_prod_gradient_variants_and_errors():
    a, b = np.array([[2.0, 0.0]]), np.array([[3.0, 4.0]])
    two = 'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param { %s } }'
    net = forward('force_backward: true\n' + two % 'operation: PROD', a=a, b=b)
    net.backward(y=np.ones((1, 2)))
    np.testing.assert_array_equal(net.blobs['b'].diff, [[2.0, 0.0]])
    np.testing.assert_array_equal(net.blobs['a'].diff, [[3.0, 4.0]])
    # Unstable: top / bottom, which is NaN where the bottom is 0 (0 / 0), as in Caffe.
    net = forward('force_backward: true\n' + two % 'operation: PROD stable_prod_grad: false', a=a, b=b)
    net.backward(y=np.ones((1, 2)))
    assert net.blobs['a'].diff[0, 0] == 3.0 and np.isnan(net.blobs['a'].diff[0, 1])
    with pytest.raises(caffe.NetError, match='one coefficient per bottom'):
        make_net(inputs(a=(1, 2), b=(1, 2)) + two % 'coeff: 1')
    with pytest.raises(caffe.NetError, match='only takes coefficients for summation'):
        make_net(inputs(a=(1, 2), b=(1, 2)) + two % 'operation: PROD coeff: 1 coeff: 2')
    with pytest.raises(caffe.ShapeError, match=r"'e'.*bottom\[0\]: 1 2 \(2\), bottom\[1\]: 2 1 \(2\)"):
        make_net(inputs(a=(1, 2), b=(2, 1)) + two % '')


@pytest.mark.parametrize('param', ['operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5', 'operation: PROD',
                                   'operation: PROD stable_prod_grad: false', 'operation: MAX'])
def test_eltwise_gradients(param):
    grad(ELT3 % param, a=R.randn(2, 3, 2), b=R.randn(2, 3, 2), c=R.randn(2, 3, 2))


def test_eltwise_in_place():
    text = (inputs(a=(2, 3), b=(2, 3)) +
            'layer { name: "p" type: "Power" bottom: "a" top: "pa" power_param { scale: 2 } }\n'
            'layer { name: "e" type: "Eltwise" bottom: "pa" bottom: "b" top: "pa" eltwise_param { operation: PROD } }\n')
    check_net_gradients('force_backward: true\n' + text, {'a': R.randn(2, 3), 'b': R.randn(2, 3)})


# ---- Reduction -------------------------------------------------------------------------------------

@pytest.mark.parametrize('op,fn', [('SUM', lambda v: v.sum(-1)), ('ASUM', lambda v: np.abs(v).sum(-1)),
                                   ('SUMSQ', lambda v: (v * v).sum(-1)), ('MEAN', lambda v: v.mean(-1))])
@pytest.mark.parametrize('axis', [0, 1, -1])
def test_reduction(op, fn, axis):
    x = np.sign(R.randn(2, 3, 4)) * (0.1 + R.rand(2, 3, 4))
    layer = ('layer { name: "r" type: "Reduction" bottom: "x" top: "y" '
             'reduction_param { operation: %s axis: %d coeff: 1.5 } }' % (op, axis))
    net = forward(layer, x=x)
    keep = axis % 3
    want = 1.5 * fn(x.reshape(x.shape[:keep] + (-1,)))
    assert net.blobs['y'].data.shape == x.shape[:keep]
    np.testing.assert_allclose(net.blobs['y'].data, want, rtol=1e-12)
    grad(layer, x=x)


# ---- ArgMax -----------------------------------------------------------------------------------------

def test_argmax_shapes_values_and_ties():
    s = np.array([[0.1, 0.9, 0.3, 0.9, 0.2], [5.0, 4.0, 3.0, 2.0, 1.0]])
    net = forward('layer { name: "am" type: "ArgMax" bottom: "s" top: "y" argmax_param { top_k: 3 out_max_val: true } }', s=s)
    # (N, 2, top_k): indices then values; equal scores list the larger index first.
    np.testing.assert_allclose(net.blobs['y'].data, [[[3, 1, 2], [0.9, 0.9, 0.3]], [[0, 1, 2], [5, 4, 3]]])
    net = forward('layer { name: "am" type: "ArgMax" bottom: "s" top: "y" }', s=s)
    np.testing.assert_array_equal(net.blobs['y'].data, [[[3]], [[0]]])
    x = R.randn(2, 3, 4, 5)
    net = forward('layer { name: "am" type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 2 } }', x=x)
    assert net.blobs['y'].data.shape == (2, 1, 2, 1)
    flat = x.reshape(2, -1)
    np.testing.assert_array_equal(net.blobs['y'].data[:, 0, :, 0], np.argsort(-flat, axis=1)[:, :2])
    net = forward('layer { name: "am" type: "ArgMax" bottom: "x" top: "y" argmax_param { axis: 1 top_k: 2 } }', x=x)
    assert net.blobs['y'].data.shape == (2, 2, 4, 5)
    np.testing.assert_array_equal(net.blobs['y'].data, np.argsort(-x, axis=1)[:, :2])
    net = forward('layer { name: "am" type: "ArgMax" bottom: "x" top: "y" '
                  '        argmax_param { axis: -1 out_max_val: true } }', x=x)
    np.testing.assert_array_equal(net.blobs['y'].data, x.max(axis=-1, keepdims=True))


def test_argmax_errors():
    with pytest.raises(caffe.ShapeError, match="'am'.*flattened"):
        make_net(inputs(s=(2, 3)) + 'layer { name: "am" type: "ArgMax" bottom: "s" top: "y" argmax_param { top_k: 4 } }')
    with pytest.raises(caffe.ShapeError, match="'am'.*dimension of the axis"):
        make_net(inputs(s=(2, 3)) + 'layer { name: "am" type: "ArgMax" bottom: "s" top: "y" '
                                    'argmax_param { top_k: 3 axis: 0 } }')
    with pytest.raises(caffe.NetError, match='less than 1'):
        make_net(inputs(s=(2, 3)) + 'layer { name: "am" type: "ArgMax" bottom: "s" top: "y" argmax_param { top_k: 0 } }')


# ---- Accuracy -----------------------------------------------------------------------------------

ACC = 'layer { name: "acc" type: "Accuracy" bottom: "s" bottom: "l" top: "acc" %s accuracy_param { %s } }'


def test_accuracy_top_k_ignore_label_and_per_class():
    s = np.array([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.2, 0.4], [0.0, 0.0, 1.0]])
    l = np.array([1, 2, 2, 0, 1.0])
    net = forward(ACC % ('top: "per"', ''), s=s, l=l)
    assert net.blobs['acc'].data.shape == ()
    assert net.blobs['acc'].data == pytest.approx(2 / 5)
    np.testing.assert_allclose(net.blobs['per'].data, [0.0, 0.5, 0.5])
    net = forward(ACC % ('', 'top_k: 2'), s=s, l=l)
    # Hits: items 0, 2 and 3; items 1 and 4 have two other classes at or above the truth.
    assert net.blobs['acc'].data == pytest.approx(3 / 5)
    net = forward(ACC % ('top: "per"', 'ignore_label: 1'), s=s, l=l)
    assert net.blobs['acc'].data == pytest.approx(1 / 3)
    np.testing.assert_allclose(net.blobs['per'].data, [0.0, 0.0, 0.5])
    net = forward(ACC % ('top: "per"', 'ignore_label: 1'), s=s[[0, 4]], l=l[[0, 4]])
    assert net.blobs['acc'].data == 0  # every label ignored
    np.testing.assert_array_equal(net.blobs['per'].data, [0, 0, 0])


def test_accuracy_ties_count_against_the_true_class():
    """BVLC's rule: a hit needs fewer than top_k other classes scoring >= the true class."""
    s = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.2]])
    l = np.array([0, 1, 2.0])
    assert forward(ACC % ('', ''), s=s, l=l).blobs['acc'].data == 0
    assert forward(ACC % ('', 'top_k: 2'), s=s, l=l).blobs['acc'].data == pytest.approx(2 / 3)
    assert forward(ACC % ('', 'top_k: 3'), s=s, l=l).blobs['acc'].data == 1


def test_accuracy_spatial_axis():
    s = R.randn(2, 4, 3, 2)
    l = R.randint(0, 4, size=(2, 1, 3, 2)).astype(float)
    net = forward(ACC % ('', ''), s=s, l=l)
    assert net.blobs['acc'].data == pytest.approx((s.argmax(axis=1) == l[:, 0]).mean())
    s2 = np.moveaxis(s, 1, -1).copy()
    net = forward(ACC % ('', 'axis: -1'), s=s2, l=l.reshape(2, 3, 2))
    assert net.blobs['acc'].data == pytest.approx((s.argmax(axis=1) == l[:, 0]).mean())


def test_accuracy_errors():
    with pytest.raises(caffe.ShapeError, match="'acc'.*Number of labels"):
        make_net(inputs(s=(4, 3), l=(3,)) + ACC % ('', ''))
    with pytest.raises(caffe.ShapeError, match="'acc'.*top_k"):
        make_net(inputs(s=(4, 3), l=(4,)) + ACC % ('', 'top_k: 4'))
    with pytest.raises(caffe.LayerError, match="'acc'.*label 3 out of range"):
        forward(ACC % ('', ''), s=R.randn(2, 3), l=np.array([0.0, 3.0]))


def test_accuracy_and_argmax_do_not_break_force_backward():
    text = ('force_backward: true\n' + inputs(x=(4, 3), l=(4,)) +
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "s" '
            '        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }\n'
            'layer { name: "am" type: "ArgMax" bottom: "s" top: "am" }\n'
            'layer { name: "acc" type: "Accuracy" bottom: "s" bottom: "l" top: "acc" }\n')
    net = make_net(text, caffe.TRAIN)
    net.blobs['x'].data[...] = R.randn(4, 3)
    net.forward()
    net.backward()
    assert not net.params['ip'][0].diff.any()


def test_layer_types_are_registered():
    for t in ('Split', 'Silence', 'Reshape', 'Flatten', 'Concat', 'Slice', 'Tile', 'Crop',
              'Eltwise', 'Reduction', 'ArgMax', 'Accuracy'):
        assert t in caffe.layer_type_list()
