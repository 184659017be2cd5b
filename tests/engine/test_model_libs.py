"""caffe.model_libs: the prototxts RefineDet's example scripts write with it (the seed's
ResNet101_COCO_320 and VGG16_VOC2007_320/512, run through refinedet_script.py with
stand-in paths), each builder's layers, names, parameter specs and fillers, pretrained
weights loading by name, and the conv body + TCB + heads running in caffe.Net."""
import os

import numpy as np
import pytest

import caffe
from caffe import model_libs, protoio
from caffe.model_libs import (ConvBNLayer, CreateAnnotatedDataLayer, CreateMultiBoxHead,
                              CreateRefineDetHead, DeconvBNLayer, EltwiseLayer,
                              InceptionV3Body, ResBody, ResNet101Body, ResNet152Body,
                              UnpackVariable, VGGNetBody, ZFNetBody, L, P)
from caffe.proto import caffe_pb2

import refinedet_script

R = np.random.RandomState(3)


def parse(path, msg=None):
    return protoio.parse_text(open(path).read(), msg or caffe_pb2.NetParameter())


def by_name(net_param):
    names = [l.name for l in net_param.layer]
    assert len(names) == len(set(names)), 'layer names repeat'
    return {l.name: l for l in net_param.layer}


def assert_wired(net_param):
    """Every bottom is a net input or a top of an earlier layer."""
    known = set(net_param.input)
    for layer in net_param.layer:
        for b in layer.bottom:
            assert b in known, 'layer %r reads %r before any layer writes it' % (layer.name, b)
        known.update(layer.top)


@pytest.fixture(scope='module')
def jobs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('refinedet'))
    return {v: refinedet_script.write_job(root, v) for v in refinedet_script.VARIANTS}


# ---- the seed's script: ResNet101_COCO_320 ---------------------------------------------------

def test_seed_resnet101_coco_320_train_net(jobs):
    train = parse(jobs['resnet101_coco_320']['train'])
    assert train.name == 'coco_refinedet_resnet101_320x320_train'
    assert_wired(train)
    layers = by_name(train)
    data = train.layer[0]
    assert (data.name, data.type, list(data.top)) == ('data', 'AnnotatedData', ['data', 'label'])
    assert data.include[0].phase == caffe_pb2.TRAIN
    assert data.data_param.batch_size == 8 and data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert len(data.annotated_data_param.batch_sampler) == 7
    tp = data.transform_param
    assert tp.force_color and tp.mirror and list(tp.resize_param.interp_mode) == [1, 2, 3, 4, 5]
    assert tp.emit_constraint.emit_type == caffe_pb2.EmitConstraint.CENTER
    # The backbone in the released models' names, BatchNorm/Scale pairs in place.
    conv1, bn, scale, relu = (layers[n] for n in ('conv1', 'bn_conv1', 'scale_conv1', 'conv1_relu'))
    assert conv1.convolution_param.bias_term is False and list(conv1.convolution_param.stride) == [2]
    assert list(bn.bottom) == list(bn.top) == ['conv1'] and not bn.HasField('batch_norm_param')
    assert scale.scale_param.bias_term and list(relu.top) == ['conv1']
    for block in ['2a', '2b', '2c', '3a', '3b1', '3b3', '4a', '4b1', '4b22', '5a', '5c', '6']:
        assert layers['res' + block].type == 'Eltwise'
        assert layers['res%s_relu' % block].type == 'ReLU'
        for branch in ('2a', '2b', '2c'):
            assert 'bn%s_branch%s' % (block, branch) in layers
    assert 'res3b4' not in layers and 'res4b23' not in layers
    assert [n for n in layers if n.endswith('_branch1') and n.startswith('res')] == \
        ['res2a_branch1', 'res3a_branch1', 'res4a_branch1', 'res5a_branch1', 'res6_branch1',
         'resres3b3_relu_inter_branch1', 'resres4b22_relu_inter_branch1',
         'resres5c_relu_inter_branch1', 'resres6_relu_inter_branch1', 'resP3_inter_branch1',
         'resP4_inter_branch1', 'resP5_inter_branch1', 'resP6_inter_branch1']
    assert list(layers['res6_branch1'].convolution_param.stride) == [2]
    assert layers['res6_branch2c'].convolution_param.num_output == 512
    # TCBs with BatchNorm: TL/P convs without bias, deconvolution 2x2/2 without bias.
    for name in ('TL6_1', 'TL6_2', 'P6', 'TL5_1', 'TL5_2', 'P5', 'P4', 'P3'):
        assert layers[name].convolution_param.bias_term is False
        assert layers[name + '_bn'].type == 'BatchNorm' and layers[name + '_scale'].type == 'Scale'
    assert 'TL5_2_relu' not in layers and 'TL6_2_relu' in layers
    up = layers['P6-up']
    assert up.type == 'Deconvolution' and list(up.bottom) == ['P6']
    cp = up.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), list(cp.pad), cp.bias_term) == \
        (256, [2], [2], [0], False)
    assert cp.weight_filler.type == 'gaussian' and cp.weight_filler.std == pytest.approx(0.01)
    assert list(layers['Elt5'].bottom) == ['TL5_2', 'P6-up']
    assert list(layers['TL6_1'].bottom) == ['res6'] and list(layers['TL3_1'].bottom) == ['res3b3']
    # Heads after the inter ResBody blocks; ARM binary, ODM 81 classes, 3 anchors per cell.
    assert layers['resres3b3_relu_inter_mbox_conf'].convolution_param.num_output == 6
    assert layers['resres3b3_relu_inter_mbox_loc'].convolution_param.num_output == 12
    assert layers['resP3_inter_mbox_conf'].convolution_param.num_output == 3 * 81
    assert layers['resP6_inter_mbox_loc'].convolution_param.num_output == 12
    assert list(layers['resres3b3_relu_inter_mbox_priorbox'].bottom) == \
        ['resres3b3_relu_inter', 'data']
    # Losses.
    arm, odm = layers['arm_loss'], layers['odm_loss']
    assert list(arm.bottom) == ['arm_loc', 'arm_conf', 'arm_priorbox', 'label']
    assert arm.multibox_loss_param.num_classes == 2 and list(arm.propagate_down) == [1, 1, 0, 0]
    assert list(odm.bottom) == ['odm_loc', 'odm_conf', 'arm_priorbox', 'label',
                                'arm_conf_flatten', 'arm_loc']
    mp = odm.multibox_loss_param
    assert (mp.num_classes, mp.objectness_score, mp.use_difficult_gt) == (81, pytest.approx(0.01), False)
    assert mp.match_type == caffe_pb2.MultiBoxLossParameter.PER_PREDICTION
    assert odm.loss_param.normalization == caffe_pb2.LossParameter.VALID
    assert list(layers['arm_conf_reshape'].reshape_param.shape.dim) == [0, -1, 2]
    assert layers['arm_conf_softmax'].softmax_param.axis == 2


def test_seed_resnet101_coco_320_test_deploy_and_solver(jobs):
    paths = jobs['resnet101_coco_320']
    test = parse(paths['test'])
    assert_wired(test)
    layers = by_name(test)
    assert test.layer[0].include[0].phase == caffe_pb2.TEST
    assert len(test.layer[0].annotated_data_param.batch_sampler) == 1
    det = layers['detection_out']
    assert list(det.bottom) == ['odm_loc', 'odm_conf_flatten', 'arm_priorbox',
                                'arm_conf_flatten', 'arm_loc']
    dp = det.detection_output_param
    assert (dp.num_classes, dp.keep_top_k, dp.nms_param.top_k) == (81, 500, 1000)
    assert dp.objectness_score == pytest.approx(0.01)
    assert list(layers['odm_conf_reshape'].reshape_param.shape.dim) == [0, -1, 81]
    assert list(test.layer[-1].bottom) == ['detection_out', 'label']
    assert 'arm_loss' not in layers
    deploy = parse(paths['deploy'])
    assert_wired(deploy)
    assert list(deploy.input) == ['data'] and list(deploy.input_shape[0].dim) == [1, 3, 320, 320]
    assert deploy.layer[0].name == 'conv1' and deploy.layer[-1].name == 'detection_out'
    assert [l.name for l in deploy.layer] == [l.name for l in test.layer[1:-1]]
    solver = parse(paths['solver'], caffe_pb2.SolverParameter())
    assert solver.train_net == paths['train'] and solver.iter_size == 1
    assert solver.base_lr == pytest.approx(0.00004 * 25)
    assert list(solver.stepvalue) == [80000, 100000, 120000] and solver.type == 'SGD'
    assert os.path.isfile(paths['job'])


# ---- VGG16 (VOC) -------------------------------------------------------------------------------

def test_vgg16_voc_320_prototxt(jobs):
    train = parse(jobs['vgg16_voc_320']['train'])
    assert_wired(train)
    layers = by_name(train)
    fc6 = layers['fc6'].convolution_param
    assert (fc6.num_output, list(fc6.kernel_size), list(fc6.pad), list(fc6.dilation)) == \
        (1024, [3], [3], [3])
    assert layers['pool5'].pooling_param.kernel_size == 2 and 'drop6' not in layers
    assert list(layers['conv5_1'].convolution_param.dilation) == [1]
    assert [p.lr_mult for p in layers['conv1_1'].param] == [1, 2]
    assert layers['conv6_2'].convolution_param.num_output == 512
    assert list(layers['conv6_1'].bottom) == ['fc7']
    for name, scale in (('conv4_3_norm', 10), ('conv5_3_norm', 8)):
        norm = layers[name]
        assert norm.type == 'Normalize' and not norm.norm_param.across_spatial
        assert not norm.norm_param.channel_shared and norm.norm_param.scale_filler.value == scale
    assert 'fc7_norm' not in layers
    # TCBs without BatchNorm: convolutions with biases and xavier weights.
    order = [l.name for l in train.layer]
    assert order.index('TL6_1') < order.index('conv5_3_norm') < order.index('TL4_1')
    assert list(layers['TL4_1'].bottom) == ['conv5_3_norm']
    up = layers['P5-up'].convolution_param
    assert up.bias_term and up.weight_filler.type == 'xavier'
    assert [(p.lr_mult, p.decay_mult) for p in layers['P5-up'].param] == [(1, 1), (2, 0)]
    assert 'TL5_1_bn' not in layers
    for src in ('conv4_3_norm', 'conv5_3_norm', 'fc7', 'conv6_2'):
        assert layers[src + '_mbox_conf'].convolution_param.num_output == 6
        assert list(layers[src + '_mbox_conf'].convolution_param.kernel_size) == [3]
    for src in ('P3', 'P4', 'P5', 'P6'):
        assert layers[src + '_mbox_conf'].convolution_param.num_output == 63
        assert layers[src + '_mbox_loc_perm'].permute_param.order == [0, 2, 3, 1]
        assert layers[src + '_mbox_loc_flat'].flatten_param.axis == 1
        assert src + '_mbox_priorbox' not in layers  # the ODM reuses the ARM's anchors
    assert [list(layers[n].bottom) for n in ('arm_loc', 'odm_conf')] == [
        ['conv4_3_norm_mbox_loc_flat', 'conv5_3_norm_mbox_loc_flat', 'fc7_mbox_loc_flat',
         'conv6_2_mbox_loc_flat'],
        ['P3_mbox_conf_flat', 'P4_mbox_conf_flat', 'P5_mbox_conf_flat', 'P6_mbox_conf_flat']]
    assert layers['arm_priorbox'].concat_param.axis == 2
    assert layers['odm_loss'].multibox_loss_param.use_difficult_gt


@pytest.mark.parametrize('variant', sorted(refinedet_script.VARIANTS))
def test_prior_boxes_per_source(jobs, variant):
    layers = by_name(parse(jobs[variant]['test']))
    priors = [l for l in layers.values() if l.type == 'PriorBox']
    assert len(priors) == 4
    for layer, min_size, step in zip(priors, [32, 64, 128, 256], [8, 16, 32, 64]):
        p = layer.prior_box_param
        assert list(p.min_size) == [min_size] and list(p.max_size) == []
        assert list(p.aspect_ratio) == [2] and p.flip and not p.clip
        assert p.step == step and p.offset == pytest.approx(0.5)
        assert list(p.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2])
        assert layer.bottom[1] == 'data'
    assert list(layers['arm_priorbox'].bottom) == [l.top[0] for l in priors]


# ---- builders ---------------------------------------------------------------------------------

def spec_with_input(shape=(1, 3, 32, 32)):
    net = caffe.NetSpec()
    net.data = L.Input(shape=dict(dim=list(shape)))
    return net


def test_star_import_gives_what_scripts_use():
    scope = {}
    exec('from caffe.model_libs import *', scope)
    for name in ('caffe', 'L', 'P', 'caffe_pb2', 'os', 'ConvBNLayer', 'DeconvBNLayer',
                 'EltwiseLayer', 'ResBody', 'VGGNetBody', 'ResNet101Body', 'ResNet152Body',
                 'CreateAnnotatedDataLayer', 'CreateMultiBoxHead', 'CreateRefineDetHead',
                 'check_if_exist', 'make_if_not_exist', 'UnpackVariable'):
        assert name in scope, name
    assert scope['P'].Resize.WARP == caffe_pb2.ResizeParameter.WARP
    assert scope['caffe_pb2'].Phase.Value('TRAIN') == caffe_pb2.TRAIN


def test_utilities(tmp_path):
    assert UnpackVariable(3, 2) == [3, 3] and UnpackVariable([1, 2], 2) == [1, 2]
    assert UnpackVariable([5], 2) == [5, 5]
    with pytest.raises(ValueError, match='3 values'):
        UnpackVariable([1, 2, 3], 2)
    target = tmp_path / 'a' / 'b'
    assert not model_libs.check_if_exist(str(target))
    model_libs.make_if_not_exist(str(target))
    model_libs.make_if_not_exist(str(target))
    assert model_libs.check_if_exist(str(target)) and target.is_dir()


def test_conv_bn_layer_variants():
    net = spec_with_input()
    ConvBNLayer(net, 'data', 'plain', False, True, 8, 3, 1, 1, lr_mult=0.5)
    ConvBNLayer(net, 'plain', 'bn', True, False, 8, [1, 3], [0, 1], [1, 2], dilation=2)
    ConvBNLayer(net, 'bn', 'nobias', True, True, 4, 1, 0, 1, use_scale=False, lr_mult=2)
    layers = by_name(net.to_proto())
    plain = layers['plain']
    assert [(p.lr_mult, p.decay_mult) for p in plain.param] == [(0.5, 1), (1, 0)]
    assert plain.convolution_param.weight_filler.type == 'xavier'
    assert plain.convolution_param.bias_filler.type == 'constant'
    assert list(layers['plain_relu'].top) == ['plain']
    bn = layers['bn'].convolution_param
    assert (bn.kernel_h, bn.kernel_w, bn.pad_h, bn.pad_w, bn.stride_h, bn.stride_w) == (1, 3, 0, 1, 1, 2)
    assert list(bn.dilation) == [2] and not bn.bias_term and bn.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in layers['bn'].param] == [(1, 1)]
    assert list(layers['bn_bn'].top) == ['bn'] and not layers['bn_bn'].param
    assert layers['bn_scale'].scale_param.bias_term and not layers['bn_scale'].param
    assert 'bn_relu' not in layers
    bias = layers['nobias_bias']
    assert bias.type == 'Bias' and [(p.lr_mult, p.decay_mult) for p in bias.param] == [(2, 0)]
    assert bias.bias_param.filler.type == 'constant' and 'nobias_scale' not in layers
    assert [l.name for l in net.to_proto().layer] == [
        'data', 'plain', 'plain_relu', 'bn', 'bn_bn', 'bn_scale', 'nobias', 'nobias_bn',
        'nobias_bias', 'nobias_relu']


def test_conv_bn_layer_batchnorm_options():
    net = spec_with_input()
    ConvBNLayer(net, 'data', 'a', True, True, 4, 3, 1, 1, eps=0.001,
                moving_average_fraction=0.999)
    ConvBNLayer(net, 'a', 'b', True, True, 4, 3, 1, 1, use_global_stats=True)
    layers = by_name(net.to_proto())
    assert layers['a_bn'].batch_norm_param.eps == pytest.approx(0.001)
    assert layers['a_bn'].batch_norm_param.moving_average_fraction == pytest.approx(0.999)
    assert not layers['a_scale'].param
    assert layers['b_bn'].batch_norm_param.use_global_stats
    assert [p.lr_mult for p in layers['b_scale'].param] == [0, 0]
    with pytest.raises(TypeError, match='eps_value'):
        ConvBNLayer(net, 'b', 'c', True, True, 4, 3, 1, 1, eps_value=1)


def test_deconv_bn_layer_and_eltwise():
    net = spec_with_input((1, 4, 5, 5))
    DeconvBNLayer(net, 'data', 'up', False, True, 6, 2, 0, 2)
    DeconvBNLayer(net, 'data', 'upbn', True, False, 6, 2, 0, 2, lr_mult=3)
    EltwiseLayer(net, ['up', 'upbn'], 'sum')
    with pytest.raises(ValueError, match='two inputs'):
        EltwiseLayer(net, ['up'], 'bad')
    layers = by_name(net.to_proto())
    up = layers['up']
    assert up.type == 'Deconvolution' and up.convolution_param.bias_term
    assert [(p.lr_mult, p.decay_mult) for p in up.param] == [(1, 1), (2, 0)]
    assert list(layers['up_relu'].top) == ['up']
    assert not layers['upbn'].convolution_param.bias_term
    assert [(p.lr_mult, p.decay_mult) for p in layers['upbn'].param] == [(3, 1)]
    assert layers['upbn_bn'].type == 'BatchNorm' and 'upbn_relu' not in layers
    assert layers['sum'].type == 'Eltwise' and list(layers['sum'].bottom) == ['up', 'upbn']
    assert not layers['sum'].HasField('eltwise_param')  # SUM is Caffe's default


def test_resbody_names_and_dilation(tmp_path):
    net = spec_with_input((1, 8, 9, 9))
    ResBody(net, 'data', '7a', 4, 4, 16, stride=2, use_branch1=True)
    ResBody(net, 'res7a', '7b', 4, 4, 16, stride=1, use_branch1=False, dilation=2)
    proto = net.to_proto()
    layers = by_name(proto)
    assert [l.name for l in proto.layer][1:10] == [
        'res7a_branch1', 'bn7a_branch1', 'scale7a_branch1', 'res7a_branch2a', 'bn7a_branch2a',
        'scale7a_branch2a', 'res7a_branch2a_relu', 'res7a_branch2b', 'bn7a_branch2b']
    assert list(layers['res7a'].bottom) == ['res7a_branch1', 'res7a_branch2c']
    assert list(layers['res7b'].bottom) == ['res7a', 'res7b_branch2c']
    assert list(layers['res7a_branch2a'].convolution_param.stride) == [2]
    b = layers['res7b_branch2b'].convolution_param
    assert list(b.dilation) == [2] and list(b.pad) == [2]
    assert list(layers['res7a_branch2b'].convolution_param.pad) == [1]
    assert not layers['res7a_branch2b'].convolution_param.dilation
    net_c = caffe.Net(_write(proto, tmp_path), caffe.TEST)
    assert net_c.blobs['res7b'].data.shape == (1, 16, 5, 5)


def _write(proto, folder, name='net.prototxt'):
    path = os.path.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(str(proto))
    return path


def test_create_annotated_data_layer_defaults():
    net = caffe.NetSpec()
    net.data = CreateAnnotatedDataLayer('db', batch_size=2, output_label=False, train=False,
                                        anno_type=caffe_pb2.AnnotatedDatum.BBOX)
    layer = net.to_proto().layer[0]
    assert layer.name == 'data' and list(layer.top) == ['data']
    assert layer.include[0].phase == caffe_pb2.TEST
    ap = layer.annotated_data_param
    assert len(ap.batch_sampler) == 1 and ap.anno_type == caffe_pb2.AnnotatedDatum.BBOX
    assert not layer.HasField('transform_param')
    assert (layer.data_param.source, layer.data_param.batch_size) == ('db', 2)


@pytest.mark.parametrize('kwargs,fc6,pool5', [
    (dict(fully_conv=True, reduced=True, dilated=True), (1024, 3, 6, 6), (3, 1, 1)),
    (dict(fully_conv=True, reduced=True), (1024, 3, 3, 3), (2, 2, 0)),
    (dict(fully_conv=True), (4096, 7, 3, 1), (2, 2, 0)),
    (dict(fully_conv=True, dilated=True), (4096, 7, 6, 2), (3, 1, 1)),
    (dict(fully_conv=True, reduced=True, dilated=True, dilate_pool4=True), (1024, 3, 12, 12),
     (3, 1, 1)),
])
def test_vgg_fc6_geometry(kwargs, fc6, pool5):
    net = spec_with_input()
    VGGNetBody(net, 'data', **kwargs)
    layers = by_name(net.to_proto())
    cp = layers['fc6'].convolution_param
    assert (cp.num_output, cp.kernel_size[0], cp.pad[0], cp.dilation[0]) == fc6
    pp = layers['pool5'].pooling_param
    assert (pp.kernel_size, pp.stride, pp.pad) == pool5
    assert layers['fc7'].convolution_param.num_output == fc6[0]
    assert 'drop6' in layers and list(layers['drop7'].top) == ['fc7']
    if kwargs.get('dilate_pool4'):
        assert layers['pool4'].pooling_param.stride == 1
        assert layers['conv5_1'].convolution_param.dilation[0] == 2


def test_vgg_other_forms_and_freezing():
    net = spec_with_input()
    VGGNetBody(net, 'data', need_fc=True, fully_conv=False, dropout=False,
               freeze_layers=['conv1_1', 'conv1_2', 'not_there'])
    layers = by_name(net.to_proto())
    assert layers['fc6'].type == 'InnerProduct' and layers['fc6'].inner_product_param.num_output == 4096
    assert [p.lr_mult for p in layers['conv1_1'].param] == [0, 0]
    assert [p.lr_mult for p in layers['conv2_1'].param] == [1, 2]
    net = spec_with_input()
    VGGNetBody(net, 'data', need_fc=False, nopool=True)
    layers = by_name(net.to_proto())
    assert 'pool1' not in layers and list(layers['conv1_3'].convolution_param.stride) == [2]
    assert net.keys()[-1] == 'relu5_3'
    with pytest.raises(KeyError, match='nope'):
        VGGNetBody(spec_with_input(), 'nope')


def test_zfnet_and_inception_v3_shapes(tmp_path):
    net = spec_with_input((1, 3, 224, 224))
    ZFNetBody(net, 'data', fully_conv=True, reduced=True, dilated=True, need_fc8=True)
    proto = net.to_proto()
    layers = by_name(proto)
    assert layers['norm1'].lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
    assert layers['fc6'].convolution_param.dilation[0] == 5
    assert list(layers['fc8'].bottom) == ['fc7']  # the last top: drop7 writes fc7 in place
    zf = caffe.Net(_write(proto, tmp_path, 'zf.prototxt'), caffe.TEST)
    assert zf.blobs['fc8'].data.shape == (1, 1000, 15, 15)
    net = spec_with_input((1, 3, 299, 299))
    InceptionV3Body(net, 'data', output_pred=True)
    proto = net.to_proto()
    layers = by_name(proto)
    assert layers['conv_bn'].type == 'BatchNorm' and layers['conv_bias'].type == 'Bias'
    assert 'conv_scale' not in layers
    assert list(layers['mixed_9/tower/mixed'].bottom) == ['mixed_9/tower/mixed/conv',
                                                          'mixed_9/tower/mixed/conv_1']
    assert list(layers['mixed_3/join'].bottom) == ['mixed_3/conv', 'mixed_3/tower/conv_2',
                                                   'mixed_3/pool']
    cp = layers['mixed_4/tower/conv_1'].convolution_param
    assert (cp.kernel_h, cp.kernel_w, cp.pad_h, cp.pad_w) == (1, 7, 0, 3)
    inception = caffe.Net(_write(proto, tmp_path, 'v3.prototxt'), caffe.TEST)
    shapes = {k: inception.blobs[k].data.shape for k in
              ('pool_1', 'mixed/join', 'mixed_3/join', 'mixed_7/join', 'mixed_8/join',
               'mixed_10/join', 'softmax_prob')}
    assert shapes == {'pool_1': (1, 192, 35, 35), 'mixed/join': (1, 256, 35, 35),
                      'mixed_3/join': (1, 768, 17, 17), 'mixed_7/join': (1, 768, 17, 17),
                      'mixed_8/join': (1, 1280, 8, 8), 'mixed_10/join': (1, 2048, 8, 8),
                      'softmax_prob': (1, 1008)}


def test_resnet_bodies_block_counts():
    for body, n3, n4 in ((ResNet101Body, 3, 22), (ResNet152Body, 7, 35)):
        net = spec_with_input()
        body(net, 'data', use_pool5=True, use_dilation_conv5=True)
        layers = by_name(net.to_proto())
        sums = [n for n, l in layers.items() if l.type == 'Eltwise']
        assert len(sums) == 3 + (n3 + 1) + (n4 + 1) + 3
        assert 'res3b%d' % n3 in layers and 'res3b%d' % (n3 + 1) not in layers
        assert 'res4b%d' % n4 in layers and 'res4b%d' % (n4 + 1) not in layers
        assert list(layers['res5a_branch2a'].convolution_param.stride) == [1]
        assert list(layers['res5b_branch2b'].convolution_param.dilation) == [2]
        assert layers['pool5'].pooling_param.global_pooling
        assert net.keys()[-1] == 'pool5'


def test_create_multibox_head_ssd_form():
    net = spec_with_input((1, 3, 64, 64))
    VGGNetBody(net, 'data', fully_conv=True, reduced=True, dilated=True, dropout=False)
    mbox = CreateMultiBoxHead(net, data_layer='data', num_classes=21,
                              from_layers=['conv4_3', 'fc7'], use_batchnorm=False,
                              normalizations=[20, -1], min_sizes=[[10, 12], 20],
                              max_sizes=[[20, 24], 40], aspect_ratios=[[2], [2, 3]],
                              steps=[8, 0], img_height=64, img_width=48, use_objectness=True,
                              share_location=False, inter_layer_depth=[0, 16], flip=True,
                              clip=True)
    proto = net.to_proto()
    assert_wired(proto)
    layers = by_name(proto)
    assert [t.fn.type_name for t in mbox] == ['Concat'] * 4
    assert [n for n in ('mbox_loc', 'mbox_conf', 'mbox_priorbox', 'mbox_objectness') if n in layers] == \
        ['mbox_loc', 'mbox_conf', 'mbox_priorbox', 'mbox_objectness']
    # conv4_3: 2 min sizes x (1 + 1 max + 2 ratios) = 8 priors; fc7: 1 x (1 + 1 + 4) = 6.
    assert layers['conv4_3_norm_mbox_loc'].convolution_param.num_output == 8 * 4 * 21
    assert layers['conv4_3_norm_mbox_conf'].convolution_param.num_output == 8 * 21
    assert layers['conv4_3_norm_mbox_objectness'].convolution_param.num_output == 16
    assert layers['fc7_inter'].convolution_param.num_output == 16
    assert layers['fc7_inter_mbox_conf'].convolution_param.num_output == 6 * 21
    p = layers['conv4_3_norm_mbox_priorbox'].prior_box_param
    assert list(p.min_size) == [10, 12] and list(p.max_size) == [20, 24] and p.step == 8
    assert (p.img_h, p.img_w, p.clip) == (64, 48, True)
    p = layers['fc7_inter_mbox_priorbox'].prior_box_param
    assert not p.HasField('step') and list(p.aspect_ratio) == [2, 3]
    with pytest.raises(ValueError, match='min_sizes'):
        CreateMultiBoxHead(net, num_classes=21, from_layers=['fc7'], min_sizes=[1, 2])
    with pytest.raises(ValueError, match='num_classes'):
        CreateMultiBoxHead(net, num_classes=0, from_layers=['fc7'], min_sizes=[1])
    with pytest.raises(KeyError, match='image'):
        CreateMultiBoxHead(net, data_layer='image', num_classes=3, from_layers=['fc7'],
                           min_sizes=[1])


def test_refinedet_head_checks_and_normalizations():
    net = spec_with_input()
    VGGNetBody(net, 'data', fully_conv=True, reduced=True, dropout=False)
    with pytest.raises(ValueError, match='aspect_ratios'):
        CreateRefineDetHead(net, num_classes=3, from_layers=['conv4_3', 'fc7'],
                            from_layers2=['conv4_3', 'fc7'], min_sizes=[8, 16],
                            aspect_ratios=[[2]])
    mbox = CreateRefineDetHead(net, num_classes=3, from_layers=['conv4_3', 'fc7'],
                               from_layers2=['conv5_3', 'conv3_3'], min_sizes=[8, 16],
                               normalizations=[5, -1], use_batchnorm=False,
                               share_location=False, img_height=32, img_width=32)
    layers = by_name(net.to_proto())
    assert len(mbox) == 5
    # normalizations[i] is applied to the i-th ODM source too, as in RefineDet.
    assert layers['conv5_3_norm'].norm_param.scale_filler.value == 5
    assert layers['conv4_3_norm_mbox_loc'].convolution_param.num_output == 1 * 4 * 2
    assert layers['conv5_3_norm_mbox_loc'].convolution_param.num_output == 1 * 4 * 3
    assert layers['conv4_3_norm_mbox_priorbox'].prior_box_param.img_size == 32


# ---- weights trained elsewhere load by layer name -------------------------------------------------

def vgg_fc_reduced_blobs():
    """VGG_ILSVRC_16_layers_fc_reduced's layers and blob shapes (the atrous SSD/RefineDet
    initialisation): conv1_1 ... conv5_3, fc6 as (1024, 512, 3, 3), fc7 (1024, 1024, 1, 1),
    and an fc8 the detectors do not have."""
    out, c = [], 3
    for stage, (width, depth) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for j in range(1, depth + 1):
            out.append(('conv%d_%d' % (stage, j), [(width, c, 3, 3), (width,)]))
            c = width
    out += [('fc6', [(1024, 512, 3, 3), (1024,)]), ('fc7', [(1024, 1024, 1, 1), (1024,)]),
            ('fc8', [(1000, 1024, 1, 1), (1000,)])]
    return out


def resnet101_blobs():
    """He et al.'s ResNet-101 caffemodel: conv1/bn_conv1/scale_conv1, then per block
    res<b>_branch{1,2a,2b,2c} (no bias) with bn<b>_*/scale<b>_*, and fc1000."""
    out = []

    def convbn(conv, bn, scale, shape):
        out.append((conv, [shape]))
        out.append((bn, [(shape[0],), (shape[0],), (1,)]))
        out.append((scale, [(shape[0],), (shape[0],)]))
    convbn('conv1', 'bn_conv1', 'scale_conv1', (64, 3, 7, 7))
    c = 64
    for stage, (w, n) in zip((2, 3, 4, 5), ((64, 3), (128, 4), (256, 23), (512, 3))):
        names = ['a'] + (['b', 'c'] if n == 3 else ['b%d' % i for i in range(1, n)])
        for i, s in enumerate(names):
            b = '%d%s' % (stage, s)
            if i == 0:
                convbn('res%s_branch1' % b, 'bn%s_branch1' % b, 'scale%s_branch1' % b, (4 * w, c, 1, 1))
            for branch, shape in (('2a', (w, c, 1, 1)), ('2b', (w, w, 3, 3)), ('2c', (4 * w, w, 1, 1))):
                convbn('res%s_branch%s' % (b, branch), 'bn%s_branch%s' % (b, branch),
                       'scale%s_branch%s' % (b, branch), shape)
            c = 4 * w
    out.append(('fc1000', [(1000, 2048), (1000,)]))
    return out


def stand_in_caffemodel(path, blobs, legacy=False):
    """A caffemodel with these layers, blob i of each filled with i + a counter."""
    model = caffe_pb2.NetParameter()
    values = {}
    for k, (name, shapes) in enumerate(blobs):
        layer = model.layer.add(name=name)
        for i, shape in enumerate(shapes):
            b = layer.blobs.add()
            if legacy and len(shape) <= 4:
                dims = (1,) * (4 - len(shape)) + tuple(shape)
                b.num, b.channels, b.height, b.width = dims
            else:
                b.shape.dim.extend(shape)
            data = np.full(int(np.prod(shape)), k + 0.25 * i, np.float32)
            b.data.extend(data.tolist())
            values[(name, i)] = data.reshape(shape)
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    return values


def test_pretrained_vgg_fc_reduced_loads_by_name(tmp_path):
    net = spec_with_input((1, 3, 64, 64))
    cfg = refinedet_script.VARIANTS['vgg16_voc_320']
    refinedet_script.body(net, cfg)
    proto = conv_part(net.to_proto())
    values = stand_in_caffemodel(str(tmp_path / 'vgg.caffemodel'), vgg_fc_reduced_blobs(),
                                 legacy=True)
    n = caffe.Net(_write(proto, tmp_path), str(tmp_path / 'vgg.caffemodel'), caffe.TEST)
    for (name, i), want in values.items():
        if name == 'fc8':
            assert name not in n.params
            continue
        np.testing.assert_array_equal(n.params[name][i].data, want)
    assert n.params['TL6_1'][0].data.std() > 0  # new layers keep their fillers


@pytest.mark.slow
def test_pretrained_resnet101_loads_by_name(tmp_path):
    net = spec_with_input((1, 3, 64, 64))
    ResNet101Body(net, 'data', use_pool5=False)
    values = stand_in_caffemodel(str(tmp_path / 'r101.caffemodel'), resnet101_blobs())
    n = caffe.Net(_write(net.to_proto(), tmp_path), str(tmp_path / 'r101.caffemodel'), caffe.TEST)
    learned = [k for k in n.params]
    assert len(learned) == len([b for b in resnet101_blobs() if b[0] != 'fc1000'])
    for (name, i), want in values.items():
        if name != 'fc1000':
            np.testing.assert_array_equal(n.params[name][i].data, want)


# ---- the nets run -----------------------------------------------------------------------------------

_CONV_PART = {'Input', 'Convolution', 'Deconvolution', 'ReLU', 'Pooling', 'Normalize',
              'BatchNorm', 'Scale', 'Bias', 'Eltwise', 'Dropout'}


def conv_part(proto):
    """The conv body, TCBs and head convolutions: the net without its data, prior,
    permute/flatten/concat and loss layers (which the other layer families provide)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(proto)
    del out.layer[:]
    out.layer.extend([l for l in proto.layer if l.type in _CONV_PART])
    out.force_backward = True
    return out


def run_and_round_trip(proto, tmp_path, x, phase=caffe.TEST):
    """Forward, backward from random top diffs, save, load into a fresh net: same outputs.
    (In TRAIN, BatchNorm normalises by the batch's statistics, so the outputs do not
    depend on the statistics it accumulates.)"""
    path = _write(proto, tmp_path)
    caffe.set_random_seed(7)
    net = caffe.Net(path, phase)
    net.blobs['data'].data[...] = x
    out = {k: v.copy() for k, v in net.forward().items()}
    heads = [k for k in out if k.endswith('_mbox_loc') or k.endswith('_mbox_conf')]
    assert len(heads) == 16
    for k in out:
        net.blobs[k].diff[...] = R.randn(*out[k].shape)
    net.backward()
    assert np.abs(net.blobs['data'].diff).max() > 0
    for name in ('conv1_1' if 'conv1_1' in net.params else 'conv1', 'TL6_1', 'P3'):
        assert np.abs(net.params[name][0].diff).max() > 0
    weights = str(tmp_path / 'refinedet.caffemodel')
    net.save(weights)
    again = caffe.Net(path, weights, phase)
    again.blobs['data'].data[...] = x
    out2 = again.forward()
    for k in out:
        np.testing.assert_array_equal(out2[k], out[k])
    return net, out


def test_vgg16_refinedet_conv_part_runs_and_round_trips(tmp_path):
    net = spec_with_input((1, 3, 64, 64))
    refinedet_script.body(net, refinedet_script.VARIANTS['vgg16_voc_320'])
    proto = conv_part(net.to_proto())
    n, out = run_and_round_trip(proto, tmp_path, R.randn(1, 3, 64, 64).astype(np.float32))
    # 64 / 8 .. 64 / 64: the ARM's and ODM's maps; conf widths 2 and 21 per anchor (3).
    assert out['conv4_3_norm_mbox_conf'].shape == (1, 6, 8, 8)
    assert out['conv6_2_mbox_loc'].shape == (1, 12, 1, 1)
    assert out['P3_mbox_conf'].shape == (1, 63, 8, 8)
    assert out['P6_mbox_conf'].shape == (1, 63, 1, 1)
    assert n.blobs['P5-up'].data.shape == (1, 256, 4, 4)


@pytest.mark.slow
def test_resnet101_refinedet_conv_part_runs_and_round_trips(tmp_path):
    net = spec_with_input((2, 3, 64, 64))
    refinedet_script.body(net, refinedet_script.VARIANTS['resnet101_coco_320'])
    proto = conv_part(net.to_proto())
    _, out = run_and_round_trip(proto, tmp_path, R.randn(2, 3, 64, 64).astype(np.float32),
                                caffe.TRAIN)
    assert out['resres3b3_relu_inter_mbox_conf'].shape == (2, 6, 8, 8)
    assert out['resP3_inter_mbox_conf'].shape == (2, 243, 8, 8)
    assert out['resP6_inter_mbox_loc'].shape == (2, 12, 1, 1)


def test_vgg16_refinedet_deploy_net_with_priors_and_heads(tmp_path):
    """The whole deploy net up to DetectionOutput (PriorBox, Permute, Flatten, Concat,
    Reshape, Softmax included) at 64x64: the ARM/ODM outputs line up prior for prior."""
    net = spec_with_input((1, 3, 64, 64))
    mbox = refinedet_script.body(net, refinedet_script.VARIANTS['vgg16_voc_320'])
    refinedet_script.softmax_flatten(net, 'arm_conf', 2)
    refinedet_script.softmax_flatten(net, 'odm_conf', 21)
    assert len(mbox) == 5
    proto = net.to_proto()
    proto.force_backward = True
    n = caffe.Net(_write(proto, tmp_path), caffe.TEST)
    n.blobs['data'].data[...] = R.randn(1, 3, 64, 64)
    n.forward()
    priors = 3 * (8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert n.blobs['arm_priorbox'].data.shape == (1, 2, priors * 4)
    assert n.blobs['arm_loc'].data.shape == n.blobs['odm_loc'].data.shape == (1, priors * 4)
    assert n.blobs['arm_conf_flatten'].data.shape == (1, priors * 2)
    assert n.blobs['odm_conf_flatten'].data.shape == (1, priors * 21)
    np.testing.assert_allclose(n.blobs['odm_conf_flatten'].data.reshape(priors, 21).sum(1), 1,
                               rtol=1e-5)
    # The first prior of conv4_3: centre (4, 4) of a 64-pixel image, 32 pixels wide.
    np.testing.assert_allclose(n.blobs['arm_priorbox'].data[0, 0, :4],
                               [(4 - 16) / 64, (4 - 16) / 64, (4 + 16) / 64, (4 + 16) / 64],
                               atol=1e-6)
    for k in ('arm_loc', 'odm_loc', 'arm_conf_flatten', 'odm_conf_flatten'):
        n.blobs[k].diff[...] = R.randn(*n.blobs[k].data.shape)
    n.backward()
    assert np.abs(n.blobs['data'].diff).max() > 0
