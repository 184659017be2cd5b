"""Key-value databases of serialized records, as Caffe's util/db (LMDB and LevelDB).

The tools that build data sets (convert_imageset, extract_features, ...) and the readers
(compute_image_mean, the Data and AnnotatedData layers) all go through these, so that what
is written is what Caffe reads: an LMDB is a folder with data.mdb and lock.mdb (a single
file is read too); keys are sorted bytewise.

    db = open_db('lmdb', path, 'new')     # 'new' creates (the folder must not exist),
    txn = db.new_transaction()            # 'write' adds to an existing one, 'read' reads
    txn.put(key, value); txn.commit()
    for key, value in open_db('lmdb', path, 'read').items(): ...
    cursor = Cursor(open_db('lmdb', path))  # the Data layer's endless reading, in key order
    write_records(db, records, 'convert_imageset.cpp')   # commits every 1000, logs progress

As in Caffe, a transaction keeps its puts until `commit`; an LMDB whose map is full doubles
it and commits again (Caffe's LMDBTransaction does the same), so no size is guessed up front.

An LMDB opened to read is opened read-only and without the lock file (data sets may sit on
read-only disks, and nothing writes a data set while it is read), once per process: LMDB
forbids a second open of one environment in a process, and a TRAIN net, a TEST net, two
solvers and a tool may all read the same database. Those environments stay open for the
life of the process (py-lmdb refuses to reopen a path while an earlier environment is still
being torn down, and a read-only map costs only address space); `close()` leaves them.
LevelDB needs the optional `plyvel` package.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _log
from .errors import CaffeError

MODES = ('read', 'write', 'new')
_LMDB_START_MAP = 1 << 30  # 1 GB of address space (the file grows as written); doubled as needed


class DBError(CaffeError):
    """A database that cannot be opened, created or written."""


def _key(k) -> bytes:
    return k.encode() if isinstance(k, str) else bytes(k)


class _LMDBTransaction:
    def __init__(self, db: 'LMDB'):
        self.db = db
        self.pending: List[Tuple[bytes, bytes]] = []

    def put(self, key, value: bytes) -> None:
        self.pending.append((_key(key), bytes(value)))

    def commit(self) -> None:
        import lmdb
        env = self.db.env
        while True:
            try:
                with env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v)
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()['map_size'] * 2)
        self.pending = []


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise DBError("backend lmdb needs the Python package 'lmdb' (pip install -r "
                      "requirements.txt)") from None
    return lmdb


_READ_ENVS: Dict[str, object] = {}   # real path -> read-only lmdb.Environment (see above)
_READ_ENVS_LOCK = threading.Lock()


def _read_env(source: str):
    lmdb = _lmdb()
    path = os.path.realpath(source)
    with _READ_ENVS_LOCK:
        env = _READ_ENVS.get(path)
        if env is None:
            if not os.path.exists(path):
                raise DBError('cannot open LMDB %s: No such file or directory' % source)
            try:
                env = lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path))
            except lmdb.Error as e:
                raise DBError('cannot open LMDB %s: %s' % (source, e)) from None
            _READ_ENVS[path] = env
    return env


class LMDB:
    """An LMDB folder (data.mdb + lock.mdb)."""

    def __init__(self, source: str, mode: str):
        self.source = source
        self.mode = mode
        if mode == 'read':
            self.env = _read_env(source)
        else:
            lmdb = _lmdb()
            if mode == 'new':
                try:
                    os.mkdir(source, 0o744)
                except FileExistsError:
                    raise DBError('mkdir %s failed: it already exists (remove it, or choose '
                                  'another name)' % source) from None
                except OSError as e:
                    raise DBError('mkdir %s failed: %s' % (source, e.strerror)) from None
            elif not os.path.isdir(source):
                raise DBError('cannot open LMDB %s: no such folder' % source)
            try:
                self.env = lmdb.open(source, map_size=_LMDB_START_MAP, create=(mode == 'new'),
                                     max_readers=126, meminit=False)
            except lmdb.Error as e:
                raise DBError('cannot open LMDB %s: %s' % (source, e)) from None
        _log.info('db_lmdb.cpp', 'Opened lmdb %s' % source)

    def new_transaction(self) -> _LMDBTransaction:
        return _LMDBTransaction(self)

    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        with self.env.begin(buffers=False) as txn:
            for k, v in txn.cursor():
                yield k, v

    def __len__(self) -> int:
        return int(self.env.stat()['entries'])

    def close(self) -> None:
        if self.mode != 'read':     # read-only environments are shared (module docstring)
            self.env.close()


class _LevelDBTransaction:
    def __init__(self, db: 'LevelDB'):
        self.batch = db.db.write_batch()

    def put(self, key, value: bytes) -> None:
        self.batch.put(_key(key), bytes(value))

    def commit(self) -> None:
        self.batch.write()


class LevelDB:
    """A LevelDB folder, through the optional plyvel package."""

    def __init__(self, source: str, mode: str):
        try:
            import plyvel
        except ImportError:
            hint = ''
            if os.path.exists(os.path.join(source, 'data.mdb')):
                hint = ' (%s looks like an LMDB)' % source
            raise DBError("backend leveldb needs the Python package 'plyvel', which is not "
                          "installed: convert the database to LMDB and use the LMDB backend, "
                          "or pip install plyvel%s" % hint) from None
        self.source = source
        try:
            self.db = plyvel.DB(source, create_if_missing=(mode == 'new'),
                                error_if_exists=(mode == 'new'))
        except Exception as e:  # plyvel's own error types
            raise DBError('cannot open LevelDB %s: %s' % (source, e)) from None
        _log.info('db_leveldb.cpp', 'Opened leveldb %s' % source)

    def new_transaction(self) -> _LevelDBTransaction:
        return _LevelDBTransaction(self)

    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        yield from self.db.iterator()

    def __len__(self) -> int:
        return sum(1 for _ in self.db.iterator(include_value=False))

    def close(self) -> None:
        self.db.close()


_CLASSES = {'lmdb': LMDB, 'leveldb': LevelDB}


class Cursor:
    """The records of an open database in key order, going back to the first after the last
    (how Caffe's Data layer reads its source, again and again)."""

    def __init__(self, db):
        self.db = db
        self._restart()
        if self._item is None:
            raise DBError('the database %s holds no records' % db.source)

    def _restart(self) -> None:
        self._items = self.db.items()
        self._item: Optional[Tuple[bytes, bytes]] = next(self._items, None)

    def key(self) -> str:
        """The current record's key (for messages naming a bad record)."""
        return self._item[0].decode('utf-8', 'replace')

    def value(self) -> bytes:
        return self._item[1]

    def next(self) -> bool:
        """Move on; True when the end was reached and the cursor went back to the first key."""
        self._item = next(self._items, None)
        if self._item is not None:
            return False
        self._restart()
        return True


def open_db(backend: str, source: str, mode: str = 'read'):
    """Open `source` with `backend` ('lmdb' or 'leveldb') in `mode` ('read', 'write', 'new')."""
    cls = _CLASSES.get(backend.lower())
    if cls is None:
        raise DBError('Unknown database backend %r (use lmdb or leveldb)' % backend)
    if mode not in MODES:
        raise DBError('Unknown database mode %r (use read, write or new)' % mode)
    return cls(source, mode)


def write_records(db, records: Iterable[Tuple[Union[str, bytes], bytes]], where: str,
                  every: int = 1000) -> int:
    """Put `records` (key, value) into the open database `db` in transactions of `every`
    puts, logging `Processed N files.` (tagged `where`) at each commit and after the last
    one, as Caffe's converters do; returns how many were put."""
    txn = db.new_transaction()
    count = 0
    for key, value in records:
        txn.put(key, value)
        count += 1
        if count % every == 0:
            txn.commit()
            txn = db.new_transaction()
            _log.info(where, 'Processed %d files.' % count)
    if count % every != 0:
        txn.commit()
        _log.info(where, 'Processed %d files.' % count)
    return count
