"""convert_imageset: an image list into a database of Datums, as Caffe's tool.

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds `<file> <label>` lines (the label after the last space); each image is read
from ROOTFOLDER + file with OpenCV, optionally as grey (-gray) and resized to
-resize_height x -resize_width (both must be set), and stored under the key
`%08d_<file>` (its line number) as raw pixels or, with -encoded / -encode_type, as encoded
bytes (the file's own bytes when nothing had to change). -shuffle shuffles the lines first,
-check_size insists every raw Datum has the first one's size. Images that cannot be read
are logged and skipped. Transactions are committed every 1000 images.
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence

from .. import _log, db
from ..cli import Fatal, Flags, run_tool
from ..image_datum import list_file_entries, read_image_to_datum

_WHERE = 'convert_imageset.cpp'
USAGE = ('Convert a set of images to the leveldb/lmdb\n'
         'format used as input for Caffe.\n'
         'Usage:\n    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n')


def _flags() -> Flags:
    f = Flags('convert_imageset', USAGE, 'tools/convert_imageset.cpp')
    f.define('gray', False, 'When this option is on, treat images as grayscale ones')
    f.define('shuffle', False, 'Randomly shuffle the order of images and their labels')
    f.define('backend', 'lmdb', 'The backend {lmdb, leveldb} for storing the result')
    f.define('resize_width', 0, 'Width images are resized to')
    f.define('resize_height', 0, 'Height images are resized to')
    f.define('check_size', False, 'When this option is on, check that all the datum have the '
             'same size')
    f.define('encoded', False, 'When this option is on, the encoded image will be save in datum')
    f.define('encode_type', '', "Optional: What type should we encode the image as "
             "('png','jpg',...).")
    return f


def _body(argv: List[str]) -> int:
    flags = _flags()
    args = flags.parse(argv)
    if len(args) != 3:
        flags.show_usage()
        return 1
    root, list_file, db_name = args
    is_color = not flags.gray
    encoded = flags.encoded
    encode_type = flags.encode_type
    lines = list_file_entries(list_file)
    if flags.shuffle:
        _log.info(_WHERE, 'Shuffling data')
        random.shuffle(lines)
    _log.info(_WHERE, 'A total of %d images.' % len(lines))
    if encode_type and not encoded:
        _log.info(_WHERE, 'encode_type specified, assuming encoded=true.')
    encoded = encoded or bool(encode_type)
    height, width = max(0, flags.resize_height), max(0, flags.resize_width)

    out = db.open_db(flags.backend, db_name, 'new')
    txn = out.new_transaction()
    count = 0
    data_size = None
    for line_id, (name, label) in enumerate(lines):
        enc = encode_type
        if encoded and not enc:
            dot = name.rfind('.')
            if dot < 0:
                _log.warning(_WHERE, "Failed to guess the encoding of '%s'" % name)
            enc = name[dot + 1:].lower()
        datum = read_image_to_datum(root + name, label, height, width, is_color, enc)
        if datum is None:
            _log.error('io.cpp', 'Could not open or find file %s' % (root + name))
            continue
        if flags.check_size and not datum.encoded:
            size = datum.channels * datum.height * datum.width
            if data_size is None:
                data_size = size
            elif len(datum.data) != data_size:
                raise Fatal('Check failed: data.size() == data_size (%d vs. %d) Incorrect data '
                            'field size %d (%s)' % (len(datum.data), data_size, len(datum.data), name))
        txn.put('%08d_%s' % (line_id, name), datum.SerializeToString())
        count += 1
        if count % 1000 == 0:
            txn.commit()
            txn = out.new_transaction()
            _log.info(_WHERE, 'Processed %d files.' % count)
    if count % 1000 != 0:
        txn.commit()
        _log.info(_WHERE, 'Processed %d files.' % count)
    out.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_tool(_body, argv, _WHERE)
