"""Images and detection annotations into AnnotatedDatum, as SSD's util/io.cpp makes them for
convert_annoset (ReadRichImageToAnnotatedDatum and the XML / JSON / TXT readers).

An AnnotatedDatum holds the picture (a Datum: the file's own bytes, or re-encoded, or raw
pixels; label -1 for detection) and the boxes grouped by class: one AnnotationGroup per label
in order of first appearance, each annotation with an instance id counting up from 0 within
its group, and a NormalizedBBox (pixel coordinates divided by the image's width and height,
in float32 as Caffe computes them) with the difficult flag.

Annotation formats (the `label_type` of convert_annoset):

* xml: PASCAL VOC. `annotation/size/{width,height}` normalises (the image's own size when
  missing), each `object` has `name` (looked up in the label map), `difficult` (1 = yes) and
  `bndbox/{xmin,ymin,xmax,ymax}` in pixels;
* json: one image of MS COCO as SSD's split files hold it: `image/{width,height}`, and an
  `annotation` list of `{category_id, bbox: [x, y, w, h], iscrowd}` (category ids looked up as
  names in the label map, iscrowd stored as difficult);
* txt: lines `label xmin ymin xmax ymax` (label used as is), normalised by the image's size.

Problems stop with an AnnotationError naming the file (and object): a class the label map
lacks, a box with xmax < xmin or ymax < ymin, a malformed file (an image that cannot be read
is caffe.image_datum's ImageError). Boxes outside the image and
sizes that disagree with the image are logged as warnings, as SSD does.

Deliberate differences from SSD, all on input SSD mishandles: an inverted box stops the
conversion (SSD warns "bounding box irregular" and stores it); a VOC corner written with
decimals is truncated (SSD's integer read fails and stores 0); `difficult` counts wherever it
stands in the object (SSD applies it only when it comes before `bndbox`, as in VOC's files);
an object without `name` or `bndbox` is an error (SSD crashes); a missing annotation file is
logged as a warning (SSD silently stores the image without boxes, as here).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _log
from .errors import CaffeError
from .image_datum import image_datum, load_image
from .proto import caffe_pb2

_IO = 'io.cpp'


class AnnotationError(CaffeError):
    """An annotation file that cannot be converted."""


# One annotated object: (label, xmin, ymin, xmax, ymax, difficult), in pixels.
Object = Tuple[int, float, float, float, float, bool]


def _check_box(path: str, what: str, box: Tuple[float, float, float, float],
               width: float, height: float) -> None:
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise AnnotationError('%s: %s: bounding box irregular (xmin %g, ymin %g, xmax %g, '
                              'ymax %g): xmax < xmin or ymax < ymin' % (path, what, x0, y0, x1, y1))
    if min(x0, y0, x1, y1) < 0 or max(x0, x1) > width or max(y0, y1) > height:
        _log.warning(_IO, '%s bounding box exceeds image boundary.' % path)


def _image_size(path: str, given: Tuple[Optional[str], Optional[str]], img_h: int, img_w: int,
                error: Optional[str]) -> Tuple[int, int]:
    """(height, width) to normalise by: the file's, else the image's; warnings as SSD's."""
    try:
        if error:
            raise ValueError(error)
        height, width = int(float(given[0])), int(float(given[1]))
    except (TypeError, ValueError) as e:
        _log.warning(_IO, 'When parsing %s: %s' % (path, e))
        height, width = img_h, img_w
    if height != img_h:
        _log.warning(_IO, '%s inconsistent image height.' % path)
    if width != img_w:
        _log.warning(_IO, '%s inconsistent image width.' % path)
    if width == 0 or height == 0:
        raise AnnotationError('%s no valid image width/height.' % path)
    return height, width


def _number(node: Optional[ET.Element], path: str, what: str) -> float:
    text = (node.text or '').strip() if node is not None else ''
    try:
        return float(text) if text else 0.0
    except ValueError:
        raise AnnotationError('%s: %s: %r is not a number' % (path, what, text)) from None


def read_xml(path: str, img_h: int, img_w: int, name_to_label: Dict[str, int]
             ) -> Tuple[int, int, List[Object]]:
    """(height, width, objects) of a PASCAL VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise AnnotationError('%s: cannot parse the XML annotation: %s' % (path, e)) from None
    size = root.find('size')
    given = (size.findtext('height'), size.findtext('width')) if size is not None else (None, None)
    missing = None if size is not None and None not in given else 'No such node (size)'
    height, width = _image_size(path, given, img_h, img_w, missing)
    objects: List[Object] = []
    for number, obj in enumerate(root.findall('object')):
        name = obj.findtext('name')
        what = 'object %d (%s)' % (number, name)
        if name is None:
            raise AnnotationError('%s: object %d has no <name>' % (path, number))
        name = name.strip()
        if name not in name_to_label:
            raise AnnotationError('%s: object %d: Unknown name: %s (not in the label map)'
                                  % (path, number, name))
        difficult = (obj.findtext('difficult') or '').strip() == '1'
        bnd = obj.find('bndbox')
        if bnd is None:
            raise AnnotationError('%s: %s has no <bndbox>' % (path, what))
        # SSD reads the corners as integers (pixel indices); decimals are truncated.
        box = tuple(float(int(_number(bnd.find(k), path, '%s %s' % (what, k))))
                    for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        _check_box(path, what, box, width, height)
        objects.append((name_to_label[name],) + box + (difficult,))
    return height, width, objects


def read_json(path: str, img_h: int, img_w: int, name_to_label: Dict[str, int]
              ) -> Tuple[int, int, List[Object]]:
    """(height, width, objects) of one image's MS COCO annotation (SSD's split format)."""
    try:
        with open(path, 'r', encoding='utf-8') as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise AnnotationError('%s: cannot parse the JSON annotation: %s' % (path, e)) from None
    image = doc.get('image') if isinstance(doc, dict) else None
    given = (image.get('height'), image.get('width')) if isinstance(image, dict) else (None, None)
    missing = None if None not in given else 'No such node (image.height / image.width)'
    height, width = _image_size(path, tuple(None if g is None else str(g) for g in given),
                                img_h, img_w, missing)
    objects: List[Object] = []
    for number, obj in enumerate(doc.get('annotation', []) if isinstance(doc, dict) else []):
        cat = obj.get('category_id')
        name = str(int(cat)) if isinstance(cat, (int, float)) else str(cat)
        what = 'annotation %d (category %s)' % (number, name)
        if name not in name_to_label:
            raise AnnotationError('%s: %s: Unknown name: %s (not in the label map)'
                                  % (path, what, name))
        bbox = obj.get('bbox')
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AnnotationError('%s: %s: bbox must hold 4 numbers, got %r' % (path, what, bbox))
        x, y, w, h = (np.float32(v) for v in bbox)
        box = (float(x), float(y), float(x + w), float(y + h))
        _check_box(path, what, box, width, height)
        objects.append((name_to_label[name],) + box + (bool(obj.get('iscrowd', 0)),))
    return height, width, objects


def read_txt(path: str, img_h: int, img_w: int, name_to_label: Dict[str, int]
             ) -> Tuple[int, int, List[Object]]:
    """(height, width, objects) of a plain `label xmin ymin xmax ymax` file."""
    try:
        with open(path, 'r') as f:
            tokens = f.read().split()
    except OSError as e:
        raise AnnotationError('Cannot open %s: %s' % (path, e.strerror)) from None
    objects: List[Object] = []
    for number in range(len(tokens) // 5):
        fields = tokens[number * 5:number * 5 + 5]
        what = 'line %d' % (number + 1)
        try:
            label, box = int(fields[0]), tuple(float(v) for v in fields[1:])
        except ValueError:
            raise AnnotationError('%s: %s: expected "label xmin ymin xmax ymax", got %r'
                                  % (path, what, ' '.join(fields))) from None
        _check_box(path, what, box, img_w, img_h)
        objects.append((label,) + box + (False,))
    return img_h, img_w, objects


READERS: Dict[str, Callable[..., Tuple[int, int, List[Object]]]] = {
    'xml': read_xml, 'json': read_json, 'txt': read_txt,
}


def fill_annotation_groups(anno_datum: caffe_pb2.AnnotatedDatum, objects: List[Object],
                           height: int, width: int) -> None:
    """Group `objects` by label into `anno_datum` with instance ids and normalised boxes."""
    groups: Dict[int, caffe_pb2.AnnotationGroup] = {}
    h, w = np.float32(height), np.float32(width)
    for label, x0, y0, x1, y1, difficult in objects:
        group = groups.get(label)
        if group is None:
            group = groups[label] = anno_datum.annotation_group.add(group_label=label)
            instance = 0
        else:
            instance = group.annotation[-1].instance_id + 1
        b = group.annotation.add(instance_id=instance).bbox
        b.xmin, b.ymin = float(np.float32(x0) / w), float(np.float32(y0) / h)
        b.xmax, b.ymax = float(np.float32(x1) / w), float(np.float32(y1) / h)
        b.difficult = bool(difficult)


def read_rich_image(path: str, label_path: str, height: int, width: int, min_dim: int,
                    max_dim: int, is_color: bool, encoding: str, label_type: str,
                    name_to_label: Dict[str, int]) -> caffe_pb2.AnnotatedDatum:
    """Caffe's ReadRichImageToAnnotatedDatum for BBOX annotations: the image as
    ReadImageToDatum makes it (label -1; see caffe.image_datum) and the boxes of
    `label_path`, normalised by the original image's size (none when that file does not
    exist, as in SSD)."""
    reader = READERS.get(label_type)
    if reader is None:
        raise AnnotationError('Unknown label file type %r (expected xml, json or txt)'
                              % label_type)
    loaded = load_image(path, height, width, is_color, min_dim, max_dim)
    ad = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    ad.datum.CopyFrom(image_datum(loaded, path, -1, encoding, is_color,
                                  bool(height or width or min_dim or max_dim)))
    if not os.path.exists(label_path):
        _log.warning(_IO, 'annotation file %s does not exist: the image has no boxes'
                     % label_path)
        return ad
    h, w, objects = reader(label_path, *loaded.original, name_to_label)
    fill_annotation_groups(ad, objects, h, w)
    return ad
