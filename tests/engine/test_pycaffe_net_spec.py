"""caffe.net_spec: NetSpec, L.<Type>, P.<Type>.<ENUM>, to_proto.

The nets of BVLC's python/caffe/test/test_net_spec.py (LeNet named and anonymous, a net
of top-less Silence layers, the TypeError for a non-Top input) built and loaded into
caffe.Net, plus checks of how keyword arguments land in the NetParameter.
"""
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.net_spec import param_name_dict
from caffe.proto import caffe_pb2


def lenet(batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size):
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                     dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type='xavier'))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type='xavier'))
    loss = L.SoftmaxWithLoss(ip2, label)
    return loss.to_proto()


def silent_net():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    return n.to_proto()


def load_net(net_proto, tmp_path, phase=caffe.TEST):
    path = tmp_path / 'net.prototxt'
    path.write_text(str(net_proto))
    return caffe.Net(str(path), phase)


def test_lenet_named(tmp_path):
    proto = lenet(4)
    assert [l.name for l in proto.layer] == ['data', 'conv1', 'pool1', 'conv2', 'pool2', 'ip1',
                                             'relu1', 'ip2', 'loss']
    relu = proto.layer[6]
    assert list(relu.bottom) == list(relu.top) == ['ip1']  # in place
    assert list(proto.layer[7].bottom) == ['ip1']
    assert list(proto.layer[8].bottom) == ['ip2', 'label']
    net = load_net(proto, tmp_path)
    assert len(net.layers) == 9
    assert net.blobs['conv2'].data.shape == (4, 50, 8, 8)
    assert net.outputs == ['loss']
    out = net.forward()
    assert out['loss'].shape == ()


def test_lenet_anonymous(tmp_path):
    proto = anon_lenet(4)
    names = [l.name for l in proto.layer]
    assert names == ['DummyData1', 'Convolution1', 'Pooling1', 'Convolution2', 'Pooling2',
                     'InnerProduct1', 'ReLU1', 'InnerProduct2', 'SoftmaxWithLoss1']
    assert list(proto.layer[0].top) == ['DummyData1', 'DummyData2']
    assert list(proto.layer[6].bottom) == list(proto.layer[6].top) == ['InnerProduct1']
    net = load_net(proto, tmp_path)
    assert len(net.layers) == 9
    assert net.outputs == ['SoftmaxWithLoss1']


def test_zero_tops(tmp_path):
    proto = silent_net()
    assert [l.name for l in proto.layer] == ['data', 'silence_data', 'silence_data2']
    assert len(proto.layer[1].top) == 0
    net = load_net(proto, tmp_path)
    assert len(net.forward()) == 0


def test_topless_layer_gets_an_automatic_name():
    data = L.Input(shape=dict(dim=[2]))
    proto = caffe.to_proto(L.Silence(data, ntop=0))
    assert [l.name for l in proto.layer] == ['Input1', 'Silence1']


def test_type_error_for_non_top_inputs():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)  # each element is a Top
    with pytest.raises(TypeError, match='Concat input 1 is not a Top'):
        L.Concat(data[0], 'data2')


def test_params_fill_the_type_message_and_layer_fields():
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[2, 3, 8, 8])])
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 5], pad=1, stride=[1, 2],
                           weight_filler=dict(type='gaussian', std=0.01),
                           bias_filler=dict(type='constant', value=0.5),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           include=dict(phase=caffe.TRAIN, stage=['a', 'b']),
                           exclude=[dict(min_level=2)], propagate_down=[True])
    n.pool = L.Pooling(n.conv, pool='AVE', kernel_size=2)
    n.loss = L.EuclideanLoss(n.pool, n.pool, loss_weight=[0.5], name='my_loss')
    n.py = L.Python(n.pool, module='m', layer='K', param_str="{'a': 1}")
    proto = n.to_proto()
    conv = proto.layer[1]
    cp = conv.convolution_param
    assert cp.num_output == 4
    assert list(cp.kernel_size) == [3, 5] and list(cp.pad) == [1] and list(cp.stride) == [1, 2]
    assert cp.weight_filler.type == 'gaussian' and cp.weight_filler.std == pytest.approx(0.01)
    assert cp.bias_filler.value == 0.5
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert len(conv.include) == 1 and conv.include[0].phase == caffe_pb2.TRAIN
    assert list(conv.include[0].stage) == ['a', 'b']
    assert conv.exclude[0].min_level == 2
    assert list(conv.propagate_down) == [True]
    assert proto.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    loss = proto.layer[3]
    assert loss.name == 'my_loss' and list(loss.loss_weight) == [0.5]
    assert list(loss.bottom) == ['pool', 'pool'] and list(loss.top) == ['loss']
    py = proto.layer[4].python_param
    assert (py.module, py.layer, py.param_str) == ('m', 'K', "{'a': 1}")
    # The text round-trips through the prototxt parser.
    again = caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge(str(proto), again)
    assert again == proto


def test_param_name_dict_comes_from_the_proto():
    names = param_name_dict()
    assert names['Convolution'] == 'convolution'
    assert names['InnerProduct'] == 'inner_product'
    assert names['ROIPooling'] == 'roi_pooling'
    assert names['SmoothL1Loss'] == 'smooth_l1_loss'
    assert names['Python'] == 'python'
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith('_param') and field.message_type is not None:
            assert names[field.message_type.name[:-len('Parameter')]] + '_param' == field.name


def test_unknown_parameter_is_reported():
    data = L.Input(shape=dict(dim=[1]))
    with pytest.raises(AttributeError, match="num_ouput"):
        caffe.to_proto(L.InnerProduct(data, num_ouput=3))
    with pytest.raises(ValueError, match="'MAXX' is not one of MAX, AVE, STOCHASTIC"):
        caffe.to_proto(L.Pooling(data, pool='MAXX'))


def test_params_constants():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == 1
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError, match='NoSuch'):
        P.Pooling.NoSuch


def test_netspec_access_and_multiple_tops():
    n = caffe.NetSpec()
    n['data'] = L.Input(shape=dict(dim=[2, 6]))
    n.a, n.b = L.Slice(n.data, ntop=2, slice_point=[2], axis=1)
    assert n['a'] is n.a and 'b' in n and n.keys() == ['data', 'a', 'b']
    proto = n.to_proto()
    sl = proto.layer[1]
    assert sl.name == 'a' and list(sl.top) == ['a', 'b']
    assert list(sl.slice_param.slice_point) == [2] and sl.slice_param.axis == 1
    with pytest.raises(AttributeError, match='nothing'):
        n.nothing
    with pytest.raises(TypeError, match='unpack'):
        n.pair = L.Slice(n.data, ntop=2)
    del n.b
    assert n.keys() == ['data', 'a']


def test_only_needed_layers_are_emitted_once():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    hidden = L.ReLU(n.data)
    n.s1 = L.Eltwise(hidden, hidden)
    n.s2 = L.Eltwise(hidden, n.s1)
    proto = n.to_proto()
    assert [l.type for l in proto.layer] == ['Input', 'ReLU', 'Eltwise', 'Eltwise']
    assert proto.layer[1].top[0] == 'ReLU1'
    assert list(proto.layer[3].bottom) == ['ReLU1', 's1']


def test_top_update_changes_parameters():
    data = L.Input(shape=dict(dim=[1, 2]))
    ip = L.InnerProduct(data, num_output=2)
    ip._update({'num_output': 5, 'bias_term': False})
    layer = ip.to_proto().layer[1]
    assert layer.inner_product_param.num_output == 5
    assert not layer.inner_product_param.bias_term


# ---- what SSD's net_spec adds, and SSD/RefineDet scripts rely on -------------------------------

def test_netspec_update_changes_the_layer_behind_a_named_top():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3, pad=2)
    n.update('conv', {'dilation': 2, 'param': [dict(lr_mult=0)]})
    n.relu = L.ReLU(n.conv, in_place=True)
    n.silence = L.Silence(n.relu, ntop=0)
    n.update('silence', {'exclude': dict(phase=caffe.TEST)})
    proto = n.to_proto()
    assert list(proto.layer[1].convolution_param.dilation) == [2]
    assert proto.layer[1].param[0].lr_mult == 0
    assert proto.layer[3].exclude[0].phase == caffe_pb2.TEST
    with pytest.raises(KeyError, match='nope'):
        n.update('nope', {'num_output': 1})


def test_deconvolution_and_im2col_read_convolution_param(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, 5, 5]))
    n.up = L.Deconvolution(n.data, num_output=4, kernel_size=2, stride=2, pad=0, group=2,
                           bias_term=False, weight_filler=dict(type='bilinear'))
    n.cols = L.Im2col(n.data, kernel_size=3)
    proto = n.to_proto()
    cp = proto.layer[1].convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), cp.group, cp.bias_term) == \
        (4, [2], [2], 2, False)
    assert cp.weight_filler.type == 'bilinear'
    assert list(proto.layer[2].convolution_param.kernel_size) == [3]
    net = load_net(proto, tmp_path)
    assert net.blobs['up'].data.shape == (1, 4, 10, 10)


def test_silence_never_has_tops():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2]))
    n.silence = L.Silence(n.data)  # without ntop=0, as SSD's scripts may write it
    layer = n.to_proto().layer[1]
    assert layer.name == 'silence' and list(layer.bottom) == ['data'] and not layer.top


def test_python2_integral_floats_in_integer_fields():
    data = L.Input(shape=dict(dim=[1, 3, 9, 9]))
    conv = L.Convolution(data, num_output=8 / 2, kernel_size=3, pad=(3 + 2 * 2 - 1) / 2,
                         dilation=[3.0])
    cp = conv.to_proto().layer[1].convolution_param
    assert cp.num_output == 4 and list(cp.pad) == [3] and list(cp.dilation) == [3]
    assert isinstance(cp.num_output, int)
    with pytest.raises(TypeError, match=r'ConvolutionParameter\.pad is an integer field: got 1\.5'):
        caffe.to_proto(L.Convolution(data, num_output=2, kernel_size=3, pad=1.5))
    # Float fields keep their floats.
    assert caffe.to_proto(L.Power(data, power=1.5)).layer[1].power_param.power == 1.5


def test_ssd_data_layer_nested_and_repeated_messages():
    """The AnnotatedData layer as SSD's CreateAnnotatedDataLayer writes it: nested messages in
    transform_param, repeated enums, repeated batch_sampler messages (one with an empty
    sampler), include as a dict, the layer named by `name=`."""
    transform = {
        'mirror': True, 'mean_value': [104, 117, 123], 'force_color': True,
        'resize_param': {'prob': 1, 'resize_mode': P.Resize.WARP, 'height': 32, 'width': 48,
                         'interp_mode': [P.Resize.LINEAR, P.Resize.AREA, P.Resize.LANCZOS4]},
        'distort_param': {'brightness_prob': 0.5, 'brightness_delta': 32, 'hue_delta': 18},
        'expand_param': {'prob': 0.5, 'max_expand_ratio': 4.0},
        'emit_constraint': {'emit_type': caffe_pb2.EmitConstraint.CENTER},
    }
    sampler = [{'sampler': {}, 'max_trials': 1, 'max_sample': 1},
               {'sampler': {'min_scale': 0.3, 'max_aspect_ratio': 2.0},
                'sample_constraint': {'min_jaccard_overlap': 0.7}, 'max_trials': 50,
                'max_sample': 1}]
    n = caffe.NetSpec()
    n.data, n.label = L.AnnotatedData(
        name='data', annotated_data_param={'label_map_file': 'labelmap.prototxt',
                                           'batch_sampler': sampler},
        data_param=dict(batch_size=4, backend=P.Data.LMDB, source='db'), ntop=2,
        include=dict(phase=caffe_pb2.Phase.Value('TRAIN')), transform_param=transform)
    n.priors = L.Input(shape=dict(dim=[1, 2, 8]))
    n.loss = L.MultiBoxLoss(n.data, n.data, n.priors, n.label,
                            multibox_loss_param={'loc_loss_type': P.MultiBoxLoss.SMOOTH_L1,
                                                 'match_type': P.MultiBoxLoss.PER_PREDICTION,
                                                 'num_classes': 21, 'neg_pos_ratio': 3.,
                                                 'code_type': P.PriorBox.CENTER_SIZE},
                            loss_param={'normalization': P.Loss.VALID},
                            propagate_down=[True, True, False, False])
    n.det = L.DetectionOutput(n.data, n.data, n.priors,
                              detection_output_param={'num_classes': 21, 'keep_top_k': 200,
                                                      'nms_param': {'nms_threshold': 0.45,
                                                                    'top_k': 400}},
                              include=dict(phase=caffe_pb2.Phase.Value('TEST')))
    proto = n.to_proto()
    from google.protobuf import text_format
    again = text_format.Parse(str(proto), caffe_pb2.NetParameter())
    assert again == proto
    data = again.layer[0]
    assert data.name == 'data' and data.type == 'AnnotatedData'
    assert list(data.top) == ['data', 'label'] and data.include[0].phase == caffe_pb2.TRAIN
    tp = data.transform_param
    assert tp.mirror and tp.force_color and list(tp.mean_value) == [104, 117, 123]
    assert tp.resize_param.resize_mode == caffe_pb2.ResizeParameter.WARP
    assert list(tp.resize_param.interp_mode) == [caffe_pb2.ResizeParameter.LINEAR,
                                                 caffe_pb2.ResizeParameter.AREA,
                                                 caffe_pb2.ResizeParameter.LANCZOS4]
    assert (tp.resize_param.height, tp.resize_param.width) == (32, 48)
    assert tp.distort_param.brightness_delta == 32 and tp.expand_param.max_expand_ratio == 4
    assert tp.emit_constraint.emit_type == caffe_pb2.EmitConstraint.CENTER
    ap = data.annotated_data_param
    assert ap.label_map_file == 'labelmap.prototxt' and len(ap.batch_sampler) == 2
    assert ap.batch_sampler[0].max_trials == 1
    assert ap.batch_sampler[1].sampler.min_scale == pytest.approx(0.3)
    assert ap.batch_sampler[1].sample_constraint.min_jaccard_overlap == pytest.approx(0.7)
    assert (data.data_param.batch_size, data.data_param.source) == (4, 'db')
    loss = again.layer[2]
    assert list(loss.propagate_down) == [True, True, False, False]
    assert loss.multibox_loss_param.match_type == caffe_pb2.MultiBoxLossParameter.PER_PREDICTION
    assert loss.multibox_loss_param.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    assert loss.loss_param.normalization == caffe_pb2.LossParameter.VALID
    det = again.layer[3].detection_output_param
    assert det.nms_param.top_k == 400 and det.nms_param.nms_threshold == pytest.approx(0.45)


def test_caffe_params_is_importable_as_a_module():
    import importlib
    mod = importlib.import_module('caffe.params')
    assert mod is caffe.params is P
    from caffe.params import Resize, MultiBoxLoss  # noqa: F401
    assert Resize.WARP == caffe_pb2.ResizeParameter.WARP
    assert MultiBoxLoss.SMOOTH_L1 == caffe_pb2.MultiBoxLossParameter.SMOOTH_L1
    assert P.PriorBox.CENTER_SIZE == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    assert P.Loss.VALID == caffe_pb2.LossParameter.VALID
    assert P.Solver.GPU == caffe_pb2.SolverParameter.GPU
    assert 'Normalize' in dir(P) and 'MultiBoxLoss' in dir(P)
    with pytest.raises(AttributeError, match='NoSuchParameter'):
        P.NoSuch
