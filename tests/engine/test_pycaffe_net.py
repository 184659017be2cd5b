"""caffe.Net through pycaffe's API, as BVLC's python/caffe/test/test_net.py exercises it:
blobs/params/layers dictionaries, forward and backward (whole net, or from `start` to
`end`), inputs/outputs, top/bottom names, .caffemodel and HDF5 save/load, clearing
parameter diffs, blobs outliving their net, the weights= constructor, and the
NetStateRule filters by level, stage and phase (TestLevels/TestStages/TestAllInOne).
"""
from collections import OrderedDict

import numpy as np
import pytest

import caffe

NUM_OUTPUT = 13


def simple_net_text(num_output=NUM_OUTPUT):
    return """name: 'testnet' force_backward: true
    layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
      dummy_data_param { num: 5 channels: 2 height: 3 width: 4
        num: 5 channels: 1 height: 1 width: 1
        data_filler { type: 'gaussian' std: 1 }
        data_filler { type: 'constant' } } }
    layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
      convolution_param { num_output: 11 kernel_size: 2 pad: 3
        weight_filler { type: 'gaussian' std: 1 }
        bias_filler { type: 'constant' value: 2 } }
        param { decay_mult: 1 } param { decay_mult: 0 } }
    layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
      inner_product_param { num_output: %d
        weight_filler { type: 'gaussian' std: 2.5 }
        bias_filler { type: 'constant' value: -3 } } }
    layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label'
      top: 'loss' }""" % num_output


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / 'simple.prototxt'
    path.write_text(simple_net_text())
    return str(path)


@pytest.fixture
def net(net_file):
    n = caffe.Net(net_file, caffe.TRAIN)
    n.blobs['label'].data[...] = np.random.RandomState(0).randint(
        NUM_OUTPUT, size=n.blobs['label'].data.shape)
    return n


def test_blobs_outlive_the_net(net):
    params = sum((list(p) for p in net.params.values()), [])
    blobs = list(net.blobs.values())
    del net
    total = 0.0
    for b in params + blobs:
        total += float(b.data.sum()) + float(b.diff.sum())
    assert np.isfinite(total)


def test_dictionaries(net):
    assert list(net.blobs) == ['data', 'label', 'conv', 'ip_blob', 'loss']
    assert net.blobs['conv'].data.shape == (5, 11, 8, 9)
    assert list(net.params) == ['conv', 'ip']
    assert [p.data.shape for p in net.params['conv']] == [(11, 2, 2, 2), (11,)]
    assert [p.data.shape for p in net.params['ip']] == [(NUM_OUTPUT, 11 * 8 * 9), (NUM_OUTPUT,)]
    assert (net.params['conv'][1].data == 2).all()
    assert (net.params['ip'][1].data == -3).all()
    layer_dict = net.layer_dict
    assert list(layer_dict) == list(net._layer_names) == ['data', 'conv', 'ip', 'loss']
    for i, name in enumerate(net._layer_names):
        assert layer_dict[name].type == net.layers[i].type
    assert [l.type for l in net.layers] == ['DummyData', 'Convolution', 'InnerProduct',
                                           'SoftmaxWithLoss']
    assert net.blob_loss_weights['loss'] == 1 and net.blob_loss_weights['conv'] == 0


def test_forward_backward(net):
    out = net.forward()
    assert list(out) == ['loss'] and np.isfinite(out['loss'])
    diffs = net.backward()
    assert diffs == {}  # no net inputs
    assert np.abs(net.params['conv'][0].diff).sum() > 0
    assert np.abs(net.blobs['data'].diff).sum() > 0  # force_backward reaches the data


def test_inputs_outputs(net):
    assert net.inputs == []
    assert net.outputs == ['loss']


def test_top_bottom_names(net):
    assert net.top_names == OrderedDict([('data', ['data', 'label']), ('conv', ['conv']),
                                         ('ip', ['ip_blob']), ('loss', ['loss'])])
    assert net.bottom_names == OrderedDict([('data', []), ('conv', ['data']),
                                            ('ip', ['conv']), ('loss', ['ip_blob', 'label'])])


def test_forward_start_end(net):
    conv_blob, ip_blob = net.blobs['conv'], net.blobs['ip_blob']
    sample = np.random.RandomState(1).uniform(size=conv_blob.data.shape).astype(np.float32)
    conv_blob.data[...] = sample
    out = net.forward(start='ip', end='ip')
    assert list(out) == ['ip_blob']
    w, b = net.params['ip'][0].data, net.params['ip'][1].data
    manual = np.array([w @ sample[i].ravel() + b for i in range(sample.shape[0])])
    np.testing.assert_allclose(ip_blob.data, manual, rtol=1e-4, atol=1e-3)
    # The conv blob was not recomputed.
    np.testing.assert_array_equal(conv_blob.data, sample)
    # blobs= adds blobs to the result.
    assert set(net.forward(start='ip', end='ip', blobs=['conv'])) == {'ip_blob', 'conv'}


@pytest.mark.parametrize('forward_first', [False, True])
def test_backward_start_end(net, forward_first):
    # BVLC's check runs backward right after construction: Caffe's backward reads the
    # blobs as they are, whatever ran before.
    if forward_first:
        net.forward()
    conv_blob, ip_blob = net.blobs['conv'], net.blobs['ip_blob']
    sample = np.random.RandomState(2).uniform(size=ip_blob.data.shape).astype(np.float32)
    ip_blob.diff[...] = sample
    out = net.backward(start='ip', end='ip')
    assert list(out) == ['conv']
    w = net.params['ip'][0].data
    manual = np.array([w.T @ sample[i] for i in range(sample.shape[0])])
    np.testing.assert_allclose(conv_blob.diff.reshape(manual.shape), manual, rtol=1e-4, atol=1e-3)


def test_clear_param_diffs(net):
    net.forward()
    net.backward()
    diff = net.params['conv'][0].diff
    assert np.abs(diff).max() > 0
    net.clear_param_diffs()
    assert (diff == 0).all()
    assert all((p.diff == 0).all() for ps in net.params.values() for p in ps)


def test_param_diffs_accumulate(net):
    net.forward()
    net.backward()
    once = net.params['ip'][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params['ip'][0].diff, 2 * once, rtol=1e-5, atol=1e-6)


def test_save_and_read(net, net_file, tmp_path):
    model = str(tmp_path / 'w.caffemodel')
    net.save(model)
    legacy = caffe.Net(net_file, model, caffe.TRAIN)  # (file, weights, phase)
    named = caffe.Net(net_file, caffe.TRAIN, weights=model)
    fresh = caffe.Net(net_file, caffe.TRAIN)
    for name in net.params:
        for i in range(len(net.params[name])):
            for other in (legacy, named):
                assert np.abs(net.params[name][i].data - other.params[name][i].data).sum() == 0
    assert np.abs(net.params['conv'][0].data - fresh.params['conv'][0].data).sum() > 0
    # copy_from loads into an existing net.
    fresh.copy_from(model)
    np.testing.assert_array_equal(fresh.params['ip'][0].data, net.params['ip'][0].data)


def test_save_hdf5(net, net_file, tmp_path):
    path = str(tmp_path / 'w.h5')
    net.save_hdf5(path)
    net2 = caffe.Net(net_file, caffe.TRAIN)
    net2.load_hdf5(path)
    for name in net.params:
        for i in range(len(net.params[name])):
            assert np.abs(net.params[name][i].data - net2.params[name][i].data).sum() == 0


def test_weights_of_another_shape_are_refused(net, tmp_path):
    model = str(tmp_path / 'w.caffemodel')
    net.save(model)
    other = tmp_path / 'other.prototxt'
    other.write_text(simple_net_text(num_output=7))
    with pytest.raises(caffe.ShapeError, match="layer 'ip'"):
        caffe.Net(str(other), caffe.TRAIN, weights=model)


def test_keyword_inputs_and_forward_all(tmp_path):
    path = tmp_path / 'deploy.prototxt'
    path.write_text("""
    input: 'x' input_shape { dim: 4 dim: 3 }
    layer { type: 'InnerProduct' name: 'ip' bottom: 'x' top: 'y'
            inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 1 } } }
    layer { type: 'Softmax' name: 'prob' bottom: 'y' top: 'prob' }""")
    n = caffe.Net(str(path), caffe.TEST)
    assert n.inputs == ['x'] and n.outputs == ['prob']
    x = np.random.RandomState(3).randn(10, 3).astype(np.float32)
    out = n.forward(x=x[:4])
    np.testing.assert_allclose(out['prob'].sum(1), 1, rtol=1e-5)
    w, b = n.params['ip'][0].data, n.params['ip'][1].data
    logits = x @ w.T + b
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(out['prob'], expected[:4], rtol=1e-5, atol=1e-6)
    every = n.forward_all(x=x)  # 10 items through a batch of 4: padded, then trimmed
    assert every['prob'].shape == (10, 2)
    np.testing.assert_allclose(every['prob'], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match='Input blob arguments do not match net inputs'):
        n.forward(z=x[:4])
    with pytest.raises(Exception, match='Input is not batch sized'):
        n.forward(x=x[:3])


# ---- levels, stages, phases ------------------------------------------------------------------

LEVELS_NET = """
layer { name: "data" type: "DummyData" top: "data"
        dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }
layer { name: "NoLevel" type: "InnerProduct" bottom: "data" top: "NoLevel"
        inner_product_param { num_output: 1 } }
layer { name: "Level0Only" type: "InnerProduct" bottom: "data" top: "Level0Only"
        include { min_level: 0 max_level: 0 } inner_product_param { num_output: 1 } }
layer { name: "Level1Only" type: "InnerProduct" bottom: "data" top: "Level1Only"
        include { min_level: 1 max_level: 1 } inner_product_param { num_output: 1 } }
layer { name: "Level>=0" type: "InnerProduct" bottom: "data" top: "Level>=0"
        include { min_level: 0 } inner_product_param { num_output: 1 } }
layer { name: "Level>=1" type: "InnerProduct" bottom: "data" top: "Level>=1"
        include { min_level: 1 } inner_product_param { num_output: 1 } }
"""

STAGES_NET = """
layer { name: "data" type: "DummyData" top: "data"
        dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }
layer { name: "A" type: "InnerProduct" bottom: "data" top: "A"
        include { stage: "A" } inner_product_param { num_output: 1 } }
layer { name: "B" type: "InnerProduct" bottom: "data" top: "B"
        include { stage: "B" } inner_product_param { num_output: 1 } }
layer { name: "AorB" type: "InnerProduct" bottom: "data" top: "AorB"
        include { stage: "A" } include { stage: "B" } inner_product_param { num_output: 1 } }
layer { name: "AandB" type: "InnerProduct" bottom: "data" top: "AandB"
        include { stage: "A" stage: "B" } inner_product_param { num_output: 1 } }
layer { name: "NotA" type: "InnerProduct" bottom: "data" top: "NotA"
        exclude { stage: "A" } inner_product_param { num_output: 1 } }
"""

ALL_IN_ONE_NET = """
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
        include { phase: TRAIN stage: "train" } }
layer { name: "val_data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
        include { phase: TEST stage: "val" } }
layer { name: "deploy_data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } }
        include { phase: TEST stage: "deploy" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        include: { phase: TRAIN stage: "train" } include: { phase: TEST stage: "val" } }
layer { name: "pred" type: "Softmax" bottom: "ip" top: "pred"
        include: { phase: TEST stage: "deploy" } }
"""


def _blobs_without_data(net):
    return [b for b in net.blobs if 'data' not in b]


def _file(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('kwargs, expected', [
    ({}, ['NoLevel', 'Level0Only', 'Level>=0']),
    ({'level': 1}, ['NoLevel', 'Level1Only', 'Level>=0', 'Level>=1']),
])
def test_levels(tmp_path, kwargs, expected):
    net = caffe.Net(_file(tmp_path, LEVELS_NET, 'levels.prototxt'), caffe.TEST, **kwargs)
    assert _blobs_without_data(net) == expected


@pytest.mark.parametrize('stages, expected', [
    (['A'], ['A', 'AorB']),
    (['B'], ['B', 'AorB', 'NotA']),
    (['A', 'B'], ['A', 'B', 'AorB', 'AandB']),
    ([], ['NotA']),
])
def test_stages(tmp_path, stages, expected):
    net = caffe.Net(_file(tmp_path, STAGES_NET, 'stages.prototxt'), caffe.TEST, stages=stages)
    assert _blobs_without_data(net) == expected


@pytest.mark.parametrize('phase, stage, outputs, first_layer', [
    (caffe.TRAIN, 'train', ['loss'], 'train_data'),
    (caffe.TEST, 'val', ['loss'], 'val_data'),
    (caffe.TEST, 'deploy', ['pred'], 'deploy_data'),
])
def test_all_in_one(tmp_path, phase, stage, outputs, first_layer):
    net = caffe.Net(_file(tmp_path, ALL_IN_ONE_NET, 'all.prototxt'), phase, stages=[stage])
    assert list(net.blobs['data'].shape) == [1, 1, 10, 10]
    assert net.outputs == outputs
    assert net._layer_names[0] == first_layer
    assert net.phase == phase and str(net.phase) == ('TRAIN' if phase == caffe.TRAIN else 'TEST')
    out = net.forward()
    assert list(out) == outputs


def test_net_needs_a_phase(net_file):
    with pytest.raises(TypeError, match='phase'):
        caffe.Net(net_file)
