"""The body of RefineDet's example scripts (examples/refinedet/VGG16_VOC2007_320.py,
ResNet101_COCO_320.py, ...) as a function, for the model_libs tests.

Like the scripts it does `from caffe.model_libs import *` and uses only what that gives
(caffe, L, P, caffe_pb2 and the builders), adds the scripts' own extra layers (conv6 or
res6 and the transfer-connection blocks, top-down), and writes train.prototxt,
test.prototxt, deploy.prototxt, solver.prototxt and the job script into a folder; the
data, label map, name-size file and pretrained model are small stand-ins.
"""
import math
import os

from caffe.model_libs import *  # noqa: F401,F403  (exactly what the scripts do)
from caffe.model_libs import (CreateAnnotatedDataLayer, ConvBNLayer, DeconvBNLayer,  # noqa: F811
                              EltwiseLayer, ResBody, ResNet101Body, VGGNetBody,
                              CreateRefineDetHead, check_if_exist, make_if_not_exist,
                              L, P, caffe, caffe_pb2)


def vgg_extra_layers_and_tcb(net, use_batchnorm, arm_sources, normalizations, lr_mult=1):
    """conv6_1/conv6_2 after fc7 (stride 64), then deepest source first: its L2Norm when
    asked for (right before its TL*_1, as the scripts emit it) and its TCB. Returns the ARM
    sources, normalised names where normalised."""
    last = net.keys()[-1]  # the scripts' Python-2 idiom: NetSpec.keys() is a list
    ConvBNLayer(net, last, 'conv6_1', use_batchnorm, True, 256, 1, 0, 1, lr_mult=lr_mult)
    ConvBNLayer(net, 'conv6_1', 'conv6_2', use_batchnorm, True, 512, 3, 1, 2, lr_mult=lr_mult)
    sources = list(arm_sources)
    level = 6
    for i in reversed(range(len(sources))):
        if normalizations and normalizations[i] != -1:
            name = sources[i] + '_norm'
            net[name] = L.Normalize(net[sources[i]], scale_filler=dict(
                type='constant', value=normalizations[i]), across_spatial=False,
                channel_shared=False)
            sources[i] = name
        _tcb_level(net, sources[i], level, first=(level == 6), use_batchnorm=use_batchnorm,
                   lr_mult=lr_mult)
        level -= 1
    return sources


def _tcb_level(net, source, level, first, use_batchnorm, lr_mult=1):
    """RefineDet's TCB at level k: P6 (the deepest) from its source by three 3x3
    convolutions; a shallower level: TLk_1 (3x3 + ReLU), TLk_2 (3x3), plus P(k+1)
    upsampled by a 2x2 stride-2 deconvolution, summed (Eltk), ReLU, and Pk (3x3 + ReLU)."""
    tl1, tl2, p = 'TL%d_1' % level, 'TL%d_2' % level, 'P%d' % level
    ConvBNLayer(net, source, tl1, use_batchnorm, True, 256, 3, 1, 1, lr_mult=lr_mult)
    if first:
        ConvBNLayer(net, tl1, tl2, use_batchnorm, True, 256, 3, 1, 1, lr_mult=lr_mult)
        ConvBNLayer(net, tl2, p, use_batchnorm, True, 256, 3, 1, 1, lr_mult=lr_mult)
        return
    ConvBNLayer(net, tl1, tl2, use_batchnorm, False, 256, 3, 1, 1, lr_mult=lr_mult)
    upper = 'P%d' % (level + 1)
    DeconvBNLayer(net, upper, upper + '-up', use_batchnorm, False, 256, 2, 0, 2, lr_mult=lr_mult)
    elt = 'Elt%d' % level
    EltwiseLayer(net, [tl2, upper + '-up'], elt)
    net[elt + '_relu'] = L.ReLU(net[elt], in_place=True)
    ConvBNLayer(net, elt + '_relu', p, use_batchnorm, True, 256, 3, 1, 1, lr_mult=lr_mult)


def resnet_extra_layers_and_tcb(net, arm_sources, use_batchnorm=True):
    """res6 (a stride-2 bottleneck, 128-128-512) after res5c, then the TCBs."""
    ResBody(net, net.keys()[-1], '6', out2a=128, out2b=128, out2c=512, stride=2,
            use_branch1=True)
    level = 6
    for source in reversed(arm_sources):
        _tcb_level(net, source, level, first=(level == 6), use_batchnorm=use_batchnorm)
        level -= 1
    return list(arm_sources)


VARIANTS = {
    # the seed: examples/refinedet/ResNet101_COCO_320.py
    'resnet101_coco_320': dict(
        backbone='resnet101', size=320, num_classes=81, train_on_diff_gt=False,
        arm_sources=['res3b3_relu', 'res4b22_relu', 'res5c_relu', 'res6_relu'],
        normalizations=[], tcb_batchnorm=True, head_batchnorm=False,
        inter_layer_depth=[1, 1, 1, 1], base_lr=0.00004, force_color=True,
        dataset='coco', job='refinedet_resnet101_320x320'),
    # examples/refinedet/VGG16_VOC2007_320.py
    'vgg16_voc_320': dict(
        backbone='vgg16', size=320, num_classes=21, train_on_diff_gt=True,
        arm_sources=['conv4_3', 'conv5_3', 'fc7', 'conv6_2'],
        normalizations=[10, 8, -1, -1], tcb_batchnorm=False, head_batchnorm=False,
        inter_layer_depth=[], base_lr=0.00004, force_color=False,
        dataset='VOC0712', job='refinedet_vgg16_320x320'),
    # examples/refinedet/VGG16_VOC2007_512.py (same sources, larger maps)
    'vgg16_voc_512': dict(
        backbone='vgg16', size=512, num_classes=21, train_on_diff_gt=True,
        arm_sources=['conv4_3', 'conv5_3', 'fc7', 'conv6_2'],
        normalizations=[10, 8, -1, -1], tcb_batchnorm=False, head_batchnorm=False,
        inter_layer_depth=[], base_lr=0.00004, force_color=False,
        dataset='VOC0712', job='refinedet_vgg16_512x512'),
}

MIN_SIZES = [32, 64, 128, 256]
STEPS = [8, 16, 32, 64]
ASPECT_RATIOS = [[2], [2], [2], [2]]
VARIANCE = [0.1, 0.1, 0.2, 0.2]


def batch_samplers():
    """The scripts' seven samplers: the whole image, then random crops of scale 0.3-1
    and aspect 0.5-2 with a minimum Jaccard overlap of 0.1 ... 0.9 or none (max 1.0)."""
    out = [{'sampler': {}, 'max_trials': 1, 'max_sample': 1}]
    for key, value in [('min_jaccard_overlap', v) for v in (0.1, 0.3, 0.5, 0.7, 0.9)] + \
            [('max_jaccard_overlap', 1.0)]:
        out.append({'sampler': {'min_scale': 0.3, 'max_scale': 1.0, 'min_aspect_ratio': 0.5,
                                'max_aspect_ratio': 2.0},
                    'sample_constraint': {key: value}, 'max_trials': 50, 'max_sample': 1})
    return out


def transform_params(size, force_color):
    train = {
        'mirror': True, 'mean_value': [104, 117, 123],
        'resize_param': {'prob': 1, 'resize_mode': P.Resize.WARP, 'height': size, 'width': size,
                         'interp_mode': [P.Resize.LINEAR, P.Resize.AREA, P.Resize.NEAREST,
                                         P.Resize.CUBIC, P.Resize.LANCZOS4]},
        'distort_param': {'brightness_prob': 0.5, 'brightness_delta': 32, 'contrast_prob': 0.5,
                          'contrast_lower': 0.5, 'contrast_upper': 1.5, 'hue_prob': 0.5,
                          'hue_delta': 18, 'saturation_prob': 0.5, 'saturation_lower': 0.5,
                          'saturation_upper': 1.5, 'random_order_prob': 0.0},
        'expand_param': {'prob': 0.5, 'max_expand_ratio': 4.0},
        'emit_constraint': {'emit_type': caffe_pb2.EmitConstraint.CENTER},
    }
    test = {'mean_value': [104, 117, 123],
            'resize_param': {'prob': 1, 'resize_mode': P.Resize.WARP, 'height': size,
                             'width': size, 'interp_mode': [P.Resize.LINEAR]}}
    if force_color:
        train['force_color'] = test['force_color'] = True
    return train, test


def body(net, cfg, data_layer='data'):
    """Backbone + extra layers + TCBs + RefineDet head; returns the five mbox tops."""
    if cfg['backbone'] == 'vgg16':
        VGGNetBody(net, from_layer=data_layer, fully_conv=True, reduced=True, dilated=False,
                   dropout=False)
        sources = vgg_extra_layers_and_tcb(net, cfg['tcb_batchnorm'], cfg['arm_sources'],
                                           cfg['normalizations'])
    else:
        ResNet101Body(net, from_layer=data_layer, use_pool5=False, use_dilation_conv5=False)
        sources = resnet_extra_layers_and_tcb(net, cfg['arm_sources'], cfg['tcb_batchnorm'])
    return CreateRefineDetHead(
        net, data_layer=data_layer, from_layers=sources, use_batchnorm=cfg['head_batchnorm'],
        min_sizes=MIN_SIZES, max_sizes=[[], [], [], []], aspect_ratios=ASPECT_RATIOS,
        steps=STEPS, normalizations=[], num_classes=cfg['num_classes'], share_location=True,
        flip=True, clip=False, prior_variance=VARIANCE, kernel_size=3, pad=1, lr_mult=1,
        from_layers2=['P3', 'P4', 'P5', 'P6'], inter_layer_depth=cfg['inter_layer_depth'])


def softmax_flatten(net, conf_name, classes):
    """Reshape a head's conf to (N, priors, classes), softmax over classes, flatten."""
    net[conf_name + '_reshape'] = L.Reshape(net[conf_name], shape=dict(dim=[0, -1, classes]))
    net[conf_name + '_softmax'] = L.Softmax(net[conf_name + '_reshape'], axis=2)
    net[conf_name + '_flatten'] = L.Flatten(net[conf_name + '_softmax'], axis=1)
    return net[conf_name + '_flatten']


def write_job(root, variant, batch_size=32, gpus='0,1,2,3'):
    """Everything a RefineDet example script writes, under `root`; returns the paths."""
    cfg = VARIANTS[variant]
    size, num_classes = cfg['size'], cfg['num_classes']
    stand_in = os.path.join(root, 'stand_in')
    train_data = os.path.join(stand_in, 'train_lmdb')
    test_data = os.path.join(stand_in, 'test_lmdb')
    label_map_file = os.path.join(stand_in, 'labelmap.prototxt')
    name_size_file = os.path.join(stand_in, 'test_name_size.txt')
    pretrain_model = os.path.join(stand_in, 'pretrained.caffemodel')
    model_name = '{}_{}'.format(cfg['dataset'], cfg['job'])
    save_dir = os.path.join(root, 'models', cfg['job'])
    job_dir = os.path.join(root, 'jobs', cfg['job'])
    paths = {k: os.path.join(save_dir, k + '.prototxt')
             for k in ('train', 'test', 'deploy', 'solver')}
    paths['job'] = os.path.join(job_dir, model_name + '.sh')
    snapshot_prefix = os.path.join(save_dir, model_name)

    neg_pos_ratio = 3.
    loc_weight = (neg_pos_ratio + 1.) / 4.
    multibox_loss_param = {
        'loc_loss_type': P.MultiBoxLoss.SMOOTH_L1, 'conf_loss_type': P.MultiBoxLoss.SOFTMAX,
        'loc_weight': loc_weight, 'num_classes': num_classes, 'share_location': True,
        'match_type': P.MultiBoxLoss.PER_PREDICTION, 'overlap_threshold': 0.5,
        'use_prior_for_matching': True, 'background_label_id': 0,
        'use_difficult_gt': cfg['train_on_diff_gt'], 'mining_type': P.MultiBoxLoss.MAX_NEGATIVE,
        'neg_pos_ratio': neg_pos_ratio, 'neg_overlap': 0.5, 'code_type': P.PriorBox.CENTER_SIZE,
        'ignore_cross_boundary_bbox': False, 'objectness_score': 0.01}
    loss_param = {'normalization': P.Loss.VALID}
    det_out_param = {'num_classes': num_classes, 'share_location': True,
                     'background_label_id': 0,
                     'nms_param': {'nms_threshold': 0.45, 'top_k': 1000}, 'keep_top_k': 500,
                     'confidence_threshold': 0.01, 'code_type': P.PriorBox.CENTER_SIZE,
                     'objectness_score': 0.01}
    det_eval_param = {'num_classes': num_classes, 'background_label_id': 0,
                      'overlap_threshold': 0.5, 'evaluate_difficult_gt': False,
                      'name_size_file': name_size_file}
    num_gpus = len(gpus.split(','))
    per_device = int(math.ceil(float(batch_size) / num_gpus))
    iter_size = int(math.ceil(float(batch_size) / (per_device * num_gpus)))
    base_lr = cfg['base_lr'] * 25. / loc_weight

    for path in (train_data, test_data, label_map_file, pretrain_model):
        check_if_exist(path)
    for d in (save_dir, job_dir):
        make_if_not_exist(d)
    train_tp, test_tp = transform_params(size, cfg['force_color'])

    # Train net.
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(
        train_data, batch_size=per_device, train=True, output_label=True,
        label_map_file=label_map_file, transform_param=train_tp, batch_sampler=batch_samplers())
    mbox = body(net, cfg)
    arm_param = dict(multibox_loss_param, num_classes=2)
    train_only = dict(phase=caffe_pb2.Phase.Value('TRAIN'))
    net.arm_loss = L.MultiBoxLoss(mbox[0], mbox[1], mbox[2], net.label,
                                  multibox_loss_param=arm_param, loss_param=loss_param,
                                  include=train_only, propagate_down=[True, True, False, False])
    arm_flat = softmax_flatten(net, 'arm_conf', 2)
    net.odm_loss = L.MultiBoxLoss(mbox[3], mbox[4], mbox[2], net.label, arm_flat, mbox[0],
                                  multibox_loss_param=multibox_loss_param, loss_param=loss_param,
                                  include=train_only,
                                  propagate_down=[True, True, False, False, False, False])
    with open(paths['train'], 'w') as f:
        print('name: "{}_train"'.format(model_name), file=f)
        print(net.to_proto(), file=f)

    # Test net.
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(
        test_data, batch_size=1, train=False, output_label=True, label_map_file=label_map_file,
        transform_param=test_tp)
    mbox = body(net, cfg)
    arm_flat = softmax_flatten(net, 'arm_conf', 2)
    odm_flat = softmax_flatten(net, 'odm_conf', num_classes)
    test_only = dict(phase=caffe_pb2.Phase.Value('TEST'))
    net.detection_out = L.DetectionOutput(mbox[3], odm_flat, mbox[2], arm_flat, mbox[0],
                                          detection_output_param=det_out_param,
                                          include=test_only)
    net.detection_eval = L.DetectionEvaluate(net.detection_out, net.label,
                                             detection_evaluate_param=det_eval_param,
                                             include=test_only)
    with open(paths['test'], 'w') as f:
        print('name: "{}_test"'.format(model_name), file=f)
        print(net.to_proto(), file=f)

    # Deploy net: the test net without its data and evaluation layers, an input instead.
    net_param = net.to_proto()
    del net_param.layer[0]
    del net_param.layer[-1]
    net_param.name = '{}_deploy'.format(model_name)
    net_param.input.extend(['data'])
    net_param.input_shape.extend([caffe_pb2.BlobShape(dim=[1, 3, size, size])])
    with open(paths['deploy'], 'w') as f:
        print(net_param, file=f)

    solver = caffe_pb2.SolverParameter(
        train_net=paths['train'], snapshot_prefix=snapshot_prefix, base_lr=base_lr,
        weight_decay=0.0005, lr_policy='multistep', stepvalue=[80000, 100000, 120000],
        gamma=0.1, momentum=0.9, iter_size=iter_size, max_iter=120000, snapshot=5000,
        display=10, average_loss=10, type='SGD', solver_mode=P.Solver.GPU, device_id=0,
        debug_info=False, snapshot_after_train=True)
    with open(paths['solver'], 'w') as f:
        print(solver, file=f)
    with open(paths['job'], 'w') as f:
        f.write('cd {}\n./build/tools/caffe train \\\n--solver="{}" \\\n--weights="{}" \\\n'
                '--gpu {} 2>&1 | tee {}/{}.log\n'.format(root, paths['solver'], pretrain_model,
                                                         gpus, job_dir, model_name))
    return paths
