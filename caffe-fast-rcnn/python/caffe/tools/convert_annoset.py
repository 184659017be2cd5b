"""convert_annoset: images and their annotations into a database of AnnotatedDatum, as SSD's
tools/convert_annoset.cpp.

    convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE lines are `image label` (-anno_type classification: an integer label) or
`image annotation-file` (-anno_type detection: an XML, JSON or TXT file as -label_type says,
its class names looked up in -label_map_file), paths relative to ROOTFOLDER. Records are
stored under the keys `%08d_<image path>` (the line number), committing every 1000. Images
are read as caffe.image_datum reads them (-gray, -resize_height/-resize_width, or
-min_dim/-max_dim keeping the aspect ratio) and stored raw, or encoded with -encode_type
(the file's own bytes when nothing had to change); -encoded alone guesses the type from the
file name as SSD does, keeping the dot, so that the image is always re-encoded.

Unlike convert_imageset, an image or annotation that cannot be used stops the tool with a
log line at level F naming the file (and the object), status 1. The images are read and
encoded, and the annotations parsed, on a thread per core; records are written in list
order.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _log
from ..annotation_io import read_rich_image
from ..cli import Fatal, Flags, read_list, run_tool
from ..errors import CaffeError
from ..image_datum import read_image_to_datum
from ..labelmap import map_name_to_label, read_label_map
from ..proto import caffe_pb2
from .convert_imageset import Record, convert_list, define_conversion_flags

_WHERE = 'convert_annoset.cpp'
USAGE = ('Convert a set of images and annotations to the leveldb/lmdb format used as input '
         'for Caffe.\nUsage:\n    convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n')


def _flags() -> Flags:
    f = Flags('convert_annoset', USAGE, 'tools/convert_annoset.cpp')
    define_conversion_flags(f)
    f.define('anno_type', 'classification', 'The type of annotation {classification, '
             'detection}.')
    f.define('label_type', 'xml', 'The type of annotation file format.')
    f.define('label_map_file', '', 'A file with LabelMap protobuf message.')
    f.define('check_label', False, 'When this option is on, check that there is no '
             'duplicated name/label.')
    f.define('min_dim', 0, 'Minimum dimension images are resized to (keep same aspect ratio)')
    f.define('max_dim', 0, 'Maximum dimension images are resized to (keep same aspect ratio)')
    return f


def _encoding(image: str, flags: Flags) -> str:
    """-encode_type, or with -encoded the type guessed from the file name as SSD guesses it:
    with the dot ('.jpg'), which never matches the file's type, so Caffe re-encodes."""
    if flags.encode_type or not flags.encoded:
        return flags.encode_type
    if '.' not in os.path.basename(image):
        _log.warning(_WHERE, "Failed to guess the encoding of '%s'" % image)
        return ''
    return image[image.rfind('.'):].lower()


class _Converter:
    """One list line into an AnnotatedDatum record (run on the pool's threads)."""

    def __init__(self, root: str, flags: Flags, name_to_label: Dict[str, int]):
        self.root, self.flags, self.name_to_label = root, flags, name_to_label
        self.size = (max(0, flags.resize_height), max(0, flags.resize_width),
                     not flags.gray, max(0, flags.min_dim), max(0, flags.max_dim))

    def __call__(self, line: Tuple[str, object]) -> Record:
        image, second = line
        path = self.root + image
        height, width, is_color, min_dim, max_dim = self.size
        encoding = _encoding(image, self.flags)
        if self.flags.anno_type == 'classification':
            ad = caffe_pb2.AnnotatedDatum()
            ad.datum.CopyFrom(read_image_to_datum(path, int(second), height, width, is_color,
                                                  encoding, min_dim, max_dim))
        else:
            ad = read_rich_image(path, self.root + str(second), height, width, min_dim,
                                 max_dim, is_color, encoding, self.flags.label_type,
                                 self.name_to_label)
        return ad.datum, ad.SerializeToString()


def _body(argv: List[str]) -> int:
    flags = _flags()
    args = flags.parse(argv)
    if len(args) < 3:
        flags.show_usage()
        return 1
    root, list_file, db_name = args[:3]
    anno_type = flags.anno_type
    if anno_type not in ('classification', 'detection'):
        raise Fatal('Unknown anno_type %r (classification or detection)' % anno_type)
    name_to_label: Dict[str, int] = {}
    if anno_type == 'classification':
        lines = read_list(list_file, int, 'label')
    else:
        if not flags.label_map_file:
            raise Fatal('Failed to read label map file: --label_map_file is empty')
        label_map = read_label_map(flags.label_map_file)
        try:
            name_to_label = map_name_to_label(label_map, flags.check_label, flags.label_map_file)
        except CaffeError as e:
            raise Fatal('Failed to convert name to label: %s' % e) from None
        lines = read_list(list_file, str, 'annotation file')
    convert_list(lines, _Converter(root, flags, name_to_label), flags, db_name, _WHERE)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run convert_annoset with `argv` (sys.argv[1:] when None); returns the exit status."""
    return run_tool(_body, argv, _WHERE)
