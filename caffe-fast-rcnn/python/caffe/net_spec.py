"""caffe.net_spec: write nets in Python, get a NetParameter (pycaffe's NetSpec).

    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[8, 1, 28, 28]), dict(dim=[8])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    open('net.prototxt', 'w').write(str(n.to_proto()))

`L.<Type>(*bottoms, **kwargs)` describes one layer (a `Function`) and returns its output
`Top` (a tuple of Tops for `ntop=k`, the Function itself for `ntop=0`). Keyword
arguments are layer parameters: those ending in `param` are LayerParameter fields
(`param=[dict(lr_mult=1)]`, `transform_param=...`); the others go into the layer type's
own `<type>_param` message when it has such a field (`num_output=...` into
`convolution_param`) and into LayerParameter otherwise (`loss_weight`, `include`,
`propagate_down`, ...). Which message belongs to which type is read from caffe.proto's
descriptors (`ConvolutionParameter convolution_param` -> type "Convolution"), never
listed here. Values follow the field: a list fills a repeated field (a bare value
becomes a one-element list), a dict fills a message, a list of dicts adds repeated
messages, an enum may be given by number (`P.Pooling.MAX`) or by name ('MAX').

Blob and layer names come from the NetSpec attribute names; unnamed intermediate tops
get `<Type><k>` names (Convolution1, ...). `in_place=True` makes the layer write its
bottoms. `P.<Type>.<ENUM>` gives enum constants of `<Type>Parameter`.

What SSD's fork of this module added, which its and RefineDet's model_libs rely on:
`NetSpec.update(name, params)` changes the parameters of the layer behind a named top;
Deconvolution's keyword arguments go into `convolution_param` (the message Caffe's
Deconvolution reads); a Silence layer writes no top even when called without `ntop=0`.
Scripts written for Python 2, where `/` of two ints was an int, give integer fields
integral floats (`pad=(3 - 1) / 2`): such a float is taken as its int, any other float in
an integer field is an error naming the field.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Dict, Tuple, Union

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from .proto import caffe_pb2

__all__ = ['NetSpec', 'layers', 'params', 'to_proto', 'Top', 'Function', 'param_name_dict',
           'assign_proto']


def param_name_dict() -> Dict[str, str]:
    """Layer type -> prefix of its `*_param` field, from LayerParameter's descriptor.

    Every message field of LayerParameter named `<x>_param` of message type
    `<Type>Parameter` gives `Type -> x` ("Convolution" -> "convolution",
    "ROIPooling" -> "roi_pooling"). Some entries are not layer types (Transformation,
    Loss); they are harmless, as no layer is called that.
    """
    mapping = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if not field.name.endswith('_param') or field.message_type is None:
            continue
        type_name = field.message_type.name
        if type_name.endswith('Parameter'):
            type_name = type_name[:-len('Parameter')]
        mapping[type_name] = field.name[:-len('_param')]
    return mapping


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers (protobuf setters want int/float/str/bool)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


_INTEGER_TYPES = frozenset(
    getattr(FieldDescriptor, 'TYPE_' + t) for t in
    ('INT32', 'INT64', 'UINT32', 'UINT64', 'SINT32', 'SINT64', 'FIXED32', 'FIXED64',
     'SFIXED32', 'SFIXED64'))

# Layer types that read another type's parameter message (Caffe's Deconvolution and
# Im2col layers both read `convolution_param`); every other type's message is found from
# the descriptors by name.
_SHARED_MESSAGE = {'Deconvolution': 'Convolution', 'Im2col': 'Convolution'}


def _enum_number(field, value: Any, where: str) -> Any:
    """An enum given by name as its number, an integral float in an integer field as its
    int (Python 2's `/`); anything else unchanged."""
    value = _plain(value)
    if field.type in _INTEGER_TYPES and isinstance(value, float):
        if not value.is_integer():
            raise TypeError('%s is an integer field: got %r' % (where, value))
        return int(value)
    if field.type != field.TYPE_ENUM or not isinstance(value, str):
        return value
    enum_value = field.enum_type.values_by_name.get(value)
    if enum_value is None:
        raise ValueError('%s: %r is not one of %s' % (
            where, value, ', '.join(v.name for v in field.enum_type.values)))
    return enum_value.number


def _fill_message(msg, value: Any, where: str) -> None:
    """Fill message `msg` from a dict of its fields or copy another message."""
    if isinstance(value, dict):
        for k, v in value.items():
            assign_proto(msg, k, v)
    elif hasattr(value, 'DESCRIPTOR') and value.DESCRIPTOR is msg.DESCRIPTOR:
        msg.CopyFrom(value)
    else:
        raise TypeError('%s is a %s message: give a dict of its fields, got %r'
                        % (where, msg.DESCRIPTOR.name, value))


def assign_proto(proto, name: str, val: Any) -> None:
    """Set field `name` of message `proto` from a Python value (see the module docstring).

    Lists (and tuples, arrays) fill repeated fields, a bare value for a repeated field
    counts as a one-element list; dicts fill messages, lists of dicts add repeated
    messages; enum fields accept value names.
    """
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError('%s has no field %r' % (proto.DESCRIPTOR.name, name))
    is_message = field.type == field.TYPE_MESSAGE
    where = '%s.%s' % (proto.DESCRIPTOR.name, name)
    if field.is_repeated:
        if isinstance(val, np.ndarray):
            val = val.tolist()
        if not isinstance(val, (list, tuple)):
            val = [val]
        container = getattr(proto, name)
        for item in val:
            if is_message:
                _fill_message(container.add(), item, where)
            else:
                container.append(_enum_number(field, item, where))
    elif is_message:
        _fill_message(getattr(proto, name), val, where)
    else:
        setattr(proto, name, _enum_number(field, val, where))


class Top:
    """One output blob of a layer: output `n` of Function `fn`."""

    def __init__(self, fn: 'Function', n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed to compute this top (auto-named)."""
        return to_proto(self)

    def _update(self, params: Dict[str, Any]) -> None:
        """Add or change parameters of the layer that produces this top."""
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames) -> None:
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self) -> str:
        return '<Top %d of %s>' % (self.n, self.fn.type_name)


class Function:
    """One layer: its type, its input Tops and its parameters (`ntop`, `in_place` aside)."""

    def __init__(self, type_name: str, inputs: Tuple[Top, ...], params: Dict[str, Any]):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError('%s input %d is not a Top (type is %s)'
                                % (type_name, index, type(inp)))
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = int(self.params.pop('ntop', 1))
        if self.ntop < 0:
            raise ValueError('%s: ntop must be >= 0, got %d' % (type_name, self.ntop))
        self.in_place = bool(self.params.pop('in_place', False))
        if self.in_place and self.ntop > len(self.inputs):
            raise ValueError('%s: in_place needs a bottom for each of its %d tops, it has %d'
                             % (type_name, self.ntop, len(self.inputs)))
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _update(self, params: Dict[str, Any]) -> None:
        self.params.update(params)

    def _get_name(self, names, autonames) -> str:
        """The layer's name: its first top's name, or `<Type><k>` for a top-less layer."""
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers: 'OrderedDict[Function, caffe_pb2.LayerParameter]',
                  names: Dict[Any, str], autonames: Counter) -> None:
        """Add this layer (after the layers of its inputs) to `layers`, once."""
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom[:self.ntop])
        elif self.type_name != 'Silence':  # Silence never has tops (as SSD's net_spec)
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        type_fields = _param_names.get(_SHARED_MESSAGE.get(self.type_name, self.type_name))
        own = getattr(layer, type_fields + '_param') if type_fields else None
        for k, v in self.params.items():
            if k.endswith('param'):
                target = layer
            elif own is not None and k in own.DESCRIPTOR.fields_by_name:
                target = own
            elif k in layer.DESCRIPTOR.fields_by_name:
                target = layer
            else:
                raise AttributeError(
                    '%s layer %r: unknown parameter %r (not a field of %s nor of '
                    'LayerParameter)%s' % (
                        self.type_name, layer.name, k,
                        own.DESCRIPTOR.name if own is not None else 'any %sParameter' % self.type_name,
                        '' if own is not None else '; for a type without its own message '
                        'pass the message explicitly, e.g. convolution_param=dict(...)'))
            assign_proto(target, k, v)
        layers[self] = layer

    def __repr__(self) -> str:
        return '<Function %s>' % self.type_name


def to_proto(*tops: Union[Top, Function]) -> caffe_pb2.NetParameter:
    """A NetParameter with all layers needed to compute `tops`, every name generated."""
    layers: 'OrderedDict[Function, caffe_pb2.LayerParameter]' = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: assign `n.name = L.Type(...)`; `to_proto()` names blobs and layers so."""

    def __init__(self):
        super().__setattr__('tops', OrderedDict())

    def __setattr__(self, name: str, value: Union[Top, Function]) -> None:
        if not isinstance(value, (Top, Function)):
            raise TypeError('NetSpec.%s must be a Top (or a top-less layer), got %s%s'
                            % (name, type(value).__name__,
                               '; unpack the tops of an ntop > 1 layer: n.a, n.b = L.X(..., ntop=2)'
                               if isinstance(value, tuple) else ''))
        self.tops[name] = value

    def __getattr__(self, name: str) -> Union[Top, Function]:
        tops = self.__dict__.get('tops')
        if tops is None or name not in tops:
            raise AttributeError('NetSpec has no top named %r' % name)
        return tops[name]

    def __delattr__(self, name: str) -> None:
        try:
            del self.tops[name]
        except KeyError:
            raise AttributeError('NetSpec has no top named %r' % name) from None

    def __setitem__(self, key: str, value) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str):
        return self.tops[item]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name: str, params: Dict[str, Any]) -> None:
        """Add or change parameters of the layer that produces top `name` (SSD's
        model_libs: `net.update('conv4_3_mbox_priorbox', {'max_size': [60]})`)."""
        if name not in self.tops:
            raise KeyError('NetSpec has no top named %r' % name)
        self.tops[name]._update(dict(params))

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The NetParameter of every assigned top and the layers they depend on."""
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: 'OrderedDict[Function, caffe_pb2.LayerParameter]' = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`L.<Type>(*bottoms, **params)`: a layer of that type (see the module docstring)."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class _ParamConstants:
    """The constants (enum values) of one `<Type>Parameter` message."""

    def __init__(self, type_name: str):
        self._type_name = type_name

    def __getattr__(self, const: str):
        if const.startswith('__'):
            raise AttributeError(const)
        msg = getattr(caffe_pb2, self._type_name + 'Parameter', None)
        if msg is None:
            raise AttributeError('caffe.proto has no message %sParameter' % self._type_name)
        try:
            return getattr(msg, const)
        except AttributeError:
            raise AttributeError('%sParameter has no constant %r' % (self._type_name, const)) from None


class Parameters:
    """`P.<Type>.<NAME>`: enum constants of `<Type>Parameter`, e.g. P.Pooling.MAX."""

    def __getattr__(self, name: str) -> _ParamConstants:
        if name.startswith('__'):
            raise AttributeError(name)
        return _ParamConstants(name)


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
