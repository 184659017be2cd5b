"""compute_image_mean: the mean image of a database of Datums, as Caffe's tool.

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]      (-backend lmdb|leveldb)

Every Datum (encoded ones decoded as stored) must have the first one's size; the sums are
kept in float32 and added record by record, as Caffe adds into its BlobProto's floats, so
the mean is Caffe's to the bit. The output is a BlobProto with num 1 and the first Datum's
channels, height and width, the file Caffe's `mean_file` and `caffe.io.blobproto_to_array`
read. The per-channel means are logged.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .. import _log, db, protoio
from ..cli import Fatal, Flags, run_tool
from ..image_datum import decode_datum_native
from ..proto import caffe_pb2

_WHERE = 'compute_image_mean.cpp'
USAGE = ('Compute the mean_image of a set of images given by a leveldb/lmdb\n'
         'Usage:\n    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n')


def _flags() -> Flags:
    f = Flags('compute_image_mean', USAGE, 'tools/compute_image_mean.cpp')
    f.define('backend', 'lmdb', 'The backend {leveldb, lmdb} containing the images')
    return f


def _values(datum: caffe_pb2.Datum, size: int) -> np.ndarray:
    in_datum = max(len(datum.data), len(datum.float_data))
    if in_datum != size:
        raise Fatal('Check failed: size_in_datum == data_size (%d vs. %d) Incorrect data field '
                    'size %d' % (in_datum, size, in_datum))
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).astype(np.float32)
    return np.asarray(datum.float_data, dtype=np.float32)


def mean_blob(records, log_every: int = 10000) -> caffe_pb2.BlobProto:
    """The mean of the serialized Datums `records` as Caffe's BlobProto (num 1, C, H, W)."""
    total: Optional[np.ndarray] = None
    count = 0
    blob = caffe_pb2.BlobProto()
    for value in records:
        datum = decode_datum_native(caffe_pb2.Datum.FromString(value))
        if total is None:
            blob.num, blob.channels, blob.height, blob.width = 1, datum.channels, datum.height, datum.width
            size = datum.channels * datum.height * datum.width
            total = np.zeros(size, dtype=np.float32)
            _log.info(_WHERE, 'Starting iteration')
        total += _values(datum, size)
        count += 1
        if count % log_every == 0:
            _log.info(_WHERE, 'Processed %d files.' % count)
    if total is None:
        raise Fatal('the database holds no records')
    if count % log_every != 0:
        _log.info(_WHERE, 'Processed %d files.' % count)
    blob.data.extend((total / np.float32(count)).astype(np.float32).tolist())
    return blob


def _body(argv: List[str]) -> int:
    flags = _flags()
    args = flags.parse(argv)
    if not 1 <= len(args) <= 2:
        flags.show_usage()
        return 1
    source = db.open_db(flags.backend, args[0], 'read')
    blob = mean_blob(v for _, v in source.items())
    source.close()
    if len(args) == 2:
        _log.info(_WHERE, 'Write to %s' % args[1])
        protoio.write_binary(args[1], blob)
    channels, dim = blob.channels, blob.height * blob.width
    _log.info(_WHERE, 'Number of channels: %d' % channels)
    data = np.asarray(blob.data, dtype=np.float32).reshape(channels, dim)
    for c in range(channels):
        # Added in order in float32, as Caffe's std::vector<float> (np.sum would pair up).
        channel_sum = np.add.accumulate(data[c], dtype=np.float32)[-1]
        _log.info(_WHERE, 'mean_value channel [%d]: %g' % (c, channel_sum / np.float32(dim)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_tool(_body, argv, _WHERE)
