"""Caffe's prefetching image data layers: Data (LMDB / LevelDB of Datums) and ImageData.

Data reads serialised `caffe_pb2.Datum` records in key order from `data_param.source`,
starting again at the first key when the database runs out ("Restarting data prefetching
from start."). A record holds raw uint8 pixels (`data`), floats (`float_data`), or an
`encoded` JPEG/PNG that OpenCV decodes (BGR, as Caffe). The first top gets the batch after
`transform_param` (see caffe/data_transform.py), a second top the Datums' labels. LMDB is
read with the `lmdb` package; LevelDB only if the optional `plyvel` package is installed.

ImageData reads "path label" lines from a text file (`image_data_param.source`), loads each
image (root_folder + path) with OpenCV in color or gray, optionally resizes it to
new_height x new_width, and tops the transformed batch and the labels; `shuffle` reshuffles
the list at the start and at every pass.

As in Caffe, each batch takes its shape from its first image (a net with batch_size 1 may
read images of varying sizes) and every other image of the batch must match it. Batches
are prepared by a background thread, `data_param.prefetch` of them ahead (Caffe's
BasePrefetchingDataLayer; 0 loads each batch inside forward): decoding, cropping and
converting overlap with the net's computation, which releases the GIL in PyTorch. The
thread owns the cursor and the transformer's generator, so the sequence of batches is the
same whatever the timing. WindowData (R-CNN's window files, layers/window_data.py) runs
on the same prefetching machinery.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from .. import _config, _log
from .. import data_transform
from ..data_transform import DataTransformer
from ..errors import LayerError, NetError
from ..phase import Phase
from ..proto import caffe_pb2
from . import register
from .data import DataLayer

Batch = Tuple[np.ndarray, Optional[np.ndarray]]


def _numpy_dtype() -> np.dtype:
    """The NumPy float type of the net's blobs (float32, or float64 under caffe.precision)."""
    return np.dtype(torch.empty((), dtype=_config.dtype()).numpy().dtype)


# ---- databases -----------------------------------------------------------------------------

# One lmdb.Environment per database file: LMDB forbids opening the same environment twice in a
# process, and a TRAIN net and a TEST net (or two solvers) may read the same database.
# The environments stay open for the life of the process: py-lmdb refuses a second open of a
# path while an earlier environment is still being torn down (seen when a net holding a weak
# reference was collected), and read-only environments cost only their memory map.
_LMDB_ENVS: 'dict[str, object]' = {}
_LMDB_LOCK = threading.Lock()


def _open_lmdb(source: str, layer: str, kind: str = 'Data'):
    try:
        import lmdb
    except ImportError:
        raise NetError("layer %r (%s): backend LMDB needs the Python package 'lmdb' "
                       "(pip install -r requirements.txt)" % (layer, kind)) from None
    path = os.path.realpath(source)
    with _LMDB_LOCK:
        env = _LMDB_ENVS.get(path)
        if env is None:
            if not os.path.exists(path):
                raise NetError('layer %r (%s): cannot open LMDB %s: No such file or directory'
                               % (layer, kind, source))
            try:
                # Read-only without the lock file: datasets may sit on read-only disks, and
                # nothing writes a training database while a net reads it.
                env = lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path))
            except lmdb.Error as e:
                raise NetError('layer %r (%s): cannot open LMDB %s: %s' % (layer, kind, source, e)) \
                    from None
            _LMDB_ENVS[path] = env
    _log.info('db_lmdb.cpp', 'Opened lmdb %s' % source)
    return env


class _LMDBRecords:
    """The values of an LMDB in key order, as a cursor that wraps around."""

    def __init__(self, source: str, layer: str, kind: str = 'Data'):
        self.env = _open_lmdb(source, layer, kind)
        self.txn = self.env.begin(buffers=False)
        self.cursor = self.txn.cursor()
        if not self.cursor.first():
            raise NetError('layer %r (%s): the database %s holds no records'
                           % (layer, kind, source))

    def value(self) -> bytes:
        return self.cursor.value()

    def key(self) -> str:
        """The current record's key (for messages naming a bad record)."""
        return self.cursor.key().decode('utf-8', 'replace')

    def next(self) -> bool:
        """Move on; True when the end was reached and the cursor went back to the first key."""
        if self.cursor.next():
            return False
        self.cursor.first()
        return True


class _LevelDBRecords:
    """The values of a LevelDB in key order (through plyvel), wrapping around."""

    def __init__(self, source: str, layer: str, kind: str = 'Data'):
        try:
            import plyvel
        except ImportError:
            hint = ''
            if os.path.exists(os.path.join(source, 'data.mdb')):
                hint = ' (%s looks like an LMDB: set data_param { backend: LMDB })' % source
            raise NetError("layer %r (%s): backend LEVELDB (the default of data_param.backend) "
                           "needs the Python package 'plyvel', which is not installed; convert the "
                           "database to LMDB and set backend: LMDB, or pip install plyvel%s"
                           % (layer, kind, hint)) from None
        try:
            self.db = plyvel.DB(source, create_if_missing=False)
        except Exception as e:  # plyvel raises its own IOError / Error types
            raise NetError('layer %r (%s): cannot open LevelDB %s: %s' % (layer, kind, source, e)) \
                from None
        _log.info('db_leveldb.cpp', 'Opened leveldb %s' % source)
        self._restart()
        if self._value is None:
            raise NetError('layer %r (%s): the database %s holds no records'
                           % (layer, kind, source))

    def _restart(self) -> None:
        self._it = self.db.iterator(include_key=False)
        self._value = next(self._it, None)

    def value(self) -> bytes:
        return self._value

    def next(self) -> bool:
        self._value = next(self._it, None)
        if self._value is not None:
            return False
        self._restart()
        return True


def _solver_rank_count() -> Tuple[int, int]:
    """(rank, number of solvers) of data-parallel training, (0, 1) when there is none."""
    dist = getattr(torch, 'distributed', None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---- batch makers (run on the prefetch thread) ---------------------------------------------

def _stack(images: List[np.ndarray], layer: str, what: Callable[[int], str]) -> np.ndarray:
    shape = images[0].shape
    for i, img in enumerate(images):
        if img.shape != shape:
            raise LayerError('layer %r: %s is %s but the first image of the batch is %s; images '
                             'of one batch must have one size (use batch_size 1 for varying sizes)'
                             % (layer, what(i), 'x'.join(map(str, img.shape)),
                                'x'.join(map(str, shape))))
    return np.stack(images)


class _RecordCursor:
    """The records of a database in key order, as one of `count` data-parallel solvers reads
    them: record i of the endless (wrapping) stream is this solver's when i % count == rank
    (Caffe's DataReader Skip). Shared by every layer that reads a Datum database (Data,
    AnnotatedData), so how records are dealt out to solvers is decided here once."""

    def __init__(self, records, rank: int = 0, count: int = 1):
        self.records = records
        self.rank, self.count = rank, count
        self.offset = 0

    def advance(self) -> None:
        """Move to the next record of the stream (back to the first after the last)."""
        if self.records.next():
            _log.info('data_layer.cpp', 'Restarting data prefetching from start.')
        self.offset += 1

    def skip_to_mine(self) -> None:
        """Data-parallel training: each solver takes every count-th record (Caffe's Skip)."""
        while self.offset % self.count != self.rank:
            self.advance()

    def peek(self) -> bytes:
        """This solver's next record, without moving on (to shape the tops at setup)."""
        self.skip_to_mine()
        return self.records.value()

    def where(self) -> str:
        """Names the record peek() returns: its key when the database has keys, else its
        position in the stream."""
        self.skip_to_mine()
        key = getattr(self.records, 'key', None)
        return ('record %r' % key()) if key else ('record %d' % self.offset)

    def take(self) -> bytes:
        """This solver's next record; the cursor moves past it."""
        value = self.peek()
        self.advance()
        return value


def open_cursor(lp: caffe_pb2.LayerParameter, phase: int, kind: str) -> _RecordCursor:
    """The cursor over `data_param.source` for a database-reading layer: LMDB or LevelDB by
    `data_param.backend`, dealt out to the data-parallel solvers in TRAIN (one solver tests,
    reading every record), after `rand_skip` records skipped at random as Caffe does."""
    p = lp.data_param
    name = lp.name
    if not p.source:
        raise NetError('layer %r (%s): data_param.source is empty' % (name, kind))
    if p.backend == caffe_pb2.DataParameter.LMDB:
        records = _LMDBRecords(p.source, name, kind)
    else:
        records = _LevelDBRecords(p.source, name, kind)
    rank, count = _solver_rank_count()
    if phase == Phase.TEST:  # only one solver tests: it reads every record
        rank, count = 0, 1
    cursor = _RecordCursor(records, rank, count)
    if p.rand_skip:
        skip = data_transform.engine_seed() % int(p.rand_skip)
        _log.info('data_layer.cpp', 'Skipping first %d data points.' % skip)
        for _ in range(skip):
            cursor.advance()
    return cursor


class _DatumBatches:
    """Reads batch_size Datums, decodes and transforms them: one batch per call."""

    def __init__(self, cursor: _RecordCursor, transformer: DataTransformer, batch_size: int,
                 labels: bool, layer: str):
        self.cursor = cursor
        self.transformer = transformer
        self.batch_size = batch_size
        self.labels = labels
        self.layer = layer

    def image(self, datum: caffe_pb2.Datum) -> np.ndarray:
        """A Datum's pixels as C x H x W (uint8 or float32)."""
        if datum.encoded:
            import cv2
            img = cv2.imdecode(np.frombuffer(datum.data, dtype=np.uint8),
                               self.transformer.decode_flag())
            if img is None:
                raise LayerError('layer %r (Data): cannot decode the encoded image of record %d'
                                 % (self.layer, self.cursor.offset))
            return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)
        self.transformer.note_raw_datum()
        shape = (datum.channels, datum.height, datum.width)
        need = shape[0] * shape[1] * shape[2]
        if len(datum.data):
            arr = np.frombuffer(datum.data, dtype=np.uint8)
        else:
            arr = np.array(datum.float_data, dtype=np.float32)
        if arr.size != need or need == 0:
            raise LayerError('layer %r (Data): record %d holds %d values but channels x height x '
                             'width = %s' % (self.layer, self.cursor.offset, arr.size,
                                             'x'.join(map(str, shape))))
        return arr.reshape(shape)

    def peek(self) -> np.ndarray:
        """The next record's image, without moving on (to shape the tops at setup)."""
        return self.image(caffe_pb2.Datum.FromString(self.cursor.peek()))

    def __call__(self) -> Batch:
        images, labels = [], np.empty(self.batch_size, dtype=self.transformer.dtype)
        for i in range(self.batch_size):
            datum = caffe_pb2.Datum.FromString(self.cursor.take())
            images.append(self.image(datum))
            labels[i] = datum.label
        batch = _stack(images, self.layer, lambda i: 'item %d' % i)
        return self.transformer.transform(batch), (labels if self.labels else None)


class _ImageBatches:
    """Loads batch_size images of an ImageData list, transforms them: one batch per call."""

    def __init__(self, lines: List[Tuple[str, int]], root: str, new_hw: Tuple[int, int],
                 is_color: bool, shuffle_rng: Optional[np.random.Generator],
                 transformer: DataTransformer, batch_size: int, layer: str):
        self.lines = lines
        self.root = root
        self.new_hw = new_hw
        self.is_color = is_color
        self.shuffle_rng = shuffle_rng
        self.transformer = transformer
        self.batch_size = batch_size
        self.layer = layer
        self.pos = 0

    def shuffle(self) -> None:
        order = self.shuffle_rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def image(self, index: int) -> np.ndarray:
        """Image `index` of the list as C x H x W uint8 (BGR or gray), resized if asked."""
        import cv2
        path = self.root + self.lines[index][0]
        img = cv2.imread(path, cv2.IMREAD_COLOR if self.is_color else cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise LayerError('layer %r (ImageData): Could not load %s' % (self.layer, path))
        h, w = self.new_hw
        if h > 0 and w > 0:
            img = cv2.resize(img, (w, h))
        return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)

    def __call__(self) -> Batch:
        images, labels = [], np.empty(self.batch_size, dtype=self.transformer.dtype)
        for i in range(self.batch_size):
            images.append(self.image(self.pos))
            labels[i] = self.lines[self.pos][1]
            self.pos += 1
            if self.pos >= len(self.lines):
                _log.info('image_data_layer.cpp', 'Restarting data prefetching from start.')
                self.pos = 0
                if self.shuffle_rng is not None:
                    self.shuffle()
        batch = _stack(images, self.layer, lambda i: 'image %d of the batch' % i)
        return self.transformer.transform(batch), labels


# ---- prefetching ---------------------------------------------------------------------------

_PREFETCHERS: 'weakref.WeakSet[_Prefetcher]' = weakref.WeakSet()


class _Prefetcher:
    """A thread that calls `load` again and again, keeping up to `depth` batches ready.

    It holds only the batch maker, never the layer, so a net that is dropped is collected,
    and the layer's finaliser stops the thread. An error while loading is handed to the
    consumer, which raises it in the main thread.
    """

    def __init__(self, load: Callable[[], Batch], depth: int, layer: str):
        self.load = load
        self.layer = layer
        self.queue: 'queue.Queue' = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name='prefetch %s' % layer, daemon=True)
        _PREFETCHERS.add(self)
        self.thread.start()

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                pass

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._put(self.load())
        except BaseException as e:  # handed over: forward raises it
            self._put(e)

    def get(self) -> Batch:
        while True:
            if self.error is not None and self.queue.empty():
                raise self.error
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    raise self.error or LayerError('layer %r: the prefetch thread stopped'
                                                   % self.layer)
                continue
            if isinstance(item, BaseException):
                self.error = item
                raise item
            return item

    def stop(self, wait: float = 0.0) -> None:
        self.stopping.set()
        if wait:
            self.thread.join(wait)


@atexit.register
def _stop_all_prefetchers() -> None:
    for p in list(_PREFETCHERS):
        p.stop(wait=2.0)


class _PrefetchingLayer(DataLayer):
    """Shared by Data and ImageData: shapes the tops, runs the batch maker, hands out batches."""

    _prefetcher: Optional[_Prefetcher] = None
    _load: Optional[Callable[[], Batch]] = None

    def _start(self, load: Callable[[], Batch]) -> None:
        depth = int(self.layer_param.data_param.prefetch)
        self._load = load
        if depth > 0:
            self._prefetcher = _Prefetcher(load, depth, self.layer_param.name)

    def forward(self, bottom, top):
        try:
            data, labels = self._prefetcher.get() if self._prefetcher else self._load()
        except LayerError:
            raise
        except Exception as e:
            raise LayerError('layer %r (%s): loading a batch failed: %s: %s'
                             % (self.layer_param.name, self.type, type(e).__name__, e)) from e
        dev = _config.device()
        top[0].set_tensor(torch.from_numpy(data).to(dev))
        if labels is not None and len(top) > 1:
            top[1].set_tensor(torch.from_numpy(labels).to(dev))

    def close(self) -> None:
        """Stop the prefetch thread (the layer serves no more batches after this)."""
        if self._prefetcher is not None:
            self._prefetcher.stop()

    def __del__(self):
        self.close()

    def _shape_tops(self, top, first_image: np.ndarray, batch_size: int, where: str) -> None:
        shape = self.transformer.check(first_image.shape, NetError)
        top[0].reshape(batch_size, *shape)
        if len(top) > 1:
            top[1].reshape(batch_size)
        _log.info(where, 'output data size: %d,%d,%d,%d' % ((batch_size,) + shape))


def _check_batch_size(layer: str, batch_size: int) -> int:
    if batch_size <= 0:
        raise NetError('layer %r: Positive batch size required (batch_size %d)'
                       % (layer, batch_size))
    return batch_size


@register('Data')
class Data(_PrefetchingLayer):
    """Datums from an LMDB or LevelDB (see the module docstring)."""
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.data_param
        name = lp.name
        batch_size = _check_batch_size(name, int(p.batch_size))
        for field in ('scale', 'mean_file', 'crop_size', 'mirror'):
            if p.HasField(field):
                _log.warning('data_layer.cpp', 'layer %s: data_param.%s is deprecated and ignored; '
                             'put it in transform_param' % (name, field))
        self.transformer = DataTransformer(lp.transform_param, self.phase, name, _numpy_dtype(),
                                           force_encoded_color=p.force_encoded_color)
        maker = _DatumBatches(open_cursor(lp, self.phase, 'Data'), self.transformer, batch_size,
                              len(top) > 1, name)
        self._shape_tops(top, maker.peek(), batch_size, 'data_layer.cpp')
        self.transformer.init_rand()
        self._start(maker)


@register('ImageData')
class ImageData(_PrefetchingLayer):
    """Images listed with their labels in a text file (see the module docstring)."""
    exact_num_top = 2

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.image_data_param
        name = lp.name
        new_h, new_w = int(p.new_height), int(p.new_width)
        if (new_h > 0) != (new_w > 0):
            raise NetError('layer %r (ImageData): Current implementation requires new_height and '
                           'new_width to be set at the same time.' % name)
        batch_size = _check_batch_size(name, int(p.batch_size))
        self.transformer = DataTransformer(lp.transform_param, self.phase, name, _numpy_dtype())
        _log.info('image_data_layer.cpp', 'Opening file %s' % p.source)
        lines = self._read_list(p.source, name)
        shuffle_rng = None
        if p.shuffle:
            _log.info('image_data_layer.cpp', 'Shuffling data')
            shuffle_rng = np.random.default_rng(data_transform.engine_seed())
        maker = _ImageBatches(lines, p.root_folder, (new_h, new_w), bool(p.is_color),
                              shuffle_rng, self.transformer, batch_size, name)
        if shuffle_rng is not None:
            maker.shuffle()
        _log.info('image_data_layer.cpp', 'A total of %d images.' % len(lines))
        if p.rand_skip:
            skip = data_transform.engine_seed() % int(p.rand_skip)
            _log.info('image_data_layer.cpp', 'Skipping first %d data points.' % skip)
            if skip >= len(lines):
                raise NetError('layer %r (ImageData): Not enough points to skip (%d of %d images)'
                               % (name, skip, len(lines)))
            maker.pos = skip
        try:
            first = maker.image(maker.pos)
        except LayerError as e:
            raise NetError(str(e)) from None
        self._shape_tops(top, first, batch_size, 'image_data_layer.cpp')
        self.transformer.init_rand()
        self._start(maker)

    @staticmethod
    def _read_list(source: str, name: str) -> List[Tuple[str, int]]:
        """"path label" lines; the label is the last field, so paths may hold spaces."""
        try:
            with open(source) as f:
                text = f.read()
        except OSError as e:
            raise NetError('layer %r (ImageData): cannot open source file %s (%s)'
                           % (name, source, e.strerror)) from None
        lines = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(None, 1)
            try:
                if len(parts) != 2:
                    raise ValueError
                lines.append((parts[0], int(parts[1])))
            except ValueError:
                raise NetError('layer %r (ImageData): %s:%d: expected "path label", got %r'
                               % (name, source, number, line)) from None
        if not lines:
            raise NetError('layer %r (ImageData): %s lists no images' % (name, source))
        return lines
