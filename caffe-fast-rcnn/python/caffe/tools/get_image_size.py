"""get_image_size: the height and width of every image of a list, as SSD's
tools/get_image_size.cpp (data/VOC0712/create_list.sh makes test_name_size.txt with it).

    get_image_size [FLAGS] ROOTFOLDER/ LISTFILE OUTFILE

LISTFILE lines are `image annotation` (the second column is not used); OUTFILE gets one
`name height width` line per image, name being the image's file name without folder and
extension, or with -name_id_file (lines `name id`) its id. The file is written atomically.
An image that cannot be read (missing, truncated, not an image) stops the tool naming it.
Images are decoded on a thread per core.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _log, protoio
from ..cli import Fatal, Flags, read_list, run_tool
from ..image_datum import load_image
from ._in_order import map_in_order

_WHERE = 'get_image_size.cpp'
USAGE = ('Get sizes of a set of images.\nUsage:\n'
         '    get_image_size ROOTFOLDER/ LISTFILE OUTFILE\n')


def _flags() -> Flags:
    f = Flags('get_image_size', USAGE, 'tools/get_image_size.cpp')
    f.define('name_id_file', '', 'A file which maps image_name to image_id.')
    return f


def _size_of(path: str) -> Tuple[int, int]:
    return load_image(path).original


def _name_ids(path: str, list_file: str, count: int) -> Dict[str, int]:
    """name -> id of -name_id_file, which must list as many names as LISTFILE, each once."""
    name_id: Dict[str, int] = {}
    for name, ident in read_list(path, int, 'id'):
        if name in name_id:
            raise Fatal('%s: the name %s is listed twice' % (path, name))
        name_id[name] = ident
    if len(name_id) != count:
        raise Fatal('Check failed: map_name_id.size() == lines.size() (%d vs. %d): %s and %s '
                    'list different numbers of images' % (len(name_id), count, path, list_file))
    return name_id


def _body(argv: List[str]) -> int:
    flags = _flags()
    args = flags.parse(argv)
    if len(args) < 3:
        flags.show_usage()
        return 1
    root, list_file, out_file = args[:3]
    lines = read_list(list_file, str, 'label')
    _log.info(_WHERE, 'A total of %d images.' % len(lines))
    name_id = _name_ids(flags.name_id_file, list_file, len(lines)) if flags.name_id_file else {}
    paths = [os.path.join(root, image) for image, _ in lines]
    out = []
    for count, (path, (h, w)) in enumerate(zip(paths, map_in_order(_size_of, paths)), 1):
        name = os.path.splitext(os.path.basename(path))[0]
        if name_id:
            if name not in name_id:
                raise Fatal('%s: image %s is not in the name_id_file %s'
                            % (list_file, name, flags.name_id_file))
            name = str(name_id[name])
        out.append('%s %d %d\n' % (name, h, w))
        if count % 1000 == 0:
            _log.info(_WHERE, 'Processed %d files.' % count)
    if len(lines) % 1000 != 0:
        _log.info(_WHERE, 'Processed %d files.' % len(lines))
    try:
        protoio.atomic_write(out_file, ''.join(out).encode('utf-8'))
    except OSError as e:
        raise Fatal('Failed to open file: %s (%s)' % (out_file, e.strerror)) from None
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run get_image_size with `argv` (sys.argv[1:] when None); returns the exit status."""
    return run_tool(_body, argv, _WHERE)
