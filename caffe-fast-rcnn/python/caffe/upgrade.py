"""Upgrading legacy nets to the current format on load, as Caffe's upgrade_proto does.

Caffe has had three layouts of NetParameter: V0 (`layers { layer { type: "conv" } }`),
V1 (`layers { type: CONVOLUTION blobs_lr: 1 }`) and the current one (`layer { type:
"Convolution" param { lr_mult: 1 } }`). Old model zoo prototxts and .caffemodel files use
V1 and must load and behave exactly like their upgraded form. Net-level `input_dim`
(four numbers per input) is turned into `input_shape`, which is what the engine reads.
"""
from __future__ import annotations

from typing import Optional

from .errors import NetError
from .proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

# V1's enum names and the type strings that replaced them.
V1_TYPE_NAMES = {
    'NONE': '', 'ABSVAL': 'AbsVal', 'ACCURACY': 'Accuracy', 'ARGMAX': 'ArgMax', 'BNLL': 'BNLL',
    'CONCAT': 'Concat', 'CONTRASTIVE_LOSS': 'ContrastiveLoss', 'CONVOLUTION': 'Convolution',
    'DATA': 'Data', 'DECONVOLUTION': 'Deconvolution', 'DROPOUT': 'Dropout',
    'DUMMY_DATA': 'DummyData', 'EUCLIDEAN_LOSS': 'EuclideanLoss', 'ELTWISE': 'Eltwise',
    'EXP': 'Exp', 'FLATTEN': 'Flatten', 'HDF5_DATA': 'HDF5Data', 'HDF5_OUTPUT': 'HDF5Output',
    'HINGE_LOSS': 'HingeLoss', 'IM2COL': 'Im2col', 'IMAGE_DATA': 'ImageData',
    'INFOGAIN_LOSS': 'InfogainLoss', 'INNER_PRODUCT': 'InnerProduct', 'LRN': 'LRN',
    'MEMORY_DATA': 'MemoryData', 'MULTINOMIAL_LOGISTIC_LOSS': 'MultinomialLogisticLoss',
    'MVN': 'MVN', 'POOLING': 'Pooling', 'POWER': 'Power', 'RELU': 'ReLU', 'SIGMOID': 'Sigmoid',
    'SIGMOID_CROSS_ENTROPY_LOSS': 'SigmoidCrossEntropyLoss', 'SILENCE': 'Silence',
    'SOFTMAX': 'Softmax', 'SOFTMAX_LOSS': 'SoftmaxWithLoss', 'SPLIT': 'Split', 'SLICE': 'Slice',
    'TANH': 'TanH', 'WINDOW_DATA': 'WindowData', 'THRESHOLD': 'Threshold',
}

# Fields V1 and the current LayerParameter share by name (the *_param messages and a few
# plain ones); copied over as they are.
_V1_COPIED = [f.name for f in V1.DESCRIPTOR.fields
              if f.name.endswith('_param') and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name]


def net_needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    return bool(len(net.layers)) or bool(len(net.input_dim))


def v1_type_name(layer: 'V1') -> str:
    return V1_TYPE_NAMES[V1.LayerType.Name(layer.type)]


def upgrade_v1_layer(v1: 'V1', where: str = '') -> caffe_pb2.LayerParameter:
    """One V1 layer in the current format (blobs_lr -> lr_mult, weight_decay -> decay_mult)."""
    out = caffe_pb2.LayerParameter()
    out.name = v1.name
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    out.blobs.extend(v1.blobs)
    out.loss_weight.extend(v1.loss_weight)
    if v1.HasField('type'):
        out.type = v1_type_name(v1)
    for i, pname in enumerate(v1.param):
        _param(out, i).name = pname
    for i, mode in enumerate(v1.blob_share_mode):
        _param(out, i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        _param(out, i).lr_mult = lr
    for i, wd in enumerate(v1.weight_decay):
        _param(out, i).decay_mult = wd
    for name in _V1_COPIED:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    if v1.HasField('layer'):
        raise NetError('%slayer %r mixes the V0 `layer {}` form into a V1 net; upgrade it with '
                       'Caffe\'s upgrade_net_proto_text first' % (where, v1.name))
    return out


def _param(layer: caffe_pb2.LayerParameter, i: int) -> caffe_pb2.ParamSpec:
    while len(layer.param) <= i:
        layer.param.add()
    return layer.param[i]


def _is_v0(net: caffe_pb2.NetParameter) -> bool:
    return any(l.HasField('layer') for l in net.layers)


def upgrade_net(net: caffe_pb2.NetParameter, source: str = '<net>') -> caffe_pb2.NetParameter:
    """Upgrade `net` in place to the current format; returns it. Idempotent."""
    if len(net.layers) and len(net.layer):
        raise NetError('%s: net uses both `layer` and the legacy `layers` field; use one' % source)
    if len(net.layers):
        if _is_v0(net):
            from . import upgrade_v0
            upgrade_v0.upgrade_v0_net(net, source)
        layers = [upgrade_v1_layer(l, source + ': ') for l in net.layers]
        del net.layers[:]
        net.layer.extend(layers)
    _upgrade_input_dims(net, source)
    _upgrade_data_transform(net)
    return net


def _upgrade_input_dims(net: caffe_pb2.NetParameter, source: str) -> None:
    if not len(net.input_dim):
        return
    if len(net.input_shape):
        raise NetError('%s: give inputs either input_dim or input_shape, not both' % source)
    dims = list(net.input_dim)
    if len(dims) != 4 * len(net.input):
        raise NetError('%s: %d input_dim values for %d inputs; need 4 per input'
                       % (source, len(dims), len(net.input)))
    del net.input_dim[:]
    for i in range(len(net.input)):
        net.input_shape.add().dim.extend(dims[4 * i:4 * i + 4])


_TRANSFORM_FIELDS = ('scale', 'mean_file', 'crop_size', 'mirror')


def _upgrade_data_transform(net: caffe_pb2.NetParameter) -> None:
    """Move V1 data layers' scale/mean_file/crop_size/mirror into transform_param."""
    for layer in net.layer:
        for pname in ('data_param', 'image_data_param', 'window_data_param'):
            if not layer.HasField(pname):
                continue
            p = getattr(layer, pname)
            for f in _TRANSFORM_FIELDS:
                if f in p.DESCRIPTOR.fields_by_name and p.HasField(f):
                    setattr(layer.transform_param, f, getattr(p, f))
                    p.ClearField(f)


def upgrade_solver(solver: caffe_pb2.SolverParameter) -> caffe_pb2.SolverParameter:
    """Replace the legacy `solver_type` enum with the `type` string, as Caffe does."""
    if solver.HasField('solver_type'):
        if solver.HasField('type'):
            raise NetError('solver sets both solver_type (legacy) and type; keep only type')
        names = {'SGD': 'SGD', 'NESTEROV': 'Nesterov', 'ADAGRAD': 'AdaGrad',
                 'RMSPROP': 'RMSProp', 'ADADELTA': 'AdaDelta', 'ADAM': 'Adam'}
        solver.type = names[caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)]
        solver.ClearField('solver_type')
    return solver

