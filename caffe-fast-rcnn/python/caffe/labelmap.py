"""SSD's label maps: the LabelMap prototxt that names each class of a detection data set.

A label map lists items `{ name, label, display_name }`: `name` is what annotation files call
the class (a VOC class name, or a COCO category id such as "1"), `label` the integer the nets
use (0 is the background, "none_of_the_above"), `display_name` what pictures and result files
print. These helpers read one and build the look-ups Caffe's util/io.cpp builds
(MapNameToLabel, MapLabelToName, MapLabelToDisplayName); with `strict` a repeated key is an
error naming the file, as in Caffe.
"""
from __future__ import annotations

from typing import Dict

from . import protoio
from .errors import ParseError
from .proto import caffe_pb2


def read_label_map(path: str) -> caffe_pb2.LabelMap:
    """The LabelMap in the prototxt file `path`; a missing or malformed file is a ParseError
    naming it (with line and column)."""
    return protoio.read_text(path, caffe_pb2.LabelMap)


def _mapping(label_map: caffe_pb2.LabelMap, strict: bool, path: str, key: str,
             value: str) -> dict:
    out: dict = {}
    for item in label_map.item:
        k, v = getattr(item, key), getattr(item, value)
        if strict and k in out:
            raise ParseError(path or '<label map>', 'There are many duplicates of %s %s (%r and '
                             '%r)' % (key, k, out[k], v))
        out[k] = v
    return out


def map_name_to_label(label_map: caffe_pb2.LabelMap, strict: bool = False,
                      path: str = '') -> Dict[str, int]:
    """name -> label (Caffe's MapNameToLabel)."""
    return _mapping(label_map, strict, path, 'name', 'label')


def map_label_to_name(label_map: caffe_pb2.LabelMap, strict: bool = False,
                      path: str = '') -> Dict[int, str]:
    """label -> name (Caffe's MapLabelToName)."""
    return _mapping(label_map, strict, path, 'label', 'name')


def map_label_to_display_name(label_map: caffe_pb2.LabelMap, strict: bool = False,
                              path: str = '') -> Dict[int, str]:
    """label -> display_name (Caffe's MapLabelToDisplayName)."""
    return _mapping(label_map, strict, path, 'label', 'display_name')

