"""Snapshot files: the weights (.caffemodel or .caffemodel.h5) and the solver state
(.solverstate or .solverstate.h5), in Caffe's formats, written atomically.

Every file goes through a temporary file and a rename, so a kill never leaves half a
snapshot; and no snapshot is taken of non-finite weights (see `nonfinite_param`), so the
last good snapshot is never followed by a poisoned one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .. import _log, atomic_files, protoio
from .. import weights as _weights
from ..errors import ParseError
from ..net import Net
from ..proto import caffe_pb2
from ._numbers import SGD_CPP, SOLVER_CPP
from .errors import SolverError


def nonfinite_param(net: Net) -> Optional[str]:
    """The first learnable parameter holding a NaN or an inf (`'layer' #k`), or None."""
    params = net._learnable_params
    if not params:
        return None
    flags = [torch.isfinite(b.tensor).all() for b in params]
    ok = torch.stack(flags).cpu().numpy()
    if ok.all():
        return None
    i = int(np.argmin(ok))
    for pid, lid in enumerate(net._learnable_param_ids):
        if lid == i and net._param_owners[pid] < 0:
            li, pi = net._param_layer_indices[pid]
            return "'%s' #%d" % (net._layer_names[li], pi)
    return '#%d' % i


def write_model(net: Net, path: str, hdf5: bool, with_diff: bool) -> None:
    """The net's weights (and diffs if `with_diff`) as Caffe's snapshot of them."""
    if hdf5:
        _log.info(SOLVER_CPP + ':466', 'Snapshotting to HDF5 file ' + path)
        _weights.save_hdf5(net, path, write_diff=with_diff)
    else:
        _log.info(SOLVER_CPP + ':456', 'Snapshotting to binary proto file ' + path)
        if with_diff:
            protoio.write_binary(path, _weights.net_to_proto(net, True))
        else:
            _weights.save_caffemodel(net, path)   # streamed, atomic


# ---- solver state: writing ---------------------------------------------------------------------

_varint = _weights._varint  # protobuf varints, one implementation


def solver_state_chunks(it: int, learned_net: str, current_step: int,
                        history: Sequence[np.ndarray]) -> list:
    """A SolverState message as byte chunks whose large parts are views of the history
    arrays, so VGG16's half a gigabyte of history is written without being copied into a
    protobuf message and then into one bytes object (what SerializeToString would do).

    Wire layout (caffe.proto): iter = 1, learned_net = 2, history = 3 (BlobProto: packed
    data = 5 or double_data = 8, shape = 7), current_step = 4.
    """
    head = caffe_pb2.SolverState(iter=it, learned_net=learned_net).SerializeToString()
    chunks: list = [head]
    for arr in history:
        double = arr.dtype == np.float64
        flat = np.ascontiguousarray(arr, dtype='<f8' if double else '<f4').reshape(-1)
        shape = caffe_pb2.BlobShape(dim=list(arr.shape)).SerializeToString()
        parts = [b'\x3a' + _varint(len(shape)) + shape]      # shape (7)
        body = []
        if flat.size:
            body = [_varint(((8 if double else 5) << 3) | 2) + _varint(flat.nbytes),
                    memoryview(flat).cast('B')]
        size = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in body + parts)
        chunks.append(b'\x1a' + _varint(size))                # history (3)
        chunks.extend(body + parts)
    chunks.append(caffe_pb2.SolverState(current_step=current_step).SerializeToString()
                  if current_step else b'')
    return chunks


def write_state_binary(path: str, it: int, learned_net: str, current_step: int,
                       history: Sequence[torch.Tensor]) -> None:
    """A .solverstate (binary SolverState) written atomically."""
    chunks = solver_state_chunks(it, learned_net, current_step,
                                 [h.detach().cpu().numpy() for h in history])
    atomic_files.write_chunks(path, chunks)


def write_state_hdf5(path: str, it: int, learned_net: str, current_step: int,
                     history: Sequence[torch.Tensor]) -> None:
    """A .solverstate.h5 (Caffe's datasets iter, learned_net, current_step, history/<i>),
    written atomically (atomic_files)."""
    import h5py
    with atomic_files.atomic_path(path) as tmp, h5py.File(tmp, 'w') as f:
        f.create_dataset('iter', data=np.array([it], np.int32))
        f.create_dataset('learned_net', data=np.bytes_(learned_net.encode('utf-8')))
        f.create_dataset('current_step', data=np.array([current_step], np.int32))
        g = f.create_group('history')
        for i, h in enumerate(history):
            g.create_dataset(str(i), data=h.detach().cpu().numpy())


def remove_stale_temps(prefix: str) -> List[str]:
    """Delete what killed snapshot writes of `<prefix>_iter_N.*` left behind (see
    atomic_files.remove_stale_temps); logs each file removed."""
    folder = os.path.dirname(os.path.abspath(prefix + '_iter_0'))
    removed = atomic_files.remove_stale_temps(folder, os.path.basename(prefix) + '_iter_')
    for path in removed:
        _log.info(SOLVER_CPP + ':447', 'Removed the temporary file of an interrupted snapshot: '
                  + path)
    return removed


# ---- solver state: reading ---------------------------------------------------------------------

@dataclass
class SavedState:
    """What a solver state file holds. `history()` gives the arrays (decoded on demand, so
    a binary state's history is converted only once the weights it names are loaded)."""
    iter: int
    learned_net: str
    current_step: int
    history: Callable[[], List[np.ndarray]]


def read_state_binary(state_file: str) -> SavedState:
    state = protoio.read_binary(state_file, caffe_pb2.SolverState)
    learned = state.learned_net if state.HasField('learned_net') else ''
    return SavedState(state.iter, learned, state.current_step,
                      lambda: [_weights.proto_to_array(bp) for bp in state.history])


def read_state_hdf5(state_file: str) -> SavedState:
    import h5py
    try:
        f = h5py.File(state_file, 'r')
    except OSError as e:
        raise ParseError(state_file, 'cannot open solver state: %s' % e) from None
    with f:
        it = int(np.asarray(f['iter']).reshape(-1)[0])
        name = ''
        if 'learned_net' in f:
            raw = f['learned_net'][()]
            name = raw.decode('utf-8') if isinstance(raw, bytes) else str(np.asarray(raw).reshape(-1)[0])
            if isinstance(name, bytes):
                name = name.decode('utf-8')
            name = name.rstrip('\x00')
        current_step = int(np.asarray(f['current_step']).reshape(-1)[0]) \
            if 'current_step' in f else 0
        hist = f['history']
        arrays = [np.asarray(hist[str(i)]) for i in range(len(hist))]
    return SavedState(it, name, current_step, lambda: arrays)


def read_state(state_file: str) -> SavedState:
    """A .solverstate or .solverstate.h5 (by its extension), written by Caffe or by us."""
    if not os.path.isfile(state_file):
        raise SolverError('solver state file not found: %s' % state_file)
    if state_file.endswith('.h5'):
        return read_state_hdf5(state_file)
    return read_state_binary(state_file)


def find_learned_net(path: str, state_file: str) -> str:
    """The weights a solver state names: as written (Caffe opens it relative to the working
    directory), else beside the state file, so a moved snapshot folder still resumes."""
    if os.path.isfile(path):
        return path
    folder = os.path.dirname(os.path.abspath(state_file))
    for cand in (os.path.join(folder, path), os.path.join(folder, os.path.basename(path))):
        if os.path.isfile(cand):
            _log.info(SGD_CPP + ':312', 'learned_net %s not found; using %s' % (path, cand))
            return cand
    raise SolverError('%s: learned_net %s not found (nor beside the state file)' % (state_file, path))
