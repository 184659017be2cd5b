"""fast_rcnn.config: defaults, YAML merging, --set lists, errors naming the key."""
import os

import numpy as np
import pytest

from fast_rcnn.config import (ConfigError, _merge_a_into_b, cfg, cfg_from_file,
                              cfg_from_list, get_output_dir)


def test_defaults_of_py_faster_rcnn_and_ohem_fork(isolated_cfg):
    assert cfg.TRAIN.SCALES == (600,)
    assert cfg.TRAIN.MAX_SIZE == 1000
    assert cfg.TRAIN.IMS_PER_BATCH == 2 and cfg.TRAIN.BATCH_SIZE == 128
    assert cfg.TRAIN.FG_FRACTION == 0.25 and cfg.TRAIN.FG_THRESH == 0.5
    assert (cfg.TRAIN.BG_THRESH_HI, cfg.TRAIN.BG_THRESH_LO) == (0.5, 0.1)
    assert cfg.TRAIN.BBOX_NORMALIZE_STDS == (0.1, 0.1, 0.2, 0.2)
    assert cfg.TRAIN.RPN_PRE_NMS_TOP_N == 12000 and cfg.TRAIN.RPN_POST_NMS_TOP_N == 2000
    assert cfg.TRAIN.RPN_POSITIVE_WEIGHT == -1.0
    assert cfg.TEST.NMS == 0.3 and cfg.TEST.RPN_POST_NMS_TOP_N == 300
    assert cfg.TRAIN.USE_OHEM is False
    assert cfg.TRAIN.OHEM_USE_NMS is True  # the OHEM fork's default
    assert cfg.TRAIN.OHEM_NMS_THRESH == 0.7
    assert cfg.DEDUP_BOXES == 1. / 16. and cfg.RNG_SEED == 3 and cfg.EPS == 1e-14
    np.testing.assert_allclose(cfg.PIXEL_MEANS, [[[102.9801, 115.9465, 122.7717]]])
    assert cfg.USE_GPU_NMS is True and cfg.GPU_ID == 0 and cfg.EXP_DIR == 'default'
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
    assert cfg.ROOT_DIR == root
    assert cfg.MODELS_DIR == os.path.join(root, 'models', 'pascal_voc')


def test_cfg_from_file_merges_and_converts(isolated_cfg, tmp_path):
    path = tmp_path / 'exp.yml'
    path.write_text('EXP_DIR: faster_rcnn_end2end\n'
                    'TRAIN:\n'
                    '  HAS_RPN: True\n'
                    '  SCALES: !!python/tuple [400, 500]\n'
                    '  MAX_SIZE: 800\n'
                    '  BBOX_NORMALIZE_STDS: [0.1, 0.1, 0.3, 0.3]\n'
                    '  FG_THRESH: 1\n'
                    'TEST:\n'
                    '  HAS_RPN: True\n'
                    'PIXEL_MEANS: [[[1, 2, 3]]]\n')
    cfg_from_file(str(path))
    assert cfg.EXP_DIR == 'faster_rcnn_end2end'
    assert cfg.TRAIN.HAS_RPN is True and cfg.TEST.HAS_RPN is True
    assert cfg.TRAIN.SCALES == (400, 500) and isinstance(cfg.TRAIN.SCALES, tuple)
    assert cfg.TRAIN.BBOX_NORMALIZE_STDS == (0.1, 0.1, 0.3, 0.3)
    assert cfg.TRAIN.FG_THRESH == 1.0 and isinstance(cfg.TRAIN.FG_THRESH, float)
    assert cfg.PIXEL_MEANS.dtype == np.float64 and cfg.PIXEL_MEANS.shape == (1, 1, 3)
    # untouched keys keep their defaults
    assert cfg.TRAIN.BATCH_SIZE == 128


def test_cfg_from_file_empty_file_is_a_no_op(isolated_cfg, tmp_path):
    path = tmp_path / 'empty.yml'
    path.write_text('')
    cfg_from_file(str(path))
    assert cfg.EXP_DIR == 'default'


def test_unknown_key_is_named_with_its_section(isolated_cfg, tmp_path):
    path = tmp_path / 'bad.yml'
    path.write_text('TRAIN:\n  SCALE: [600]\n')
    with pytest.raises(KeyError, match=r'TRAIN\.SCALE is not a valid config key.*bad\.yml'):
        cfg_from_file(str(path))


def test_type_mismatch_names_key_and_types(isolated_cfg, tmp_path):
    path = tmp_path / 'bad.yml'
    path.write_text('TRAIN:\n  BATCH_SIZE: lots\n')
    with pytest.raises(ConfigError, match=r'TRAIN\.BATCH_SIZE.*expected int.*got str'):
        cfg_from_file(str(path))
    with pytest.raises(ConfigError, match=r'TRAIN\.USE_FLIPPED.*expected bool'):
        _merge_a_into_b({'TRAIN': {'USE_FLIPPED': 1}}, cfg)
    with pytest.raises(ConfigError, match=r'TRAIN\.BATCH_SIZE.*expected int.*float'):
        _merge_a_into_b({'TRAIN': {'BATCH_SIZE': 1.5}}, cfg)
    with pytest.raises(ConfigError, match=r'TRAIN: is a section'):
        _merge_a_into_b({'TRAIN': 3}, cfg)


def test_unsafe_yaml_tags_are_refused(isolated_cfg, tmp_path):
    path = tmp_path / 'evil.yml'
    path.write_text('EXP_DIR: !!python/object/apply:os.system ["echo hacked"]\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        cfg_from_file(str(path))
    assert cfg.EXP_DIR == 'default'


def test_cfg_from_list(isolated_cfg):
    cfg_from_list(['EXP_DIR', 'foo', 'TRAIN.SCALES', '[400, 500]', 'TEST.NMS', '0.4',
                   'TRAIN.USE_FLIPPED', 'False', 'RNG_SEED', '7', 'TRAIN.SNAPSHOT_INFIX', '2007',
                   'TRAIN.RPN_POSITIVE_WEIGHT', '1'])
    assert cfg.EXP_DIR == 'foo'
    assert cfg.TRAIN.SCALES == (400, 500)
    assert cfg.TEST.NMS == 0.4
    assert cfg.TRAIN.USE_FLIPPED is False
    assert cfg.RNG_SEED == 7
    assert cfg.TRAIN.SNAPSHOT_INFIX == '2007'  # stays a string
    assert cfg.TRAIN.RPN_POSITIVE_WEIGHT == 1.0


def test_cfg_from_list_errors(isolated_cfg):
    with pytest.raises(ConfigError, match='odd number'):
        cfg_from_list(['EXP_DIR'])
    with pytest.raises(KeyError, match=r'TRAIN\.NOPE is not a valid config key'):
        cfg_from_list(['TRAIN.NOPE', '1'])
    with pytest.raises(KeyError, match=r'NOPE\.X is not a valid config key \(no section NOPE\)'):
        cfg_from_list(['NOPE.X', '1'])
    with pytest.raises(ConfigError, match=r'TRAIN\.BATCH_SIZE'):
        cfg_from_list(['TRAIN.BATCH_SIZE', 'many'])
    with pytest.raises(ConfigError, match='is a section'):
        cfg_from_list(['TRAIN', '1'])


def test_get_output_dir(isolated_cfg, tmp_path):
    class Named:
        def __init__(self, name):
            self.name = name
    cfg.ROOT_DIR = str(tmp_path)
    cfg.EXP_DIR = 'exp'
    out = get_output_dir(Named('voc_2007_test'))
    assert out == os.path.join(str(tmp_path), 'output', 'exp', 'voc_2007_test')
    assert os.path.isdir(out)
    out2 = get_output_dir(Named('voc_2007_test'), Named('vgg16'))
    assert out2 == os.path.join(out, 'vgg16') and os.path.isdir(out2)
    with pytest.raises(TypeError, match='name'):
        get_output_dir(Named('x'), Named(''))
