"""convert_imageset: an image list into a database of Datums, as Caffe's tool.

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds `<file> <label>` lines (the label after the last space); each image is read
from ROOTFOLDER + file with OpenCV, optionally as grey (-gray) and resized to
-resize_height x -resize_width (both must be set), and stored under the key
`%08d_<file>` (its line number) as raw pixels or, with -encoded / -encode_type, as encoded
bytes (the file's own bytes when nothing had to change). -shuffle shuffles the lines first,
-check_size insists every raw Datum has the first one's size. Images that cannot be read
(missing, truncated, not an image: caffe.image_datum) are logged and skipped. Images are
read and encoded on a thread per core, and stored in list order; transactions are committed
every 1000 images.
"""
from __future__ import annotations

import random
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .. import _log, db
from ..cli import Fatal, Flags, read_list, run_tool
from ..errors import ImageError
from ..image_datum import read_image_to_datum
from ..proto import caffe_pb2
from ._in_order import map_in_order

_WHERE = 'convert_imageset.cpp'
# A converted list line: its image's Datum (for -check_size) and the serialised record.
Record = Tuple[caffe_pb2.Datum, bytes]
USAGE = ('Convert a set of images to the leveldb/lmdb\n'
         'format used as input for Caffe.\n'
         'Usage:\n    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n')


def _flags() -> Flags:
    f = Flags('convert_imageset', USAGE, 'tools/convert_imageset.cpp')
    define_conversion_flags(f)
    return f


def define_conversion_flags(f: Flags) -> None:
    """The flags of Caffe's image converters (convert_imageset, and SSD's convert_annoset
    with its own on top): the ones convert_list and the image reading use."""
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


class _SizeCheck:
    """-check_size of Caffe's converters: every raw Datum must hold as many bytes as the
    first raw one's channels x height x width (encoded ones are not checked)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.size: Optional[int] = None

    def __call__(self, datum: caffe_pb2.Datum, name: str) -> None:
        if not self.enabled or datum.encoded:
            return
        if self.size is None:
            self.size = datum.channels * datum.height * datum.width
        elif len(datum.data) != self.size:
            raise Fatal('Check failed: data.size() == data_size (%d vs. %d) Incorrect data '
                        'field size %d (%s)' % (len(datum.data), self.size, len(datum.data), name))


def _encoding(name: str, encode_type: str, encoded: bool) -> str:
    """-encode_type, or with -encoded the type guessed from the file name (after its last
    dot; the whole name, with a warning, when it has none), as Caffe's convert_imageset."""
    if encode_type or not encoded:
        return encode_type
    dot = name.rfind('.')
    if dot < 0:
        _log.warning(_WHERE, "Failed to guess the encoding of '%s'" % name)
    return name[dot + 1:].lower()


def _body(argv: List[str]) -> int:
    flags = _flags()
    args = flags.parse(argv)
    if len(args) != 3:
        flags.show_usage()
        return 1
    root, list_file, db_name = args
    is_color = not flags.gray
    lines = read_list(list_file, int, 'label', names_with_spaces=True)
    height, width = max(0, flags.resize_height), max(0, flags.resize_width)

    def convert(line: Tuple[str, int]) -> Optional[Record]:
        name, label = line
        try:
            datum = read_image_to_datum(root + name, label, height, width, is_color,
                                        _encoding(name, flags.encode_type, flags.encoded))
        except ImageError:
            return None  # logged by the reader; Caffe skips the image
        return datum, datum.SerializeToString()

    convert_list(lines, convert, flags, db_name, _WHERE)
    return 0


def convert_list(lines: List[Tuple[str, Any]],
                 convert: Callable[[Tuple[str, Any]], Optional[Record]], flags: Flags,
                 db_name: str, where: str) -> None:
    """The converters' common part once the list is read: -shuffle, the counts logged, each
    line made a record by `convert` on the thread pool (None: skipped), -check_size, and the
    records stored in list order under `%08d_<image>` (the line number) in a new database of
    -backend, committed every 1000."""
    if flags.shuffle:
        _log.info(where, 'Shuffling data')
        random.shuffle(lines)
    _log.info(where, 'A total of %d images.' % len(lines))
    if flags.encode_type and not flags.encoded:
        _log.info(where, 'encode_type specified, assuming encoded=true.')
    check_size = _SizeCheck(flags.check_size)

    def records():
        for line_id, ((name, _), record) in enumerate(zip(lines, map_in_order(convert, lines))):
            if record is None:
                continue
            check_size(record[0], name)
            yield '%08d_%s' % (line_id, name), record[1]

    out = db.open_db(flags.backend, db_name, 'new')
    try:
        db.write_records(out, records(), where)
    finally:
        out.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_tool(_body, argv, _WHERE)
