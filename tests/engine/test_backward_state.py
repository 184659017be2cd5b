"""Backward whatever ran before it, as in Caffe.

Caffe's backward reads the blobs as they are: right after construction (no forward),
after Python rewrote a bottom, after a reshape. The engine's layers keep forward state
(autograd graphs, masks, probabilities) that is only valid for the data forward saw, so the
net rebuilds it from the current bottoms when they changed, and never otherwise (the
training path must not compute a layer twice). Python layers are left alone.
"""
import numpy as np
import pytest

import caffe
from caffe.layers.base import TorchLayer


def _net(tmp_path, body, inputs, phase=caffe.TRAIN, name='n.prototxt'):
    text = "name: 'n' force_backward: true\n"
    for blob, shape in inputs.items():
        text += "input: '%s' input_shape { %s }\n" % (blob, ' '.join('dim: %d' % d for d in shape))
    path = tmp_path / name
    path.write_text(text + body)
    return caffe.Net(str(path), phase)


# One layer per case: its prototxt, its bottoms' shapes, and how to fill them.
RNG = np.random.RandomState(0)
CASES = {
    'Convolution': ("layer { name: 'l' type: 'Convolution' bottom: 'x' top: 'y' convolution_param "
                    "{ num_output: 3 kernel_size: 2 weight_filler { type: 'gaussian' std: 1 } "
                    "bias_filler { type: 'constant' value: 1 } } }", {'x': (2, 2, 4, 5)}),
    'InnerProduct': ("layer { name: 'l' type: 'InnerProduct' bottom: 'x' top: 'y' "
                     "inner_product_param { num_output: 4 weight_filler { type: 'gaussian' std: 1 } } }",
                     {'x': (3, 2, 2, 2)}),
    'PoolingMax': ("layer { name: 'l' type: 'Pooling' bottom: 'x' top: 'y' pooling_param "
                   "{ pool: MAX kernel_size: 2 stride: 2 } }", {'x': (2, 2, 4, 4)}),
    'PoolingAve': ("layer { name: 'l' type: 'Pooling' bottom: 'x' top: 'y' pooling_param "
                   "{ pool: AVE kernel_size: 3 stride: 2 pad: 1 } }", {'x': (2, 2, 5, 5)}),
    'Sigmoid': ("layer { name: 'l' type: 'Sigmoid' bottom: 'x' top: 'y' }", {'x': (2, 3, 4)}),
    'ReLU': ("layer { name: 'l' type: 'ReLU' bottom: 'x' top: 'y' relu_param { negative_slope: 0.1 } }",
             {'x': (2, 3, 4)}),
    'LRN': ("layer { name: 'l' type: 'LRN' bottom: 'x' top: 'y' lrn_param { local_size: 3 } }",
            {'x': (2, 4, 3, 3)}),
    'BatchNorm': ("layer { name: 'l' type: 'BatchNorm' bottom: 'x' top: 'y' }", {'x': (4, 3, 2, 2)}),
    'MVN': ("layer { name: 'l' type: 'MVN' bottom: 'x' top: 'y' }", {'x': (2, 3, 4, 4)}),
    'EltwiseProd': ("layer { name: 'l' type: 'Eltwise' bottom: 'x' bottom: 'z' top: 'y' "
                    "eltwise_param { operation: PROD } }", {'x': (2, 3), 'z': (2, 3)}),
    'EltwiseMax': ("layer { name: 'l' type: 'Eltwise' bottom: 'x' bottom: 'z' top: 'y' "
                   "eltwise_param { operation: MAX } }", {'x': (2, 3), 'z': (2, 3)}),
    'Softmax': ("layer { name: 'l' type: 'Softmax' bottom: 'x' top: 'y' }", {'x': (3, 5)}),
    'SoftmaxWithLoss': ("layer { name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'label' "
                        "top: 'y' }", {'x': (4, 5), 'label': (4,)}),
    'SmoothL1Loss': ("layer { name: 'l' type: 'SmoothL1Loss' bottom: 'x' bottom: 'z' top: 'y' }",
                     {'x': (3, 4), 'z': (3, 4)}),
    'EuclideanLoss': ("layer { name: 'l' type: 'EuclideanLoss' bottom: 'x' bottom: 'z' top: 'y' }",
                      {'x': (3, 4), 'z': (3, 4)}),
    'ROIPooling': ("layer { name: 'l' type: 'ROIPooling' bottom: 'x' bottom: 'rois' top: 'y' "
                   "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 } }",
                   {'x': (1, 2, 6, 6), 'rois': (3, 5)}),
    'Scale': ("layer { name: 'l' type: 'Scale' bottom: 'x' top: 'y' scale_param { bias_term: true "
              "filler { type: 'gaussian' std: 1 } } }", {'x': (2, 3, 2, 2)}),
    'Concat': ("layer { name: 'l' type: 'Concat' bottom: 'x' bottom: 'z' top: 'y' }",
               {'x': (2, 3), 'z': (2, 2)}),
}


def _fill(net, inputs, seed):
    rng = np.random.RandomState(seed)
    for blob, shape in inputs.items():
        if blob == 'label':
            net.blobs[blob].data[...] = rng.randint(5, size=shape)
        elif blob == 'rois':
            xy = np.sort(rng.uniform(0, 11, size=(shape[0], 2, 2)), axis=1)
            net.blobs[blob].data[...] = np.c_[np.zeros(shape[0]), xy[:, :, 0], xy[:, :, 1]][:, [0, 1, 3, 2, 4]]
        else:
            net.blobs[blob].data[...] = rng.standard_normal(shape)
    if 'y' in net.blobs and not net.layers[-1].type.endswith('Loss'):
        net.blobs['y'].diff[...] = rng.standard_normal(net.blobs['y'].shape)


def _twin(tmp_path, net, body, inputs):
    """A new net of the same body holding `net`'s weights."""
    twin = _net(tmp_path, body, inputs)
    for name in net.params:
        for a, b in zip(net.params[name], twin.params[name]):
            b.data[...] = a.data
    return twin


def _grads(net, inputs):
    out = {b: net.blobs[b].diff.copy() for b in inputs if b not in ('label', 'rois')}
    for i, p in enumerate(net.params.get('l', [])):
        out['param%d' % i] = p.diff.copy()
    return out


@pytest.mark.parametrize('case', sorted(CASES))
def test_backward_right_after_construction(tmp_path, case):
    """No forward at all: the gradients are those of forward then backward on that data."""
    body, inputs = CASES[case]
    ref = _net(tmp_path, body, inputs)
    _fill(ref, inputs, 1)
    ref.forward()
    ref.clear_param_diffs()
    _fill(ref, inputs, 1)  # same data, same top diffs
    ref.backward()
    fresh = _twin(tmp_path, ref, body, inputs)
    _fill(fresh, inputs, 1)
    fresh.backward()
    want, got = _grads(ref, inputs), _grads(fresh, inputs)
    assert want.keys() == got.keys()
    for k in want:
        if k == 'x':
            assert np.abs(want[k]).sum() > 0, case  # a check that can fail
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg='%s %s' % (case, k))


@pytest.mark.parametrize('case,precision', [
    (case, 'fp32') for case in ('Convolution', 'InnerProduct', 'PoolingMax', 'SoftmaxWithLoss', 'LRN')
] + [('Convolution', 'bf16'), ('InnerProduct', 'bf16')])
def test_bottom_rewritten_between_forward_and_backward(tmp_path, case, precision):
    """Caffe's backward reads the bottom as it is now: the gradients are those at the new data.
    Under bf16 forward keeps bf16 casts of its bottom and weights for backward: the rebuilt
    state must be of the new data too."""
    body, inputs = CASES[case]
    caffe.set_precision(precision)
    try:
        net = _net(tmp_path, body, inputs)
        _fill(net, inputs, 1)
        net.forward()
        _fill(net, inputs, 2)  # Python writes new values into the bottoms (and new top diffs)
        net.clear_param_diffs()
        net.backward()
        at_new = _twin(tmp_path, net, body, inputs)
        _fill(at_new, inputs, 2)
        at_new.forward()
        _fill(at_new, inputs, 2)
        at_new.backward()
    finally:
        caffe.set_precision('fp32')
    want, got = _grads(at_new, inputs), _grads(net, inputs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg='%s %s' % (case, k))


def _count_calls(layer, method):
    """Wrap `layer.<method>` so that its calls are counted in the returned list."""
    calls = []
    original = getattr(layer, method)

    def counted(*args):
        calls.append(1)
        return original(*args)
    setattr(layer, method, counted)
    return calls


def test_forward_then_backward_computes_each_layer_once(tmp_path):
    body = (CASES['Convolution'][0] +
            "layer { name: 'p' type: 'Pooling' bottom: 'y' top: 'q' pooling_param { pool: MAX kernel_size: 2 } }")
    net = _net(tmp_path, body, {'x': (2, 2, 5, 5)})
    conv, pool = net.layers[0], net.layers[1]
    assert isinstance(conv, TorchLayer) and isinstance(pool, TorchLayer)
    c_fresh, p_fresh = _count_calls(conv, 'refresh_for_backward'), _count_calls(pool, 'refresh_for_backward')
    p_calls = _count_calls(pool, 'compute')
    net.blobs['x'].data[...] = 1.0
    net.forward()
    net.blobs['q'].diff[...] = 1.0
    net.backward()
    net.backward()  # twice: still nothing recomputed
    assert (len(c_fresh), len(p_fresh), len(p_calls)) == (0, 0, 1)
    # Python is handed the pooling layer's bottom: it may have written it, so the pooling
    # layer's backward recomputes from it; the convolution's bottom was not touched.
    net.blobs['y'].data
    net.backward()
    assert (len(c_fresh), len(p_fresh), len(p_calls)) == (0, 1, 2)


def test_in_place_layer_keeps_its_forward_state(tmp_path):
    """An in-place blob holds the layer's output: reading it must not make BatchNorm treat
    that output as its input."""
    body = ("layer { name: 'l' type: 'BatchNorm' bottom: 'x' top: 'b' }"
            "layer { name: 'n' type: 'BatchNorm' bottom: 'b' top: 'b' }")
    inputs = {'x': (4, 3, 2, 2)}
    grads = []
    for read in (False, True):
        net = _net(tmp_path, body, inputs)
        net.blobs['x'].data[...] = RNG.standard_normal(inputs['x']) if not grads else x0
        x0 = net.blobs['x'].data.copy()
        net.forward()
        if read:
            net.blobs['b'].data  # handed to Python between forward and backward
        net.blobs['b'].diff[...] = np.arange(48).reshape(4, 3, 2, 2) % 5
        net.backward()
        grads.append(net.blobs['x'].diff.copy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-6)


def test_dropout_keeps_its_mask_and_draws_one_before_any_forward(tmp_path):
    body = "layer { name: 'd' type: 'Dropout' bottom: 'x' top: 'y' dropout_param { dropout_ratio: 0.5 } }"
    net = _net(tmp_path, body, {'x': (4, 50)})
    net.blobs['x'].data[...] = 1.0
    net.blobs['y'].diff[...] = 3.0
    net.backward()  # no forward: a mask is drawn as forward would draw it
    g = net.blobs['x'].diff.copy()
    assert set(np.unique(g)) == {0.0, 6.0}
    net.forward()
    kept = net.blobs['y'].data != 0
    net.blobs['x'].data[...] = 5.0  # new data: the mask is still forward's (as Caffe's)
    net.backward()
    np.testing.assert_array_equal(net.blobs['x'].diff != 0, kept)


class _CountingLayer(caffe.Layer):
    forwards = 0

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        type(self).forwards += 1
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff


def test_python_layers_and_data_layers_are_not_rerun(tmp_path, monkeypatch):
    import sys
    import types
    mod = types.ModuleType('counting_layer_mod')
    mod.CountingLayer = _CountingLayer
    monkeypatch.setitem(sys.modules, 'counting_layer_mod', mod)
    _CountingLayer.forwards = 0
    data = np.arange(12, dtype=np.float32).reshape(6, 2, 1, 1)
    labels = np.arange(6, dtype=np.float32)
    body = ("layer { name: 'm' type: 'MemoryData' top: 'd' top: 'lab' memory_data_param "
            "{ batch_size: 2 channels: 2 height: 1 width: 1 } }"
            "layer { name: 'py' type: 'Python' bottom: 'd' top: 'e' python_param "
            "{ module: 'counting_layer_mod' layer: 'CountingLayer' } }"
            "layer { name: 's' type: 'Silence' bottom: 'lab' }")
    net = _net(tmp_path, body, {})
    net.set_input_arrays(data, labels)
    net.blobs['e'].diff[...] = 1.0
    net.backward()
    assert _CountingLayer.forwards == 0
    np.testing.assert_array_equal(net.blobs['d'].diff, 2.0)
    net.forward()
    np.testing.assert_array_equal(net.blobs['lab'].data.ravel(), [0, 1])  # the data did not move on


def test_test_phase_net_records_no_graph_and_backward_still_works(tmp_path):
    """A TEST net runs forward without autograd graphs (it is scored, rarely differentiated);
    a backward on it recomputes each layer from its bottoms: the same gradients as a TRAIN
    net with the same weights."""
    body = ("layer { name: 'c' type: 'Convolution' bottom: 'x' top: 'y' convolution_param "
            "{ num_output: 3 kernel_size: 2 weight_filler { type: 'gaussian' std: 1 } } }"
            "layer { name: 'p' type: 'Pooling' bottom: 'y' top: 'q' pooling_param { pool: MAX kernel_size: 2 } }"
            "layer { name: 'i' type: 'InnerProduct' bottom: 'q' top: 's' inner_product_param "
            "{ num_output: 4 weight_filler { type: 'gaussian' std: 1 } } }"
            "layer { name: 'l' type: 'SoftmaxWithLoss' bottom: 's' bottom: 't' top: 'loss' }")
    text = ("name: 'n'\ninput: 'x' input_shape { dim: 2 dim: 2 dim: 5 dim: 5 }\n"
            "input: 't' input_shape { dim: 2 }\n" + body)
    path = tmp_path / 'n.prototxt'
    path.write_text(text)
    nets = {phase: caffe.Net(str(path), phase) for phase in (caffe.TRAIN, caffe.TEST)}
    x = RNG.randn(2, 2, 5, 5)
    for name in ('c', 'i'):
        for k, p in enumerate(nets[caffe.TRAIN].params[name]):
            nets[caffe.TEST].params[name][k].data[...] = p.data
    for net in nets.values():
        net.blobs['x'].data[...] = x
        net.blobs['t'].data[...] = [1, 3]
        net.forward()
    assert all(l._leaves is None for l in nets[caffe.TEST].layers if isinstance(l, TorchLayer))
    assert any(l._leaves is not None for l in nets[caffe.TRAIN].layers if isinstance(l, TorchLayer))
    for net in nets.values():
        net.clear_param_diffs()
        net.backward()
    for name in ('c', 'i'):
        for want, got in zip(nets[caffe.TRAIN].params[name], nets[caffe.TEST].params[name]):
            assert np.abs(want.diff).max() > 0
            np.testing.assert_allclose(got.diff, want.diff, rtol=1e-6, atol=1e-7)
