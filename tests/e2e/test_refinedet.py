"""RefineDet end to end, as its users work from the Caffe root: the toy data set's
create_list/create_data scripts, the example scripts (examples/refinedet/*.py) and their
job scripts, training, resuming after a kill, test/refinedet_test.py and
test/refinedet_demo.py, and the errors bad input gives at the scripts' level.

Everything runs in a temporary copy of the Caffe root (`caffe-fast-rcnn/` with its scripts,
pycaffe and tools linked), beside a `lib/` link and a small toy data set in `data/toy`, so
that the scripts' outputs (lists, LMDB links, models/, jobs/, output/) stay out of the
repository.
"""
from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import cv2
import lmdb
import numpy as np
import pytest

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[2]
CAFFE = REPO / 'caffe-fast-rcnn'
EXAMPLES = sorted(p.stem for p in (CAFFE / 'examples' / 'refinedet').glob('*.py')
                  if p.stem != 'refinedet_job')
TOY_SCRIPT = 'ToyNet_toy_160'
TOY_JOB = 'refinedet_toynet_160x160'
TOY_MODEL = 'toy_' + TOY_JOB


def make_root(base: Path, num_trainval: int = 16, num_test: int = 6) -> SimpleNamespace:
    """A project in `base`: caffe-fast-rcnn/ (python, tools, scripts, build/tools linked;
    data/toy and examples/refinedet and test copied), lib linked, and a toy data set of
    num_trainval + num_test images in data/toy."""
    from datasets.toy_generator import make_toy_dataset
    caffe_root = base / 'caffe-fast-rcnn'
    (caffe_root / 'build' / 'tools').mkdir(parents=True)
    (caffe_root / 'data').mkdir()
    (caffe_root / 'examples').mkdir()
    for name in ('python', 'tools', 'scripts'):
        os.symlink(CAFFE / name, caffe_root / name)
    for tool in ('caffe', 'convert_annoset', 'get_image_size'):
        os.symlink(CAFFE / 'tools' / tool, caffe_root / 'build' / 'tools' / tool)
    shutil.copytree(CAFFE / 'data' / 'toy', caffe_root / 'data' / 'toy',
                    ignore=shutil.ignore_patterns('*.txt', '*.prototxt'))
    shutil.copytree(CAFFE / 'examples' / 'refinedet', caffe_root / 'examples' / 'refinedet',
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(CAFFE / 'test', caffe_root / 'test', ignore=shutil.ignore_patterns('__pycache__'))
    os.symlink(REPO / 'lib', base / 'lib')
    make_toy_dataset(base / 'data' / 'toy', seed=3, num_trainval=num_trainval, num_test=num_test)
    return SimpleNamespace(base=base, caffe=caffe_root, devkit=base / 'data' / 'toy' / 'VOCdevkit2007')


def env_for(root: SimpleNamespace, **extra: str) -> dict:
    env = dict(os.environ, CAFFE_PYTHON=sys.executable, OMP_NUM_THREADS='1',
               GLOG_minloglevel='0', PYTHONDONTWRITEBYTECODE='1')
    env.update(extra)
    return env


def sh(root: SimpleNamespace, argv, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """Run a command in the Caffe root; stdout and stderr together in .stdout."""
    return subprocess.run([str(a) for a in argv], cwd=root.caffe, env=env_for(root, **env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def make_lmdbs(root: SimpleNamespace) -> None:
    ok(sh(root, ['bash', 'data/toy/create_list.sh']))
    ok(sh(root, ['bash', 'data/toy/create_data.sh']))


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory) -> SimpleNamespace:
    """A project with the toy LMDBs made by data/toy/create_list.sh and create_data.sh."""
    root = make_root(tmp_path_factory.mktemp('refinedet'))
    make_lmdbs(root)
    return root


def read_lmdb(path: Path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        records = [(k.decode(), caffe_pb2.AnnotatedDatum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return records


# ---- data preparation ---------------------------------------------------------------------

def test_toy_create_data_records_equal_the_xml_files(toy_root):
    root = toy_root
    classes = (root.base / 'data' / 'toy' / 'classes.txt').read_text().split()
    label_map = protoio.read_text(str(root.caffe / 'data' / 'toy' / 'labelmap_toy.prototxt'),
                                  caffe_pb2.LabelMap)
    assert [(i.name, i.label, i.display_name) for i in label_map.item] == \
        [('none_of_the_above', 0, 'background')] + [(c, k + 1, c) for k, c in enumerate(classes)]
    voc = root.devkit / 'VOC2007'
    for subset in ('trainval', 'test'):
        ids = (voc / 'ImageSets' / 'Main' / (subset + '.txt')).read_text().split()
        link = root.caffe / 'examples' / 'toy' / ('toy_%s_lmdb' % subset)
        assert link.is_symlink() and link.resolve() == (root.base / 'data' / 'toy' / 'lmdb' /
                                                        ('toy_%s_lmdb' % subset))
        records = read_lmdb(link)
        listed = [line.split()[0] for line in
                  (root.caffe / 'data' / 'toy' / (subset + '.txt')).read_text().splitlines()]
        assert [k.split('_', 1)[1] for k, _ in records] == listed   # the list's order
        assert sorted(Path(p).stem for p in listed) == sorted(ids)
        for key, ad in records:
            image_id = Path(key.split('_', 1)[1]).stem
            jpeg = voc / 'JPEGImages' / (image_id + '.jpg')
            assert ad.datum.encoded and ad.datum.data == jpeg.read_bytes()
            xml = ET.parse(str(voc / 'Annotations' / (image_id + '.xml'))).getroot()
            width = float(xml.findtext('size/width'))
            height = float(xml.findtext('size/height'))
            want = sorted(
                (classes.index(o.findtext('name')) + 1,
                 tuple(np.float32(float(o.findtext('bndbox/' + k)) / d) for k, d in
                       (('xmin', width), ('ymin', height), ('xmax', width), ('ymax', height))),
                 int(o.findtext('difficult') or 0))
                for o in xml.findall('object'))
            got = sorted(
                (g.group_label,
                 tuple(np.float32(v) for v in (a.bbox.xmin, a.bbox.ymin, a.bbox.xmax,
                                               a.bbox.ymax)),
                 int(a.bbox.difficult))
                for g in ad.annotation_group for a in g.annotation)
            assert got == want, image_id
    sizes = [line.split() for line in
             (root.caffe / 'data' / 'toy' / 'test_name_size.txt').read_text().splitlines()]
    for name, h, w in sizes:
        im = cv2.imread(str(voc / 'JPEGImages' / (name + '.jpg')))
        assert (int(h), int(w)) == im.shape[:2]


def test_voc0712plus_lists_and_training_lmdb(tmp_path):
    """data/VOC0712Plus (RefineDet's VOC2012 models): trainval = VOC2007 trainval + test +
    VOC2012 trainval, test = VOC2012 test; no test LMDB without VOC2012 test's annotations."""
    root = make_root(tmp_path, num_trainval=5, num_test=3)
    shutil.copytree(CAFFE / 'data' / 'VOC0712Plus', root.caffe / 'data' / 'VOC0712Plus',
                    ignore=shutil.ignore_patterns('*.txt'))
    classes = (root.base / 'data' / 'toy' / 'classes.txt').read_text().split()
    voc_names = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle']
    for xml in (root.devkit / 'VOC2007' / 'Annotations').glob('*.xml'):
        text = xml.read_text()
        for toy, voc in zip(classes, voc_names):
            text = text.replace('<name>%s</name>' % toy, '<name>%s</name>' % voc)
        xml.write_text(text)
    shutil.copytree(root.devkit / 'VOC2007', root.devkit / 'VOC2012')
    env = {'VOC_ROOT_DIR': str(root.devkit)}
    ok(sh(root, ['bash', 'data/VOC0712Plus/create_list.sh'], **env))
    folder = root.caffe / 'data' / 'VOC0712Plus'
    trainval = folder.joinpath('trainval.txt').read_text().splitlines()
    assert sorted(l.split('/')[0] for l in trainval) == ['VOC2007'] * 8 + ['VOC2012'] * 5
    test = folder.joinpath('test.txt').read_text().splitlines()
    assert [l.split('/')[0] for l in test] == ['VOC2012'] * 3
    assert len(folder.joinpath('test_name_size.txt').read_text().splitlines()) == 3
    for xml in (root.devkit / 'VOC2012' / 'Annotations').glob('*.xml'):
        if any(xml.stem in line for line in test):
            xml.unlink()                              # VOC2012 test: no public annotations
    ok(sh(root, ['bash', 'data/VOC0712Plus/create_data.sh'], **env))
    examples = root.caffe / 'examples' / 'VOC0712Plus'
    assert sorted(p.name for p in examples.iterdir()) == ['VOC0712Plus_trainval_lmdb']
    records = read_lmdb(examples / 'VOC0712Plus_trainval_lmdb')
    assert [k.split('_', 1)[1] for k, _ in records] == [l.split()[0] for l in trainval]
    assert all(g.group_label <= 5 for _, ad in records for g in ad.annotation_group)


# ---- the example scripts --------------------------------------------------------------------

def write_with_script(root: SimpleNamespace, script: str, monkeypatch, *args: str) -> None:
    """Run examples/refinedet/<script>.py in this process from the Caffe root (--no-run)."""
    monkeypatch.chdir(root.caffe)
    monkeypatch.setattr(sys, 'argv', [script + '.py', '--no-run'] + list(args))
    monkeypatch.syspath_prepend(str(root.caffe / 'examples' / 'refinedet'))
    runpy.run_path(str(root.caffe / 'examples' / 'refinedet' / (script + '.py')),
                   run_name='__main__')


def written_files(root: SimpleNamespace, script: str):
    """The solver and nets a script wrote (found through its job script)."""
    jobs = [p for p in (root.caffe / 'jobs').rglob('*.sh')
            if (p.parent / (script + '.py')).exists()]
    assert len(jobs) == 1, jobs
    job = jobs[0].read_text()
    solver_file = re.search(r'--solver="([^"]+)"', job).group(1)
    solver = protoio.read_text(str(root.caffe / solver_file), caffe_pb2.SolverParameter)
    return job, solver


def small_copy(root: SimpleNamespace, net_file: Path, out: Path, phase: str) -> Path:
    """The net with the toy LMDBs, label map and sizes, batch 1 and 64 x 64 inputs (every
    RefineDet input size is a multiple of 64), so that building it is quick."""
    net = protoio.read_text(str(net_file), caffe_pb2.NetParameter)
    toy = root.caffe / 'data' / 'toy'
    for layer in net.layer:
        if layer.type == 'AnnotatedData':
            layer.data_param.source = str(root.caffe / 'examples' / 'toy' /
                                          ('toy_%s_lmdb' % ('trainval' if phase == 'TRAIN'
                                                            else 'test')))
            layer.data_param.batch_size = 1
            layer.annotated_data_param.label_map_file = str(toy / 'labelmap_toy.prototxt')
            layer.transform_param.resize_param.height = 64
            layer.transform_param.resize_param.width = 64
        if layer.type == 'DetectionEvaluate':
            layer.detection_evaluate_param.name_size_file = str(toy / 'test_name_size.txt')
    out.write_text(str(net))
    return out


# script -> (data set prefix, backbone, input size, classes, stepvalue, gamma, max_iter,
#            snapshot, base_lr after scaling, pretrained model's file name)
FT07 = ([80000, 120000], 0.2, 120000, 5000)
FT12 = ([120000, 160000], 0.2, 160000, 10000)
VOC07 = ([80000, 100000, 120000], 0.1, 120000, 5000)
VOC12 = ([160000, 200000, 240000], 0.1, 240000, 10000)
COCO = ([280000, 360000, 400000], 0.1, 400000, 10000)
FC_REDUCED = 'VGG_ILSVRC_16_layers_fc_reduced.caffemodel'
TRAIN_DATA = {'VOC0712': 'examples/VOC0712/VOC0712_trainval_lmdb',
              'VOC0712Plus': 'examples/VOC0712Plus/VOC0712Plus_trainval_lmdb',
              'coco': 'examples/coco/coco_train_lmdb'}
FACTS = {
    'VGG16_VOC2007_320': ('VOC0712', 'vgg16', 320, 21) + VOC07 + (0.001, FC_REDUCED),
    'VGG16_VOC2007_512': ('VOC0712', 'vgg16', 512, 21) + VOC07 + (0.001, FC_REDUCED),
    'VGG16_VOC2012_320': ('VOC0712Plus', 'vgg16', 320, 21) + VOC12 + (0.001, FC_REDUCED),
    'VGG16_VOC2012_512': ('VOC0712Plus', 'vgg16', 512, 21) + VOC12 + (0.001, FC_REDUCED),
    'VGG16_COCO_320': ('coco', 'vgg16', 320, 81) + COCO + (0.001, FC_REDUCED),
    'VGG16_COCO_512': ('coco', 'vgg16', 512, 81) + COCO + (0.001, FC_REDUCED),
    'ResNet101_COCO_320': ('coco', 'resnet101', 320, 81) + COCO +
                          (0.001, 'ResNet-101-model.caffemodel'),
    'ResNet101_COCO_512': ('coco', 'resnet101', 512, 81) + COCO +
                          (0.001, 'ResNet-101-model.caffemodel'),
    'finetune_VGG16_VOC2007_320': ('VOC0712', 'vgg16', 320, 21) + FT07 +
                                  (0.00005, 'coco_refinedet_vgg16_320x320.caffemodel'),
    'finetune_VGG16_VOC2007_512': ('VOC0712', 'vgg16', 512, 21) + FT07 +
                                  (0.00005, 'coco_refinedet_vgg16_512x512.caffemodel'),
    'finetune_VGG16_VOC2012_320': ('VOC0712Plus', 'vgg16', 320, 21) + FT12 +
                                  (0.00005, 'coco_refinedet_vgg16_320x320.caffemodel'),
    'finetune_VGG16_VOC2012_512': ('VOC0712Plus', 'vgg16', 512, 21) + FT12 +
                                  (0.00005, 'coco_refinedet_vgg16_512x512.caffemodel'),
}


def structure(root: SimpleNamespace, net_file: Path) -> str:
    """The net with what differs between data sets and input sizes blanked (data paths,
    label map, name-size file, input size, the net's name)."""
    net = protoio.read_text(str(root.caffe / net_file), caffe_pb2.NetParameter)
    net.name = ''
    for layer in net.layer:
        if layer.type == 'AnnotatedData':
            layer.data_param.source = ''
            layer.annotated_data_param.label_map_file = ''
            layer.transform_param.resize_param.height = 0
            layer.transform_param.resize_param.width = 0
        if layer.type == 'DetectionEvaluate':
            layer.detection_evaluate_param.name_size_file = ''
    del net.input_shape[:]
    return str(net)


@pytest.fixture(scope='module')
def scripts_output(toy_root):
    """Every example script run with --no-run: {script: (job text, solver, nets)}."""
    mp = pytest.MonkeyPatch()
    out = {}
    try:
        for script in EXAMPLES:
            write_with_script(toy_root, script, mp)
            job, solver = written_files(toy_root, script)
            folder = Path(solver.train_net).parent
            out[script] = SimpleNamespace(job=job, solver=solver, folder=folder, nets={
                k: structure(toy_root, folder / (k + '.prototxt'))
                for k in ('train', 'test', 'deploy')})
    finally:
        mp.undo()
    return out


def test_example_scripts_write_their_files(toy_root, scripts_output):
    assert sorted(list(FACTS) + [TOY_SCRIPT]) == sorted(scripts_output)
    for script, (dataset, arch, size, classes, steps, gamma, max_iter, snapshot, lr,
                 pretrained) in FACTS.items():
        got = scripts_output[script]
        job_name = 'refinedet_%s_%dx%d%s' % (arch, size, size,
                                             '_ft' if script.startswith('finetune') else '')
        model = '%s_%s' % (dataset, job_name)
        family = 'VGGNet' if arch == 'vgg16' else 'ResNet'
        folder = 'models/%s/%s/%s' % (family, dataset, job_name)
        s = got.solver
        assert str(got.folder) == folder, script
        assert (list(s.stepvalue), s.gamma, s.max_iter, s.snapshot) == \
            (steps, pytest.approx(gamma), max_iter, snapshot), script
        assert s.base_lr == pytest.approx(lr) and s.snapshot_prefix == folder + '/' + model
        assert (s.lr_policy, s.type, s.iter_size, s.weight_decay, s.momentum) == \
            ('multistep', 'SGD', 1, pytest.approx(0.0005), pytest.approx(0.9))
        assert not s.test_net and not s.test_iter           # no tests during training
        assert got.job.startswith('#!/bin/bash\n')
        assert 'cd %s\n./build/tools/caffe train \\\n--solver="%s/solver.prototxt" \\\n' % (
            toy_root.caffe, folder) in got.job
        assert re.search(r'--weights="models/\S*%s" \\\n' % re.escape(pretrained), got.job)
        assert got.job.endswith('--gpu 0,1,2,3 2>&1 | tee jobs/%s/%s/%s/%s.log\n'
                                % (family, dataset, job_name, model)), script
        for kind in ('train', 'test', 'deploy'):
            assert (toy_root.caffe / 'jobs' / family / dataset / job_name /
                    (kind + '.prototxt')).exists()
        train = protoio.read_text(str(toy_root.caffe / folder / 'train.prototxt'),
                                  caffe_pb2.NetParameter)
        data = train.layer[0]
        assert data.data_param.source == TRAIN_DATA[dataset]
        assert data.data_param.batch_size == 8             # 32 over four GPUs
        assert data.transform_param.resize_param.height == size
        assert len(data.annotated_data_param.batch_sampler) == 7
        layers = {l.name: l for l in train.layer}
        assert layers['odm_loss'].multibox_loss_param.num_classes == classes
        assert layers['arm_loss'].multibox_loss_param.num_classes == 2
    toy = scripts_output[TOY_SCRIPT]
    assert '--weights' not in toy.job and '--gpu' not in toy.job
    assert toy.solver.solver_mode == caffe_pb2.SolverParameter.CPU
    assert toy.solver.eval_type == 'detection' and toy.solver.test_interval == \
        toy.solver.max_iter // 2 and toy.solver.type == 'Adam'


# One script of each distinct net; the others must write the same nets up to data paths
# and input size.
DISTINCT = {'VGG16_VOC2007_320': ['VGG16_VOC2007_512', 'VGG16_VOC2012_320', 'VGG16_VOC2012_512',
                                  'finetune_VGG16_VOC2007_320', 'finetune_VGG16_VOC2007_512',
                                  'finetune_VGG16_VOC2012_320', 'finetune_VGG16_VOC2012_512'],
            'VGG16_COCO_320': ['VGG16_COCO_512'],
            'ResNet101_COCO_320': ['ResNet101_COCO_512'],
            TOY_SCRIPT: []}


def test_example_scripts_share_the_distinct_nets(scripts_output):
    assert sorted(sum(DISTINCT.values(), list(DISTINCT))) == sorted(EXAMPLES)
    for script, same in DISTINCT.items():
        for other in same:
            for kind in ('train', 'test', 'deploy'):
                assert scripts_output[other].nets[kind] == scripts_output[script].nets[kind], \
                    (script, other, kind)


@pytest.mark.parametrize('script', [pytest.param(s, marks=pytest.mark.slow) if 'ResNet' in s
                                    else s for s in sorted(DISTINCT)])
def test_example_script_nets_build_in_train_and_test(toy_root, scripts_output, script,
                                                     tmp_path):
    folder = toy_root.caffe / scripts_output[script].folder
    train = caffe.Net(str(small_copy(toy_root, folder / 'train.prototxt',
                                     tmp_path / 'train.prototxt', 'TRAIN')), caffe.TRAIN)
    assert {'arm_loss', 'odm_loss'} <= set(train.outputs)
    test = caffe.Net(str(small_copy(toy_root, folder / 'test.prototxt',
                                    tmp_path / 'test.prototxt', 'TEST')), caffe.TEST)
    assert test.outputs == ['detection_eval']
    deploy = protoio.read_text(str(folder / 'deploy.prototxt'), caffe_pb2.NetParameter)
    test_param = protoio.read_text(str(folder / 'test.prototxt'), caffe_pb2.NetParameter)
    # The deploy net is the test net without its data and evaluation layers.
    assert list(deploy.input) == ['data'] and deploy.layer[-1].type == 'DetectionOutput'
    assert [l.name for l in deploy.layer] == [l.name for l in test_param.layer[1:-1]]
    if script == TOY_SCRIPT:
        train.forward()
        for name in ('arm_loss', 'odm_loss'):
            assert np.isfinite(train.blobs[name].data).all()


def test_example_script_on_the_cpu_and_on_several_gpus(fresh_root, monkeypatch):
    """gpus = "" trains on the CPU without --gpu; several ids split the batch into ranks."""
    script = 'VGG16_VOC2007_320'
    toy_root = fresh_root
    write_with_script(toy_root, script, monkeypatch, '--gpus', '')
    job, solver = written_files(toy_root, script)
    assert '--gpu' not in job and re.search(r'\n2>&1 \| tee jobs/\S+\.log\n$', job)
    assert solver.solver_mode == caffe_pb2.SolverParameter.CPU and solver.iter_size == 1
    train = protoio.read_text(str(toy_root.caffe / solver.train_net), caffe_pb2.NetParameter)
    assert train.layer[0].data_param.batch_size == 32
    write_with_script(toy_root, script, monkeypatch, '--gpus', '0,1,2')
    job, solver = written_files(toy_root, script)
    assert '--gpu 0,1,2 2>&1' in job
    train = protoio.read_text(str(toy_root.caffe / solver.train_net), caffe_pb2.NetParameter)
    assert train.layer[0].data_param.batch_size == 11 and solver.iter_size == 1


# ---- training, resuming, scoring ----------------------------------------------------------

def toy_job(root: SimpleNamespace, monkeypatch, max_iter: int, snapshot: int,
            base_lr: float = 0.001, batch_size: int = 4, *args: str) -> SimpleNamespace:
    """Write the toy model's files with its script, then shorten its solver and batch."""
    write_with_script(root, TOY_SCRIPT, monkeypatch, *args)
    model_dir = root.caffe / 'models' / 'ToyNet' / 'toy' / TOY_JOB
    solver_file = model_dir / 'solver.prototxt'
    solver = protoio.read_text(str(solver_file), caffe_pb2.SolverParameter)
    solver.max_iter, solver.snapshot, solver.display, solver.average_loss = \
        max_iter, snapshot, 1, 1
    solver.base_lr = base_lr
    del solver.stepvalue[:]
    solver.test_interval = max_iter
    solver.test_iter[0] = 1
    solver_file.write_text(str(solver))
    train = protoio.read_text(str(model_dir / 'train.prototxt'), caffe_pb2.NetParameter)
    train.layer[0].data_param.batch_size = batch_size
    (model_dir / 'train.prototxt').write_text(str(train))
    job_file = root.caffe / 'jobs' / 'ToyNet' / 'toy' / TOY_JOB / (TOY_MODEL + '.sh')
    return SimpleNamespace(model_dir=model_dir, job=job_file,
                           log=job_file.with_suffix('.log'))


def losses(log: str):
    return [(int(i), float(v)) for i, v in re.findall(r'Iteration (\d+), loss = ([0-9.eE+-]+)', log)]


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    """The toy model trained 24 iterations by its job script (snapshots at 12 and 24)."""
    mp = pytest.MonkeyPatch()
    try:
        job = toy_job(toy_root, mp, max_iter=24, snapshot=12)
    finally:
        mp.undo()
    out = ok(sh(toy_root, ['bash', job.job]))
    job.output = out
    return job


@pytest.mark.slow
def test_a_few_iterations_on_the_toy_set_lower_the_loss(trained):
    got = losses(trained.output)
    assert [i for i, _ in got] == list(range(24)) + [24]     # each iteration, then the last
    first = np.mean([v for _, v in got[:4]])
    last = np.mean([v for _, v in got[-5:]])
    assert last < 0.8 * first, got
    assert 'Test net output #0: detection_eval = ' in trained.output
    assert trained.log.read_text() == trained.output         # the job tees its log
    for it in (12, 24):
        for ext in ('caffemodel', 'solverstate'):
            assert (trained.model_dir / ('%s_iter_%d.%s' % (TOY_MODEL, it, ext))).exists()


@pytest.mark.slow
def test_refinedet_test_scores_a_saved_model(toy_root, trained):
    model = trained.model_dir / ('%s_iter_24.caffemodel' % TOY_MODEL)
    out = ok(sh(toy_root, [sys.executable, 'test/refinedet_test.py', '--gpu', '-1', '--imdb',
                           'toy_2007_test', '--path', trained.model_dir, '--net', model]))
    classes = (toy_root.base / 'data' / 'toy' / 'classes.txt').read_text().split()
    for c in classes:
        assert re.search(r'AP for %s = [0-9.]+' % c, out), out
    mean_ap = float(re.search(r'Mean AP = ([0-9.]+)', out).group(1))
    assert 0.0 <= mean_ap <= 1.0
    table = (trained.model_dir / 'mAP.txt').read_text().split()
    assert table[0] == '24' and abs(float(table[1]) - mean_ap) < 1e-4
    # ... and the demo draws that model's detections.
    image = toy_root.devkit / 'VOC2007' / 'JPEGImages' / '000017.jpg'
    out = ok(sh(toy_root, [sys.executable, 'test/refinedet_demo.py', '--gpu_id', '-1',
                           '--save_fig', '--threshold', '0', '--labelmap',
                           'data/toy/labelmap_toy.prototxt', '--def',
                           trained.model_dir / 'deploy.prototxt', '--net', model,
                           '--out', toy_root.base / 'pictures', image]))
    assert (toy_root.base / 'pictures' / '000017_dets.jpg').stat().st_size > 1000, out


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_latest_snapshot(tmp_path, monkeypatch):
    root = make_root(tmp_path, num_trainval=8, num_test=2)
    make_lmdbs(root)
    job = toy_job(root, monkeypatch, max_iter=1000, snapshot=3, batch_size=2)
    proc = subprocess.Popen(['bash', str(job.job)], cwd=root.caffe, env=env_for(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = job.model_dir / ('%s_iter_6.solverstate' % TOY_MODEL)
    try:
        deadline = time.time() + 240
        while not first.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert first.exists(), job.log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)          # the job and its caffe, as a crash would
        proc.wait()
    # (a snapshot being written when the job was killed is only a temporary file)
    latest = max(int(m.group(1)) for m in (re.match(r'%s_iter_(\d+)\.solverstate$' % TOY_MODEL, f)
                                           for f in os.listdir(job.model_dir)) if m)
    # Writing the job again finds the latest snapshot and resumes from it.
    job = toy_job(root, monkeypatch, max_iter=latest + 2, snapshot=1000, batch_size=2)
    text = job.job.read_text()
    assert '--snapshot="models/ToyNet/toy/%s/%s_iter_%d.solverstate" \\\n' % (
        TOY_JOB, TOY_MODEL, latest) in text and '--weights' not in text
    out = ok(sh(root, ['bash', job.job]))
    assert 'Resuming from models/ToyNet/toy/%s/%s_iter_%d.solverstate' % (
        TOY_JOB, TOY_MODEL, latest) in out
    assert [i for i, _ in losses(out)] == [latest, latest + 1, latest + 2]
    assert (job.model_dir / ('%s_iter_%d.caffemodel' % (TOY_MODEL, latest + 2))).exists()
    # remove_old_models keeps the latest snapshot only.
    from refinedet_job import remove_old_snapshots
    removed = remove_old_snapshots(str(job.model_dir), TOY_MODEL, latest + 2)
    assert removed and sorted(f for f in os.listdir(job.model_dir) if '.tmp' not in f) == sorted(
        ['deploy.prototxt', 'solver.prototxt', 'test.prototxt', 'train.prototxt',
         '%s_iter_%d.caffemodel' % (TOY_MODEL, latest + 2),
         '%s_iter_%d.solverstate' % (TOY_MODEL, latest + 2)])


def _soft_nms_reference(dets, sigma, nt, threshold, method):
    """Bodla et al.'s Soft-NMS, one box at a time (the cython loop of their release)."""
    boxes = [list(map(float, d)) for d in dets]
    kept = []
    while boxes:
        best = max(range(len(boxes)), key=lambda i: (boxes[i][4], -i))
        b = boxes.pop(best)
        kept.append(b)
        area = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        rest = []
        for d in boxes:
            iw = min(b[2], d[2]) - max(b[0], d[0]) + 1
            ih = min(b[3], d[3]) - max(b[1], d[1]) + 1
            inter = max(iw, 0) * max(ih, 0)
            iou = inter / (area + (d[2] - d[0] + 1) * (d[3] - d[1] + 1) - inter)
            if method == 1:
                w = 1 - iou if iou > nt else 1.0
            elif method == 2:
                w = np.exp(-(iou * iou) / sigma)
            else:
                w = 0.0 if iou > nt else 1.0
            d = d[:4] + [d[4] * w]
            if d[4] >= threshold:
                rest.append(d)
        boxes = rest
    return np.array(kept, np.float32).reshape(-1, 5)


@pytest.mark.parametrize('method', [0, 1, 2])
def test_soft_nms_matches_the_one_box_at_a_time_algorithm(method):
    sys.path.insert(0, str(CAFFE / 'test'))
    try:
        from refinedet_detect import soft_nms
    finally:
        sys.path.remove(str(CAFFE / 'test'))
    rng = np.random.RandomState(method)
    xy = rng.uniform(0, 80, (60, 2))
    wh = rng.uniform(8, 40, (60, 2))
    dets = np.hstack([xy, xy + wh, rng.uniform(0.05, 1, (60, 1))]).astype(np.float32)
    got = soft_nms(dets, sigma=0.5, nt=0.3, threshold=0.1, method=method)
    want = _soft_nms_reference(dets, 0.5, 0.3, 0.1, method)
    assert got.shape == want.shape and len(got) < len(dets)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert soft_nms(np.zeros((0, 5), np.float32)).shape == (0, 5)


# ---- bad input ---------------------------------------------------------------------------------

@pytest.fixture
def fresh_root(tmp_path):
    return make_root(tmp_path, num_trainval=6, num_test=2)


def test_create_data_stops_at_a_class_missing_from_the_label_map(fresh_root):
    root = fresh_root
    ok(sh(root, ['bash', 'data/toy/create_list.sh']))
    xml = root.devkit / 'VOC2007' / 'Annotations' / '000003.xml'
    text = xml.read_text()
    name = re.search(r'<name>([^<]+)</name>', text).group(1)
    xml.write_text(text.replace('<name>%s</name>' % name, '<name>hexagon</name>', 1))
    proc = sh(root, ['bash', 'data/toy/create_data.sh'])
    assert proc.returncode != 0
    assert 'hexagon' in proc.stdout and '000003.xml' in proc.stdout, proc.stdout[-2000:]


def test_create_data_stops_at_a_missing_image(fresh_root):
    root = fresh_root
    ok(sh(root, ['bash', 'data/toy/create_list.sh']))
    (root.devkit / 'VOC2007' / 'JPEGImages' / '000004.jpg').unlink()
    proc = sh(root, ['bash', 'data/toy/create_data.sh'])
    assert proc.returncode != 0 and '000004.jpg' in proc.stdout, proc.stdout[-2000:]


def test_create_data_stops_at_a_list_line_with_one_column(fresh_root):
    root = fresh_root
    ok(sh(root, ['bash', 'data/toy/create_list.sh']))
    listing = root.caffe / 'data' / 'toy' / 'trainval.txt'
    lines = listing.read_text().splitlines()
    lines[2] = lines[2].split()[0]
    listing.write_text('\n'.join(lines) + '\n')
    proc = sh(root, ['bash', 'data/toy/create_data.sh'])
    assert proc.returncode != 0
    assert '%s:3:' % listing in proc.stdout, proc.stdout[-2000:]


def test_create_list_stops_without_classes_or_devkit(fresh_root, tmp_path):
    root = fresh_root
    classes = root.base / 'data' / 'toy' / 'classes.txt'
    classes.unlink()
    proc = sh(root, ['bash', 'data/toy/create_list.sh'])
    assert proc.returncode != 0 and str(classes.name) in proc.stdout
    proc = sh(root, ['bash', 'data/toy/create_list.sh'], TOY_ROOT_DIR=str(tmp_path / 'nowhere'))
    assert proc.returncode != 0 and 'nowhere' in proc.stdout


def test_training_on_an_empty_lmdb_stops_naming_it(fresh_root, monkeypatch):
    root = fresh_root
    (root.devkit / 'VOC2007' / 'ImageSets' / 'Main' / 'trainval.txt').write_text('')
    make_lmdbs(root)
    job = toy_job(root, monkeypatch, max_iter=2, snapshot=0)
    proc = sh(root, ['bash', job.job])
    assert proc.returncode != 0
    assert 'toy_trainval_lmdb holds no records' in proc.stdout, proc.stdout[-2000:]


def test_refinedet_test_names_what_is_missing(toy_root, tmp_path):
    proc = sh(toy_root, [sys.executable, 'test/refinedet_test.py', '--gpu', '-1', '--imdb',
                         'toy_2007_test', '--path', tmp_path])
    assert proc.returncode != 0 and str(tmp_path / 'deploy.prototxt') in proc.stdout
    (tmp_path / 'deploy.prototxt').write_text('name: "x"\n')
    proc = sh(toy_root, [sys.executable, 'test/refinedet_test.py', '--gpu', '-1', '--imdb',
                         'toy_2007_test', '--path', tmp_path])
    assert proc.returncode != 0 and 'no .caffemodel' in proc.stdout
