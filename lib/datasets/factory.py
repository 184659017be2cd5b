"""Get an imdb by name: ``get_imdb('voc_2007_trainval')``.

Registered names (those of py-faster-rcnn, plus the toy set):

* ``voc_<2007|2012>_<train|val|trainval|test>``: PASCAL VOC in DATA_DIR/VOCdevkit<year>
* ``coco_2014_<train|val|minival|valminusminival>``, ``coco_2015_<test|test-dev>``
* ``toy_2007_<train|val|trainval|test>``: the generated toy set in
  DATA_DIR/toy/VOCdevkit2007 (``python data/scripts/make_toy_dataset.py``);
  classes come from DATA_DIR/toy/classes.txt (one per line, label order), or,
  if that file is absent, the generator's default classes.

Names resolved on demand, no code needed:

* ``voc_custom_<name>_<split>``: a VOC-format data set described by
  ``DATA_DIR/custom/<name>.yml``::

      devkit_path: data/mydata/VOCdevkit   # relative paths are from the repo root
      year: '2007'                          # the folder <devkit_path>/VOC<year>
      classes: [cat, dog]                   # '__background__' is added in front
      # optional: image_ext: .png, use_diff: false, use_07_metric: true

  ``<split>`` is the name of a file ImageSets/Main/<split>.txt (no underscore);
  ``<name>`` may contain underscores.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, Dict, List

import yaml

from datasets.ds_utils import AnnotationError, read_class_list
from datasets.pascal_voc import pascal_voc
from fast_rcnn.config import cfg

__sets: Dict[str, Callable[[], Any]] = {}

_VOC_SPLITS = ['train', 'val', 'trainval', 'test']

# Set up voc_<year>_<split>
for year in ['2007', '2012']:
    for split in _VOC_SPLITS:
        name = 'voc_{}_{}'.format(year, split)
        __sets[name] = (lambda split=split, year=year: pascal_voc(split, year))


def _coco(split: str, year: str) -> Any:
    from datasets.coco import coco  # pycocotools is only needed for COCO
    return coco(split, year)


# Set up coco_2014_<split>
for year in ['2014']:
    for split in ['train', 'val', 'minival', 'valminusminival']:
        name = 'coco_{}_{}'.format(year, split)
        __sets[name] = (lambda split=split, year=year: _coco(split, year))

# Set up coco_2015_<split>
for year in ['2015']:
    for split in ['test', 'test-dev']:
        name = 'coco_{}_{}'.format(year, split)
        __sets[name] = (lambda split=split, year=year: _coco(split, year))


def _toy_classes(devkit: str, classes_file: str) -> List[str]:
    """Toy classes from classes.txt (written by the generator), in label order.

    Without that file the generator's default classes are used, falling back
    to the sorted object names of the annotations if the generator is absent.
    """
    if os.path.isfile(classes_file):
        return read_class_list(classes_file)
    try:
        from datasets.toy_generator import TOY_CLASSES
        return list(TOY_CLASSES)
    except ImportError:
        pass
    import xml.etree.ElementTree as ET
    names = set()
    for xml in glob.glob(os.path.join(devkit, 'VOC2007', 'Annotations', '*.xml')):
        try:
            names.update((o.findtext('name') or '').strip()
                         for o in ET.parse(xml).findall('object'))
        except ET.ParseError as exc:
            raise AnnotationError('{}: not a valid XML file ({})'.format(xml, exc)) from None
    names.discard('')
    names.discard('__background__')
    return sorted(names)


def _toy(split: str) -> pascal_voc:
    root = os.path.join(cfg.DATA_DIR, 'toy')
    devkit = os.path.join(root, 'VOCdevkit2007')
    hint = ('Make the toy data set first: `python data/scripts/make_toy_dataset.py` '
            '(it writes {}/VOC2007/{{JPEGImages,Annotations,ImageSets/Main}} and '
            '{}/classes.txt).'.format(devkit, root))
    classes = _toy_classes(devkit, os.path.join(root, 'classes.txt')) \
        if os.path.isdir(devkit) else None
    return pascal_voc(split, '2007', devkit_path=devkit, classes=classes or None,
                      name='toy_2007_' + split, setup_hint=hint)


for split in _VOC_SPLITS:
    __sets['toy_2007_' + split] = (lambda split=split: _toy(split))


_CUSTOM_RE = re.compile(r'^voc_custom_(?P<name>[A-Za-z0-9][\w.-]*)_(?P<split>[A-Za-z0-9.-]+)$')
_CUSTOM_KEYS = {'devkit_path', 'year', 'classes', 'image_ext', 'use_diff', 'use_07_metric'}


def _custom_dir() -> str:
    return os.path.join(cfg.DATA_DIR, 'custom')


def _custom(name: str, split: str) -> pascal_voc:
    """Build ``voc_custom_<name>_<split>`` from DATA_DIR/custom/<name>.yml."""
    spec_file = os.path.join(_custom_dir(), name + '.yml')
    if not os.path.isfile(spec_file):
        raise KeyError('Unknown dataset: voc_custom_{}_{}: no description file {} (write '
                       'one with keys devkit_path, year, classes)'.format(name, split,
                                                                         spec_file))
    with open(spec_file, 'r', encoding='utf-8') as f:
        try:
            spec = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError('{}: not valid YAML ({})'.format(spec_file, exc)) from None
    if not isinstance(spec, dict):
        raise ValueError('{}: expected a mapping with keys devkit_path, year, classes'
                         .format(spec_file))
    missing = sorted({'devkit_path', 'year', 'classes'} - set(spec))
    unknown = sorted(set(spec) - _CUSTOM_KEYS)
    if missing or unknown:
        raise ValueError('{}: {}{}'.format(
            spec_file, 'missing keys {} '.format(missing) if missing else '',
            'unknown keys {} (allowed: {})'.format(unknown, sorted(_CUSTOM_KEYS))
            if unknown else ''))
    classes = spec['classes']
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError('{}: classes must be a list of names, got {!r}'.format(
            spec_file, classes))
    devkit = os.path.expanduser(str(spec['devkit_path']))
    if not os.path.isabs(devkit):
        devkit = os.path.join(cfg.ROOT_DIR, devkit)
    hint = ('Check devkit_path/year in {} ; the data must be laid out as '
            '<devkit_path>/VOC<year>/{{JPEGImages,Annotations,ImageSets/Main}}.'.format(
                spec_file))
    imdb = pascal_voc(split, str(spec['year']), devkit_path=devkit, classes=classes,
                      name='voc_custom_{}_{}'.format(name, split),
                      image_ext=str(spec.get('image_ext', '.jpg')), setup_hint=hint)
    if 'use_diff' in spec:
        imdb.config['use_diff'] = bool(spec['use_diff'])
    if 'use_07_metric' in spec:
        imdb.config['use_07_metric'] = bool(spec['use_07_metric'])
    return imdb


def get_imdb(name: str) -> Any:
    """Get an imdb (image database) by name."""
    if name in __sets:
        return __sets[name]()
    m = _CUSTOM_RE.match(name)
    if m:
        return _custom(m.group('name'), m.group('split'))
    raise KeyError('Unknown dataset: {} (known: voc_<2007|2012>_<split>, coco_*, '
                   'toy_2007_<split>, or voc_custom_<name>_<split> with a description '
                   'in {}/<name>.yml; see list_imdbs())'.format(name, _custom_dir()))


def list_imdbs() -> List[str]:
    """List registered imdb names, plus voc_custom_* names for each YAML description."""
    names = list(__sets.keys())
    for spec in sorted(glob.glob(os.path.join(_custom_dir(), '*.yml'))):
        base = os.path.splitext(os.path.basename(spec))[0]
        names.extend('voc_custom_{}_{}'.format(base, s) for s in _VOC_SPLITS)
    return names
