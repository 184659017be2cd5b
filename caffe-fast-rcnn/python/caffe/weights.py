"""Moving learnable blobs between a Net and files: .caffemodel (binary NetParameter) and HDF5.

Reading follows Caffe's CopyTrainedLayersFrom: layers are matched by name, layers the
file has and the net lacks are skipped (with a log line), and a blob of another shape is
an error naming the layer, the parameter and both shapes. Legacy (V0/V1) weight files are
upgraded first.

Speed. A VGG16 .caffemodel holds 138M floats. Going through protobuf's Python objects
(`np.array(blob.data)`) walks them one by one and takes tens of seconds, so both
directions work on the wire format instead:

* reading scans the file's bytes for the big packed fields (NetParameter.layer(100) or
  the legacy layers(2), their blobs (7, or 6 in V1, or 50 inside a V0 `layer`), and in
  each blob data(5)/diff(6)/double_data(8)/double_diff(9)), lifts them out as NumPy
  views of the file buffer, and lets protobuf parse only the small rest (the
  "skeleton"). Each lifted blob keeps a private unknown field holding its index, which
  survives the V0/V1 upgrade's copies, so the arrays find their blob again afterwards.
  Anything unusual (unpacked values, groups, a truncated file) makes the scanner give up
  and protobuf parse the whole file, so the result is always what protobuf would say;
* writing emits the bytes of each blob directly from the array's memory, in the field
  order protobuf uses, so the file is byte-for-byte what protobuf would serialise.
"""
from __future__ import annotations

import mmap
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import _log, atomic_files, protoio, upgrade
from .errors import ParseError, ShapeError
from .proto import caffe_pb2

# BlobProto fields holding values: field number -> (name, little-endian dtype).
_VALUE_FIELDS = {5: ('data', '<f4'), 6: ('diff', '<f4'), 8: ('double_data', '<f8'),
                 9: ('double_diff', '<f8')}
# A field number no Caffe message uses; marks a skeleton blob whose values were lifted.
_MARK_FIELD = 536870911


class _GiveUp(Exception):
    """The fast scanner met something it does not handle; protobuf parses the file instead."""


# ---- wire format helpers ------------------------------------------------------------------

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


def _read_varint(buf, pos: int, end: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _GiveUp('bad varint')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, field start, value start, value end) of one message."""
    pos = start
    while pos < end:
        fstart = pos
        key, pos = _read_varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise _GiveUp('field number 0')
        if wt == 0:
            _, vend = _read_varint(buf, pos, end)
            vstart = pos
        elif wt == 1:
            vstart, vend = pos, pos + 8
        elif wt == 2:
            n, vstart = _read_varint(buf, pos, end)
            vend = vstart + n
        elif wt == 5:
            vstart, vend = pos, pos + 4
        else:
            raise _GiveUp('wire type %d' % wt)
        if vend > end:
            raise _GiveUp('field runs past its message')
        yield field, wt, fstart, vstart, vend
        pos = vend


def _submessage(field: int, body: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(body)) + body


# ---- reading: lifting values out of the file ------------------------------------------------

class _Lifter:
    """Builds the skeleton of a serialised NetParameter and collects the lifted values."""

    def __init__(self, buf):
        self.buf = buf
        self.lifted: List[Dict[int, List[Tuple[int, int]]]] = []

    def net(self) -> bytes:
        buf = self.buf
        out = []
        for field, wt, fs, vs, ve in _fields(buf, 0, len(buf)):
            if wt == 2 and field == 100:
                out.append(_submessage(100, self._layer(vs, ve, blobs=7, v0=False)))
            elif wt == 2 and field == 2:
                out.append(_submessage(2, self._layer(vs, ve, blobs=6, v0=True)))
            else:
                out.append(bytes(buf[fs:ve]))
        return b''.join(out)

    def _layer(self, start: int, end: int, blobs: int, v0: bool) -> bytes:
        buf = self.buf
        out = []
        for field, wt, fs, vs, ve in _fields(buf, start, end):
            if wt == 2 and field == blobs:
                out.append(_submessage(field, self._blob(vs, ve)))
            elif wt == 2 and v0 and field == 1:
                # A V0 net: `layers { layer { blobs (50) ... } }`.
                out.append(_submessage(1, self._layer(vs, ve, blobs=50, v0=False)))
            else:
                out.append(bytes(buf[fs:ve]))
        return b''.join(out)

    def _blob(self, start: int, end: int) -> bytes:
        buf = self.buf
        kept, chunks = [], {}
        for field, wt, fs, vs, ve in _fields(buf, start, end):
            if field in _VALUE_FIELDS:
                if wt != 2:
                    # Unpacked values (legal, never written by Caffe): keep the blob as it is.
                    return bytes(buf[start:end])
                size = 4 if _VALUE_FIELDS[field][1] == '<f4' else 8
                if (ve - vs) % size:
                    raise _GiveUp('packed values of a length no element size divides')
                chunks.setdefault(field, []).append((vs, ve))
            else:
                kept.append(bytes(buf[fs:ve]))
        if not chunks:
            return bytes(buf[start:end])
        kept.append(_varint(_MARK_FIELD << 3) + _varint(len(self.lifted)))
        self.lifted.append(chunks)
        return b''.join(kept)


class WeightsFile:
    """An upgraded NetParameter read from a .caffemodel, with its blobs' values kept aside.

    `param` is a skeleton: its BlobProtos have shapes but, where the values were lifted,
    no values. `array(bp)` gives a blob's values as an array of its shape either way.
    """

    def __init__(self, param: caffe_pb2.NetParameter, buf, lifted, path: str):
        self.param, self._buf, self._lifted, self.path = param, buf, lifted, path

    def _entry(self, bp: caffe_pb2.BlobProto) -> Optional[dict]:
        if not self._lifted:
            return None
        raw = bp.SerializeToString()  # small: the values are not in it
        try:
            for field, wt, fs, vs, ve in _fields(raw, 0, len(raw)):
                if field == _MARK_FIELD and wt == 0:
                    return self._lifted[_read_varint(raw, vs, ve)[0]]
        except _GiveUp:
            pass
        return None

    def values(self, bp: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
        """The blob's data (or diff), flat; double_* takes precedence when present (as Caffe)."""
        entry = self._entry(bp)
        if entry is None:
            return _proto_values(bp, diff)
        fnum, dnum = (6, 9) if diff else (5, 8)
        for num in (dnum, fnum):
            dtype = np.dtype(_VALUE_FIELDS[num][1])
            if num in entry:
                parts = [np.frombuffer(self._buf, dtype=dtype, count=(ve - vs) // dtype.itemsize,
                                       offset=vs) for vs, ve in entry[num]]
                return parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(getattr(bp, _VALUE_FIELDS[num][0])):
                return np.array(getattr(bp, _VALUE_FIELDS[num][0]), dtype=dtype)
        return np.zeros(0, np.float32)

    def array(self, bp: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
        return _shaped(bp, self.values(bp, diff))

    def full_param(self) -> caffe_pb2.NetParameter:
        """A complete NetParameter: the lifted values put back into their blobs."""
        out = caffe_pb2.NetParameter()
        out.CopyFrom(self.param)
        if not self._lifted:
            return out
        for layer in out.layer:
            for bp in layer.blobs:
                entry = self._entry(bp)
                if entry is None:
                    continue
                raw = bp.SerializeToString()
                cut = raw.rfind(_varint(_MARK_FIELD << 3))
                bp.ParseFromString(raw[:cut])
                for num, spans in sorted(entry.items()):
                    for vs, ve in spans:
                        bp.MergeFromString(_varint((num << 3) | 2) + _varint(ve - vs)
                                           + bytes(self._buf[vs:ve]))
        return out


def _read_file(path: str):
    """The file's bytes: a private (copy-on-write) memory map, or a bytearray where mapping fails.

    Mapping costs nothing up front; the pages are read once, when the values are copied
    into the net. Copy-on-write keeps NumPy views of it writable, as torch.from_numpy
    wants, without ever touching the file. Weight files are replaced by rename (see
    protoio.atomic_write), which leaves a mapped old file intact.
    """
    if not os.path.isfile(path):
        raise ParseError(path, 'weights file not found')
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            if size:
                try:
                    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
                except (OSError, ValueError):
                    pass
            buf = bytearray(size)
            got = f.readinto(buf)
    except OSError as e:
        raise ParseError(path, 'cannot read file: %s' % e.strerror) from None
    return buf[:got]


def read_weights(path: str) -> WeightsFile:
    """Read and upgrade a .caffemodel (fast path; see the module docstring)."""
    buf = _read_file(path)
    param = caffe_pb2.NetParameter()
    lifted: list = []
    try:
        lifter = _Lifter(buf)
        skeleton = lifter.net()
        param.ParseFromString(skeleton)
        lifted = lifter.lifted
    except Exception:
        # Not something the scanner understands: protobuf decides (and names the damage).
        lifted = []
        param = protoio.parse_binary(bytes(buf), caffe_pb2.NetParameter, path)
    upgrade.upgrade_net(param, path)
    return WeightsFile(param, buf, lifted, path)


def read_weights_param(path: str) -> caffe_pb2.NetParameter:
    """A .caffemodel as a complete, upgraded NetParameter (values included)."""
    return read_weights(path).full_param()


# ---- BlobProto <-> NumPy ------------------------------------------------------------------

def proto_shape(bp: caffe_pb2.BlobProto) -> tuple:
    """A BlobProto's shape: `shape` if given, else the legacy num/channels/height/width."""
    if bp.HasField('shape'):
        return tuple(int(d) for d in bp.shape.dim)
    return (bp.num, bp.channels, bp.height, bp.width)


def _proto_values(bp: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
    """Flat values of an in-memory BlobProto, read from its serialised bytes when large."""
    fname, dname = ('diff', 'double_diff') if diff else ('data', 'double_data')
    fnum, dnum = (6, 9) if diff else (5, 8)
    n_double = len(getattr(bp, dname))
    name, num = (dname, dnum) if n_double else (fname, fnum)
    dtype = np.dtype(_VALUE_FIELDS[num][1])
    values = getattr(bp, name)
    if len(values) < 4096:
        return np.array(values, dtype=dtype)
    # Serialising copies the packed values as one block; iterating them costs ~60 ns each.
    # (A bytearray, so that the arrays viewing it are writable, as torch.from_numpy wants.)
    raw = bytearray(bp.SerializeToString())
    parts = []
    for field, wt, fs, vs, ve in _fields(raw, 0, len(raw)):
        if field == num:
            if wt != 2:
                return np.array(values, dtype=dtype)
            parts.append(np.frombuffer(raw, dtype=dtype, count=(ve - vs) // dtype.itemsize,
                                       offset=vs))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _shaped(bp: caffe_pb2.BlobProto, flat: np.ndarray) -> np.ndarray:
    shape = proto_shape(bp)
    need = int(np.prod(shape, dtype=np.int64))
    if flat.size != need:
        raise ShapeError('blob holds %d values but its shape %s needs %d'
                         % (flat.size, ' '.join(map(str, shape)), need))
    return flat.reshape(shape)


def proto_to_array(bp: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as a NumPy array of its shape."""
    return _shaped(bp, _proto_values(bp, diff))


def _blob_chunks(data: np.ndarray, diff: Optional[np.ndarray] = None) -> List:
    """The serialised BlobProto of `data` (and `diff`) as byte chunks, in protobuf's order.

    Float32 blobs write data(5), diff(6), shape(7); float64 blobs shape(7), double_data(8),
    double_diff(9): ascending field numbers, as protobuf serialises. Large chunks are
    memoryviews of the arrays themselves, so nothing big is copied.
    """
    arr = np.asarray(data)
    double = arr.dtype == np.float64
    dtype = np.dtype('<f8' if double else '<f4')
    shape = caffe_pb2.BlobShape(dim=list(arr.shape)).SerializeToString()
    shape_part = [_varint((7 << 3) | 2) + _varint(len(shape)) + shape]
    values = []
    for num, v in ((8 if double else 5, arr), (9 if double else 6, diff)):
        if v is None:
            continue
        flat = np.ascontiguousarray(v, dtype=dtype).reshape(-1)
        if flat.size:
            values.append(_varint((num << 3) | 2) + _varint(flat.nbytes))
            values.append(memoryview(flat).cast('B'))
    return shape_part + values if double else values + shape_part


def _chunks_len(chunks: Sequence) -> int:
    return sum(len(c) for c in chunks)


def blob_to_proto(blob_data: np.ndarray, diff: np.ndarray = None) -> caffe_pb2.BlobProto:
    """A BlobProto with shape and data (and diff) of the arrays; float32 or float64."""
    return caffe_pb2.BlobProto.FromString(b''.join(bytes(c) for c in _blob_chunks(blob_data, diff)))


def _legacy_equal(src_shape: tuple, dst_shape: tuple) -> bool:
    """Caffe's ShapeEquals for legacy protos: 4-d num/channels/height/width padded with 1s."""
    if len(dst_shape) > 4:
        return False
    padded = (1,) * (4 - len(dst_shape)) + tuple(dst_shape)
    return tuple(src_shape) == padded


# ---- copying into a net -------------------------------------------------------------------

def copy_trained_layers(net, source, path: str = '<weights>') -> None:
    """Copy every layer's blobs from `source` into the layers of `net` with the same name.

    `source` is a WeightsFile (read_weights) or a NetParameter (e.g. read_weights_param).
    Every layer is checked before anything is copied, so a file that does not fit leaves
    the net as it was (Caffe would have died half way).
    """
    if isinstance(source, WeightsFile):
        param, values = source.param, source.values
    else:
        param, values = source, _proto_values
    index = {name: i for i, name in enumerate(net._layer_names)}
    plan = []
    for lp in param.layer:
        li = index.get(lp.name)
        if li is None:
            _log.info('net.cpp', 'Ignoring source layer %s' % lp.name)
            continue
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
            flat = values(bp)
            if flat.size != dst.count:
                raise ShapeError("%s: layer '%s' param %d: the file holds %d values for shape %s"
                                 % (path, lp.name, j, flat.size, ' '.join(map(str, src_shape))))
            plan.append((dst, flat))
    # (Caffe logs "Copying source layer" only in debug builds; so neither do we.)
    for dst, flat in plan:
        if not flat.flags.writeable:
            flat = flat.copy()
        dst.tensor.copy_(torch.from_numpy(flat).view(dst.shape))
    report_copied_layers(net, {id(dst) for dst, _ in plan}, [lp.name for lp in param.layer], path)


def report_copied_layers(net, written: set, file_layers: Sequence[str], path: str) -> None:
    """Say once what a weights file gave the net (`written`: ids of the blobs it wrote).

    Caffe copies layers by name and silently keeps the initial values of every other
    layer; a file none of whose layer names matches (a renamed net, weights of another
    model) leaves an untrained net, which is worth a WARNING. Partial matches (fine-tuning
    from ImageNet weights) get one INFO line naming the layers that keep their initial
    values. A layer sharing its blobs (`param { name }`) with a copied one counts as copied.
    """
    with_params = [n for n, layer in zip(net._layer_names, net.layers) if len(layer.blobs)]
    got_blobs = {n: all(id(b) in written for b in layer.blobs)
                 for n, layer in zip(net._layer_names, net.layers) if len(layer.blobs)}
    kept = [n for n in with_params if not got_blobs[n]]
    if not with_params or not kept:
        return
    def names(seq, n=12):
        seq = list(seq)
        return ', '.join(seq[:n]) + (', ... (%d in all)' % len(seq) if len(seq) > n else '')
    got = [n for n in with_params if got_blobs[n]]
    if not got:
        _log.warning('net.cpp', '%s: none of the %d layers with parameters of net %s has a name '
                     'in this weights file, so nothing was copied and the net keeps its '
                     'initial (filler) values. Net layers with parameters: %s. Layers in the '
                     'file: %s' % (path, len(with_params), net._name or '(unnamed)',
                                   names(with_params), names(file_layers) or 'none'))
    else:
        _log.info('net.cpp', '%s: copied the parameters of %d of the %d layers with parameters; '
                  'these keep their initial values (no layer of that name in the file): %s'
                  % (path, len(got), len(with_params), names(kept)))


def copy_from_file(net, path: str) -> None:
    """Net.copy_from for a .caffemodel: fast read, upgrade, copy by layer name."""
    copy_trained_layers(net, read_weights(path), path)


# ---- writing --------------------------------------------------------------------------------

def _net_chunks(net, write_diff: bool = False) -> List:
    """The serialised NetParameter of the net with its blobs (Caffe's Net::ToProto)."""
    head = caffe_pb2.NetParameter()
    head.name = net._name
    for bid in net._inputs:
        head.input.append(net._blob_names[bid])
    chunks = [head.SerializeToString()]
    layer_key = _varint((100 << 3) | 2)
    for li, layer in enumerate(net.layers):
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(net._param.layer[li])
        del lp.blobs[:]
        raw = lp.SerializeToString()
        # Blobs (field 7) go where protobuf would put them: before the first field above 7.
        cut = len(raw)
        for field, wt, fs, vs, ve in _fields(raw, 0, len(raw)):
            if field > 7:
                cut = fs
                break
        blob_parts = []
        for b in layer.blobs:
            parts = _blob_chunks(b.data, b.diff if write_diff else None)
            blob_parts.append(_varint((7 << 3) | 2) + _varint(_chunks_len(parts)))
            blob_parts.extend(parts)
        body_len = len(raw) + _chunks_len(blob_parts)
        chunks.append(layer_key + _varint(body_len) + raw[:cut])
        chunks.extend(blob_parts)
        chunks.append(raw[cut:])
    return chunks


def net_to_proto(net, write_diff: bool = False) -> caffe_pb2.NetParameter:
    """The net's layers with their blobs, as Caffe's Net::ToProto writes them."""
    return caffe_pb2.NetParameter.FromString(b''.join(bytes(c) for c in _net_chunks(net, write_diff)))


def save_caffemodel(net, path: str, write_diff: bool = False) -> None:
    """Write the net as a binary .caffemodel, atomically."""
    protoio.atomic_write_chunks(path, _net_chunks(net, write_diff))


# ---- HDF5 -----------------------------------------------------------------------------------

def save_hdf5(net, path: str, write_diff: bool = False) -> None:
    """Caffe's HDF5 weights layout: /data/<layer>/<i> (and /diff/...)."""
    import h5py
    with atomic_files.atomic_path(path) as tmp, h5py.File(tmp, 'w') as f:
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


def load_hdf5(net, path: str) -> None:
    """Copy weights from Caffe's HDF5 layout; layers the net lacks are skipped."""
    import h5py
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        raise ParseError(path, 'cannot open HDF5 weights: %s' % e) from None
    with f:
        if 'data' not in f:
            raise ParseError(path, 'not a Caffe HDF5 weights file (no /data group)')
        data = f['data']
        index = {name: i for i, name in enumerate(net._layer_names)}
        written = set()
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
                written.add(id(dst))
        report_copied_layers(net, written, list(data), path)
