#!/usr/bin/env python3
"""Write the prototxt models of py-faster-rcnn (and its OHEM variants) from one description.

    python models/make_models.py            # (re)write every file under models/
    python models/make_models.py --check    # exit 1 if a committed file differs

Each architecture (ZF, VGG_CNN_M_1024, VGG16, and the small ToyNet used by the toy data
set) is a conv body plus sizes for the RPN and the RoI head. From that, every training
scheme's nets and solvers are laid out the way py-faster-rcnn lays them out: layer
names, blob names, learning-rate multipliers, fillers and solver settings are the
published ones, so ImageNet and py-faster-rcnn .caffemodel files load into them by name.
Writing them from one description keeps ~100 files consistent; the files themselves are
committed, as users expect to read and edit them.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------
# Prototxt text
# ---------------------------------------------------------------------------------------


def _value(v) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, Enum):
        return v.name
    if isinstance(v, str):
        return '"%s"' % v.replace('\n', '\\n')
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e6 else ('%d' % v if abs(v) >= 1 or v == 0 else repr(v))
    return str(v)


class Enum:
    """An enum value written bare (pool: MAX)."""

    def __init__(self, name: str):
        self.name = name


def _block(name: str, fields, indent: str) -> List[str]:
    lines = [indent + name + ' {']
    lines += _fields(fields, indent + '  ')
    lines.append(indent + '}')
    return lines


def _fields(fields, indent: str) -> List[str]:
    lines = []
    items = fields.items() if isinstance(fields, dict) else fields
    for key, val in items:
        if isinstance(val, dict):
            lines += _block(key, val, indent)
        elif isinstance(val, list) and val and isinstance(val[0], dict):
            for v in val:
                lines += _block(key, v, indent)
        elif isinstance(val, list):
            lines += ['%s%s: %s' % (indent, key, _value(v)) for v in val]
        else:
            lines.append('%s%s: %s' % (indent, key, _value(val)))
    return lines


def layer(name: str, type_: str, bottom=(), top=(), **fields) -> str:
    """One `layer { ... }` block; keyword order is kept."""
    body = [('name', name), ('type', type_)]
    body += [('bottom', list(bottom))] if bottom else []
    body += [('top', list(top))] if top else []
    body += [(k, v) for k, v in fields.items()]
    return '\n'.join(_block('layer', body, '')) + '\n'


def lr(*mults) -> List[dict]:
    """param { lr_mult decay_mult } pairs: trainable weights (1, 1) and biases (2, 0), or frozen."""
    out = []
    for m in mults:
        if m == 'w':
            out.append({'lr_mult': 1, 'decay_mult': 1})
        elif m == 'b':
            out.append({'lr_mult': 2, 'decay_mult': 0})
        elif m == 0:
            out.append({'lr_mult': 0, 'decay_mult': 0})
    return out


TRAINABLE = lr('w', 'b')
FROZEN = lr(0, 0)


def gaussian(std):
    return {'type': 'gaussian', 'std': std}


CONST0 = {'type': 'constant', 'value': 0}

# ---------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------


class Arch:
    """A conv body and the sizes of what sits on it."""

    def __init__(self, name, body, feat, stride, rpn_conv, pooled, fc, frozen, prefix,
                 conv_fillers=None, fc_fillers=None, anchor_scales=None, anchor_ratios=None,
                 pretrained=None, relu_slope=0.0):
        self.name, self.body, self.feat, self.stride = name, body, feat, stride
        self.rpn_conv, self.pooled, self.fc, self.frozen = rpn_conv, pooled, fc, frozen
        self.prefix = prefix                      # snapshot prefix: zf, vgg16, vgg_cnn_m_1024
        self.conv_fillers = conv_fillers          # None: weights come from ImageNet models
        self.fc_fillers = fc_fillers
        self.anchor_scales = anchor_scales
        self.anchor_ratios = anchor_ratios
        self.pretrained = pretrained
        # Leaky ReLUs keep units of a net trained from scratch from dying (the toy net).
        self.relu_slope = relu_slope

    def relu(self, name: str, blob: str, **extra) -> str:
        if self.relu_slope:
            extra['relu_param'] = {'negative_slope': self.relu_slope}
        return layer(name, 'ReLU', [blob], [blob], **extra)

    @property
    def feat_channels(self) -> int:
        return [l for l in self.body if l[0] == 'conv'][-1][2]

    def layers(self, data='data', freeze_all=False) -> str:
        """The conv body; `frozen` convs (or all with freeze_all) have lr_mult 0."""
        out, last = [], data
        for spec in self.body:
            kind, name = spec[0], spec[1]
            if kind == 'conv':
                _, _, n, k, s, p = spec
                cp = {'num_output': n, 'kernel_size': k, 'pad': p, 'stride': s}
                if self.conv_fillers:
                    # The first conv sees raw pixels (mean-subtracted, std ~60), not unit
                    # variance inputs: scale its weights so its outputs start near 1.
                    first = last == data
                    cp['weight_filler'] = gaussian(0.002) if first else dict(self.conv_fillers)
                    cp['bias_filler'] = dict(CONST0)
                frozen = freeze_all or name in self.frozen
                out.append(layer(name, 'Convolution', [last], [name],
                                 param=FROZEN if frozen else TRAINABLE, convolution_param=cp))
                last = name
            elif kind == 'relu':
                out.append(self.relu(name, last))
            elif kind == 'lrn':
                _, _, size, alpha, beta, region, k = spec
                p = {'local_size': size, 'alpha': alpha, 'beta': beta}
                if region:
                    p['norm_region'] = Enum(region)
                if k is not None:
                    p['k'] = k
                out.append(layer(name, 'LRN', [last], [name], lrn_param=p))
                last = name
            elif kind == 'pool':
                _, _, k, s, p = spec
                pp = {'pool': Enum('MAX'), 'kernel_size': k, 'stride': s}
                if p:
                    pp['pad'] = p
                out.append(layer(name, 'Pooling', [last], [name], pooling_param=pp))
                last = name
        assert last == self.feat, (self.name, last)
        return ''.join(out)


def _vgg16_body():
    body = []
    blocks = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    for b, n, reps in blocks:
        for r in range(1, reps + 1):
            body.append(('conv', 'conv%d_%d' % (b, r), n, 3, 1, 1))
            body.append(('relu', 'relu%d_%d' % (b, r)))
        if b < 5:
            body.append(('pool', 'pool%d' % b, 2, 2, 0))
    return body


ARCHS: Dict[str, Arch] = {
    'ZF': Arch('ZF', [
        ('conv', 'conv1', 96, 7, 2, 3), ('relu', 'relu1'),
        ('lrn', 'norm1', 3, 0.00005, 0.75, 'WITHIN_CHANNEL', None), ('pool', 'pool1', 3, 2, 1),
        ('conv', 'conv2', 256, 5, 2, 2), ('relu', 'relu2'),
        ('lrn', 'norm2', 3, 0.00005, 0.75, 'WITHIN_CHANNEL', None), ('pool', 'pool2', 3, 2, 1),
        ('conv', 'conv3', 384, 3, 1, 1), ('relu', 'relu3'),
        ('conv', 'conv4', 384, 3, 1, 1), ('relu', 'relu4'),
        ('conv', 'conv5', 256, 3, 1, 1), ('relu', 'relu5')],
        feat='conv5', stride=16, rpn_conv=256, pooled=6, fc=(4096, 4096), frozen=(), prefix='zf',
        pretrained='ZF.v2.caffemodel'),
    'VGG_CNN_M_1024': Arch('VGG_CNN_M_1024', [
        ('conv', 'conv1', 96, 7, 2, 0), ('relu', 'relu1'),
        ('lrn', 'norm1', 5, 0.0005, 0.75, None, 2.0), ('pool', 'pool1', 3, 2, 0),
        ('conv', 'conv2', 256, 5, 2, 1), ('relu', 'relu2'),
        ('lrn', 'norm2', 5, 0.0005, 0.75, None, 2.0), ('pool', 'pool2', 3, 2, 0),
        ('conv', 'conv3', 512, 3, 1, 1), ('relu', 'relu3'),
        ('conv', 'conv4', 512, 3, 1, 1), ('relu', 'relu4'),
        ('conv', 'conv5', 512, 3, 1, 1), ('relu', 'relu5')],
        feat='conv5', stride=16, rpn_conv=256, pooled=6, fc=(4096, 1024), frozen=('conv1',),
        prefix='vgg_cnn_m_1024', pretrained='VGG_CNN_M_1024.v2.caffemodel'),
    'VGG16': Arch('VGG16', _vgg16_body(), feat='conv5_3', stride=16, rpn_conv=512, pooled=7,
                  fc=(4096, 4096), frozen=('conv1_1', 'conv1_2', 'conv2_1', 'conv2_2'),
                  prefix='vgg16', pretrained='VGG16.v2.caffemodel'),
    # A small net of the same structure for the toy data set: stride 8, trained from scratch.
    'ToyNet': Arch('ToyNet', [
        ('conv', 'conv1', 32, 5, 2, 2), ('relu', 'relu1'), ('pool', 'pool1', 2, 2, 0),
        ('conv', 'conv2', 64, 3, 1, 1), ('relu', 'relu2'), ('pool', 'pool2', 2, 2, 0),
        ('conv', 'conv3', 128, 3, 1, 1), ('relu', 'relu3'),
        ('conv', 'conv4', 128, 3, 1, 1), ('relu', 'relu4')],
        feat='conv4', stride=8, rpn_conv=128, pooled=6, fc=(256, 256), frozen=(), prefix='toynet',
        conv_fillers={'type': 'msra'}, fc_fillers={'type': 'msra'},
        anchor_scales=(2, 4, 8), relu_slope=0.1),
}

# ---------------------------------------------------------------------------------------
# Pieces of nets
# ---------------------------------------------------------------------------------------


def _anchor_params(arch: Arch, scales=None) -> str:
    text = "'feat_stride': %d" % arch.stride
    scales = scales or arch.anchor_scales
    if scales:
        text += "\n'scales': [%s]" % ', '.join(str(s) for s in scales)
    return text


def _num_anchors(arch: Arch, scales=None) -> int:
    scales = scales or arch.anchor_scales or (8, 16, 32)
    return 3 * len(scales)


def data_layer(num_classes: int, tops: Sequence[str]) -> str:
    return layer('input-data', 'Python', top=tops, python_param={
        'module': 'roi_data_layer.layer', 'layer': 'RoIDataLayer',
        'param_str': "'num_classes': %d" % num_classes})


FRCN_TOPS = ['data', 'rois', 'labels', 'bbox_targets', 'bbox_inside_weights', 'bbox_outside_weights']
RPN_TOPS = ['data', 'im_info', 'gt_boxes']


def rpn_head(arch: Arch, frozen=False, scales=None) -> str:
    """rpn_conv/3x3 -> cls score / bbox pred (trainable or frozen)."""
    a = _num_anchors(arch, scales)
    p = FROZEN if frozen else TRAINABLE
    std = 0.01
    return ''.join([
        layer('rpn_conv/3x3', 'Convolution', [arch.feat], ['rpn/output'], param=p,
              convolution_param={'num_output': arch.rpn_conv, 'kernel_size': 3, 'pad': 1, 'stride': 1,
                                 'weight_filler': gaussian(std), 'bias_filler': dict(CONST0)}),
        arch.relu('rpn_relu/3x3', 'rpn/output'),
        layer('rpn_cls_score', 'Convolution', ['rpn/output'], ['rpn_cls_score'], param=p,
              convolution_param={'num_output': 2 * a, 'kernel_size': 1, 'pad': 0, 'stride': 1,
                                 'weight_filler': gaussian(std), 'bias_filler': dict(CONST0)}),
        layer('rpn_bbox_pred', 'Convolution', ['rpn/output'], ['rpn_bbox_pred'], param=p,
              convolution_param={'num_output': 4 * a, 'kernel_size': 1, 'pad': 0, 'stride': 1,
                                 'weight_filler': gaussian(std), 'bias_filler': dict(CONST0)}),
        layer('rpn_cls_score_reshape', 'Reshape', ['rpn_cls_score'], ['rpn_cls_score_reshape'],
              reshape_param={'shape': {'dim': [0, 2, -1, 0]}}),
    ])


def rpn_losses(arch: Arch, scales=None) -> str:
    return ''.join([
        layer('rpn-data', 'Python', ['rpn_cls_score', 'gt_boxes', 'im_info', 'data'],
              ['rpn_labels', 'rpn_bbox_targets', 'rpn_bbox_inside_weights', 'rpn_bbox_outside_weights'],
              python_param={'module': 'rpn.anchor_target_layer', 'layer': 'AnchorTargetLayer',
                            'param_str': _anchor_params(arch, scales)}),
        layer('rpn_loss_cls', 'SoftmaxWithLoss', ['rpn_cls_score_reshape', 'rpn_labels'], ['rpn_cls_loss'],
              propagate_down=[1, 0], loss_weight=1, loss_param={'ignore_label': -1, 'normalize': True}),
        layer('rpn_loss_bbox', 'SmoothL1Loss',
              ['rpn_bbox_pred', 'rpn_bbox_targets', 'rpn_bbox_inside_weights', 'rpn_bbox_outside_weights'],
              ['rpn_loss_bbox'], loss_weight=1, smooth_l1_loss_param={'sigma': 3.0}),
    ])


def rpn_proposals(arch: Arch, tops=('rpn_rois',), scales=None) -> str:
    a = _num_anchors(arch, scales)
    return ''.join([
        layer('rpn_cls_prob', 'Softmax', ['rpn_cls_score_reshape'], ['rpn_cls_prob']),
        layer('rpn_cls_prob_reshape', 'Reshape', ['rpn_cls_prob'], ['rpn_cls_prob_reshape'],
              reshape_param={'shape': {'dim': [0, 2 * a, -1, 0]}}),
        layer('proposal', 'Python', ['rpn_cls_prob_reshape', 'rpn_bbox_pred', 'im_info'], list(tops),
              python_param={'module': 'rpn.proposal_layer', 'layer': 'ProposalLayer',
                            'param_str': _anchor_params(arch, scales)}),
    ])


def proposal_targets(num_classes: int) -> str:
    return layer('roi-data', 'Python', ['rpn_rois', 'gt_boxes'],
                 ['rois', 'labels', 'bbox_targets', 'bbox_inside_weights', 'bbox_outside_weights'],
                 python_param={'module': 'rpn.proposal_target_layer', 'layer': 'ProposalTargetLayer',
                               'param_str': "'num_classes': %d" % num_classes})


def _fc_param(arch: Arch, n: int, std: float, final: bool) -> dict:
    p = {'num_output': n}
    if final:
        p['weight_filler'] = gaussian(std)
        p['bias_filler'] = dict(CONST0)
    elif arch.fc_fillers:
        p['weight_filler'] = dict(arch.fc_fillers)
        p['bias_filler'] = dict(CONST0)
    return p


def roi_head(arch: Arch, num_classes: int, rois='rois', suffix='', shared_names=False,
             frozen=False, dropout=True, readonly=False) -> str:
    """roi_pool5 -> fc6 -> fc7 -> cls_score, bbox_pred.

    `shared_names` gives every parameter a name (fc6_w, ...) so that an OHEM readonly copy
    can share it; `readonly` builds that copy: no gradient to its bottoms.
    """
    def params(base):
        if frozen:
            specs = FROZEN
        else:
            specs = [dict(s) for s in TRAINABLE]
        if readonly:
            return [{'name': base + '_w'}, {'name': base + '_b'}]
        if shared_names:
            specs = [dict(specs[0], name=base + '_w'), dict(specs[1], name=base + '_b')]
            specs = [{'name': s.pop('name'), **s} for s in specs]
        return specs

    pd = {'propagate_down': [False]} if readonly else {}
    s = suffix
    out = [layer('roi_pool5' + s, 'ROIPooling', [arch.feat, rois], ['pool5' + s],
                 **({'propagate_down': [False, False]} if readonly else {}),
                 roi_pooling_param={'pooled_w': arch.pooled, 'pooled_h': arch.pooled,
                                    'spatial_scale': 1.0 / arch.stride})]
    last = 'pool5' + s
    for i, n in ((6, arch.fc[0]), (7, arch.fc[1])):
        name = 'fc%d' % i
        out.append(layer(name + s, 'InnerProduct', [last], [name + s], **pd, param=params(name),
                         inner_product_param=_fc_param(arch, n, 0.01, False)))
        out.append(arch.relu('relu%d' % i + s, name + s, **pd))
        if dropout:
            out.append(layer('drop%d' % i + s, 'Dropout', [name + s], [name + s], **pd,
                             dropout_param={'dropout_ratio': 0.5}))
        last = name + s
    out.append(layer('cls_score' + s, 'InnerProduct', [last], ['cls_score' + s], **pd,
                     param=params('cls_score'), inner_product_param=_fc_param(arch, num_classes, 0.01, True)))
    out.append(layer('bbox_pred' + s, 'InnerProduct', [last], ['bbox_pred' + s], **pd,
                     param=params('bbox_pred'),
                     inner_product_param=_fc_param(arch, 4 * num_classes, 0.001, True)))
    return ''.join(out)


def roi_losses(labels='labels', targets='bbox_targets', inside='bbox_inside_weights',
               outside='bbox_outside_weights') -> str:
    return ''.join([
        layer('loss_cls', 'SoftmaxWithLoss', ['cls_score', labels], ['loss_cls'],
              propagate_down=[1, 0], loss_weight=1),
        layer('loss_bbox', 'SmoothL1Loss', ['bbox_pred', targets, inside, outside], ['loss_bbox'],
              loss_weight=1),
    ])


def ohem_head(arch: Arch, num_classes: int) -> str:
    """The readonly RoI network, hard RoI mining, and the trainable head on the hard RoIs."""
    return ''.join([
        '#========= Readonly RoI network: scores every RoI, no gradient ============\n',
        roi_head(arch, num_classes, rois='rois', suffix='_readonly', readonly=True),
        layer('cls_prob_readonly', 'Softmax', ['cls_score_readonly'], ['cls_prob_readonly'],
              propagate_down=[False]),
        layer('hard_roi_mining', 'Python',
              ['cls_prob_readonly', 'bbox_pred_readonly', 'rois', 'labels', 'bbox_targets',
               'bbox_inside_weights', 'bbox_outside_weights'],
              ['rois_hard', 'labels_hard', 'bbox_targets_hard', 'bbox_inside_weights_hard',
               'bbox_outside_weights_hard'],
              propagate_down=[False] * 7,
              python_param={'module': 'roi_data_layer.layer', 'layer': 'OHEMDataLayer',
                            'param_str': "'num_classes': %d" % num_classes}),
        '#========= Trainable RoI network on the hard RoIs ============\n',
        roi_head(arch, num_classes, rois='rois_hard', shared_names=True).replace(
            "  bottom: \"rois_hard\"\n  top: \"pool5\"\n",
            "  bottom: \"rois_hard\"\n  top: \"pool5\"\n  propagate_down: true\n  propagate_down: false\n"),
        roi_losses('labels_hard', 'bbox_targets_hard', 'bbox_inside_weights_hard', 'bbox_outside_weights_hard'),
    ])


def dummy_fc(arch: Arch) -> str:
    """Keep fc6/fc7 (frozen) in RPN-only nets so their weights travel between stages."""
    dim = arch.feat_channels * arch.pooled * arch.pooled
    return ''.join([
        '#========= RCNN ============\n',
        layer('dummy_roi_pool_conv5', 'DummyData', top=['dummy_roi_pool_conv5'],
              dummy_data_param={'shape': {'dim': [1, dim]}, 'data_filler': gaussian(0.01)}),
        layer('fc6', 'InnerProduct', ['dummy_roi_pool_conv5'], ['fc6'], param=FROZEN,
              inner_product_param=_fc_param(arch, arch.fc[0], 0.01, False)),
        arch.relu('relu6', 'fc6'),
        layer('fc7', 'InnerProduct', ['fc6'], ['fc7'], param=FROZEN,
              inner_product_param=_fc_param(arch, arch.fc[1], 0.01, False)),
        layer('silence_fc7', 'Silence', ['fc7']),
    ])


def dummy_rpn(arch: Arch) -> str:
    """Keep the RPN (frozen) in Fast R-CNN-only nets so its weights travel between stages."""
    return ''.join([
        '#========= RPN ============\n',
        rpn_head(arch, frozen=True).split('layer {\n  name: "rpn_cls_score_reshape"')[0],
        layer('silence_rpn_cls_score', 'Silence', ['rpn_cls_score']),
        layer('silence_rpn_bbox_pred', 'Silence', ['rpn_bbox_pred']),
    ])


def header(name: str) -> str:
    return 'name: "%s"\n' % name


def test_inputs(extra: str) -> str:
    text = 'input: "data"\ninput_shape {\n  dim: 1\n  dim: 3\n  dim: 224\n  dim: 224\n}\n'
    if extra == 'im_info':
        text += 'input: "im_info"\ninput_shape {\n  dim: 1\n  dim: 3\n}\n'
    else:
        text += 'input: "rois"\ninput_shape {\n  dim: 1\n  dim: 5\n}\n'
    return text


def test_tail(arch: Arch, num_classes: int) -> str:
    return roi_head(arch, num_classes, dropout=True) + layer('cls_prob', 'Softmax', ['cls_score'], ['cls_prob'])

# ---------------------------------------------------------------------------------------
# Whole files
# ---------------------------------------------------------------------------------------


def end2end_train(arch, nc, scales=None, ohem=False):
    text = header(arch.name) + data_layer(nc, RPN_TOPS) + arch.layers()
    text += '#========= RPN ============\n' + rpn_head(arch, scales=scales) + rpn_losses(arch, scales)
    text += '#========= RoI Proposal ============\n' + rpn_proposals(arch, scales=scales) + proposal_targets(nc)
    text += '#========= RCNN ============\n'
    text += ohem_head(arch, nc) if ohem else roi_head(arch, nc) + roi_losses()
    return text


def end2end_test(arch, nc, scales=None):
    return (header(arch.name) + test_inputs('im_info') + arch.layers()
            + '#========= RPN ============\n' + rpn_head(arch, scales=scales)
            + rpn_proposals(arch, tops=('rois',), scales=scales)
            + '#========= RCNN ============\n' + test_tail(arch, nc))


def fast_rcnn_train(arch, nc, ohem=False, freeze_convs=False, with_rpn=False):
    text = header(arch.name) + data_layer(nc, FRCN_TOPS) + arch.layers(freeze_all=freeze_convs)
    text += ohem_head(arch, nc) if ohem else roi_head(arch, nc) + roi_losses()
    if with_rpn:
        text += dummy_rpn(arch)
    return text


def fast_rcnn_test(arch, nc):
    return header(arch.name) + test_inputs('rois') + arch.layers() + test_tail(arch, nc)


def rpn_train(arch, nc, freeze_convs):
    return (header(arch.name) + data_layer(nc, RPN_TOPS) + arch.layers(freeze_all=freeze_convs)
            + '#========= RPN ============\n' + rpn_head(arch) + rpn_losses(arch) + dummy_fc(arch))


def rpn_test(arch):
    return (header(arch.name) + test_inputs('im_info') + arch.layers()
            + '#========= RPN ============\n' + rpn_head(arch) + rpn_proposals(arch, tops=('rois', 'scores')))


def solver(net_path, stepsize, prefix, base_lr=0.001, iter_size=None, net_key='train_net', extra=None,
           clip=None):
    lines = ['%s: "%s"' % (net_key, net_path), 'base_lr: %s' % _value(base_lr), 'lr_policy: "step"',
             'gamma: 0.1', 'stepsize: %d' % stepsize, 'display: 20', 'average_loss: 100',
             'momentum: 0.9', 'weight_decay: 0.0005',
             '# We disable standard caffe solver snapshotting and implement our own snapshot',
             '# function', 'snapshot: 0', '# We still use the snapshot prefix, though',
             'snapshot_prefix: "%s"' % prefix]
    if iter_size:
        lines.append('iter_size: %d' % iter_size)
    if clip:
        lines.append('# Trained from scratch: clip the gradient norm so early steps cannot blow up')
        lines.append('clip_gradients: %s' % _value(float(clip)))
    for k, v in (extra or {}).items():
        lines.append('%s: %s' % (k, _value(v)))
    return '\n'.join(lines) + '\n'


def files_for(root: str, arch: Arch, nc: int, toy=False, coco_scales=None) -> Dict[str, str]:
    """Every file of one architecture under models/<root>/<arch>/."""
    d = '%s/%s' % (root, arch.name)
    p = arch.prefix
    out: Dict[str, str] = {}
    # Toy nets train from scratch: a larger learning rate, steps sized for short runs.
    lr_e2e = 0.003 if toy else 0.001

    def sol(*args, **kwargs):
        return solver(*args, clip=10 if toy else None, **kwargs)
    if root != 'coco' or True:
        e = d + '/faster_rcnn_end2end'
        out[e + '/train.prototxt'] = end2end_train(arch, nc, coco_scales)
        out[e + '/test.prototxt'] = end2end_test(arch, nc, coco_scales)
        out[e + '/solver.prototxt'] = sol('models/%s/train.prototxt' % e,
                                             2000 if toy else (350000 if root == 'coco' else 50000),
                                             p + '_faster_rcnn', lr_e2e,
                                             iter_size=2 if (arch.name == 'VGG16' and root == 'coco') else None)
        o = d + '/faster_rcnn_end2end_ohem'
        out[o + '/train.prototxt'] = end2end_train(arch, nc, coco_scales, ohem=True)
        out[o + '/test.prototxt'] = end2end_test(arch, nc, coco_scales)
        out[o + '/solver.prototxt'] = sol('models/%s/train.prototxt' % o,
                                             2000 if toy else (350000 if root == 'coco' else 50000),
                                             p + '_faster_rcnn_ohem', lr_e2e)
    f = d + '/fast_rcnn'
    out[f + '/train.prototxt'] = fast_rcnn_train(arch, nc)
    out[f + '/test.prototxt'] = fast_rcnn_test(arch, nc)
    out[f + '/solver.prototxt'] = sol('models/%s/train.prototxt' % f,
                                         1500 if toy else (200000 if root == 'coco' else 30000),
                                         p + '_fast_rcnn', lr_e2e)
    fo = d + '/fast_rcnn_ohem'
    out[fo + '/train.prototxt'] = fast_rcnn_train(arch, nc, ohem=True)
    out[fo + '/test.prototxt'] = fast_rcnn_test(arch, nc)
    out[fo + '/solver.prototxt'] = sol('models/%s/train.prototxt' % fo,
                                          1500 if toy else (200000 if root == 'coco' else 30000),
                                          p + '_fast_rcnn_ohem', lr_e2e)
    if root == 'coco':
        return out
    a = d + '/faster_rcnn_alt_opt'
    rpn_step, frcn_step = (1500, 1000) if toy else (60000, 30000)
    for stage in (1, 2):
        frozen = stage == 2
        out[a + '/stage%d_rpn_train.pt' % stage] = rpn_train(arch, nc, frozen)
        out[a + '/stage%d_fast_rcnn_train.pt' % stage] = fast_rcnn_train(arch, nc, freeze_convs=frozen, with_rpn=True)
        out[a + '/stage%d_fast_rcnn_ohem_train.pt' % stage] = fast_rcnn_train(arch, nc, ohem=True, freeze_convs=frozen, with_rpn=True)
        out[a + '/stage%d_rpn_solver60k80k.pt' % stage] = sol(
            'models/%s/stage%d_rpn_train.pt' % (a, stage), rpn_step, p + '_rpn', lr_e2e)
        out[a + '/stage%d_fast_rcnn_solver30k40k.pt' % stage] = sol(
            'models/%s/stage%d_fast_rcnn_train.pt' % (a, stage), frcn_step, p + '_fast_rcnn', lr_e2e)
        out[a + '/stage%d_fast_rcnn_ohem_solver30k40k.pt' % stage] = sol(
            'models/%s/stage%d_fast_rcnn_ohem_train.pt' % (a, stage), frcn_step, p + '_fast_rcnn_ohem', lr_e2e)
    out[a + '/rpn_test.pt'] = rpn_test(arch)
    out[a + '/faster_rcnn_test.pt'] = end2end_test(arch, nc)
    return out


def all_files() -> Dict[str, str]:
    out: Dict[str, str] = {}
    for name in ('ZF', 'VGG_CNN_M_1024', 'VGG16'):
        out.update(files_for('pascal_voc', ARCHS[name], 21))
    out.update(files_for('coco', ARCHS['VGG16'], 81, coco_scales=(4, 8, 16, 32)))
    out.update(files_for('coco', ARCHS['VGG_CNN_M_1024'], 81))
    out.update(files_for('toy', ARCHS['ToyNet'], 6, toy=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='compare with the files on disk, write nothing')
    args = ap.parse_args(argv)
    stale = []
    for rel, text in sorted(all_files().items()):
        path = os.path.join(HERE, rel)
        if args.check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(rel)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    if stale:
        print('out of date (run python models/make_models.py):\n  ' + '\n  '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
