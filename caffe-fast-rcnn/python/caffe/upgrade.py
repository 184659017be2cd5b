"""Upgrading legacy nets to the current format on load, as Caffe's upgrade_proto does.

Caffe has had three layouts of NetParameter: V0 (`layers { layer { type: "conv" } }`),
V1 (`layers { type: CONVOLUTION blobs_lr: 1 }`) and the current one (`layer { type:
"Convolution" param { lr_mult: 1 } }`). Old model zoo prototxts and .caffemodel files use
V1 and must load and behave exactly like their upgraded form. Net-level `input_dim`
(four numbers per input) is turned into `input_shape`, which is what the engine reads.
"""
from __future__ import annotations

from . import _log
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
    """Whether upgrade_net would change `net` (legacy layers, input_dim, old BatchNorm)."""
    return (bool(len(net.layers)) or bool(len(net.input_dim))
            or any(l.type == 'BatchNorm' and len(l.param) == 3
                   and any(p.lr_mult != 0 or p.decay_mult != 0 for p in l.param)
                   for l in net.layer))


def v1_type_name(layer: 'V1') -> str:
    return V1_TYPE_NAMES[V1.LayerType.Name(layer.type)]


def upgrade_v1_layer(v1: 'V1', where: str = '') -> caffe_pb2.LayerParameter:
    """One V1 layer in the current format (blobs_lr -> lr_mult, weight_decay -> decay_mult)."""
    out = caffe_pb2.LayerParameter()
    if v1.HasField('name'):
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


_V1_DATA_TYPES = {V1.DATA: 'data_param', V1.IMAGE_DATA: 'image_data_param',
                  V1.WINDOW_DATA: 'window_data_param'}
_TRANSFORM_FIELDS = ('scale', 'mean_file', 'crop_size', 'mirror')


def _upgrade_v1_data_transform(net: caffe_pb2.NetParameter, source: str) -> None:
    """Move V1 data layers' scale/mean_file/crop_size/mirror into transform_param.

    Caffe's UpgradeNetDataTransformation: only for V1 Data, ImageData and WindowData
    layers, before they become current layers.
    """
    logged = False
    for layer in net.layers:
        pname = _V1_DATA_TYPES.get(layer.type)
        if pname is None or not layer.HasField(pname):
            continue
        p = getattr(layer, pname)
        for f in _TRANSFORM_FIELDS:
            if p.HasField(f):
                if not logged:
                    _log.info('upgrade_proto.cpp', 'Attempting to upgrade input file specified '
                              'using deprecated transformation parameters: %s' % source)
                    logged = True
                setattr(layer.transform_param, f, getattr(p, f))
                p.ClearField(f)


def _upgrade_batch_norm(net: caffe_pb2.NetParameter) -> None:
    """Caffe's UpgradeNetBatchNorm: BatchNorm's three statistics blobs are never learned.

    Old prototxts froze them by hand with three `param { lr_mult: 0 }`; a BatchNorm layer
    with exactly three param specs gets lr_mult and decay_mult 0 on each (other settings,
    such as a sharing name, stay).
    """
    for layer in net.layer:
        if layer.type == 'BatchNorm' and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


def upgrade_net(net: caffe_pb2.NetParameter, source: str = '<net>') -> caffe_pb2.NetParameter:
    """Upgrade `net` in place to the current format; returns it. Idempotent.

    The steps of Caffe's UpgradeNetAsNeeded, in its order: V0 -> V1 (upgrade_v0.py),
    the V1 data layers' transformation fields, V1 -> current, BatchNorm's frozen
    statistics. Net-level `input_dim` becomes `input_shape` (the engine keeps net inputs
    as inputs instead of making an Input layer; the blobs and their names are the same).
    """
    if len(net.layers) and len(net.layer):
        raise NetError('%s: net uses both `layer` and the legacy `layers` field; use one' % source)
    if len(net.layers):
        if _is_v0(net):
            from . import upgrade_v0
            upgrade_v0.upgrade_v0_net(net, source)
        _upgrade_v1_data_transform(net, source)
        _log.info('upgrade_proto.cpp', 'Attempting to upgrade input file specified using '
                  'deprecated V1LayerParameter: %s' % source)
        layers = [upgrade_v1_layer(l, source + ': ') for l in net.layers]
        del net.layers[:]
        net.layer.extend(layers)
        _log.info('upgrade_proto.cpp', 'Successfully upgraded file specified using '
                  'deprecated V1LayerParameter')
    _upgrade_input_dims(net, source)
    _upgrade_batch_norm(net)
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

