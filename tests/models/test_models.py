"""Every model under models/ builds, with the right number of classes; files are current."""
import glob
import os

import pytest

import caffe
from fast_rcnn.config import cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = {'pascal_voc': 21, 'coco': 81, 'toy': 6}


def _models(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'models', '**', pattern), recursive=True))


TEST_NETS = [p for p in _models('*.p*t*') if 'test' in os.path.basename(p)]
TRAIN_NETS = [p for p in _models('*.p*t*') if 'solver' not in p and 'test' not in os.path.basename(p)]


def _slow_unless_toy(paths):
    return [p if '/toy/' in p else pytest.param(p, marks=pytest.mark.slow) for p in paths]


def test_generated_files_are_up_to_date():
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_models', os.path.join(ROOT, 'models', 'make_models.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(['--check']) == 0


def test_every_scheme_is_there():
    for arch in ('ZF', 'VGG_CNN_M_1024', 'VGG16'):
        alt = os.path.join(ROOT, 'models', 'pascal_voc', arch, 'faster_rcnn_alt_opt')
        names = set(os.listdir(alt))
        for stage in (1, 2):
            assert {'stage%d_rpn_train.pt' % stage, 'stage%d_rpn_solver60k80k.pt' % stage,
                    'stage%d_fast_rcnn_train.pt' % stage, 'stage%d_fast_rcnn_solver30k40k.pt' % stage,
                    'stage%d_fast_rcnn_ohem_train.pt' % stage} <= names
        assert {'rpn_test.pt', 'faster_rcnn_test.pt'} <= names
        for scheme in ('faster_rcnn_end2end', 'fast_rcnn', 'fast_rcnn_ohem', 'faster_rcnn_end2end_ohem'):
            d = os.path.join(ROOT, 'models', 'pascal_voc', arch, scheme)
            assert {'train.prototxt', 'test.prototxt', 'solver.prototxt'} <= set(os.listdir(d))


@pytest.mark.parametrize('path', _slow_unless_toy(TEST_NETS))
def test_test_net_builds(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    net = caffe.Net(path, caffe.TEST)
    k = CLASSES[path.split(os.sep)[1]]
    if 'rpn_test' in path:
        assert set(net.outputs) == {'rois', 'scores'}
    else:
        assert net.blobs['cls_prob'].data.shape[1] == k
        assert net.blobs['bbox_pred'].data.shape[1] == 4 * k


@pytest.mark.parametrize('path', _slow_unless_toy(TRAIN_NETS))
def test_train_net_builds(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    rpn = 'end2end' in path or 'rpn' in os.path.basename(path)
    monkeypatch.setitem(cfg.TRAIN, 'HAS_RPN', rpn)
    monkeypatch.setitem(cfg.TRAIN, 'IMS_PER_BATCH', 1 if rpn else 2)
    monkeypatch.setitem(cfg.TRAIN, 'SCALES', (200,))
    monkeypatch.setitem(cfg.TRAIN, 'MAX_SIZE', 300)
    net = caffe.Net(path, caffe.TRAIN)
    k = CLASSES[path.split(os.sep)[1]]
    assert 'loss_cls' in net.outputs and 'loss_bbox' in net.outputs or 'rpn_cls_loss' in net.outputs
    if 'cls_score' in net.blobs:
        assert net.blobs['cls_score'].data.shape[1] == k
    if 'ohem' in path:
        # the readonly branch shares its parameters with the trainable head: one blob
        assert net.params['fc6_readonly'][0] is net.params['fc6'][0]
        assert net.params['bbox_pred_readonly'][1] is net.params['bbox_pred'][1]


@pytest.mark.parametrize('path', _models('*solver*'))
def test_solver_points_at_an_existing_net(path):
    from caffe.proto import caffe_pb2
    from caffe import protoio
    sp = protoio.read_text(os.path.join(ROOT, path), caffe_pb2.SolverParameter)
    net = sp.train_net or sp.net
    assert os.path.exists(os.path.join(ROOT, net)), net
