"""datasets.factory: original names, toy names, voc_custom_* from YAML."""
import os

import numpy as np
import pytest

from datasets.factory import get_imdb, list_imdbs


def test_original_names_are_registered():
    names = set(list_imdbs())
    for year in ('2007', '2012'):
        for split in ('train', 'val', 'trainval', 'test'):
            assert 'voc_{}_{}'.format(year, split) in names
    for n in ('coco_2014_train', 'coco_2014_val', 'coco_2014_minival',
              'coco_2014_valminusminival', 'coco_2015_test', 'coco_2015_test-dev'):
        assert n in names
    for split in ('train', 'val', 'trainval', 'test'):
        assert 'toy_2007_' + split in names


def test_unknown_name():
    with pytest.raises(KeyError, match='Unknown dataset: voc_2099_train'):
        get_imdb('voc_2099_train')


def test_voc_name_without_data_explains_setup(isolated_cfg):
    with pytest.raises(FileNotFoundError, match='VOCdevkit2007'):
        get_imdb('voc_2007_test')


def _write_yaml(cfg, name, text):
    folder = os.path.join(cfg.DATA_DIR, 'custom')
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + '.yml'), 'w') as f:
        f.write(text)


def test_voc_custom_from_yaml(isolated_cfg, tmp_path, voc_writer):
    cfg = isolated_cfg
    cfg.ROOT_DIR = str(tmp_path)
    voc_writer(tmp_path / 'mydata' / 'VOCdevkit', '2012',
               {'p1': (64, 48, [('Widget', (3, 4, 30, 40))]), 'p2': (64, 48, [])},
               {'train': ['p1', 'p2'], 'test': ['p2']})
    _write_yaml(cfg, 'shop_items', 'devkit_path: mydata/VOCdevkit\n'
                                   'year: 2012\n'
                                   'classes: [Widget, gadget]\n'
                                   'use_07_metric: true\n')
    assert 'voc_custom_shop_items_train' in list_imdbs()
    d = get_imdb('voc_custom_shop_items_train')
    assert d.name == 'voc_custom_shop_items_train'
    assert d.classes == ('__background__', 'Widget', 'gadget')
    assert d.config['use_07_metric'] is True
    d.set_proposal_method('gt')
    np.testing.assert_array_equal(d.roidb[0]['boxes'], [[2, 3, 29, 39]])
    np.testing.assert_array_equal(d.roidb[0]['gt_classes'], [1])
    assert get_imdb('voc_custom_shop_items_test').image_index == ['p2']


def test_voc_custom_yaml_errors(isolated_cfg):
    with pytest.raises(KeyError, match=r'no description file .*custom[/\\]nothere\.yml'):
        get_imdb('voc_custom_nothere_train')
    _write_yaml(isolated_cfg, 'half', 'year: 2007\n')
    with pytest.raises(ValueError, match=r"half\.yml: missing keys \['classes', 'devkit_path'\]"):
        get_imdb('voc_custom_half_train')
    _write_yaml(isolated_cfg, 'extra', 'devkit_path: x\nyear: 2007\nclasses: [a]\ncolour: red\n')
    with pytest.raises(ValueError, match=r"extra\.yml: unknown keys \['colour'\]"):
        get_imdb('voc_custom_extra_train')
    _write_yaml(isolated_cfg, 'gone', 'devkit_path: /no/such/dir\nyear: 2007\nclasses: [a]\n')
    with pytest.raises(FileNotFoundError, match=r'(?s)/no/such/dir.*gone\.yml'):
        get_imdb('voc_custom_gone_train')


def test_toy_names_use_classes_txt(isolated_cfg, voc_writer):
    toy = os.path.join(isolated_cfg.DATA_DIR, 'toy')
    voc_writer(os.path.join(toy, 'VOCdevkit2007'), '2007',
               {'000001': (32, 32, [('ring', (2, 2, 12, 12))])},
               {'trainval': ['000001'], 'test': ['000001']})
    with open(os.path.join(toy, 'classes.txt'), 'w') as f:
        f.write('circle\nring\n')
    d = get_imdb('toy_2007_test')
    assert d.name == 'toy_2007_test'
    assert d.classes == ('__background__', 'circle', 'ring')
    d.set_proposal_method('gt')
    assert d.roidb[0]['gt_classes'].tolist() == [2]


def test_toy_missing_says_how_to_make_it(isolated_cfg):
    with pytest.raises(FileNotFoundError, match='make_toy_dataset.py'):
        get_imdb('toy_2007_trainval')


def test_toy_generator_output_loads(isolated_cfg):
    gen = pytest.importorskip('datasets.toy_generator')
    gen.make_toy_dataset(os.path.join(isolated_cfg.DATA_DIR, 'toy'), num_trainval=4,
                         num_test=2, verbose=False)
    d = get_imdb('toy_2007_trainval')
    assert d.num_images == 4 and d.num_classes == len(gen.TOY_CLASSES) + 1
    d.set_proposal_method('gt')
    d.append_flipped_images()
    assert len(d.roidb) == 8
    assert all((e['boxes'][:, 2] >= e['boxes'][:, 0]).all() for e in d.roidb)
