"""Moving learnable blobs between a Net and files: .caffemodel (binary NetParameter) and HDF5.

Reading follows Caffe's CopyTrainedLayersFrom: layers are matched by name, layers the
file has and the net lacks are skipped (with a log line), and a blob of another shape is
an error naming the layer, the parameter and both shapes. Legacy (V1) weight files are
upgraded first. Blobs go between protobuf and NumPy through the packed wire bytes, so a
VGG16-sized model loads in about a second instead of walking 138M floats in Python.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable

import numpy as np
import torch

from . import _log, protoio, upgrade
from .blob import Blob
from .errors import ParseError, ShapeError
from .proto import caffe_pb2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def blob_to_proto(blob_data: np.ndarray, diff: np.ndarray = None) -> caffe_pb2.BlobProto:
    """A BlobProto with shape and data (and diff) of the arrays; float32 or float64."""
    arr = np.ascontiguousarray(blob_data)
    shape = caffe_pb2.BlobShape(dim=list(arr.shape)).SerializeToString()
    parts = [b'\x3a' + _varint(len(shape)) + shape]  # field 7 (shape), length-delimited
    double = arr.dtype == np.float64
    for field, values in ((8 if double else 5, arr), (9 if double else 6, diff)):
        if values is None:
            continue
        raw = np.ascontiguousarray(values, dtype=np.float64 if double else np.float32).tobytes()
        if raw:
            parts.append(_varint((field << 3) | 2) + _varint(len(raw)) + raw)
    return caffe_pb2.BlobProto.FromString(b''.join(parts))


def proto_shape(bp: caffe_pb2.BlobProto) -> tuple:
    """A BlobProto's shape: `shape` if given, else the legacy num/channels/height/width."""
    if bp.HasField('shape'):
        return tuple(int(d) for d in bp.shape.dim)
    return (bp.num, bp.channels, bp.height, bp.width)


def proto_to_array(bp: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as a NumPy array of its shape."""
    if diff:
        values = bp.double_diff if len(bp.double_diff) else bp.diff
        dtype = np.float64 if len(bp.double_diff) else np.float32
    else:
        values = bp.double_data if len(bp.double_data) else bp.data
        dtype = np.float64 if len(bp.double_data) else np.float32
    arr = np.array(values, dtype=dtype)
    shape = proto_shape(bp)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ShapeError('blob holds %d values but its shape %s needs %d'
                         % (arr.size, shape, int(np.prod(shape, dtype=np.int64))))
    return arr.reshape(shape)


def _legacy_equal(src_shape: tuple, dst_shape: tuple) -> bool:
    """Caffe's ShapeEquals for legacy protos: 4-d num/channels/height/width padded with 1s."""
    if len(dst_shape) > 4:
        return False
    padded = (1,) * (4 - len(dst_shape)) + tuple(dst_shape)
    return tuple(src_shape) == padded


def read_weights_param(path: str) -> caffe_pb2.NetParameter:
    if not os.path.isfile(path):
        raise ParseError(path, 'weights file not found')
    param = protoio.read_binary(path, caffe_pb2.NetParameter)
    return upgrade.upgrade_net(param, path)


def copy_trained_layers(net, source: caffe_pb2.NetParameter, path: str = '<weights>') -> None:
    """Copy every layer's blobs from `source` into the layers of `net` with the same name."""
    index = {name: i for i, name in enumerate(net._layer_names)}
    for lp in source.layer:
        li = index.get(lp.name)
        if li is None:
            _log.info('net.cpp', 'Ignoring source layer %s' % lp.name)
            continue
        _log.info('net.cpp', 'Copying source layer %s' % lp.name)
        target = net.layers[li].blobs
        if len(lp.blobs) != len(target):
            raise ShapeError('%s: Incompatible number of blobs for layer %r: the file has %d, '
                             'the net has %d' % (path, lp.name, len(lp.blobs), len(target)))
        for j, bp in enumerate(lp.blobs):
            dst = target[j]
            src_shape = proto_shape(bp)
            legacy = not bp.HasField('shape')
            if tuple(src_shape) != tuple(dst.shape) and not (legacy and _legacy_equal(src_shape, dst.shape)):
                raise ShapeError(
                    "%s: Cannot copy param %d weights from layer '%s'; shape mismatch. Source "
                    "param shape is %s (%d); target param shape is %s (%d). To learn this "
                    "layer's parameters from scratch rather than copying from a saved net, "
                    "rename the layer." % (path, j, lp.name, ' '.join(map(str, src_shape)),
                                            int(np.prod(src_shape, dtype=np.int64)),
                                            ' '.join(map(str, dst.shape)), dst.count))
            arr = proto_to_array(bp).reshape(dst.shape)
            dst.tensor.copy_(torch.from_numpy(arr))


def net_to_proto(net, write_diff: bool = False) -> caffe_pb2.NetParameter:
    """The net's layers with their blobs, as Caffe's Net::ToProto writes them."""
    out = caffe_pb2.NetParameter()
    out.name = net._name
    for bid in net._inputs:
        out.input.append(net._blob_names[bid])
    for li, layer in enumerate(net.layers):
        lp = out.layer.add()
        lp.CopyFrom(net._param.layer[li])
        del lp.blobs[:]
        for b in layer.blobs:
            lp.blobs.append(blob_to_proto(b.data, b.diff if write_diff else None))
    return out


def save_caffemodel(net, path: str) -> None:
    protoio.write_binary(path, net_to_proto(net))


def save_hdf5(net, path: str, write_diff: bool = False) -> None:
    """Caffe's HDF5 weights layout: /data/<layer>/<i> (and /diff/...)."""
    import h5py
    tmp = path + '.tmp'
    with h5py.File(tmp, 'w') as f:
        groups = [('data', f.create_group('data'))]
        if write_diff:
            groups.append(('diff', f.create_group('diff')))
        for name, layer in zip(net._layer_names, net.layers):
            if not len(layer.blobs):
                continue
            for kind, g in groups:
                lg = g.create_group(name)
                for j, b in enumerate(layer.blobs):
                    lg.create_dataset(str(j), data=np.asarray(b.data if kind == 'data' else b.diff))
    os.replace(tmp, path)


def load_hdf5(net, path: str) -> None:
    """Copy weights from Caffe's HDF5 layout; layers the net lacks are skipped."""
    import h5py
    with h5py.File(path, 'r') as f:
        if 'data' not in f:
            raise ParseError(path, 'not a Caffe HDF5 weights file (no /data group)')
        data = f['data']
        index = {name: i for i, name in enumerate(net._layer_names)}
        for name in data:
            li = index.get(name)
            if li is None:
                _log.info('net.cpp', 'Ignoring source layer %s' % name)
                continue
            target = net.layers[li].blobs
            group = data[name]
            if len(group) != len(target):
                raise ShapeError('%s: Incompatible number of blobs for layer %r' % (path, name))
            for j, dst in enumerate(target):
                arr = np.asarray(group[str(j)])
                if tuple(arr.shape) != tuple(dst.shape) and arr.size != dst.count:
                    raise ShapeError("%s: Cannot copy param %d weights from layer '%s'; shape "
                                     "mismatch: %s vs %s" % (path, j, name, arr.shape, dst.shape))
                dst.tensor.copy_(torch.from_numpy(arr.reshape(dst.shape).astype(dst.data.dtype)))
