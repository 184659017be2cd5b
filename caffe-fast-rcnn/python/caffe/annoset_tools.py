"""SSD's data-preparation tools: `convert_annoset` and `get_image_size` (Caffe's
tools/convert_annoset.cpp and tools/get_image_size.cpp), with their gflags-style flags and
glog-style log lines. `build/tools/convert_annoset` and `build/tools/get_image_size` run
them (`python -m caffe.annoset_tools convert_annoset|get_image_size ...`).

    convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME
    get_image_size [FLAGS] ROOTFOLDER/ LISTFILE OUTFILE

LISTFILE lines are `image label` (classification: an integer label; detection: the
annotation file), paths relative to ROOTFOLDER. convert_annoset writes an LMDB of serialised
AnnotatedDatum under keys `%08d_<image path>` (the line number), committing every 1000 records;
get_image_size writes `name height width` lines (or `id height width` with --name_id_file).

The decoding and encoding of images (OpenCV) and the parsing of annotation files run on a
pool of threads, one per core, while the main thread writes the records in list order; the
database is written by the C library behind the `lmdb` package. Problems a user can cause stop
the tool with a log line at level F naming the file or the line, and exit status 1.
"""
from __future__ import annotations

import concurrent.futures as futures
import os
import random
import sys
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _log
from .annotation_io import image_to_datum, read_image, read_rich_image
from .errors import CaffeError
from .labelmap import map_name_to_label, read_label_map
from .proto import caffe_pb2
from . import protoio

_CONVERT = 'convert_annoset.cpp'
_SIZES = 'get_image_size.cpp'
_COMMIT_EVERY = 1000


class ToolError(CaffeError):
    """A fatal problem of a tool run (logged at level F)."""


# ---- gflags-style flags ------------------------------------------------------------------------

class Flag:
    """One command-line flag: its type (bool, int or str), default and help text."""

    def __init__(self, kind: type, default, help: str):
        self.kind, self.default, self.help = kind, default, help


_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')


def parse_flags(argv: Sequence[str], flags: Dict[str, Flag]) -> Tuple[dict, List[str]]:
    """gflags' parsing: `--name=value`, `-name=value`, `--name value`, boolean `--name` and
    `--noname`, flags and positional arguments in any order, `--` ending the flags."""
    values = {name: f.default for name, f in flags.items()}
    positional: List[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == '--':
            positional.extend(args[i:])
            break
        if not a.startswith('-') or a == '-':
            positional.append(a)
            continue
        name, eq, value = a.lstrip('-').partition('=')
        flag = flags.get(name)
        if flag is None and name.startswith('no') and not eq and \
                flags.get(name[2:]) is not None and flags[name[2:]].kind is bool:
            values[name[2:]] = False
            continue
        if flag is None:
            raise ToolError("ERROR: unknown command line flag '%s'" % name)
        if flag.kind is bool:
            if not eq:
                values[name] = True
                continue
            if value.lower() in _TRUE:
                values[name] = True
            elif value.lower() in _FALSE:
                values[name] = False
            else:
                raise ToolError("ERROR: illegal value '%s' specified for bool flag '%s'"
                                % (value, name))
            continue
        if not eq:
            if i >= len(args):
                raise ToolError("ERROR: flag '%s' is missing its argument" % name)
            value = args[i]
            i += 1
        try:
            values[name] = flag.kind(value)
        except ValueError:
            raise ToolError("ERROR: illegal value '%s' specified for %s flag '%s'"
                            % (value, flag.kind.__name__, name)) from None
    return values, positional


def _usage(prog: str, message: str, flags: Dict[str, Flag]) -> str:
    lines = ['%s: %s' % (prog, message), '', '  Flags from tools/%s.cpp:' % prog]
    for name, f in flags.items():
        default = ('"%s"' % f.default) if f.kind is str else str(f.default).lower()
        lines.append('    -%s (%s) type: %s default: %s'
                     % (name, f.help, {bool: 'bool', int: 'int32', str: 'string'}[f.kind],
                        default))
    return '\n'.join(lines)


def _run(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """Run a tool body; a ToolError or CaffeError is logged at level F (status 1)."""
    try:
        return body(argv)
    except (ToolError, CaffeError) as e:
        _log.log('F', prog + '.cpp', str(e))
        return 1


# ---- list files --------------------------------------------------------------------------------

def read_list(path: str, second: Callable[[str], object], what: str
              ) -> List[Tuple[str, object]]:
    """`image second` lines of a list file; a line without two columns stops naming the file
    and the line (Caffe's `infile >> a >> b` would silently stop reading there)."""
    try:
        with open(path, 'r') as f:
            text = f.read()
    except OSError as e:
        raise ToolError('Failed to open file: %s (%s)' % (path, e.strerror)) from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ToolError('%s:%d: expected "<image> <%s>" (2 columns), got %d: %r'
                            % (path, number, what, len(parts), line))
        try:
            lines.append((parts[0], second(parts[1])))
        except ValueError:
            raise ToolError('%s:%d: the %s %r is not valid' % (path, number, what, parts[1])) \
                from None
    return lines


def _in_order(pool: futures.Executor, fn: Callable, items: Sequence, chunk: int) -> Iterable:
    """fn over items on the pool, results in order, at most `chunk` jobs ahead."""
    pending: List[futures.Future] = []
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= chunk:
            break
    for item in it:
        yield pending.pop(0).result()
        pending.append(pool.submit(fn, item))
    for f in pending:
        yield f.result()


# ---- convert_annoset ---------------------------------------------------------------------------

CONVERT_FLAGS: Dict[str, Flag] = {
    'gray': Flag(bool, False, 'When this option is on, treat images as grayscale ones'),
    'shuffle': Flag(bool, False, 'Randomly shuffle the order of images and their labels'),
    'backend': Flag(str, 'lmdb', 'The backend {lmdb, leveldb} for storing the result'),
    'anno_type': Flag(str, 'classification', 'The type of annotation {classification, '
                      'detection}.'),
    'label_type': Flag(str, 'xml', 'The type of annotation file format.'),
    'label_map_file': Flag(str, '', 'A file with LabelMap protobuf message.'),
    'check_label': Flag(bool, False, 'When this option is on, check that there is no '
                        'duplicated name/label.'),
    'min_dim': Flag(int, 0, 'Minimum dimension images are resized to (keep same aspect ratio)'),
    'max_dim': Flag(int, 0, 'Maximum dimension images are resized to (keep same aspect ratio)'),
    'resize_width': Flag(int, 0, 'Width images are resized to'),
    'resize_height': Flag(int, 0, 'Height images are resized to'),
    'check_size': Flag(bool, False, 'When this option is on, check that all the datum have the '
                       'same size'),
    'encoded': Flag(bool, False, 'When this option is on, the encoded image will be save in '
                    'datum'),
    'encode_type': Flag(str, '', "Optional: What type should we encode the image as "
                        "('png','jpg',...)."),
}


class _LmdbWriter:
    """A new LMDB written in batches of puts; the memory map grows when it fills up."""

    def __init__(self, path: str):
        import lmdb
        self._lmdb = lmdb
        if os.path.exists(path):
            raise ToolError('mkdir %s failed (it exists; remove it or use create_annoset.py '
                            '--redo)' % path)
        os.makedirs(path)
        self.map_size = 1 << 30
        self.env = lmdb.open(path, map_size=self.map_size, subdir=True, meminit=False,
                             map_async=True)
        _log.info('db_lmdb.cpp', 'Opened lmdb %s' % path)

    def commit(self, items: List[Tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                return
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()


def _convert_one(job: tuple) -> Tuple[bytes, caffe_pb2.Datum]:
    """(serialised AnnotatedDatum, its Datum) of one list line (runs on a pool thread)."""
    (image, second), cfg = job
    path = cfg['root'] + image
    if cfg['anno_type'] == 'classification':
        img, raw, _ = read_image(path, cfg['resize_height'], cfg['resize_width'], cfg['min_dim'],
                                 cfg['max_dim'], cfg['is_color'])
        ad = caffe_pb2.AnnotatedDatum()
        resized = cfg['min_dim'] > 0 or cfg['max_dim'] > 0 or \
            (cfg['resize_height'] > 0 and cfg['resize_width'] > 0)
        image_to_datum(ad.datum, path, img, raw, cfg['encoding'], cfg['exact_type'], resized,
                       cfg['is_color'], int(second))
    else:
        ad = read_rich_image(path, cfg['root'] + second, cfg['resize_height'],
                             cfg['resize_width'], cfg['min_dim'], cfg['max_dim'],
                             cfg['is_color'], cfg['encoding'], cfg['exact_type'],
                             cfg['label_type'], cfg['name_to_label'])
    return ad.SerializeToString(), ad.datum


def _encoding(image: str, flags: dict) -> Tuple[str, bool]:
    """(encoding, given explicitly): --encode_type, or guessed from the file name with
    --encoded (Caffe then re-encodes: the guess keeps the dot, so it never matches)."""
    if flags['encode_type']:
        return flags['encode_type'], True
    if not flags['encoded']:
        return '', False
    if '.' not in os.path.basename(image):
        _log.warning(_CONVERT, "Failed to guess the encoding of '%s'" % image)
        return '', False
    return image.rsplit('.', 1)[1].lower(), False


def convert_annoset_body(argv: Sequence[str]) -> int:
    flags, args = parse_flags(argv, CONVERT_FLAGS)
    if len(args) < 3:
        sys.stderr.write(_usage('convert_annoset', 'Convert a set of images and annotations to '
                                'the leveldb/lmdb format used as input for Caffe.\nUsage:\n'
                                '    convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME',
                                CONVERT_FLAGS) + '\n')
        return 1
    root, list_file, db_name = args[:3]
    anno_type = flags['anno_type']
    if anno_type not in ('classification', 'detection'):
        raise ToolError('Unknown anno_type %r (classification or detection)' % anno_type)
    if flags['backend'] != 'lmdb':
        raise ToolError('backend %r is not supported: use lmdb' % flags['backend'])
    name_to_label: Dict[str, int] = {}
    if anno_type == 'classification':
        lines = read_list(list_file, int, 'label')
    else:
        if not flags['label_map_file']:
            raise ToolError('Failed to read label map file: --label_map_file is empty')
        label_map = read_label_map(flags['label_map_file'])
        try:
            name_to_label = map_name_to_label(label_map, flags['check_label'],
                                              flags['label_map_file'])
        except CaffeError as e:
            raise ToolError('Failed to convert name to label: %s' % e) from None
        lines = read_list(list_file, str, 'annotation file')
    if flags['shuffle']:
        _log.info(_CONVERT, 'Shuffling data')
        random.shuffle(lines)
    _log.info(_CONVERT, 'A total of %d images.' % len(lines))
    if flags['encode_type'] and not flags['encoded']:
        _log.info(_CONVERT, 'encode_type specified, assuming encoded=true.')
    base = {
        'root': root, 'anno_type': anno_type, 'label_type': flags['label_type'],
        'name_to_label': name_to_label, 'is_color': not flags['gray'],
        'min_dim': max(0, flags['min_dim']), 'max_dim': max(0, flags['max_dim']),
        'resize_height': max(0, flags['resize_height']),
        'resize_width': max(0, flags['resize_width']),
    }

    def job(line):
        cfg = dict(base)
        cfg['encoding'], cfg['exact_type'] = _encoding(line[0], flags)
        return line, cfg

    writer = _LmdbWriter(db_name)
    count, data_size, batch = 0, None, []
    workers = max(1, os.cpu_count() or 1)
    try:
        with futures.ThreadPoolExecutor(workers) as pool:
            results = _in_order(pool, _convert_one, [job(l) for l in lines], 4 * workers)
            for line_id, (value, datum) in enumerate(results):
                if flags['check_size']:
                    size = datum.channels * datum.height * datum.width
                    if data_size is None:
                        data_size = size
                    elif len(datum.data) != data_size:
                        raise ToolError('Check failed: data.size() == data_size (%d vs. %d) '
                                        'Incorrect data field size %d (%s)'
                                        % (len(datum.data), data_size, len(datum.data),
                                           lines[line_id][0]))
                key = ('%08d_%s' % (line_id, lines[line_id][0])).encode('utf-8')
                batch.append((key, value))
                count += 1
                if count % _COMMIT_EVERY == 0:
                    writer.commit(batch)
                    batch = []
                    _log.info(_CONVERT, 'Processed %d files.' % count)
        if count % _COMMIT_EVERY != 0:
            writer.commit(batch)
            _log.info(_CONVERT, 'Processed %d files.' % count)
    finally:
        writer.close()
    return 0


def convert_annoset(argv: Optional[Sequence[str]] = None) -> int:
    """Run convert_annoset with `argv` (without the program name); returns the exit status."""
    return _run('convert_annoset', convert_annoset_body, sys.argv[1:] if argv is None else argv)


# ---- get_image_size ----------------------------------------------------------------------------

SIZE_FLAGS: Dict[str, Flag] = {
    'name_id_file': Flag(str, '', 'A file which maps image_name to image_id.'),
}


def _size_of(path: str) -> Tuple[int, int]:
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        _log.error('io.cpp', 'Could not open or find file %s' % path)
        raise ToolError('Could not open or find file %s' % path)
    return img.shape[0], img.shape[1]


def get_image_size_body(argv: Sequence[str]) -> int:
    flags, args = parse_flags(argv, SIZE_FLAGS)
    if len(args) < 3:
        sys.stderr.write(_usage('get_image_size', 'Get sizes of a set of images.\nUsage:\n'
                                '    get_image_size ROOTFOLDER/ LISTFILE OUTFILE',
                                SIZE_FLAGS) + '\n')
        return 1
    root, list_file, out_file = args[:3]
    lines = read_list(list_file, str, 'label')
    _log.info(_SIZES, 'A total of %d images.' % len(lines))
    name_id: Dict[str, int] = {}
    if flags['name_id_file']:
        for name, ident in read_list(flags['name_id_file'], int, 'id'):
            if name in name_id:
                raise ToolError('%s: the name %s is listed twice' % (flags['name_id_file'], name))
            name_id[name] = ident
        if len(name_id) != len(lines):
            raise ToolError('Check failed: map_name_id.size() == lines.size() (%d vs. %d): %s '
                            'and %s list different numbers of images'
                            % (len(name_id), len(lines), flags['name_id_file'], list_file))
    paths = [os.path.join(root, image) for image, _ in lines]
    out = []
    workers = max(1, os.cpu_count() or 1)
    with futures.ThreadPoolExecutor(workers) as pool:
        for count, (path, (h, w)) in enumerate(zip(paths, _in_order(pool, _size_of, paths,
                                                                    4 * workers)), 1):
            name = os.path.splitext(os.path.basename(path))[0]
            if name_id:
                if name not in name_id:
                    raise ToolError('%s: image %s is not in the name_id_file %s'
                                    % (list_file, name, flags['name_id_file']))
                name = str(name_id[name])
            out.append('%s %d %d\n' % (name, h, w))
            if count % 1000 == 0:
                _log.info(_SIZES, 'Processed %d files.' % count)
    if len(lines) % 1000 != 0:
        _log.info(_SIZES, 'Processed %d files.' % len(lines))
    try:
        protoio.atomic_write(out_file, ''.join(out).encode('utf-8'))
    except OSError as e:
        raise ToolError('Failed to open file: %s (%s)' % (out_file, e.strerror)) from None
    return 0


def get_image_size(argv: Optional[Sequence[str]] = None) -> int:
    """Run get_image_size with `argv` (without the program name); returns the exit status."""
    return _run('get_image_size', get_image_size_body, sys.argv[1:] if argv is None else argv)


TOOLS: Dict[str, Callable[[Optional[Sequence[str]]], int]] = {
    'convert_annoset': convert_annoset,
    'get_image_size': get_image_size,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m caffe.annoset_tools TOOL [FLAGS] ARGS`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in TOOLS:
        sys.stderr.write('usage: python -m caffe.annoset_tools {%s} [FLAGS] ARGS\n'
                         % ','.join(TOOLS))
        return 1
    return TOOLS[argv[0]](argv[1:])


if __name__ == '__main__':
    sys.exit(main())
