"""Files around SSD's detections: name-size lists, and the result files DetectionOutput
writes with `save_output_param` (Caffe's util/io and the writer in
detection_output_layer.cpp); label maps are caffe/labelmap.py's.

  name-size file one image per line: "name height width"
  VOC            one file per class, <prefix><class name>.txt, lines
                 "image score xmin ymin xmax ymax" (integer pixel corners)
  COCO           <prefix>.json, a list of {image_id, category_id, bbox [x, y, w, h], score}
                 laid out as SSD's Boost property-tree writer lays it out
  ILSVRC         <prefix>.txt, lines "image label score xmin ymin xmax ymax"

Boxes are rounded to 2 decimals as Caffe does, and the integer corners of VOC/ILSVRC
lines are x + w of the rounded, truncated values. Files are written atomically.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from . import protoio
from .errors import ParseError


def read_name_size_file(path: str) -> List[Tuple[str, int, int]]:
    """The (name, height, width) entries of a name-size file (whitespace separated)."""
    out: List[Tuple[str, int, int]] = []
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ParseError(path, 'Failed to open name size file: %s' % e.strerror) from None
    for no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ParseError(path, 'expected "name height width", got %r' % line, no, 1)
        try:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        except ValueError:
            raise ParseError(path, 'height and width must be integers, got %r' % line,
                             no, 1) from None
    return out


class Detection(NamedTuple):
    """One detection in original-image pixels, ready to be written."""
    image: str
    label: int
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _round2(x: float) -> np.float32:
    """round(x * 100) / 100 as Caffe computes it (half away from zero), kept as a float."""
    v = float(_f32(x) * _f32(100))
    r = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
    return _f32(r / 100.0)


def _box_xywh(d: Detection) -> Tuple[np.float32, np.float32, np.float32, np.float32]:
    return (_round2(d.xmin), _round2(d.ymin), _round2(_f32(d.xmax) - _f32(d.xmin)),
            _round2(_f32(d.ymax) - _f32(d.ymin)))


def _int_corners(d: Detection) -> Tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in _box_xywh(d))   # static_cast<int>: truncation
    return x, y, x + w, y + h


def _score_text(score: float) -> str:
    """A score as Caffe's `ostream << float` prints it after the property-tree round trip."""
    return '%g' % float(_f32(score))


def _ptree_number(x: float) -> str:
    """A float as Boost's property tree stores it (max_digits10 significant digits)."""
    return '%.9g' % float(_f32(x))


_NUMBER = re.compile(r'"(null|true|false|-?[0-9]+(\.[0-9]+)?)"')


def _json_string(s: str) -> str:
    """A quoted JSON string as Boost escapes it: '/' too, non-ASCII text left as UTF-8."""
    return json.dumps(s, ensure_ascii=False).replace('/', '\\/')


def coco_json(detections: Sequence[Detection], names: Dict[int, str]) -> str:
    """SSD's COCO result text: Boost's pretty JSON of {"detections": [...]}, all values
    strings, then numbers unquoted by a regex, then only the list kept."""
    items = []
    for d in detections:
        x, y, w, h = _box_xywh(d)
        bbox = ',\n'.join(' ' * 16 + _json_string(_ptree_number(v)) for v in (x, y, w, h))
        items.append('\n'.join([
            ' ' * 8 + '{',
            ' ' * 12 + '"image_id": %s,' % _json_string(d.image),
            ' ' * 12 + '"category_id": %s,' % _json_string(names[d.label]),
            ' ' * 12 + '"bbox": [',
            bbox,
            ' ' * 12 + '],',
            ' ' * 12 + '"score": %s' % _json_string(_ptree_number(d.score)),
            ' ' * 8 + '}']))
    if not items:
        return '[\n]\n'
    text = '[\n' + ',\n'.join(items) + '\n    \n]\n'
    return _NUMBER.sub(r'\1', text)


def voc_files(detections: Sequence[Detection], names: Dict[int, str], classes: Sequence[int],
              prefix: str) -> Dict[str, str]:
    """File name -> text of the per-class VOC result files (every class gets a file)."""
    out = {prefix + names[c] + '.txt': [] for c in classes}
    for d in detections:
        fname = prefix + names.get(d.label, '') + '.txt'
        if fname not in out:
            continue
        x1, y1, x2, y2 = _int_corners(d)
        out[fname].append('%s %s %d %d %d %d\n' % (d.image, _score_text(d.score), x1, y1, x2, y2))
    return {k: ''.join(v) for k, v in out.items()}


def ilsvrc_text(detections: Sequence[Detection]) -> str:
    lines = []
    for d in detections:
        x1, y1, x2, y2 = _int_corners(d)
        lines.append('%s %d %s %d %d %d %d\n' % (d.image, d.label, _score_text(d.score),
                                                x1, y1, x2, y2))
    return ''.join(lines)


def _write(directory: str, fname: str, text: str) -> None:
    protoio.atomic_write(os.path.join(directory, fname), text.encode())


def clear_voc_files(directory: str, prefix: str, class_names: Sequence[str]) -> None:
    """Empty the VOC result file of each class name (what a new test pass starts with)."""
    for name in class_names:
        _write(directory, prefix + name + '.txt', '')


def write_voc(directory, prefix, detections, names, classes) -> None:
    for fname, text in voc_files(detections, names, classes, prefix).items():
        _write(directory, fname, text)


def write_coco(directory, prefix, detections, names, classes) -> None:
    _write(directory, prefix + '.json', coco_json(detections, names))


def write_ilsvrc(directory, prefix, detections, names, classes) -> None:
    _write(directory, prefix + '.txt', ilsvrc_text(detections))


WRITERS: Dict[str, Callable] = {'VOC': write_voc, 'COCO': write_coco, 'ILSVRC': write_ilsvrc}
