"""Caffe's prefetching image data layers: Data (LMDB / LevelDB of Datums) and ImageData.

Data reads serialised `caffe_pb2.Datum` records in key order from `data_param.source`,
starting again at the first key when the database runs out ("Restarting data prefetching
from start."). A record holds raw uint8 pixels (`data`), floats (`float_data`), or an
`encoded` JPEG/PNG that OpenCV decodes (BGR, as Caffe). The first top gets the batch after
`transform_param` (see caffe/data_transform.py), a second top the Datums' labels. The
database is read through caffe/db.py (its `Cursor`): LMDB read-only, each one opened once per
process; LevelDB only if the optional `plyvel` package is installed.

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

Data-parallel training splits a database between the ranks as BVLC's DataLayer does:
counting the records in cursor order (on and on across passes), rank r of N reads those
whose index % N == r; a TEST net reads everything (only the root solver tests). The rule
lives in the cursor, `ShardedRecords`, which `open_records` returns, so any layer that
reads a database (AnnotatedData) gets it by reading through that cursor.
"""
from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from .. import _config, _log
from .. import data_transform
from .. import db as _db
from .. import parallel as _parallel
from ..data_transform import DataTransformer
from ..errors import ImageError, LayerError, NetError
from ..image_file import decode_image, read_image
from ..phase import Phase
from ..proto import caffe_pb2
from . import register
from .data import DataLayer

Batch = Tuple[np.ndarray, Optional[np.ndarray]]


def _numpy_dtype() -> np.dtype:
    """The NumPy float type of the net's blobs (float32, or float64 under caffe.precision)."""
    return np.dtype(torch.empty((), dtype=_config.dtype()).numpy().dtype)


# ---- records ------------------------------------------------------------------------------

class ShardedRecords:
    """A database cursor (caffe.db.Cursor) that shows this rank only its share of the records.

    Records are counted in cursor order across wrap-arounds (`offset`, BVLC's DataLayer
    offset_); the cursor stops only on those with offset % count == rank. With one rank it
    is the plain cursor. `value()` and `next()` behave as the plain cursor's: `next()` says
    whether the database wrapped around on the way (logged as Caffe logs it).
    """

    def __init__(self, records, rank: int = 0, count: int = 1,
                 restart_tag: str = 'data_layer.cpp'):
        if count < 1 or not 0 <= rank < count:
            raise ValueError('rank %d of %d solvers' % (rank, count))
        self.records = records
        self.rank, self.count = rank, count
        self.restart_tag = restart_tag
        self.offset = 0
        self._to_mine()

    def value(self) -> bytes:
        return self.records.value()

    def next(self) -> bool:
        wrapped = self._advance()
        return self._to_mine() or wrapped

    def where(self) -> str:
        """Names the current record: its key when the database has keys, else its position
        in the stream."""
        key = getattr(self.records, 'key', None)
        return ('record %r' % key()) if key else ('record %d' % self.offset)

    def skip(self, n: int) -> None:
        """Pass over n records of the whole database (data_param.rand_skip), then go on to
        this rank's next one."""
        for _ in range(int(n)):
            self._advance()
        self._to_mine()

    def _advance(self) -> bool:
        wrapped = self.records.next()
        if wrapped:
            _log.info(self.restart_tag, 'Restarting data prefetching from start.')
        self.offset += 1
        return wrapped

    def _to_mine(self) -> bool:
        wrapped = False
        while self.offset % self.count != self.rank:
            wrapped = self._advance() or wrapped
        return wrapped


def open_records(data_param, layer: str, phase: int, kind: str = 'Data',
                 restart_tag: str = 'data_layer.cpp') -> ShardedRecords:
    """The records of `data_param.source` (LMDB or LevelDB by `data_param.backend`) as this
    rank's share: every solver_count-th record in TRAIN, all of them in TEST, after
    `data_param.rand_skip` records skipped at random as Caffe does."""
    if not data_param.source:
        raise NetError('layer %r (%s): data_param.source is empty' % (layer, kind))
    lmdb = data_param.backend == caffe_pb2.DataParameter.LMDB
    try:
        records = _db.Cursor(_db.open_db('lmdb' if lmdb else 'leveldb', data_param.source))
    except _db.DBError as e:
        hint = ''
        if not lmdb and not data_param.HasField('backend'):
            hint = ' (LEVELDB is the default of data_param.backend; for an LMDB set backend: LMDB)'
        raise NetError('layer %r (%s): %s%s' % (layer, kind, e, hint)) from None
    rank, count = _parallel.solver_rank(), _parallel.solver_count()
    if phase == Phase.TEST:   # only the root solver tests: it reads every record
        rank, count = 0, 1
    sharded = ShardedRecords(records, rank, count, restart_tag)
    if data_param.rand_skip:
        skip = data_transform.engine_seed() % int(data_param.rand_skip)
        _log.info(restart_tag, 'Skipping first %d data points.' % skip)
        sharded.skip(skip)
    return sharded


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


class _DatumBatches:
    """Reads batch_size Datums, decodes and transforms them: one batch per call."""

    def __init__(self, records: ShardedRecords, transformer: DataTransformer, batch_size: int,
                 labels: bool, layer: str):
        self.records = records
        self.transformer = transformer
        self.batch_size = batch_size
        self.labels = labels
        self.layer = layer

    def image(self, datum: caffe_pb2.Datum) -> np.ndarray:
        """A Datum's pixels as C x H x W (uint8 or float32)."""
        if datum.encoded:
            try:
                img = decode_image(np.frombuffer(datum.data, dtype=np.uint8),
                                   self.transformer.decode_flag(), 'of ' + self.records.where())
            except ImageError as e:
                raise LayerError('layer %r (Data): %s' % (self.layer, e)) from None
            return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)
        self.transformer.note_raw_datum()
        shape = (datum.channels, datum.height, datum.width)
        need = shape[0] * shape[1] * shape[2]
        if len(datum.data):
            arr = np.frombuffer(datum.data, dtype=np.uint8)
        else:
            arr = np.array(datum.float_data, dtype=np.float32)
        if arr.size != need or need == 0:
            raise LayerError('layer %r (Data): %s holds %d values but channels x height x width '
                             '= %s' % (self.layer, self.records.where(), arr.size,
                                       'x'.join(map(str, shape))))
        return arr.reshape(shape)

    def peek(self) -> np.ndarray:
        """The next record's image, without moving on (to shape the tops at setup)."""
        return self.image(caffe_pb2.Datum.FromString(self.records.value()))

    def __call__(self) -> Batch:
        images, labels = [], np.empty(self.batch_size, dtype=self.transformer.dtype)
        for i in range(self.batch_size):
            datum = caffe_pb2.Datum.FromString(self.records.value())
            images.append(self.image(datum))
            labels[i] = datum.label
            self.records.next()
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
        try:
            img = read_image(path, cv2.IMREAD_COLOR if self.is_color else cv2.IMREAD_GRAYSCALE)
        except ImageError as e:
            raise LayerError('layer %r (ImageData): Could not load %s: %s'
                             % (self.layer, path, e)) from None
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
    """Shared by Data, ImageData, AnnotatedData and WindowData: shapes the tops, runs the
    batch maker, hands out batches."""

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

    def _shape_tops(self, top, shape: Tuple[int, int, int], batch_size: int, where: str) -> None:
        """Data top batch_size x `shape`, label top (when there is one) a label per item."""
        top[0].reshape(batch_size, *shape)
        if len(top) > 1:
            top[1].reshape(batch_size)
        _log.info(where, 'output data size: %d,%d,%d,%d' % ((batch_size,) + tuple(shape)))


def _check_batch_size(layer: str, batch_size: int) -> int:
    if batch_size <= 0:
        raise NetError('layer %r: Positive batch size required (batch_size %d)'
                       % (layer, batch_size))
    return batch_size


class _DatabaseLayer(_PrefetchingLayer):
    """Shared by Data and AnnotatedData, whose batches are records of data_param.source."""
    min_top = 1
    max_top = 2

    def _open_source(self, transformer_class: type, where: str) -> Tuple[int, ShardedRecords]:
        """The common start: check batch_size, warn of data_param's ignored transformation
        fields, make `self.transformer`, open this rank's share of the records (after
        rand_skip). Returns (batch_size, records)."""
        lp = self.layer_param
        p = lp.data_param
        name = lp.name
        batch_size = _check_batch_size(name, int(p.batch_size))
        for field in ('scale', 'mean_file', 'crop_size', 'mirror'):
            if p.HasField(field):
                _log.warning(where, 'layer %s: data_param.%s is deprecated and ignored; put it in '
                             'transform_param' % (name, field))
        self.transformer = transformer_class(lp.transform_param, self.phase, name, _numpy_dtype(),
                                             force_encoded_color=p.force_encoded_color)
        return batch_size, open_records(p, name, self.phase, self.type, where)


@register('Data')
class Data(_DatabaseLayer):
    """Datums from an LMDB or LevelDB (see the module docstring)."""

    def setup(self, bottom, top):
        where = 'data_layer.cpp'
        batch_size, records = self._open_source(DataTransformer, where)
        maker = _DatumBatches(records, self.transformer, batch_size, len(top) > 1,
                              self.layer_param.name)
        shape = self.transformer.check(maker.peek().shape, NetError)
        self._shape_tops(top, shape, batch_size, where)
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
        self._shape_tops(top, self.transformer.check(first.shape, NetError), batch_size,
                         'image_data_layer.cpp')
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
