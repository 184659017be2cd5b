"""Legacy formats load and behave exactly like their upgraded form.

V1 prototxts (`layers { type: CONVOLUTION blobs_lr: 1 }`) and V1 .caffemodel files (legacy
4-d num/channels/height/width blob shapes) come from the model zoo; V0 nets
(`layers { layer { type: "conv" } }`) from Caffe's first releases. Each must give the same
outputs, gradients and learning-rate multipliers as the same net written today.
"""
import os

import numpy as np
import pytest

import caffe
from caffe import upgrade, upgrade_v0, weights
from caffe.errors import NetError
from caffe.proto import caffe_pb2
from google.protobuf import text_format

R = np.random.RandomState(7)

CURRENT = """
name: "small"
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
input: "label" input_shape { dim: 2 }
force_backward: true
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        param { lr_mult: 0.5 decay_mult: 0 } param { lr_mult: 1 }
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
        loss_weight: 2 }
"""

V1_NET = """
name: "small"
input: "data" input_dim: 2 input_dim: 3 input_dim: 6 input_dim: 6
input: "label" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
force_backward: true
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1
                             weight_filler { type: "gaussian" std: 0.3 } } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
         blobs_lr: 0.5 blobs_lr: 1 weight_decay: 0
         inner_product_param { num_output: 5 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss"
         loss_weight: 2 }
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _inputs():
    return {'data': R.randn(2, 3, 6, 6).astype(np.float32),
            'label': np.array([1., 4.], np.float32)}


def _run(net, inputs):
    for k, v in inputs.items():
        net.blobs[k].data[...] = v.reshape(net.blobs[k].data.shape)
    net.forward()
    for ps in net.params.values():
        for p in ps:
            p.diff[...] = 0
    net.backward()
    out = {'loss': net.blobs['loss'].data.copy(), 'ip1': net.blobs['ip1'].data.copy(),
           'data_diff': net.blobs['data'].diff.copy()}
    for name, ps in net.params.items():
        for i, p in enumerate(ps):
            out['%s/%d' % (name, i)] = p.diff.copy()
    return out


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_v1_prototxt_upgrades_to_the_current_net(tmp_path):
    cur = caffe.Net(_write(tmp_path, 'cur.prototxt', CURRENT), caffe.TRAIN)
    weights_path = str(tmp_path / 'w.caffemodel')
    cur.save(weights_path)
    old = caffe.Net(_write(tmp_path, 'v1.prototxt', V1_NET), weights_path, caffe.TRAIN)
    assert old._layer_names == cur._layer_names
    assert [l.type for l in old.layers] == [l.type for l in cur.layers]
    assert old.blobs['label'].data.shape == (2, 1, 1, 1)
    inputs = _inputs()
    _assert_same(_run(old, inputs), _run(cur, inputs))
    # blobs_lr / weight_decay became lr_mult / decay_mult, with Caffe's "unset" defaults.
    assert old._params_lr == cur._params_lr == [1.0, 2.0, 0.5, 1.0]
    assert old._params_weight_decay == cur._params_weight_decay == [1.0, 0.0, 0.0, 1.0]
    assert old._has_params_decay == [True, True, True, False]


def test_upgraded_v1_layer_fields():
    net = text_format.Parse("""
        layers { name: "c" type: CONVOLUTION bottom: "a" top: "c" blobs_lr: 1 blobs_lr: 2
                 weight_decay: 3 param: "shared_w" blob_share_mode: PERMISSIVE
                 include { phase: TRAIN } loss_weight: 0.5
                 convolution_param { num_output: 3 kernel_size: 1 }
                 transform_param { scale: 0.25 } }
        layers { name: "d" type: DATA top: "d" data_param { source: "db" scale: 0.5 mirror: true
                                                          crop_size: 7 mean_file: "m" batch_size: 4 } }
        layers { name: "s" type: SOFTMAX_LOSS bottom: "c" bottom: "d" top: "s" }
        """, caffe_pb2.NetParameter())
    upgrade.upgrade_net(net, 'unit')
    assert len(net.layers) == 0 and len(net.layer) == 3
    c, d, s = net.layer
    assert (c.type, d.type, s.type) == ('Convolution', 'Data', 'SoftmaxWithLoss')
    assert [(p.name, p.lr_mult, p.decay_mult, p.share_mode) for p in c.param] == [
        ('shared_w', 1.0, 3.0, caffe_pb2.ParamSpec.PERMISSIVE), ('', 2.0, 1.0, 0)]
    assert not c.param[1].HasField('decay_mult')
    assert c.include[0].phase == caffe_pb2.TRAIN and list(c.loss_weight) == [0.5]
    assert c.convolution_param.num_output == 3 and c.transform_param.scale == 0.25
    # V1 data layers' transformation settings moved into transform_param.
    assert not d.data_param.HasField('scale') and not d.data_param.HasField('mirror')
    assert (d.transform_param.scale, d.transform_param.mirror, d.transform_param.crop_size,
            d.transform_param.mean_file) == (0.5, True, 7, 'm')
    assert d.data_param.source == 'db' and d.data_param.batch_size == 4
    # Idempotent.
    again = caffe_pb2.NetParameter()
    again.CopyFrom(net)
    assert upgrade.upgrade_net(again) == net


def _legacy_blob(arr):
    """A BlobProto as V1 files hold them: num/channels/height/width, no `shape`."""
    shape = (1,) * (4 - arr.ndim) + arr.shape
    return caffe_pb2.BlobProto(num=shape[0], channels=shape[1], height=shape[2], width=shape[3],
                               data=arr.astype(np.float32).ravel().tolist())


def _v1_caffemodel(params):
    model = caffe_pb2.NetParameter(name='small')
    kinds = {'conv1': caffe_pb2.V1LayerParameter.CONVOLUTION,
             'ip1': caffe_pb2.V1LayerParameter.INNER_PRODUCT}
    for name, arrays in params.items():
        v1 = model.layers.add(name=name, type=kinds[name])
        v1.blobs.extend(_legacy_blob(a) for a in arrays)
    relu = model.layers.add(name='relu1', type=caffe_pb2.V1LayerParameter.RELU)
    relu.bottom.append('conv1')
    return model


def test_v1_caffemodel_with_legacy_shapes(tmp_path):
    arrays = {'conv1': [R.randn(4, 3, 3, 3), R.randn(4)],
              'ip1': [R.randn(5, 36), R.randn(5)]}
    path = str(tmp_path / 'v1.caffemodel')
    with open(path, 'wb') as f:
        f.write(_v1_caffemodel(arrays).SerializeToString())
    # The same weights, placed in the blobs by hand, give the reference.
    ref = caffe.Net(_write(tmp_path, 'cur.prototxt', CURRENT), caffe.TRAIN)
    for name, arrs in arrays.items():
        for p, a in zip(ref.params[name], arrs):
            p.data[...] = a
    for proto in (CURRENT, V1_NET):
        net = caffe.Net(_write(tmp_path, 'n.prototxt', proto), path, caffe.TRAIN)
        for name, arrs in arrays.items():
            for p, a in zip(net.params[name], arrs):
                np.testing.assert_array_equal(p.data, a.astype(np.float32))
        inputs = _inputs()
        _assert_same(_run(net, inputs), _run(ref, inputs))
    # The upgraded file, as a whole NetParameter, has the values and the legacy shapes.
    param = weights.read_weights_param(path)
    assert [l.type for l in param.layer] == ['Convolution', 'InnerProduct', 'ReLU']
    w = param.layer[1].blobs[0]
    assert not w.HasField('shape') and (w.num, w.channels, w.height, w.width) == (1, 1, 5, 36)
    np.testing.assert_array_equal(weights.proto_to_array(w).reshape(5, 36),
                                  arrays['ip1'][0].astype(np.float32))


def test_legacy_shape_must_still_match(tmp_path):
    path = str(tmp_path / 'bad.caffemodel')
    model = _v1_caffemodel({'conv1': [R.randn(4, 3, 3, 3), R.randn(4)],
                            'ip1': [R.randn(36, 5), R.randn(5)]})
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    net = caffe.Net(_write(tmp_path, 'cur.prototxt', CURRENT), caffe.TRAIN)
    with pytest.raises(caffe.ShapeError, match=r"param 0 weights from layer 'ip1'.*1 1 36 5.*5 36"):
        net.copy_from(path)


V0_NET = """
name: "v0net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 6 input_dim: 6
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1
                 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 }
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 2 stride: 2 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "ip1" type: "innerproduct" num_output: 5 biasterm: true
                 weight_filler { type: "gaussian" std: 0.2 } blobs_lr: 0.5 blobs_lr: 1
                 weight_decay: 0 } bottom: "pool1" top: "ip1" }
layers { layer { name: "prob" type: "softmax" } bottom: "ip1" top: "prob" }
"""

CURRENT_OF_V0 = """
name: "v0net"
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def test_v0_net_upgrades_and_runs(tmp_path):
    net = caffe.Net(_write(tmp_path, 'v0.prototxt', V0_NET), caffe.TEST)
    assert net._layer_names == ['conv1', 'relu1', 'pool1', 'ip1', 'prob']  # padding folded
    conv = net.layers[0].layer_param
    assert conv.type == 'Convolution' and list(conv.bottom) == ['data']
    assert list(conv.convolution_param.pad) == [1]
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.3)
    assert net._params_lr == [1.0, 2.0, 0.5, 1.0]
    assert net._params_weight_decay == [1.0, 0.0, 0.0, 1.0]
    assert net.params['conv1'][1].data == pytest.approx(np.full(4, 0.1))
    weights_path = str(tmp_path / 'v0.caffemodel')
    net.save(weights_path)
    ref = caffe.Net(_write(tmp_path, 'cur.prototxt', CURRENT_OF_V0), weights_path, caffe.TEST)
    x = R.randn(2, 3, 6, 6)
    net.blobs['data'].data[...] = x
    ref.blobs['data'].data[...] = x
    np.testing.assert_allclose(net.forward()['prob'], ref.forward()['prob'], rtol=1e-6)
    assert net.blobs['prob'].data.shape == (2, 5)


def test_v0_caffemodel_blobs_inside_the_v0_layer(tmp_path):
    """V0 weight files keep blobs in layers { layer { blobs } } (field 50 of V0LayerParameter)."""
    w, b = R.randn(5, 36).astype(np.float32), R.randn(5).astype(np.float32)
    cw, cb = R.randn(4, 3, 3, 3).astype(np.float32), R.randn(4).astype(np.float32)
    model = text_format.Parse(V0_NET, caffe_pb2.NetParameter())
    blobs = {'ip1': (w, b), 'conv1': (cw, cb)}
    for conn in model.layers:
        if conn.layer.name in blobs:
            conn.layer.blobs.extend(_legacy_blob(a) for a in blobs[conn.layer.name])
    path = str(tmp_path / 'v0.caffemodel')
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    net = caffe.Net(_write(tmp_path, 'cur.prototxt', CURRENT_OF_V0), path, caffe.TEST)
    np.testing.assert_array_equal(net.params['ip1'][0].data, w)
    np.testing.assert_array_equal(net.params['ip1'][1].data, b)
    np.testing.assert_array_equal(net.params['conv1'][0].data, cw)


def test_v0_fields_reach_their_v1_messages():
    cases = [
        ('conv', 'group: 2 pad: 3 kernelsize: 5 stride: 2 biasterm: false',
         lambda l: (l.convolution_param.group, list(l.convolution_param.pad),
                    list(l.convolution_param.kernel_size), list(l.convolution_param.stride),
                    l.convolution_param.bias_term) == (2, [3], [5], [2], False)),
        ('pool', 'pool: AVE pad: 1 kernelsize: 3 stride: 2',
         lambda l: (l.pooling_param.pool, l.pooling_param.pad, l.pooling_param.kernel_size,
                    l.pooling_param.stride) == (caffe_pb2.PoolingParameter.AVE, 1, 3, 2)),
        ('dropout', 'dropout_ratio: 0.3',
         lambda l: l.dropout_param.dropout_ratio == pytest.approx(0.3)),
        ('lrn', 'local_size: 3 alpha: 0.5 beta: 0.25 k: 2',
         lambda l: (l.lrn_param.local_size, l.lrn_param.alpha, l.lrn_param.beta,
                    l.lrn_param.k) == (3, 0.5, 0.25, 2)),
        ('data', 'source: "db" batchsize: 8 rand_skip: 3 scale: 0.5 meanfile: "m.bp" '
                 'cropsize: 9 mirror: true',
         lambda l: (l.data_param.source, l.data_param.batch_size, l.data_param.rand_skip,
                    l.transform_param.scale, l.transform_param.mean_file,
                    l.transform_param.crop_size, l.transform_param.mirror)
         == ('db', 8, 3, 0.5, 'm.bp', 9, True)),
        ('images', 'source: "l.txt" batchsize: 2 shuffle_images: true new_height: 5 '
                   'new_width: 6 rand_skip: 1',
         lambda l: (l.image_data_param.source, l.image_data_param.batch_size,
                    l.image_data_param.shuffle, l.image_data_param.new_height,
                    l.image_data_param.new_width, l.image_data_param.rand_skip)
         == ('l.txt', 2, True, 5, 6, 1)),
        ('window_data', 'source: "w" batchsize: 4 det_fg_threshold: 0.6 det_bg_threshold: 0.4 '
                        'det_fg_fraction: 0.5 det_context_pad: 16 det_crop_mode: "square"',
         lambda l: (l.window_data_param.source, l.window_data_param.batch_size,
                    l.window_data_param.fg_threshold, l.window_data_param.bg_threshold,
                    l.window_data_param.fg_fraction, l.window_data_param.context_pad,
                    l.window_data_param.crop_mode)
         == ('w', 4, pytest.approx(0.6), pytest.approx(0.4), 0.5, 16, 'square')),
        ('hdf5_data', 'source: "h.txt" batchsize: 3',
         lambda l: (l.hdf5_data_param.source, l.hdf5_data_param.batch_size) == ('h.txt', 3)),
        ('infogain_loss', 'source: "H.bp"', lambda l: l.infogain_loss_param.source == 'H.bp'),
        ('concat', 'concat_dim: 2', lambda l: l.concat_param.concat_dim == 2),
        ('hdf5_output', 'hdf5_output_param { file_name: "out.h5" }',
         lambda l: l.hdf5_output_param.file_name == 'out.h5'),
    ]
    for kind, fields, check in cases:
        conn = text_format.Parse('layer { name: "x" type: "%s" %s } bottom: "a" top: "b"'
                                 % (kind, fields), caffe_pb2.V1LayerParameter())
        v1, problems = upgrade_v0.upgrade_v0_layer(conn)
        assert problems == [], (kind, problems)
        assert v1.type == upgrade_v0.V0_TYPES[kind] and v1.name == 'x'
        assert list(v1.bottom) == ['a'] and list(v1.top) == ['b']
        current = upgrade.upgrade_v1_layer(v1)
        assert check(current), (kind, current)


def test_v0_setting_of_another_layer_type_is_reported_and_dropped(tmp_path, capfd):
    text = V0_NET.replace('type: "relu" }', 'type: "relu" num_output: 3 kernelsize: 2 }')
    net = caffe.Net(_write(tmp_path, 'v0.prototxt', text), caffe.TEST)
    assert net.layers[1].type == 'ReLU'
    err = capfd.readouterr().err
    assert "Unknown parameter num_output for layer type relu (layer 'relu1')" in err
    assert 'Unknown parameter kernelsize for layer type relu' in err
    assert 'continuing anyway' in err


def test_v0_errors_name_the_problem(tmp_path):
    with pytest.raises(NetError, match=r"Unknown V0 layer type 'rleu'.*Did you mean 'relu'"):
        caffe.Net(_write(tmp_path, 'a.prototxt', V0_NET.replace('"relu"', '"rleu"')), caffe.TEST)
    bad_pad = V0_NET.replace('bottom: "pad1" top: "conv1"', 'bottom: "data" top: "conv1"').replace(
        'bottom: "conv1" top: "conv1" }', 'bottom: "pad1" top: "conv1" }')
    with pytest.raises(NetError, match=r"padding layer 'pad1' feeds layer 'relu1'.*not type 'relu'"):
        caffe.Net(_write(tmp_path, 'b.prototxt', bad_pad), caffe.TEST)
    with pytest.raises(NetError, match=r"Unknown blob input 'nope' to V0 layer 'conv1'"):
        caffe.Net(_write(tmp_path, 'c.prototxt', V0_NET.replace('bottom: "pad1"', 'bottom: "nope"')),
                  caffe.TEST)
    mixed = V0_NET + 'layers { name: "extra" type: RELU bottom: "prob" top: "prob" }\n'
    with pytest.raises(NetError, match=r"'extra' is a V1 .* in a V0 net"):
        caffe.Net(_write(tmp_path, 'd.prototxt', mixed), caffe.TEST)


def test_input_dim_nets(tmp_path):
    text = """
    input: "data" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5
    input: "im_info" input_dim: 1 input_dim: 3 input_dim: 1 input_dim: 1
    layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    layer { name: "s" type: "Silence" bottom: "im_info" }
    """
    net = caffe.Net(_write(tmp_path, 'a.prototxt', text), caffe.TEST)
    assert net.inputs == ['data', 'im_info']
    assert net.blobs['data'].data.shape == (2, 3, 4, 5)
    assert net.blobs['im_info'].data.shape == (1, 3, 1, 1)
    with pytest.raises(NetError, match='7 input_dim values for 2 inputs; need 4 per input'):
        caffe.Net(_write(tmp_path, 'b.prototxt', text.replace('input_dim: 5', '')), caffe.TEST)
    both = text.replace('input: "im_info"', 'input_shape { dim: 1 } input: "im_info"')
    with pytest.raises(NetError, match='either input_dim or input_shape'):
        caffe.Net(_write(tmp_path, 'c.prototxt', both), caffe.TEST)


def test_layer_and_layers_in_one_net_is_an_error(tmp_path):
    text = CURRENT + 'layers { name: "x" type: RELU bottom: "ip1" top: "x" }\n'
    with pytest.raises(NetError, match='both `layer` and the legacy `layers`'):
        caffe.Net(_write(tmp_path, 'a.prototxt', text), caffe.TRAIN)


def test_batch_norm_with_three_frozen_params_is_upgraded():
    net = text_format.Parse("""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { lr_mult: 1 decay_mult: 1 name: "m" } param { lr_mult: 1 } param { lr_mult: 1 } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } }
        layer { name: "c" type: "Convolution" bottom: "x" top: "y"
                param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }
        """, caffe_pb2.NetParameter())
    assert upgrade.net_needs_upgrade(net)
    upgrade.upgrade_net(net)
    bn, bn2, conv = net.layer
    assert [(p.lr_mult, p.decay_mult, p.name) for p in bn.param] == [(0, 0, 'm'), (0, 0, ''), (0, 0, '')]
    assert bn2.param[0].lr_mult == 1 and conv.param[0].lr_mult == 1
    assert not upgrade.net_needs_upgrade(net)


def test_solver_type_upgrade():
    s = text_format.Parse('solver_type: ADAM base_lr: 0.1', caffe_pb2.SolverParameter())
    upgrade.upgrade_solver(s)
    assert s.type == 'Adam' and not s.HasField('solver_type')
    s = text_format.Parse('solver_type: NESTEROV type: "SGD"', caffe_pb2.SolverParameter())
    with pytest.raises(NetError, match='both solver_type'):
        upgrade.upgrade_solver(s)
    s = text_format.Parse('type: "RMSProp"', caffe_pb2.SolverParameter())
    assert upgrade.upgrade_solver(s).type == 'RMSProp'
