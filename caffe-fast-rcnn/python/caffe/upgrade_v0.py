"""Upgrading the oldest Caffe nets (V0) to V1, as Caffe's UpgradeV0Net does.

A V0 net wraps each layer twice: `layers { layer { name: "conv1" type: "conv"
num_output: 96 kernelsize: 11 stride: 4 } bottom: "data" top: "conv1" }`. Every
setting sits flat in the inner V0LayerParameter, whatever the layer type; V1 moved them
into per-type messages (convolution_param, pooling_param, ...). Zero-padding was a layer
of its own ("padding"); V1 folds it into the `pad` of the convolution or pooling that
reads its output.

`upgrade_v0_net` rewrites `net.layers` in place into V1 layers; upgrade.py then takes the
V1 net to the current format. As in Caffe, a setting given for a layer type that has no
use for it is reported and dropped, and the net loads anyway.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List, Tuple

from . import _log
from .errors import NetError
from .proto import caffe_pb2

V0 = caffe_pb2.V0LayerParameter
V1 = caffe_pb2.V1LayerParameter

# V0 type strings and the V1 enum each became.
V0_TYPES: Dict[str, int] = {
    'accuracy': V1.ACCURACY, 'bnll': V1.BNLL, 'concat': V1.CONCAT, 'conv': V1.CONVOLUTION,
    'data': V1.DATA, 'dropout': V1.DROPOUT, 'euclidean_loss': V1.EUCLIDEAN_LOSS,
    'flatten': V1.FLATTEN, 'hdf5_data': V1.HDF5_DATA, 'hdf5_output': V1.HDF5_OUTPUT,
    'im2col': V1.IM2COL, 'images': V1.IMAGE_DATA, 'infogain_loss': V1.INFOGAIN_LOSS,
    'innerproduct': V1.INNER_PRODUCT, 'lrn': V1.LRN,
    'multinomial_logistic_loss': V1.MULTINOMIAL_LOGISTIC_LOSS, 'pool': V1.POOLING,
    'relu': V1.RELU, 'sigmoid': V1.SIGMOID, 'softmax': V1.SOFTMAX,
    'softmax_loss': V1.SOFTMAX_LOSS, 'split': V1.SPLIT, 'tanh': V1.TANH,
    'window_data': V1.WINDOW_DATA,
}


def _set(param: str, field: str) -> Callable:
    """A setter of the scalar `field` of the V1 layer's `param` message."""
    def apply(v1, value):
        setattr(getattr(v1, param), field, value)
    return apply


def _append(param: str, field: str) -> Callable:
    """A setter for a field that became repeated (convolution pad/kernel_size/stride)."""
    def apply(v1, value):
        getattr(getattr(v1, param), field).append(value)
    return apply


def _copy(param: str, field: str) -> Callable:
    """A setter for a message-valued field (fillers, hdf5_output_param)."""
    def apply(v1, value):
        target = getattr(getattr(v1, param), field) if field else getattr(v1, param)
        target.CopyFrom(value)
    return apply


# V0 field -> {V0 type: how to set it on the V1 layer}. A type missing from a field's
# table has no use for that field. '*' applies to every type (the transformation fields).
_FIELDS: Dict[str, Dict[str, Callable]] = {
    'num_output': {'conv': _set('convolution_param', 'num_output'),
                   'innerproduct': _set('inner_product_param', 'num_output')},
    'biasterm': {'conv': _set('convolution_param', 'bias_term'),
                 'innerproduct': _set('inner_product_param', 'bias_term')},
    'weight_filler': {'conv': _copy('convolution_param', 'weight_filler'),
                      'innerproduct': _copy('inner_product_param', 'weight_filler')},
    'bias_filler': {'conv': _copy('convolution_param', 'bias_filler'),
                    'innerproduct': _copy('inner_product_param', 'bias_filler')},
    'pad': {'conv': _append('convolution_param', 'pad'), 'pool': _set('pooling_param', 'pad')},
    'kernelsize': {'conv': _append('convolution_param', 'kernel_size'),
                   'pool': _set('pooling_param', 'kernel_size')},
    'group': {'conv': _set('convolution_param', 'group')},
    'stride': {'conv': _append('convolution_param', 'stride'),
               'pool': _set('pooling_param', 'stride')},
    # V0's PoolMethod and PoolingParameter's have the same names and numbers.
    'pool': {'pool': _set('pooling_param', 'pool')},
    'dropout_ratio': {'dropout': _set('dropout_param', 'dropout_ratio')},
    'local_size': {'lrn': _set('lrn_param', 'local_size')},
    'alpha': {'lrn': _set('lrn_param', 'alpha')},
    'beta': {'lrn': _set('lrn_param', 'beta')},
    'k': {'lrn': _set('lrn_param', 'k')},
    'source': {'data': _set('data_param', 'source'),
               'hdf5_data': _set('hdf5_data_param', 'source'),
               'images': _set('image_data_param', 'source'),
               'window_data': _set('window_data_param', 'source'),
               'infogain_loss': _set('infogain_loss_param', 'source')},
    'scale': {'*': _set('transform_param', 'scale')},
    'meanfile': {'*': _set('transform_param', 'mean_file')},
    'batchsize': {'data': _set('data_param', 'batch_size'),
                  'hdf5_data': _set('hdf5_data_param', 'batch_size'),
                  'images': _set('image_data_param', 'batch_size'),
                  'window_data': _set('window_data_param', 'batch_size')},
    'cropsize': {'*': _set('transform_param', 'crop_size')},
    'mirror': {'*': _set('transform_param', 'mirror')},
    'rand_skip': {'data': _set('data_param', 'rand_skip'),
                  'images': _set('image_data_param', 'rand_skip')},
    'shuffle_images': {'images': _set('image_data_param', 'shuffle')},
    'new_height': {'images': _set('image_data_param', 'new_height')},
    'new_width': {'images': _set('image_data_param', 'new_width')},
    'concat_dim': {'concat': _set('concat_param', 'concat_dim')},
    'det_fg_threshold': {'window_data': _set('window_data_param', 'fg_threshold')},
    'det_bg_threshold': {'window_data': _set('window_data_param', 'bg_threshold')},
    'det_fg_fraction': {'window_data': _set('window_data_param', 'fg_fraction')},
    'det_context_pad': {'window_data': _set('window_data_param', 'context_pad')},
    'det_crop_mode': {'window_data': _set('window_data_param', 'crop_mode')},
    'hdf5_output_param': {'hdf5_output': _copy('hdf5_output_param', '')},
}


def v0_layer_type(type_name: str, layer_name: str = '') -> int:
    """The V1 enum of a V0 type string; an unknown one is a NetError naming close matches."""
    try:
        return V0_TYPES[type_name]
    except KeyError:
        close = difflib.get_close_matches(type_name, list(V0_TYPES), n=3, cutoff=0.5)
        hint = (' Did you mean %s?' % ' or '.join(repr(c) for c in close)) if close else ''
        raise NetError('Unknown V0 layer type %r (layer %r).%s Known V0 types: %s'
                       % (type_name, layer_name, hint, ', '.join(sorted(V0_TYPES)))) from None


def upgrade_v0_layer(conn: 'V1', source: str = '<net>') -> Tuple['V1', List[str]]:
    """One V0 layer (a V1 `layers` entry holding `layer {}`) as a V1 layer.

    Returns the layer and the problems met (settings the layer type has no use for).
    """
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    problems: List[str] = []
    if not conn.HasField('layer'):
        return out, problems
    v0 = conn.layer
    kind = v0.type
    if v0.HasField('name'):
        out.name = v0.name
    if v0.HasField('type'):
        out.type = v0_layer_type(kind, v0.name)
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, by_type in _FIELDS.items():
        if not v0.HasField(field):
            continue
        apply = by_type.get(kind) or by_type.get('*')
        if apply is None:
            problems.append('Unknown parameter %s for layer type %s (layer %r)'
                            % (field, kind, v0.name))
            continue
        apply(out, getattr(v0, field))
    return out, problems


def fold_padding_layers(net: caffe_pb2.NetParameter, source: str = '<net>') -> List['V1']:
    """The V0 layers with each "padding" layer folded into the conv/pool that reads it.

    The padding layer's `pad` moves into its consumer, which then reads the padding
    layer's own input; the padding layer disappears (Caffe's UpgradeV0PaddingLayers).
    """
    producer: Dict[str, int] = {name: -1 for name in net.input}
    kept: List['V1'] = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        new = None
        if v0.type != 'padding':
            new = V1()
            new.CopyFrom(conn)
            kept.append(new)
        for j, blob in enumerate(conn.bottom):
            if blob not in producer:
                raise NetError('%s: Unknown blob input %r to V0 layer %r (bottom %d)'
                               % (source, blob, v0.name, j))
            src = producer[blob]
            if src < 0 or net.layers[src].layer.type != 'padding':
                continue
            pad_conn = net.layers[src]
            where = '%s: padding layer %r feeds layer %r' % (source, pad_conn.layer.name, v0.name)
            if v0.type not in ('conv', 'pool'):
                raise NetError('%s: a padding layer can only feed a convolution or pooling '
                               'layer, not type %r' % (where, v0.type))
            if len(conn.bottom) != 1:
                raise NetError('%s, which must take a single bottom' % where)
            if len(pad_conn.bottom) != 1 or len(pad_conn.top) != 1:
                raise NetError('%s; a padding layer takes one bottom and gives one top' % where)
            new.layer.pad = pad_conn.layer.pad
            new.bottom[j] = pad_conn.bottom[0]
        for blob in conn.top:
            producer[blob] = i
    return kept


def upgrade_v0_net(net: caffe_pb2.NetParameter, source: str = '<net>') -> caffe_pb2.NetParameter:
    """Rewrite a V0 net in place as a V1 net (Caffe's UpgradeV0Net); returns it.

    Like Caffe, only the name, the inputs (with input_dim) and force_backward are kept
    besides the layers: V0 nets had no other net-level settings.
    """
    _log.info('upgrade_proto.cpp', 'Attempting to upgrade input file specified using '
              'deprecated V0LayerParameter: %s' % source)
    for conn in net.layers:
        if not conn.HasField('layer'):
            raise NetError('%s: layer %r is a V1 `layers { type: ... }` entry in a V0 net '
                           '(`layers { layer { ... } }`); write every layer in one format'
                           % (source, conn.name))
    folded = fold_padding_layers(net, source)
    upgraded, problems = [], []
    for conn in folded:
        layer, issues = upgrade_v0_layer(conn, source)
        upgraded.append(layer)
        problems.extend(issues)
    name = net.name if net.HasField('name') else None
    inputs, dims = list(net.input), list(net.input_dim)
    force = net.force_backward if net.HasField('force_backward') else None
    net.Clear()
    if name is not None:
        net.name = name
    net.layers.extend(upgraded)
    net.input.extend(inputs)
    net.input_dim.extend(dims)
    if force is not None:
        net.force_backward = force
    for p in problems:
        _log.error('upgrade_proto.cpp', p)
    if problems:
        _log.error('upgrade_proto.cpp', 'Warning: had one or more problems upgrading '
                   'V0NetParameter to NetParameter (see above); continuing anyway.')
    else:
        _log.info('upgrade_proto.cpp', 'Successfully upgraded file specified using '
                  'deprecated V0LayerParameter')
    return net
