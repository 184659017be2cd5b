"""Detector-library test set-up: lib/ on sys.path, config isolation, tiny VOC folders."""
import os
import sys

import numpy as np
import pytest

_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    'lib')
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)


@pytest.fixture
def isolated_cfg(tmp_path):
    """Snapshot cfg, point DATA_DIR at a fresh folder, restore everything after."""
    from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot
    saved = cfg_snapshot()
    cfg.DATA_DIR = str(tmp_path / 'data')
    os.makedirs(cfg.DATA_DIR, exist_ok=True)
    try:
        yield cfg
    finally:
        cfg_restore(saved)


def _xml(width, height, objects):
    parts = ['<annotation><folder>VOC</folder><filename>x.jpg</filename>']
    if width:
        parts.append('<size><width>{}</width><height>{}</height><depth>3</depth></size>'
                     .format(width, height))
    for o in objects:
        name, box = o[0], o[1]
        difficult = o[2] if len(o) > 2 else 0
        parts.append('<object><name>{}</name><pose>Unspecified</pose><truncated>0</truncated>'
                     '<difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin>'
                     '<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>'.format(
                         name, difficult, *box))
    parts.append('</annotation>')
    return ''.join(parts)


def write_voc(devkit, year, images, splits):
    """Write a VOC folder.

    images: {image_id: (width, height, [(name, (xmin, ymin, xmax, ymax)[, difficult]), ...])}
    splits: {split: [image_id, ...]}
    """
    import cv2
    root = os.path.join(str(devkit), 'VOC' + str(year))
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        cv2.imwrite(os.path.join(root, 'JPEGImages', image_id + '.jpg'),
                    np.full((h, w, 3), 127, np.uint8))
        with open(os.path.join(root, 'Annotations', image_id + '.xml'), 'w') as f:
            f.write(_xml(w, h, objects))
    for split, ids in splits.items():
        with open(os.path.join(root, 'ImageSets', 'Main', split + '.txt'), 'w') as f:
            f.write(''.join(i + '\n' for i in ids))
    return root


@pytest.fixture
def tiny_cfg(tmp_path):
    """cfg for the tiny nets and images (80-pixel scales, one image, 8 RoIs per batch),
    outputs below tmp_path, a fixed seed; everything restored after."""
    import caffe
    from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot
    saved = cfg_snapshot()
    cfg.ROOT_DIR = str(tmp_path)          # get_output_dir writes below ROOT_DIR/output
    cfg.TEST.SCALES = (80,)
    cfg.TEST.MAX_SIZE = 200
    cfg.TRAIN.SCALES = (80,)
    cfg.TRAIN.MAX_SIZE = 200
    cfg.TRAIN.IMS_PER_BATCH = 1
    cfg.TRAIN.BATCH_SIZE = 8
    caffe.set_random_seed(1)
    try:
        yield cfg
    finally:
        cfg_restore(saved)


@pytest.fixture
def voc_writer():
    """The write_voc helper, as a fixture (test modules cannot import conftest)."""
    return write_voc
