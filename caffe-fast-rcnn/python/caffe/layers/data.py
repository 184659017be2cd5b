"""Data layers: Input, DummyData, MemoryData, HDF5Data, and the writer HDF5Output.

The readers have no bottoms and no backward; each forward puts the next batch into the tops.
Input leaves the tops to the caller (pycaffe's `net.blobs[...].data[...] = ...` or
`net.forward(data=...)`), so its reshape must never touch them. DummyData fills from
fillers, MemoryData walks through arrays handed over by `Net.set_input_arrays` without
copying them (as Caffe's set_cpu_data does), and HDF5Data reads the datasets named by
its tops from the .h5 files listed in a text file. All randomness (DummyData's fillers,
HDF5Data's shuffling) comes from the engine's seeded generator. HDF5Output goes the other
way: it has two bottoms and no tops, and writes each batch it sees into an .h5 file.
"""
from __future__ import annotations

import atexit
import weakref
from typing import List, Optional, Tuple

import numpy as np
import torch

from .. import _config, _log, fillers
from ..errors import LayerError, NetError, ShapeError
from ..layer import Layer
from ..proto import caffe_pb2
from . import register


class DataLayer(Layer):
    """No bottoms, at least one top, nothing to propagate back."""
    exact_num_bottom = 0
    min_top = 1
    backward_uses_forward_state = False  # and forward must never run twice for one batch

    def reshape(self, bottom, top):
        """Data layers shape their tops themselves (in setup or forward)."""

    def backward(self, top, propagate_down, bottom):
        pass


@register('Input')
class Input(DataLayer):
    """Tops shaped by input_param.shape (once for all tops, once per top, or not at all)."""

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise NetError("layer %r (Input): Must specify 'shape' once, once per top blob, or not "
                           "at all: %d tops vs. %d shapes." % (self.layer_param.name, len(top),
                                                              len(shapes)))
        for i, t in enumerate(top):
            if len(shapes):
                t.reshape(*[int(d) for d in shapes[0 if len(shapes) == 1 else i].dim])

    def forward(self, bottom, top):
        pass


def _legacy_4d(layer: Layer, param, num_top: int) -> List[tuple]:
    """DummyData's num/channels/height/width, each given once or once per top."""
    fields = ('num', 'channels', 'height', 'width')
    for f in fields:
        n = len(getattr(param, f))
        if n not in (1, num_top):
            raise NetError("layer %r (DummyData): Must specify '%s' once, or once per top blob "
                           "(%d); specified %d." % (layer.layer_param.name, f, num_top, n))
    return [tuple(int(getattr(param, f)[0 if len(getattr(param, f)) == 1 else i]) for f in fields)
            for i in range(num_top)]


@register('DummyData')
class DummyData(DataLayer):
    """Tops filled by dummy_data_param.data_filler (constant 0 if none is given).

    One filler serves every top, or there is one per top. As in Caffe, a top whose
    filler is "constant" is filled once at setup; the others are refilled at every
    forward (and not at setup).
    """

    def setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        name = self.layer_param.name
        n = len(top)
        nf = len(p.data_filler)
        if nf not in (0, 1, n):
            raise NetError('layer %r (DummyData): Number of data fillers must be 0, 1 or equal to '
                           'the number of tops: %d; you specified %d data fillers.' % (name, n, nf))
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            if len(p.shape):
                raise NetError('layer %r (DummyData): Both shape and legacy fields were specified'
                               % name)
            shapes = _legacy_4d(self, p, n)
        else:
            if len(p.shape) not in (1, n):
                raise NetError("layer %r (DummyData): Must specify 'shape' once, or once per top "
                               "blob (%d); specified %d." % (name, n, len(p.shape)))
            shapes = [tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim)
                      for i in range(n)]
        if nf == 0:
            self.fillers = [caffe_pb2.FillerParameter(type='constant', value=0)] * n
        elif nf == 1:
            self.fillers = [p.data_filler[0]] * n
        else:
            self.fillers = list(p.data_filler)
        for f in self.fillers:
            if f.type not in fillers.filler_types():
                raise NetError('layer %r (DummyData): Unknown filler type %r (known: %s)'
                               % (name, f.type, ', '.join(fillers.filler_types())))
        self.refill = [f.type != 'constant' for f in self.fillers]
        self.shapes = shapes
        for t, shape, f, again in zip(top, shapes, self.fillers, self.refill):
            t.reshape(*shape)
            if not again:
                self._fill(t, shape, f)

    @staticmethod
    def _fill(t, shape, f) -> None:
        value = torch.empty(shape, dtype=t.tensor.dtype, device=t.tensor.device)
        fillers.fill(value, f)
        t.set_tensor(value)

    def forward(self, bottom, top):
        for t, shape, f, again in zip(top, self.shapes, self.fillers, self.refill):
            if again:
                self._fill(t, shape, f)


def _as_float_array(arr, what: str, layer: str, dtype: np.dtype) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ShapeError('layer %r (MemoryData): %s must be a NumPy array, got %s'
                         % (layer, what, type(arr).__name__))
    if not arr.flags['C_CONTIGUOUS']:
        raise ShapeError('layer %r (MemoryData): %s must be C contiguous' % (layer, what))
    if arr.ndim != 4:
        raise ShapeError('layer %r (MemoryData): %s must be 4-d, got shape %s'
                         % (layer, what, arr.shape))
    if arr.dtype != dtype:
        raise ShapeError('layer %r (MemoryData): %s must be %s, got %s'
                         % (layer, what, np.dtype(dtype).name, arr.dtype))
    return arr


@register('MemoryData')
class MemoryData(DataLayer):
    """Batches cut from arrays in memory: data (N, C, H, W) and labels (N,).

    `reset(data, labels)` (what `Net.set_input_arrays` calls) takes float arrays of the
    net's float type, C-contiguous, data 4-d with memory_data_param's channels, height and
    width, labels 1-d or (N, 1, 1, 1), N a multiple of batch_size. Forward hands out
    consecutive batches and wraps around; the tops are views of the arrays, not copies.
    """
    exact_num_top = 2

    def setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise NetError('layer %r (MemoryData): batch_size, channels, height, and width must be '
                           'specified and positive in memory_data_param' % self.layer_param.name)
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)
        self._data: Optional[torch.Tensor] = None
        self._labels: Optional[torch.Tensor] = None
        self._arrays = None
        self._n = 0
        self._pos = 0

    def reset(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Serve batches from `data` and `labels` from the start (Caffe's Reset)."""
        name = self.layer_param.name
        dtype = torch.empty((), dtype=_config.dtype()).numpy().dtype
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, None, None, None])
        data = _as_float_array(data, 'data array', name, dtype)
        labels = _as_float_array(labels, 'labels array', name, dtype)
        for what, arr, want in (('data array', data, (self.channels, self.height, self.width)),
                                ('labels array', labels, (1, 1, 1))):
            for axis, label in zip(range(1, 4), ('channels', 'height', 'width')):
                if arr.shape[axis] != want[axis - 1]:
                    raise ShapeError('layer %r (MemoryData): %s has wrong number of %s: %d, the '
                                     'layer takes %d' % (name, what, label, arr.shape[axis],
                                                         want[axis - 1]))
        if data.shape[0] != labels.shape[0]:
            raise ShapeError('layer %r (MemoryData): data and labels must have the same first '
                             'dimension (%d vs %d)' % (name, data.shape[0], labels.shape[0]))
        n = data.shape[0]
        if n == 0 or n % self.batch_size:
            raise ShapeError('layer %r (MemoryData): first dimensions of input arrays must be a '
                             'multiple of batch size (%d items, batch size %d)'
                             % (name, n, self.batch_size))
        if self.layer_param.HasField('transform_param'):
            _log.warning('memory_data_layer.cpp',
                         'MemoryData does not transform array data on Reset()')
        dev = _config.device()
        self._arrays = (data, labels)  # keep them alive: the tops view their memory
        self._data = torch.from_numpy(data).to(dev)
        self._labels = torch.from_numpy(labels).to(dev)
        self._n = n
        self._pos = 0

    def set_batch_size(self, batch_size: int) -> None:
        """Change the batch size (Caffe's set_batch_size); the next forward uses it."""
        if batch_size <= 0:
            raise ShapeError('layer %r (MemoryData): batch size must be positive, got %d'
                             % (self.layer_param.name, batch_size))
        self.batch_size = int(batch_size)

    def forward(self, bottom, top):
        if self._data is None:
            raise LayerError('layer %r (MemoryData): MemoryDataLayer needs to be initialized by '
                             'calling Reset (Net.set_input_arrays)' % self.layer_param.name)
        b, pos = self.batch_size, self._pos
        if pos + b > self._n:
            raise LayerError('layer %r (MemoryData): batch size %d does not divide the %d items '
                             'given to set_input_arrays' % (self.layer_param.name, b, self._n))
        top[0].set_tensor(self._data[pos:pos + b])
        top[1].set_tensor(self._labels[pos:pos + b])
        self._pos = (pos + b) % self._n


@register('HDF5Data')
class HDF5Data(DataLayer):
    """Rows of the datasets named like the tops, from the HDF5 files listed in `source`.

    The source is a text file of whitespace-separated .h5 paths. Each file is read whole;
    batches take batch_size consecutive rows and move on to the next file (and back to
    the first) when one runs out. With `shuffle` the file order is shuffled at the start
    and at each wrap-around, and the row order whenever a file is loaded or wraps.
    """

    def setup(self, bottom, top):
        p = self.layer_param.hdf5_data_param
        name = self.layer_param.name
        if self.layer_param.HasField('transform_param'):
            raise NetError('layer %r: HDF5Data does not transform data.' % name)
        source = p.source
        _log.info('hdf5_data_layer.cpp', 'Loading list of HDF5 filenames from: %s' % source)
        try:
            with open(source) as f:
                self.files = f.read().split()
        except OSError as e:
            raise NetError('layer %r (HDF5Data): Failed to open source file: %s (%s)'
                           % (name, source, e.strerror)) from None
        _log.info('hdf5_data_layer.cpp', 'Number of HDF5 files: %d' % len(self.files))
        if not self.files:
            raise NetError('layer %r (HDF5Data): Must have at least 1 HDF5 filename listed in %s'
                           % (name, source))
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise NetError('layer %r (HDF5Data): hdf5_data_param.batch_size must be positive, got %d'
                           % (name, self.batch_size))
        self.shuffle = bool(p.shuffle)
        self.names = list(self.layer_param.top)
        self.file_order = self._permutation(len(self.files))
        self.current_file = 0
        self._load(self.files[self.file_order[0]])
        self.row_shapes = [tuple(d.shape[1:]) for d in self.datasets]
        for t, shape in zip(top, self.row_shapes):
            t.reshape(self.batch_size, *shape)

    def _permutation(self, n: int) -> List[int]:
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=_config.generator(torch.device('cpu'))).tolist()

    def _load(self, path: str) -> None:
        import h5py
        name = self.layer_param.name
        try:
            f = h5py.File(path, 'r')
        except OSError as e:
            raise LayerError('layer %r (HDF5Data): Failed opening HDF5 file: %s (%s)'
                             % (name, path, e)) from None
        datasets = []
        with f:
            for ds in self.names:
                if ds not in f:
                    raise LayerError('layer %r (HDF5Data): Failed to find HDF5 dataset %s in %s'
                                     % (name, ds, path))
                arr = np.asarray(f[ds])
                if arr.ndim < 1:
                    raise LayerError('layer %r (HDF5Data): dataset %s in %s must have at least 1 '
                                     'axis' % (name, ds, path))
                if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
                        or arr.dtype == np.bool_):
                    raise LayerError('layer %r (HDF5Data): dataset %s in %s has unsupported type %s'
                                     % (name, ds, path, arr.dtype))
                datasets.append(torch.from_numpy(np.ascontiguousarray(arr)).to(
                    dtype=_config.dtype(), device=_config.device()))
        rows = datasets[0].shape[0]
        for ds, d in zip(self.names, datasets):
            if d.shape[0] != rows:
                raise LayerError('layer %r (HDF5Data): dataset %s in %s has %d rows, %s has %d; '
                                 'all datasets of a file need the same number'
                                 % (name, ds, path, d.shape[0], self.names[0], rows))
            if hasattr(self, 'row_shapes'):
                want = self.row_shapes[self.names.index(ds)]
                if tuple(d.shape[1:]) != want:
                    raise LayerError('layer %r (HDF5Data): dataset %s in %s has rows of shape %s, '
                                     'the first file had %s' % (name, ds, path, tuple(d.shape[1:]),
                                                                want))
        if rows == 0:
            raise LayerError('layer %r (HDF5Data): %s holds no rows' % (name, path))
        self.datasets = datasets
        self.rows = rows
        self.row_order = torch.tensor(self._permutation(rows), device=_config.device())
        self.current_row = 0

    def _advance(self) -> None:
        """The current file ran out: next file (or wrap around), reshuffling as Caffe does."""
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.file_order = self._permutation(len(self.files))
            self._load(self.files[self.file_order[self.current_file]])
        elif self.shuffle:
            self.row_order = torch.tensor(self._permutation(self.rows), device=_config.device())
        self.current_row = 0

    def forward(self, bottom, top):
        pieces = [[] for _ in self.names]
        need = self.batch_size
        while need > 0:
            take = min(need, self.rows - self.current_row)
            idx = self.row_order[self.current_row:self.current_row + take]
            for piece, d in zip(pieces, self.datasets):
                piece.append(d.index_select(0, idx))
            self.current_row += take
            need -= take
            if self.current_row == self.rows:
                self._advance()
        for t, piece, shape in zip(top, pieces, self.row_shapes):
            batch = piece[0] if len(piece) == 1 else torch.cat(piece, dim=0)
            t.set_tensor(batch.reshape((self.batch_size,) + shape))


# ---- HDF5Output ------------------------------------------------------------------------------

_OPEN_OUTPUTS: 'weakref.WeakSet[HDF5Output]' = weakref.WeakSet()
_atexit_registered = False


def _close_open_outputs() -> None:
    """At interpreter exit, close every HDF5Output file still open (a net never deleted)."""
    for layer in list(_OPEN_OUTPUTS):
        layer.close()


def _legacy_shape(blob, layer: str, which: str) -> Tuple[int, int, int, int]:
    """num x channels x height x width of a blob, as Caffe's legacy accessors see it."""
    shape = tuple(blob.shape)
    if len(shape) > 4:
        raise ShapeError('layer %r (HDF5Output): Cannot use legacy accessors on Blobs with > 4 '
                         'axes (the %s bottom has shape %s)' % (layer, which, shape))
    return shape + (1,) * (4 - len(shape))


@register('HDF5Output')
class HDF5Output(Layer):
    """Writes its two bottoms into the datasets "data" and "label" of hdf5_output_param.file_name.

    As in Caffe the file is created (truncated) at setup, each forward saves its batch as
    num x channels x height x width arrays of the net's float type (a 2-axis (N, C) bottom
    becomes N x C x 1 x 1, a label vector N x 1 x 1 x 1), and the file is closed when the
    layer goes away. Caffe's own layer can only save ONE batch: the second forward asks
    HDF5 to create "data" again, which fails and aborts (BVLC/caffe#1726). Here the first
    forward writes exactly the datasets Caffe writes and each later forward appends its
    rows to them (the datasets are resizable along the first axis), so a whole test run
    lands in one file. The file is flushed after every forward, and closed when the net is
    deleted (the layer's finaliser), by `close()`, or at interpreter exit, so it is
    complete and readable whichever comes first. Backward does nothing.
    """
    backward_uses_forward_state = False  # forward writes the file
    exact_num_bottom = 2
    exact_num_top = 0

    _file = None

    def setup(self, bottom, top):
        global _atexit_registered
        import h5py
        name = self.layer_param.name
        self.file_name = self.layer_param.hdf5_output_param.file_name
        try:
            self._file = h5py.File(self.file_name, 'w')
        except (OSError, ValueError) as e:
            raise NetError('layer %r (HDF5Output): Failed to open HDF5 file %s (%s)'
                           % (name, self.file_name, e)) from None
        _OPEN_OUTPUTS.add(self)
        if not _atexit_registered:
            # Registered after h5py was imported, so it runs before h5py's own shutdown.
            atexit.register(_close_open_outputs)
            _atexit_registered = True

    def reshape(self, bottom, top):
        """Nothing to shape: no tops, and the bottoms may change size between forwards."""

    def forward(self, bottom, top):
        name = self.layer_param.name
        if self._file is None:
            raise LayerError('layer %r (HDF5Output): the file %s was closed; this layer writes '
                             'no more batches' % (name, self.file_name))
        data_shape = _legacy_shape(bottom[0], name, 'data')
        label_shape = _legacy_shape(bottom[1], name, 'label')
        if data_shape[0] != label_shape[0]:
            raise ShapeError('layer %r (HDF5Output): data blob and label blob must have the same '
                             'batch size (%d vs %d)' % (name, data_shape[0], label_shape[0]))
        _log.info('hdf5_output_layer.cpp', 'Saving HDF5 file %s' % self.file_name)
        self._save('data', bottom[0].data.reshape(data_shape))
        self._save('label', bottom[1].data.reshape(label_shape))
        self._file.flush()
        _log.info('hdf5_output_layer.cpp', 'Successfully saved %d rows' % data_shape[0])

    def _save(self, dataset: str, rows: np.ndarray) -> None:
        """Create `dataset` from the first batch, append later batches along axis 0."""
        f = self._file
        if dataset not in f:
            f.create_dataset(dataset, data=rows, maxshape=(None,) + rows.shape[1:], chunks=True)
            return
        ds = f[dataset]
        if ds.shape[1:] != rows.shape[1:] or ds.dtype != rows.dtype:
            raise ShapeError('layer %r (HDF5Output): this batch\'s %s rows are %s %s but %s holds '
                             '%s %s rows; every batch written to one file needs the same shape'
                             % (self.layer_param.name, dataset, 'x'.join(map(str, rows.shape[1:])),
                                rows.dtype, self.file_name, 'x'.join(map(str, ds.shape[1:])),
                                ds.dtype))
        n = ds.shape[0]
        ds.resize(n + rows.shape[0], axis=0)
        ds[n:] = rows

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self) -> None:
        """Close the file (Caffe closes it in the layer's destructor); safe to call twice."""
        f, self._file = self._file, None
        _OPEN_OUTPUTS.discard(self)
        if f is not None:
            try:
                f.close()
            except Exception:  # interpreter shutdown: h5py may already be torn down
                pass

    def __del__(self):
        self.close()
