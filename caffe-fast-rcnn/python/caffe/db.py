"""Key-value databases of serialized records, as Caffe's util/db (LMDB and LevelDB).

The tools that build data sets (convert_imageset, extract_features, ...) and read them
(compute_image_mean) use these, so that what they write is what Caffe's Data layer and a
real Caffe read: an LMDB is a folder with data.mdb and lock.mdb; keys are sorted bytewise.

    db = open_db('lmdb', path, 'new')     # 'new' creates (the folder must not exist),
    txn = db.new_transaction()            # 'write' adds to an existing one, 'read' reads
    txn.put(key, value); txn.commit()
    for key, value in open_db('lmdb', path, 'read').items(): ...
    write_records(db, records, 'convert_imageset.cpp')   # commits every 1000, logs progress

As in Caffe, a transaction keeps its puts until `commit`; an LMDB whose map is full doubles
it and commits again (Caffe's LMDBTransaction does the same), so no size is guessed up front.
LevelDB needs the optional `plyvel` package.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, List, Tuple, Union

from . import _log
from .errors import CaffeError

BACKENDS = ('lmdb', 'leveldb')
MODES = ('read', 'write', 'new')
_LMDB_START_MAP = 1 << 30  # 1 GB of address space (the file grows as it is written); doubled as needed


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


class LMDB:
    """An LMDB folder (data.mdb + lock.mdb)."""

    def __init__(self, source: str, mode: str):
        import lmdb
        self.source = source
        if mode == 'new':
            try:
                os.mkdir(source, 0o744)
            except FileExistsError:
                raise DBError('mkdir %s failed: it already exists (remove it, or choose another '
                              'name)' % source) from None
            except OSError as e:
                raise DBError('mkdir %s failed: %s' % (source, e.strerror)) from None
        elif not os.path.isdir(source):
            raise DBError('cannot open LMDB %s: no such folder' % source)
        try:
            self.env = lmdb.open(source, map_size=_LMDB_START_MAP, readonly=(mode == 'read'),
                                 lock=(mode != 'read'), create=(mode == 'new'), max_readers=126,
                                 meminit=False)
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
            raise DBError("backend leveldb needs the Python package 'plyvel', which is not "
                          "installed: use the lmdb backend, or pip install plyvel") from None
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
