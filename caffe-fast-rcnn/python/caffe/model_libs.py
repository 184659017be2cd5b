"""caffe.model_libs: the net-writing helpers SSD's and RefineDet's example scripts import.

`examples/refinedet/*.py` (and SSD's `examples/ssd/*.py`) start with
`from caffe.model_libs import *` and then build their train/test/deploy nets from these
pieces on a `caffe.NetSpec`: a backbone (`VGGNetBody`, `ResNet101Body`, ...), extra layers
made of `ConvBNLayer` / `DeconvBNLayer` / `EltwiseLayer` / `ResBody` (RefineDet's
transfer-connection blocks), the data layer (`CreateAnnotatedDataLayer`) and the heads
(`CreateMultiBoxHead`, `CreateRefineDetHead`). The star import also hands the scripts
`caffe`, `L` (layers), `P` (parameter enums), `caffe_pb2` and `os`, as the original did.

What matters is the NetParameter these functions write, because trained weights are found
by layer name and checked by shape: every layer name, top, parameter spec, filler and the
order of layers is what RefineDet's model_libs.py writes (so VGG_ILSVRC_16_layers_fc_reduced,
the ResNet-101/152 caffemodels and RefineDet's released models load). Where the original
could not run on Python 3 (`xrange`, `/` giving floats for pads) or on an unusual argument
(`nopool` left `dilation` undefined), this one does the evident thing. Deliberate
differences are noted in the functions concerned:

* ConvBNLayer/DeconvBNLayer write RefineDet's plain BatchNorm/Scale pair (no parameter
  specs; Caffe adds lr_mult 0 for the statistics itself). SSD's version always wrote
  `eps: 0.001`, `moving_average_fraction: 0.999` and lr specs, and RefineDet silently
  ignored such keyword arguments; here they are written when a caller passes them
  (`eps=`, `moving_average_fraction=`, `use_global_stats=`).
* CreateMultiBoxHead names its concatenations `mbox_loc`, `mbox_conf`, `mbox_priorbox` as
  SSD does (SSD's scripts refer to `mbox_conf` by name); RefineDet's copy grew a `prefix`
  argument whose empty default gave `_loc`; `prefix` is kept, defaulting to 'mbox'.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import caffe  # noqa: F401  (part of what `from caffe.model_libs import *` gives scripts)
from . import params as P
from .net_spec import NetSpec, Top, layers as L
from .proto import caffe_pb2

__all__ = ['caffe', 'L', 'P', 'caffe_pb2', 'os',
           'check_if_exist', 'make_if_not_exist', 'UnpackVariable',
           'ConvBNLayer', 'DeconvBNLayer', 'EltwiseLayer', 'ResBody', 'InceptionTower',
           'CreateAnnotatedDataLayer', 'ZFNetBody', 'VGGNetBody', 'ResNet101Body',
           'ResNet152Body', 'InceptionV3Body', 'CreateMultiBoxHead', 'CreateRefineDetHead']


# ---- small utilities ---------------------------------------------------------------------------

def check_if_exist(path: str) -> bool:
    """Whether `path` exists (the scripts call it on their inputs and ignore the answer)."""
    return os.path.exists(path)


def make_if_not_exist(path: str) -> None:
    """Create directory `path` (and its parents) unless it is already there."""
    os.makedirs(path, exist_ok=True)


def UnpackVariable(var: Any, num: int) -> List[Any]:
    """`var` as a list of `num` values: a list of that length as it is, a one-element list or
    a bare value repeated (ConvBNLayer's kernel/pad/stride given once or per axis)."""
    if num <= 0:
        raise ValueError('UnpackVariable: num must be positive, got %r' % (num,))
    if isinstance(var, (list, tuple)):
        if len(var) == num:
            return list(var)
        if len(var) != 1:
            raise ValueError('UnpackVariable: %r has %d values; give 1 or %d'
                             % (var, len(var), num))
        return [var[0]] * num
    return [var] * num


def _same_pad(kernel_size: int, dilation: int) -> int:
    """The padding that keeps a stride-1 map's size: half the dilated kernel's extent."""
    return (kernel_size + (dilation - 1) * (kernel_size - 1) - 1) // 2


def _learned(lr_mult: float = 1) -> List[Dict[str, float]]:
    """Weights decayed, biases at twice the rate and not decayed (Caffe's usual specs)."""
    return [dict(lr_mult=lr_mult, decay_mult=1), dict(lr_mult=2 * lr_mult, decay_mult=0)]


_XAVIER = dict(type='xavier')
_ZERO = dict(type='constant', value=0)


# ---- convolution blocks -------------------------------------------------------------------------

_BN_FIELDS = ('eps', 'moving_average_fraction', 'use_global_stats')


def _conv_kwargs(use_bn: bool, lr_mult: float) -> Dict[str, Any]:
    """A convolution feeding BatchNorm has no bias (the Scale after it has one) and starts
    from gaussian(0.01); a plain one has a bias and xavier weights."""
    if use_bn:
        return {'param': [dict(lr_mult=lr_mult, decay_mult=1)],
                'weight_filler': dict(type='gaussian', std=0.01), 'bias_term': False}
    return {'param': _learned(lr_mult), 'weight_filler': dict(_XAVIER),
            'bias_filler': dict(_ZERO)}


def _add_bn(net: NetSpec, top_name: str, out_layer: str, use_scale: bool, lr_mult: float,
            bn_prefix: str, bn_postfix: str, scale_prefix: str, scale_postfix: str,
            bias_prefix: str, bias_postfix: str, bn_params: Dict[str, Any]) -> None:
    """BatchNorm on `top_name` in place, then Scale (with bias) or Bias in place.

    Keyword arguments other than the BatchNorm fields (eps, moving_average_fraction,
    use_global_stats) are refused. With use_global_stats the Scale/Bias are frozen too,
    as SSD's ConvBNLayer did (the statistics and the affine part are then both fixed)."""
    unknown = sorted(set(bn_params) - set(_BN_FIELDS))
    if unknown:
        raise TypeError('BatchNorm options must be among %s; got %s' % (_BN_FIELDS, unknown))
    bn_kwargs = dict(bn_params)
    affine_lr = 0 if bn_params.get('use_global_stats') else lr_mult
    bn_name = '{}{}{}'.format(bn_prefix, out_layer, bn_postfix)
    net[bn_name] = L.BatchNorm(net[top_name], in_place=True, **bn_kwargs)
    if use_scale:
        scale_kwargs: Dict[str, Any] = {'bias_term': True}
        if bn_params.get('use_global_stats'):
            scale_kwargs['param'] = [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
        name = '{}{}{}'.format(scale_prefix, out_layer, scale_postfix)
        net[name] = L.Scale(net[bn_name], in_place=True, **scale_kwargs)
    else:
        name = '{}{}{}'.format(bias_prefix, out_layer, bias_postfix)
        net[name] = L.Bias(net[bn_name], in_place=True,
                           param=[dict(lr_mult=affine_lr, decay_mult=0)],
                           filler=dict(type='constant', value=0.0))


def ConvBNLayer(net: NetSpec, from_layer: str, out_layer: str, use_bn: bool, use_relu: bool,
                num_output: int, kernel_size: Union[int, Sequence[int]],
                pad: Union[int, Sequence[int]], stride: Union[int, Sequence[int]],
                dilation: int = 1, use_scale: bool = True, lr_mult: float = 1,
                conv_prefix: str = '', conv_postfix: str = '', bn_prefix: str = '',
                bn_postfix: str = '_bn', scale_prefix: str = '', scale_postfix: str = '_scale',
                bias_prefix: str = '', bias_postfix: str = '_bias', **bn_params: Any) -> None:
    """Convolution `<conv_prefix><out_layer><conv_postfix>` on `from_layer`, optionally
    followed in place by BatchNorm `<bn_prefix><out_layer><bn_postfix>` and Scale (or Bias,
    without use_scale), and ReLU `<conv name>_relu`.

    kernel/pad/stride may be given per axis ([h, w]); a square kernel is written with
    kernel_size/pad/stride (taking the first of pad and stride), a non-square one with the
    _h/_w fields. A dilation above 1 is added to the convolution."""
    kwargs = _conv_kwargs(use_bn, lr_mult)
    conv_name = '{}{}{}'.format(conv_prefix, out_layer, conv_postfix)
    kernel_h, kernel_w = UnpackVariable(kernel_size, 2)
    pad_h, pad_w = UnpackVariable(pad, 2)
    stride_h, stride_w = UnpackVariable(stride, 2)
    if kernel_h == kernel_w:
        net[conv_name] = L.Convolution(net[from_layer], num_output=num_output,
                                       kernel_size=kernel_h, pad=pad_h, stride=stride_h, **kwargs)
    else:
        net[conv_name] = L.Convolution(net[from_layer], num_output=num_output,
                                       kernel_h=kernel_h, kernel_w=kernel_w, pad_h=pad_h,
                                       pad_w=pad_w, stride_h=stride_h, stride_w=stride_w,
                                       **kwargs)
    if dilation > 1:
        net.update(conv_name, {'dilation': dilation})
    if use_bn:
        _add_bn(net, conv_name, out_layer, use_scale, lr_mult, bn_prefix, bn_postfix,
                scale_prefix, scale_postfix, bias_prefix, bias_postfix, bn_params)
    if use_relu:
        net['{}_relu'.format(conv_name)] = L.ReLU(net[conv_name], in_place=True)


def DeconvBNLayer(net: NetSpec, from_layer: str, out_layer: str, use_bn: bool, use_relu: bool,
                  num_output: int, kernel_size: int, pad: int, stride: int,
                  use_scale: bool = True, lr_mult: float = 1, deconv_prefix: str = '',
                  deconv_postfix: str = '', bn_prefix: str = '', bn_postfix: str = '_bn',
                  scale_prefix: str = '', scale_postfix: str = '_scale', bias_prefix: str = '',
                  bias_postfix: str = '_bias', **bn_params: Any) -> None:
    """ConvBNLayer's counterpart with a Deconvolution: RefineDet's TCB upsamples P(k+1) by
    `DeconvBNLayer(net, 'P6', 'P6-up', use_bn, False, 256, 2, 0, 2)` (kernel 2, stride 2)."""
    kwargs = _conv_kwargs(use_bn, lr_mult)
    name = '{}{}{}'.format(deconv_prefix, out_layer, deconv_postfix)
    net[name] = L.Deconvolution(net[from_layer], num_output=num_output, kernel_size=kernel_size,
                                pad=pad, stride=stride, **kwargs)
    if use_bn:
        _add_bn(net, name, out_layer, use_scale, lr_mult, bn_prefix, bn_postfix, scale_prefix,
                scale_postfix, bias_prefix, bias_postfix, bn_params)
    if use_relu:
        net['{}_relu'.format(name)] = L.ReLU(net[name], in_place=True)


def EltwiseLayer(net: NetSpec, from_layer: Sequence[str], out_layer: str) -> None:
    """Element-wise sum (Caffe's default operation) of the named tops into `out_layer`
    (RefineDet: TLk_2 + P(k+1)-up)."""
    if len(from_layer) < 2:
        raise ValueError('EltwiseLayer %r needs at least two inputs, got %r'
                         % (out_layer, list(from_layer)))
    net[out_layer] = L.Eltwise(*[net[name] for name in from_layer])


def ResBody(net: NetSpec, from_layer: str, block_name: str, out2a: int, out2b: int, out2c: int,
            stride: int, use_branch1: bool, dilation: int = 1, **bn_param: Any) -> None:
    """A ResNet bottleneck block with the names of He et al.'s released models.

    branch2: 1x1 (out2a, with the block's stride) -> 3x3 (out2b, dilated when asked) ->
    1x1 (out2c), each conv + BatchNorm + Scale, ReLU after the first two; branch1 is a
    strided 1x1 projection (use_branch1) or the input itself. Layers: res<b>_branch*,
    bn<b>_branch*, scale<b>_branch*, the sum res<b> and its ReLU res<b>_relu."""
    names = dict(conv_prefix='res{}_'.format(block_name), conv_postfix='',
                 bn_prefix='bn{}_'.format(block_name), bn_postfix='',
                 scale_prefix='scale{}_'.format(block_name), scale_postfix='', use_scale=True)
    conv_prefix = names['conv_prefix']
    if use_branch1:
        ConvBNLayer(net, from_layer, 'branch1', use_bn=True, use_relu=False, num_output=out2c,
                    kernel_size=1, pad=0, stride=stride, **names, **bn_param)
        shortcut = conv_prefix + 'branch1'
    else:
        shortcut = from_layer
    ConvBNLayer(net, from_layer, 'branch2a', use_bn=True, use_relu=True, num_output=out2a,
                kernel_size=1, pad=0, stride=stride, **names, **bn_param)
    ConvBNLayer(net, conv_prefix + 'branch2a', 'branch2b', use_bn=True, use_relu=True,
                num_output=out2b, kernel_size=3, pad=_same_pad(3, dilation), stride=1,
                dilation=dilation, **names, **bn_param)
    ConvBNLayer(net, conv_prefix + 'branch2b', 'branch2c', use_bn=True, use_relu=False,
                num_output=out2c, kernel_size=1, pad=0, stride=1, **names, **bn_param)
    res_name = 'res{}'.format(block_name)
    net[res_name] = L.Eltwise(net[shortcut], net[conv_prefix + 'branch2c'])
    net['{}_relu'.format(res_name)] = L.ReLU(net[res_name], in_place=True)


def InceptionTower(net: NetSpec, from_layer: str, tower_name: str,
                   layer_params: Sequence[Dict[str, Any]], **bn_param: Any) -> Top:
    """A chain of layers named `<tower_name>/<name>`: an entry whose name holds 'pool' is a
    Pooling layer with the entry's fields, any other a ConvBNLayer (BatchNorm + Bias, no
    Scale, ReLU). Returns the last layer's top. The entries are not modified."""
    for spec in layer_params:
        spec = dict(spec)
        layer_name = '{}/{}'.format(tower_name, spec.pop('name'))
        if 'pool' in layer_name:
            net[layer_name] = L.Pooling(net[from_layer], **spec)
        else:
            spec.update(bn_param)
            ConvBNLayer(net, from_layer, layer_name, use_bn=True, use_relu=True, use_scale=False,
                        **spec)
        from_layer = layer_name
    return net[from_layer]


# ---- the data layer ------------------------------------------------------------------------------

def CreateAnnotatedDataLayer(source: str, batch_size: int = 32, backend: int = P.Data.LMDB,
                             output_label: bool = True, train: bool = True,
                             label_map_file: str = '', anno_type: Optional[int] = None,
                             transform_param: Optional[Dict[str, Any]] = None,
                             batch_sampler: Optional[List[Dict[str, Any]]] = None):
    """The AnnotatedData layer (named "data") of a TRAIN or TEST net: tops data (and label),
    `data_param` with source/batch_size/backend, `annotated_data_param` with the label map
    and the batch samplers (one empty sampler by default, as in SSD), and the transform.
    Returns the top(s) for `net.data, net.label = ...`."""
    phase = caffe_pb2.Phase.Value('TRAIN' if train else 'TEST')
    annotated = {'label_map_file': label_map_file,
                 'batch_sampler': [{}] if batch_sampler is None else batch_sampler}
    if anno_type is not None:
        annotated['anno_type'] = anno_type
    return L.AnnotatedData(name='data', annotated_data_param=annotated,
                           data_param=dict(batch_size=batch_size, backend=backend, source=source),
                           ntop=2 if output_label else 1, include=dict(phase=phase),
                           transform_param=transform_param or {})


# ---- backbones -------------------------------------------------------------------------------------

def _freeze(net: NetSpec, freeze_layers: Sequence[str], kwargs: Dict[str, Any]) -> None:
    """Give the named layers zero learning rates (weights and biases)."""
    frozen = dict(kwargs, param=[dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)])
    present = net.keys()
    for name in freeze_layers:
        if name in present:
            net.update(name, frozen)


def _fc67(net: NetSpec, bottom: str, fc6: Dict[str, Any], fc7_out: int, dropout: bool,
          kwargs: Dict[str, Any]) -> None:
    """fc6 as a convolution with the given geometry, fc7 as a 1x1 one, ReLU (+ Dropout)."""
    net.fc6 = L.Convolution(net[bottom], **fc6, **kwargs)
    net.relu6 = L.ReLU(net.fc6, in_place=True)
    if dropout:
        net.drop6 = L.Dropout(net.relu6, dropout_ratio=0.5, in_place=True)
    net.fc7 = L.Convolution(net.relu6, num_output=fc7_out, kernel_size=1, **kwargs)
    net.relu7 = L.ReLU(net.fc7, in_place=True)
    if dropout:
        net.drop7 = L.Dropout(net.relu7, dropout_ratio=0.5, in_place=True)


def _fc67_inner_product(net: NetSpec, bottom: str, dropout: bool) -> None:
    """The classifier's fc6/fc7 as InnerProduct layers (4096 wide, default fillers)."""
    net.fc6 = L.InnerProduct(net[bottom], num_output=4096)
    net.relu6 = L.ReLU(net.fc6, in_place=True)
    if dropout:
        net.drop6 = L.Dropout(net.relu6, dropout_ratio=0.5, in_place=True)
    net.fc7 = L.InnerProduct(net.relu6, num_output=4096)
    net.relu7 = L.ReLU(net.fc7, in_place=True)
    if dropout:
        net.drop7 = L.Dropout(net.relu7, dropout_ratio=0.5, in_place=True)


def ZFNetBody(net: NetSpec, from_layer: str, need_fc: bool = True, fully_conv: bool = False,
              reduced: bool = False, dilated: bool = False, dropout: bool = True,
              need_fc8: bool = False, freeze_layers: Sequence[str] = ()) -> NetSpec:
    """Zeiler & Fergus' net (conv1..conv5 with WITHIN_CHANNEL LRN after conv1/conv2), and
    optionally fc6/fc7 (as convolutions with fully_conv: `reduced` 1024 wide, `dilated`
    after a stride-1 pool5) and fc8 + prob."""
    if from_layer not in net.keys():
        raise KeyError('ZFNetBody: from_layer %r is not a top of the net' % from_layer)
    kwargs = {'param': _learned(), 'weight_filler': dict(_XAVIER), 'bias_filler': dict(_ZERO)}
    lrn = dict(local_size=3, alpha=0.00005, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL,
               engine=P.LRN.CAFFE)
    net.conv1 = L.Convolution(net[from_layer], num_output=96, pad=3, kernel_size=7, stride=2,
                              **kwargs)
    net.relu1 = L.ReLU(net.conv1, in_place=True)
    net.norm1 = L.LRN(net.relu1, **lrn)
    net.pool1 = L.Pooling(net.norm1, pool=P.Pooling.MAX, pad=1, kernel_size=3, stride=2)
    net.conv2 = L.Convolution(net.pool1, num_output=256, pad=2, kernel_size=5, stride=2, **kwargs)
    net.relu2 = L.ReLU(net.conv2, in_place=True)
    net.norm2 = L.LRN(net.relu2, **lrn)
    net.pool2 = L.Pooling(net.norm2, pool=P.Pooling.MAX, pad=1, kernel_size=3, stride=2)
    bottom = 'pool2'
    for i, width in ((3, 384), (4, 384), (5, 256)):
        net['conv%d' % i] = L.Convolution(net[bottom], num_output=width, pad=1, kernel_size=3,
                                          **kwargs)
        net['relu%d' % i] = L.ReLU(net['conv%d' % i], in_place=True)
        bottom = 'relu%d' % i
    if need_fc:
        net.pool5 = L.Pooling(net.relu5, pool=P.Pooling.MAX, pad=1, kernel_size=3,
                              stride=1 if dilated else 2)
        if fully_conv:
            # (dilated, reduced) -> fc6's geometry
            fc6 = {(True, True): dict(num_output=1024, pad=5, kernel_size=3, dilation=5),
                   (True, False): dict(num_output=4096, pad=5, kernel_size=6, dilation=2),
                   (False, True): dict(num_output=1024, pad=2, kernel_size=3, dilation=2),
                   (False, False): dict(num_output=4096, pad=2, kernel_size=6)}[(dilated, reduced)]
            _fc67(net, 'pool5', fc6, 1024 if reduced else 4096, dropout, kwargs)
        else:
            _fc67_inner_product(net, 'pool5', dropout)
    if need_fc8:
        last = net.keys()[-1]
        if fully_conv:
            net.fc8 = L.Convolution(net[last], num_output=1000, kernel_size=1, **kwargs)
        else:
            net.fc8 = L.InnerProduct(net[last], num_output=1000)
        net.prob = L.Softmax(net.fc8)
    _freeze(net, freeze_layers, kwargs)
    return net


def VGGNetBody(net: NetSpec, from_layer: str, need_fc: bool = True, fully_conv: bool = False,
               reduced: bool = False, dilated: bool = False, nopool: bool = False,
               dropout: bool = True, freeze_layers: Sequence[str] = (),
               dilate_pool4: bool = False) -> NetSpec:
    """VGG16 with the layer names of VGG_ILSVRC_16_layers (conv1_1 ... conv5_3, fc6, fc7).

    SSD/RefineDet use `fully_conv=True, reduced=True`: fc6/fc7 as 1024-wide convolutions
    (the atrous "fc_reduced" weights), fc6 a 3x3 convolution dilated 3 after a 2x2/2 pool5
    (RefineDet: `dilated=False`), or dilated 6 after a 3x3/1 pool5 (SSD: `dilated=True`).
    `nopool` replaces each pooling by a stride-2 3x3 convolution; `dilate_pool4` makes
    pool4 3x3/1 and dilates conv5_x and fc6 by 2 more."""
    if from_layer not in net.keys():
        raise KeyError('VGGNetBody: from_layer %r is not a top of the net' % from_layer)
    kwargs = {'param': _learned(), 'weight_filler': dict(_XAVIER), 'bias_filler': dict(_ZERO)}
    stages = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3)]
    bottom = from_layer
    dilation = 1
    for stage, width, depth in stages:
        for j in range(1, depth + 1):
            conv, relu = 'conv%d_%d' % (stage, j), 'relu%d_%d' % (stage, j)
            net[conv] = L.Convolution(net[bottom], num_output=width, pad=1, kernel_size=3,
                                      **kwargs)
            net[relu] = L.ReLU(net[conv], in_place=True)
            bottom = relu
        if nopool:
            name = 'conv%d_%d' % (stage, depth + 1)
            net[name] = L.Convolution(net[bottom], num_output=width, pad=1, kernel_size=3,
                                      stride=2, **kwargs)
        elif stage == 4 and dilate_pool4:
            name = 'pool4'
            net[name] = L.Pooling(net[bottom], pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
            dilation = 2
        else:
            name = 'pool%d' % stage
            net[name] = L.Pooling(net[bottom], pool=P.Pooling.MAX, kernel_size=2, stride=2)
        bottom = name
    for j in (1, 2, 3):
        conv, relu = 'conv5_%d' % j, 'relu5_%d' % j
        net[conv] = L.Convolution(net[bottom], num_output=512, pad=_same_pad(3, dilation),
                                  kernel_size=3, dilation=dilation, **kwargs)
        net[relu] = L.ReLU(net[conv], in_place=True)
        bottom = relu
    if need_fc:
        if nopool:
            name = 'conv5_4'
            net[name] = L.Convolution(net.relu5_3, num_output=512, pad=1, kernel_size=3,
                                      stride=1 if dilated else 2, **kwargs)
        elif dilated:
            name = 'pool5'
            net[name] = L.Pooling(net.relu5_3, pool=P.Pooling.MAX, pad=1, kernel_size=3, stride=1)
        else:
            name = 'pool5'
            net[name] = L.Pooling(net.relu5_3, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        if fully_conv:
            if reduced:
                dilation *= 6 if dilated else 3
                kernel_size, width = 3, 1024
            else:
                dilation *= 2 if dilated else 1
                kernel_size, width = 7, 4096
            fc6 = dict(num_output=width, pad=_same_pad(kernel_size, dilation),
                       kernel_size=kernel_size, dilation=dilation)
            _fc67(net, name, fc6, width, dropout, kwargs)
        else:
            _fc67_inner_product(net, name, dropout)
    _freeze(net, freeze_layers, kwargs)
    return net


def _resnet_body(net: NetSpec, from_layer: str, blocks3: int, blocks4: int, use_pool5: bool,
                 use_dilation_conv5: bool, bn_param: Dict[str, Any]) -> NetSpec:
    """He et al.'s ResNet with `blocks3` + 1 blocks in stage 3 and `blocks4` + 1 in stage 4
    (101: 3 and 22; 152: 7 and 35), in the released models' names (conv1, bn_conv1,
    scale_conv1, res2a ... res5c)."""
    ConvBNLayer(net, from_layer, 'conv1', use_bn=True, use_relu=True, num_output=64,
                kernel_size=7, pad=3, stride=2, conv_prefix='', conv_postfix='',
                bn_prefix='bn_', bn_postfix='', scale_prefix='scale_', scale_postfix='',
                **bn_param)
    net.pool1 = L.Pooling(net.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    bottom = 'pool1'
    stride5, dilation5 = (1, 2) if use_dilation_conv5 else (2, 1)
    # (stage, widths (2a, 2b, 2c), first block's stride, names of the later blocks, dilation)
    stages = [
        (2, (64, 64, 256), 1, ['b', 'c'], 1),
        (3, (128, 128, 512), 2, ['b%d' % i for i in range(1, blocks3 + 1)], 1),
        (4, (256, 256, 1024), 2, ['b%d' % i for i in range(1, blocks4 + 1)], 1),
        (5, (512, 512, 2048), stride5, ['b', 'c'], dilation5),
    ]
    for stage, (w2a, w2b, w2c), stride, later, dilation in stages:
        for i, suffix in enumerate(['a'] + later):
            block = '%d%s' % (stage, suffix)
            extra = {'dilation': dilation} if stage == 5 else {}
            ResBody(net, bottom, block, out2a=w2a, out2b=w2b, out2c=w2c,
                    stride=stride if i == 0 else 1, use_branch1=(i == 0), **extra, **bn_param)
            bottom = 'res' + block
    if use_pool5:
        net.pool5 = L.Pooling(net.res5c, pool=P.Pooling.AVE, global_pooling=True)
    return net


def ResNet101Body(net: NetSpec, from_layer: str, use_pool5: bool = True,
                  use_dilation_conv5: bool = False, **bn_param: Any) -> NetSpec:
    """ResNet-101 (res3b1..res3b3, res4b1..res4b22). RefineDet: use_pool5=False and its
    ARM reads res3b3_relu, res4b22_relu, res5c_relu. use_dilation_conv5 keeps stage 5 at
    stride 16 with dilation-2 3x3 convolutions."""
    return _resnet_body(net, from_layer, 3, 22, use_pool5, use_dilation_conv5, bn_param)


def ResNet152Body(net: NetSpec, from_layer: str, use_pool5: bool = True,
                  use_dilation_conv5: bool = False, **bn_param: Any) -> NetSpec:
    """ResNet-152 (res3b1..res3b7, res4b1..res4b35); otherwise as ResNet101Body."""
    return _resnet_body(net, from_layer, 7, 35, use_pool5, use_dilation_conv5, bn_param)


def _conv(name: str, num_output: int, kernel_size: Any, pad: Any, stride: Any = 1) -> Dict[str, Any]:
    return dict(name=name, num_output=num_output, kernel_size=kernel_size, pad=pad, stride=stride)


def _pool(name: str, pool: int, kernel_size: int, pad: int, stride: int) -> Dict[str, Any]:
    return dict(name=name, pool=pool, kernel_size=kernel_size, pad=pad, stride=stride)


def _mixed(net: NetSpec, from_layer: str, block: str,
           towers: Sequence[tuple], bn_param: Dict[str, Any]) -> str:
    """One Inception block: each tower is (suffix, layer specs) or (suffix, specs, split),
    split = the widths of a [1x3, 3x1] pair run on the tower's output and concatenated
    as `<tower>/mixed`; the towers are concatenated as `<block>/join`."""
    outs = []
    for tower in towers:
        suffix, specs = tower[0], tower[1]
        tower_name = block + suffix
        top = InceptionTower(net, from_layer, tower_name, specs, **bn_param)
        if len(tower) == 3:
            split_from = '{}/{}'.format(tower_name, specs[-1]['name'])
            split_name = '{}/mixed'.format(tower_name)
            halves = [InceptionTower(net, split_from, split_name,
                                     [_conv('conv', tower[2], [1, 3], [0, 1], [1, 1])], **bn_param),
                      InceptionTower(net, split_from, split_name,
                                     [_conv('conv_1', tower[2], [3, 1], [1, 0], [1, 1])], **bn_param)]
            net[split_name] = L.Concat(*halves, axis=1)
            top = net[split_name]
        outs.append(top)
    join = '{}/join'.format(block)
    net[join] = L.Concat(*outs, axis=1)
    return join


def InceptionV3Body(net: NetSpec, from_layer: str, output_pred: bool = False,
                    **bn_param: Any) -> NetSpec:
    """Inception-v3 with SSD's layer names (those of TensorFlow's 2015 Inception-v3 graph:
    conv, conv_1, ..., mixed ... mixed_10, `<block>/tower_1/conv_2`, `<block>/join`), each
    convolution followed by BatchNorm + Bias + ReLU, and the classifier (pool_3, softmax,
    softmax_prob) when output_pred."""
    MAX, AVE = P.Pooling.MAX, P.Pooling.AVE
    stem = [('conv', 32, 3, 0, 2), ('conv_1', 32, 3, 0, 1), ('conv_2', 64, 3, 1, 1), 'pool',
            ('conv_3', 80, 1, 0, 1), ('conv_4', 192, 3, 0, 1), 'pool_1']
    for item in stem:
        if isinstance(item, str):
            net[item] = L.Pooling(net[from_layer], pool=MAX, kernel_size=3, stride=2, pad=0)
            from_layer = item
            continue
        name, width, k, pad, stride = item
        ConvBNLayer(net, from_layer, name, use_bn=True, use_relu=True, num_output=width,
                    kernel_size=k, pad=pad, stride=stride, use_scale=False, **bn_param)
        from_layer = name
    for i, pool_width in ((0, 32), (1, 64), (2, 64)):     # 1x1, 5x5, double 3x3, pool
        block = 'mixed' if i == 0 else 'mixed_%d' % i
        from_layer = _mixed(net, from_layer, block, [
            ('', [_conv('conv', 64, 1, 0)]),
            ('/tower', [_conv('conv', 48, 1, 0), _conv('conv_1', 64, 5, 2)]),
            ('/tower_1', [_conv('conv', 64, 1, 0), _conv('conv_1', 96, 3, 1),
                          _conv('conv_2', 96, 3, 1)]),
            ('/tower_2', [_pool('pool', AVE, 3, 1, 1), _conv('conv', pool_width, 1, 0)]),
        ], bn_param)
    from_layer = _mixed(net, from_layer, 'mixed_3', [          # grid reduction
        ('', [_conv('conv', 384, 3, 0, 2)]),
        ('/tower', [_conv('conv', 64, 1, 0), _conv('conv_1', 96, 3, 1),
                    _conv('conv_2', 96, 3, 0, 2)]),
        ('', [_pool('pool', MAX, 3, 0, 2)]),
    ], bn_param)
    for i, width in ((4, 128), (5, 160), (6, 160), (7, 192)):   # factorised 7x7
        from_layer = _mixed(net, from_layer, 'mixed_%d' % i, [
            ('', [_conv('conv', 192, 1, 0)]),
            ('/tower', [_conv('conv', width, 1, 0), _conv('conv_1', width, [1, 7], [0, 3], [1, 1]),
                        _conv('conv_2', 192, [7, 1], [3, 0], [1, 1])]),
            ('/tower_1', [_conv('conv', width, 1, 0), _conv('conv_1', width, [7, 1], [3, 0], [1, 1]),
                          _conv('conv_2', width, [1, 7], [0, 3], [1, 1]),
                          _conv('conv_3', width, [7, 1], [3, 0], [1, 1]),
                          _conv('conv_4', 192, [1, 7], [0, 3], [1, 1])]),
            ('/tower_2', [_pool('pool', AVE, 3, 1, 1), _conv('conv', 192, 1, 0)]),
        ], bn_param)
    from_layer = _mixed(net, from_layer, 'mixed_8', [           # grid reduction
        ('/tower', [_conv('conv', 192, 1, 0), _conv('conv_1', 320, 3, 0, 2)]),
        ('/tower_1', [_conv('conv', 192, 1, 0), _conv('conv_1', 192, [1, 7], [0, 3], [1, 1]),
                      _conv('conv_2', 192, [7, 1], [3, 0], [1, 1]),
                      _conv('conv_3', 192, 3, 0, 2)]),
        ('', [_pool('pool', MAX, 3, 0, 2)]),
    ], bn_param)
    for i, pool in ((9, AVE), (10, MAX)):                       # expanded filter banks
        from_layer = _mixed(net, from_layer, 'mixed_%d' % i, [
            ('', [_conv('conv', 320, 1, 0)]),
            ('/tower', [_conv('conv', 384, 1, 0)], 384),
            ('/tower_1', [_conv('conv', 448, 1, 0), _conv('conv_1', 384, 3, 1)], 384),
            ('/tower_2', [_pool('pool', pool, 3, 1, 1), _conv('conv', 192, 1, 0)]),
        ], bn_param)
    if output_pred:
        net.pool_3 = L.Pooling(net[from_layer], pool=AVE, kernel_size=8, pad=0, stride=1)
        net.softmax = L.InnerProduct(net.pool_3, num_output=1008)
        net.softmax_prob = L.Softmax(net.softmax)
    return net


# ---- detection heads -------------------------------------------------------------------------------

def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_head_args(name: str, num_classes: Any, from_layers: Sequence[str],
                     normalizations: Sequence, min_sizes: Sequence, max_sizes: Sequence,
                     aspect_ratios: Sequence, steps: Sequence, inter_layer_depth: Sequence,
                     net: NetSpec, data_layer: str) -> None:
    """The argument checks of SSD's head builders, as errors that say what is wrong."""
    if not num_classes or num_classes <= 0:
        raise ValueError('%s: num_classes must be a positive number, got %r' % (name, num_classes))
    n = len(from_layers)
    for what, values, required in (('normalizations', normalizations, False),
                                   ('min_sizes', min_sizes, True),
                                   ('max_sizes', max_sizes, False),
                                   ('aspect_ratios', aspect_ratios, False),
                                   ('steps', steps, False),
                                   ('inter_layer_depth', inter_layer_depth, False)):
        if (required or values) and len(values) != n:
            raise ValueError('%s: from_layers and %s should have the same length (%d vs %d)'
                             % (name, what, n, len(values)))
    if data_layer not in net.keys():
        raise KeyError("%s: data_layer %r is not in net's layers" % (name, data_layer))


def _source_priors(i: int, min_sizes: Sequence, max_sizes: Sequence, aspect_ratios: Sequence,
                   flip: bool) -> tuple:
    """(min_size, max_size, aspect_ratio lists, priors per location) of source layer i:
    one prior per min size, one more per max size, one per aspect ratio (twice with flip)."""
    min_size = _as_list(min_sizes[i])
    aspect_ratio = _as_list(aspect_ratios[i]) if len(aspect_ratios) > i else []
    max_size = _as_list(max_sizes[i]) if len(max_sizes) > i else []
    if max_size and len(max_size) != len(min_size):
        raise ValueError('source %d: max_size and min_size should have the same length '
                         '(%r vs %r)' % (i, max_size, min_size))
    per_size = (2 if max_size else 1) + len(aspect_ratio) * (2 if flip else 1)
    return min_size, max_size, aspect_ratio, per_size * len(min_size)


def _normalize_source(net: NetSpec, from_layer: str, scale: Any) -> str:
    """SSD's L2Norm on a source map (conv4_3_norm): per-pixel norm, a learned scale per
    channel starting at `scale`; -1 means none."""
    if scale == -1:
        return from_layer
    name = '{}_norm'.format(from_layer)
    net[name] = L.Normalize(net[from_layer], scale_filler=dict(type='constant', value=scale),
                            across_spatial=False, channel_shared=False)
    return name


def _prediction(net: NetSpec, from_layer: str, name: str, num_output: int, use_bn: bool,
                lr_mult: float, kernel_size: int, pad: int, bn_param: Dict[str, Any]) -> Top:
    """A head convolution `name` (no ReLU), its NHWC Permute `<name>_perm` and Flatten
    `<name>_flat`, whose top is returned for the concatenation."""
    ConvBNLayer(net, from_layer, name, use_bn=use_bn, use_relu=False, lr_mult=lr_mult,
                num_output=num_output, kernel_size=kernel_size, pad=pad, stride=1, **bn_param)
    perm, flat = '{}_perm'.format(name), '{}_flat'.format(name)
    net[perm] = L.Permute(net[name], order=[0, 2, 3, 1])
    net[flat] = L.Flatten(net[perm], axis=1)
    return net[flat]


def _loc_conf(net: NetSpec, from_layer: str, num_priors: int, num_classes: int,
              share_location: bool, loc_postfix: str, conf_postfix: str, use_bn: bool,
              lr_mult: float, kernel_size: int, pad: int, bn_param: Dict[str, Any]
              ) -> Tuple[Top, Top]:
    """One source's predictions: `<src>_mbox_loc<loc_postfix>` (4 values per prior, times
    num_classes without share_location) and `<src>_mbox_conf<conf_postfix>` (num_classes
    per prior), each permuted and flattened (see _prediction)."""
    loc_out = num_priors * 4 * (1 if share_location else num_classes)
    loc = _prediction(net, from_layer, '{}_mbox_loc{}'.format(from_layer, loc_postfix), loc_out,
                      use_bn, lr_mult, kernel_size, pad, bn_param)
    conf = _prediction(net, from_layer, '{}_mbox_conf{}'.format(from_layer, conf_postfix),
                       num_priors * num_classes, use_bn, lr_mult, kernel_size, pad, bn_param)
    return loc, conf


def _concat(net: NetSpec, outputs: Sequence[Tuple[str, List[Top], int]]) -> List[Top]:
    """A Concat `name` of the tops along `axis` for each (name, tops, axis), in order."""
    concatenated = []
    for name, tops, axis in outputs:
        net[name] = L.Concat(*tops, axis=axis)
        concatenated.append(net[name])
    return concatenated


def _prior_box(net: NetSpec, from_layer: str, data_layer: str, min_size: List, max_size: List,
               aspect_ratio: List, step: Any, flip: bool, clip: bool, variance: Sequence[float],
               offset: float, img_height: int, img_width: int) -> Top:
    """PriorBox `<from_layer>_mbox_priorbox` over the source map and the image."""
    name = '{}_mbox_priorbox'.format(from_layer)
    net[name] = L.PriorBox(net[from_layer], net[data_layer], min_size=min_size, clip=clip,
                           variance=variance, offset=offset)
    if max_size:
        net.update(name, {'max_size': max_size})
    if aspect_ratio:
        net.update(name, {'aspect_ratio': aspect_ratio, 'flip': flip})
    if step:
        net.update(name, {'step': step})
    if img_height != 0 and img_width != 0:
        if img_height == img_width:
            net.update(name, {'img_size': img_height})
        else:
            net.update(name, {'img_h': img_height, 'img_w': img_width})
    return net[name]


def CreateMultiBoxHead(net: NetSpec, data_layer: str = 'data', num_classes: Any = None,
                       from_layers: Sequence[str] = (), use_objectness: bool = False,
                       normalizations: Sequence = (), use_batchnorm: bool = True,
                       lr_mult: float = 1, use_scale: bool = True, min_sizes: Sequence = (),
                       max_sizes: Sequence = (), prior_variance: Sequence[float] = (0.1,),
                       aspect_ratios: Sequence = (), steps: Sequence = (), img_height: int = 0,
                       img_width: int = 0, share_location: bool = True, flip: bool = True,
                       clip: bool = True, offset: float = 0.5, inter_layer_depth: Sequence = (),
                       kernel_size: int = 1, pad: int = 0, prefix: str = 'mbox',
                       conf_postfix: str = '', loc_postfix: str = '', **bn_param: Any) -> List[Top]:
    """SSD's head: for each source layer (optionally L2-normalised and given a 3x3
    intermediate ConvBNLayer `<src>_inter`), a loc convolution `<src>_mbox_loc` (4 values
    per prior, times num_classes without share_location), a conf convolution
    `<src>_mbox_conf` (num_classes per prior), optionally an objectness one, each permuted
    and flattened, and a PriorBox; then `<prefix>_loc`, `<prefix>_conf` (axis 1),
    `<prefix>_priorbox` (axis 2) and `<prefix>_objectness` concatenations, returned in
    that order."""
    _check_head_args('CreateMultiBoxHead', num_classes, from_layers, normalizations, min_sizes,
                     max_sizes, aspect_ratios, steps, inter_layer_depth, net, data_layer)
    loc_layers, conf_layers, prior_layers, objectness_layers = [], [], [], []
    for i, source in enumerate(from_layers):
        from_layer = _normalize_source(net, source, normalizations[i]) if normalizations else source
        if inter_layer_depth and inter_layer_depth[i] > 0:
            inter = '{}_inter'.format(from_layer)
            ConvBNLayer(net, from_layer, inter, use_bn=use_batchnorm, use_relu=True,
                        lr_mult=lr_mult, num_output=inter_layer_depth[i], kernel_size=3, pad=1,
                        stride=1, **bn_param)
            from_layer = inter
        min_size, max_size, aspect_ratio, num_priors = _source_priors(
            i, min_sizes, max_sizes, aspect_ratios, flip)
        step = steps[i] if len(steps) > i else []
        loc, conf = _loc_conf(net, from_layer, num_priors, num_classes, share_location,
                              loc_postfix, conf_postfix, use_batchnorm, lr_mult, kernel_size,
                              pad, bn_param)
        loc_layers.append(loc)
        conf_layers.append(conf)
        prior_layers.append(_prior_box(net, from_layer, data_layer, min_size, max_size,
                                       aspect_ratio, step, flip, clip, list(prior_variance),
                                       offset, img_height, img_width))
        if use_objectness:
            objectness_layers.append(_prediction(
                net, from_layer, '{}_mbox_objectness'.format(from_layer), num_priors * 2,
                use_batchnorm, lr_mult, kernel_size, pad, bn_param))
    outputs = [(prefix + '_loc', loc_layers, 1), (prefix + '_conf', conf_layers, 1),
               (prefix + '_priorbox', prior_layers, 2)]
    if use_objectness:
        outputs.append((prefix + '_objectness', objectness_layers, 1))
    return _concat(net, outputs)


def CreateRefineDetHead(net: NetSpec, data_layer: str = 'data', num_classes: Any = None,
                        from_layers: Sequence[str] = (), from_layers2: Sequence[str] = (),
                        normalizations: Sequence = (), use_batchnorm: bool = True,
                        lr_mult: float = 1, min_sizes: Sequence = (), max_sizes: Sequence = (),
                        prior_variance: Sequence[float] = (0.1,), aspect_ratios: Sequence = (),
                        steps: Sequence = (), img_height: int = 0, img_width: int = 0,
                        share_location: bool = True, flip: bool = True, clip: bool = True,
                        offset: float = 0.5, inter_layer_depth: Sequence = (),
                        kernel_size: int = 1, pad: int = 0, conf_postfix: str = '',
                        loc_postfix: str = '', **bn_param: Any) -> List[Top]:
    """RefineDet's two-step head. Returns [arm_loc, arm_conf, arm_priorbox, odm_loc, odm_conf].

    ARM (anchor refinement) on `from_layers` (the backbone maps): per source, loc
    (4 per anchor) and a binary objectness conf (2 per anchor) convolutions, permuted and
    flattened, and the PriorBox anchors, concatenated as arm_loc, arm_conf, arm_priorbox.
    ODM (object detection) on `from_layers2` (the TCB outputs P3..P6): loc and conf
    (num_classes per anchor) only, concatenated as odm_loc and odm_conf; its anchors are
    the ARM's, refined by arm_loc in the loss and in DetectionOutput. Anchor counts per
    location come from min_sizes/max_sizes/aspect_ratios[i] for both. `normalizations[i]`
    (if given) applies to the i-th layer of both lists, and a positive
    `inter_layer_depth[i]` inserts a ResBody `res<src>_inter` (256-256-1024, with a
    projection) before the i-th head of both, as RefineDet's ResNet models have."""
    _check_head_args('CreateRefineDetHead', num_classes, from_layers, normalizations, min_sizes,
                     max_sizes, aspect_ratios, steps, inter_layer_depth, net, data_layer)
    if len(from_layers2) > len(from_layers):
        raise ValueError('CreateRefineDetHead: %d ODM sources for %d ARM sources'
                         % (len(from_layers2), len(from_layers)))

    def source_top(i: int, source: str) -> str:
        from_layer = _normalize_source(net, source, normalizations[i]) if normalizations else source
        if inter_layer_depth and inter_layer_depth[i] > 0:
            inter = '{}_inter'.format(from_layer)
            ResBody(net, from_layer, inter, out2a=256, out2b=256, out2c=1024, stride=1,
                    use_branch1=True)
            from_layer = 'res{}'.format(inter)
        return from_layer

    arm_classes = 2
    loc_layers, conf_layers, prior_layers = [], [], []
    for i, source in enumerate(from_layers):
        from_layer = source_top(i, source)
        min_size, max_size, aspect_ratio, num_priors = _source_priors(
            i, min_sizes, max_sizes, aspect_ratios, flip)
        step = steps[i] if len(steps) > i else []
        loc, conf = _loc_conf(net, from_layer, num_priors, arm_classes, share_location,
                              loc_postfix, conf_postfix, use_batchnorm, lr_mult, kernel_size,
                              pad, bn_param)
        loc_layers.append(loc)
        conf_layers.append(conf)
        prior_layers.append(_prior_box(net, from_layer, data_layer, min_size, max_size,
                                       aspect_ratio, step, flip, clip, list(prior_variance),
                                       offset, img_height, img_width))
    mbox_layers = _concat(net, [('arm_loc', loc_layers, 1), ('arm_conf', conf_layers, 1),
                                ('arm_priorbox', prior_layers, 2)])

    loc_layers, conf_layers = [], []
    for i, source in enumerate(from_layers2):
        from_layer = source_top(i, source)
        _, _, _, num_priors = _source_priors(i, min_sizes, max_sizes, aspect_ratios, flip)
        loc, conf = _loc_conf(net, from_layer, num_priors, num_classes, share_location,
                              loc_postfix, conf_postfix, use_batchnorm, lr_mult, kernel_size,
                              pad, bn_param)
        loc_layers.append(loc)
        conf_layers.append(conf)
    return mbox_layers + _concat(net, [('odm_loc', loc_layers, 1), ('odm_conf', conf_layers, 1)])
