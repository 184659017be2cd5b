"""Bad input and faults around the detector: nothing silent, nothing stale, nothing left behind.

* a net and a data set that disagree on the class count (testing, training, the data
  layer, the demo's list, saved detections) stop with both counts, the layer and the imdb;
* a truncated JPEG stops training when the roidb is prepared, and any reader names it;
* the gt roidb and the evaluation's annotation cache follow edited annotation files;
  an empty image set names its list file and nothing empty is cached;
* `--wait` waits for a bounded time and says for what;
* param_str keys the layer does not read, data sets of different classes trained
  together, a training set without a single box: errors that say so;
* files the detector writes take the umask's mode; killed snapshot writes are cleaned.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import caffe
from caffe import atomic_files
from fast_rcnn import test as frtest
from fast_rcnn.config import cfg
from fast_rcnn.net_classes import ClassCountError, check_net_classes
from fast_rcnn.train import SolverWrapper, train_net
from roi_data_layer import roidb as rdl_roidb
from roi_data_layer.minibatch import get_minibatch
from roi_fixtures import NUM_CLASSES, ToyImdb
from tiny_nets import fast_rcnn_train_net as train_net_of, rois_head_net, write_text as _write

K = NUM_CLASSES
TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     'tools')


@pytest.fixture(autouse=True)
def _cfg(tiny_cfg, tmp_path):
    cfg.DATA_DIR = str(tmp_path / 'data')


def detect_net_of(k):
    return rois_head_net(k, name='head')


SOLVER = ('train_net: "{net}"\nbase_lr: 0.00001\nlr_policy: "fixed"\nmomentum: 0.9\n'
          'display: 0\nsnapshot: 0\nsnapshot_prefix: "tiny"\n')


# ---- class counts ---------------------------------------------------------------------------

@pytest.mark.parametrize('k', [6, 8, 2])
def test_testing_a_net_of_other_classes_names_both_counts(tmp_path, k):
    net = caffe.Net(_write(tmp_path, 'test.prototxt', detect_net_of(k)), caffe.TEST)
    net.name = 'six_class_model'
    db = ToyImdb(tmp_path)
    with pytest.raises(ClassCountError) as e:
        frtest.test_net(net, db)
    msg = str(e.value)
    assert 'six_class_model' in msg and 'imdb toy' in msg and 'has 3 classes' in msg
    assert "blob 'cls_score' (from layer 'cls_score') has width %d, i.e. %d classes" % (k, k) in msg
    assert "blob 'bbox_pred'" in msg and 'width %d' % (4 * k) in msg
    assert '__background__, square, bar' in msg
    assert db.evaluated is None and not os.path.exists(str(tmp_path / 'output'))


def test_a_matching_net_passes_and_bbox_pred_is_checked_only_with_bbox_reg(tmp_path):
    text = detect_net_of(K).replace('num_output: %d ' % (4 * K), 'num_output: 8 ')
    net = caffe.Net(_write(tmp_path, 'agnostic.prototxt', text), caffe.TEST)
    check_net_classes(net, K, 'imdb toy', bbox_reg=False)
    with pytest.raises(ClassCountError, match="blob 'bbox_pred'.*width 8, i.e. 2 classes"):
        check_net_classes(net, K, 'imdb toy', bbox_reg=True)


@pytest.fixture
def training(tmp_path):
    db = ToyImdb(tmp_path)
    rdl_roidb.prepare_roidb(db)
    return db.roidb, str(tmp_path / 'out')


def _solver(tmp_path, net_text, name='train'):
    net_path = _write(tmp_path, name + '.prototxt', net_text)
    return _write(tmp_path, name + '_solver.prototxt', SOLVER.format(net=net_path))


def test_training_a_net_of_other_classes_names_the_layers(training, tmp_path):
    roidb, out = training
    # cls_score of 5 classes trains without any error of its own (labels 0..2 fit in 5)
    solver = _solver(tmp_path, train_net_of(5, k_bbox=K))
    with pytest.raises(ClassCountError) as e:
        SolverWrapper(solver, roidb, out)
    msg = str(e.value)
    assert solver in msg and 'the training roidb' in msg and 'has 3 classes' in msg
    assert "blob 'cls_score' (from layer 'cls_score') has width 5, i.e. 5 classes" in msg
    assert "bbox_pred" not in msg.split('\n')[1] and "input-data" not in msg
    solver = _solver(tmp_path, train_net_of(K, k_data=4, k_bbox=4), 'data4')
    with pytest.raises(ClassCountError, match=r"layer 'input-data' \(param_str num_classes\) has "
                                              r"width 4, i.e. 4 classes"):
        SolverWrapper(solver, roidb, out)


def test_the_data_layer_refuses_a_roidb_of_other_classes(training, tmp_path):
    roidb, _ = training
    net = caffe.Net(_write(tmp_path, 'n.prototxt', train_net_of(K, k_data=4, k_bbox=4)), caffe.TRAIN)
    with pytest.raises(ValueError, match=r"RoIDataLayer 'input-data': param_str says num_classes 4 "
                                         r"but the roidb has 3 classes"):
        net.layers[0].set_roidb(roidb)


def test_saved_detections_of_other_classes_or_images_are_refused(tmp_path, isolated_cfg, voc_writer):
    from datasets.pascal_voc import pascal_voc
    devkit = tmp_path / 'dk'
    voc_writer(devkit, '2007', {'a': (30, 30, [('cat', (2, 2, 20, 20))]),
                                'b': (30, 30, [('dog', (2, 2, 20, 20))])}, {'test': ['a', 'b']})
    d = pascal_voc('test', '2007', devkit_path=str(devkit), classes=['cat', 'dog'])
    dets = [[[] for _ in range(2)] for _ in range(6)]
    with pytest.raises(ValueError, match=r'imdb voc_2007_test: det.pkl hold 6 class list\(s\) but '
                                         r'the data set has 3 classes'):
        d.check_detections(dets, 'det.pkl')
    dets = [[[] for _ in range(5)] for _ in range(3)]
    with pytest.raises(ValueError, match=r"have 5 image entries for class 0 .* has 2 images"):
        d.evaluate_detections(dets, str(tmp_path / 'o'))


# ---- images ---------------------------------------------------------------------------------

def _truncate(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) * 2 // 3])


def _jpeg_imdb(tmp_path):
    db = ToyImdb(tmp_path)
    for i, p in enumerate(list(db._paths)):
        jpg = p.replace('.png', '.jpg')
        cv2.imwrite(jpg, db.images[i], [cv2.IMWRITE_JPEG_QUALITY, 95])
        db._paths[i] = jpg
    return db


def test_a_truncated_jpeg_stops_training_when_the_roidb_is_prepared(tmp_path):
    db = _jpeg_imdb(tmp_path)
    _truncate(db._paths[1])
    with pytest.raises(OSError, match=r'im1\.jpg.*truncated'):
        rdl_roidb.prepare_roidb(db)


def test_readers_name_a_truncated_jpeg(tmp_path):
    db = _jpeg_imdb(tmp_path)
    rdl_roidb.prepare_roidb(db)
    _truncate(db._paths[0])
    with pytest.raises(OSError, match=r'im0\.jpg.*truncated'):
        get_minibatch([db.roidb[0]], K)
    with pytest.raises(OSError, match=r'im0\.jpg.*truncated'):
        frtest._read_image(db._paths[0])


def test_pixels_rotated_away_from_the_annotations_are_an_error(tmp_path):
    from PIL import Image
    db = ToyImdb(tmp_path)
    path = str(tmp_path / 'rotated.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6          # "rotate 90 CW to display": OpenCV applies it, the header does not
    Image.fromarray(db.images[0][:, :, ::-1]).save(path, exif=exif.tobytes())
    db._paths[0] = path
    rdl_roidb.prepare_roidb(db)
    with pytest.raises(ValueError, match=r'rotated\.jpg decodes to 50x80 .* says 80x50.*EXIF'):
        get_minibatch([db.roidb[0]], K)


# ---- caches and image sets ---------------------------------------------------------------------

def _voc(tmp_path, voc_writer, images, split=('a', 'b')):
    devkit = tmp_path / 'VOCdevkit'
    voc_writer(devkit, '2007', images, {'trainval': list(split)})
    return str(devkit)


def _gt_imdb(devkit):
    from datasets.pascal_voc import pascal_voc
    d = pascal_voc('trainval', '2007', devkit_path=devkit, classes=['cat', 'dog'])
    d.set_proposal_method('gt')
    return d


def test_an_edited_annotation_is_what_the_next_run_trains_on(tmp_path, isolated_cfg, voc_writer,
                                                             capsys):
    images = {'a': (40, 30, [('cat', (1, 1, 20, 10))]), 'b': (40, 30, [('dog', (5, 5, 30, 25))])}
    devkit = _voc(tmp_path, voc_writer, images)
    np.testing.assert_array_equal(_gt_imdb(devkit).roidb[0]['boxes'], [[0, 0, 19, 9]])
    assert 'wrote gt roidb' in capsys.readouterr().out
    assert len(_gt_imdb(devkit).roidb) == 2
    assert 'gt roidb loaded from' in capsys.readouterr().out
    # the user fixes a box (same file size, new time stamp)
    xml = os.path.join(devkit, 'VOC2007', 'Annotations', 'a.xml')
    text = open(xml).read().replace('<xmax>20</xmax>', '<xmax>25</xmax>')
    with open(xml, 'w') as f:
        f.write(text)
    st = os.stat(xml)
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    r = _gt_imdb(devkit).roidb
    out = capsys.readouterr().out
    assert 'is stale (annotations changed since it was written)' in out and 'wrote gt roidb' in out
    np.testing.assert_array_equal(r[0]['boxes'], [[0, 0, 24, 9]])
    np.testing.assert_array_equal(_gt_imdb(devkit).roidb[0]['boxes'], [[0, 0, 24, 9]])
    cache = os.path.join(isolated_cfg.DATA_DIR, 'cache', 'voc_2007_trainval_gt_roidb.npz')
    assert [n for n in os.listdir(os.path.dirname(cache)) if n.startswith('.')] == []


def test_the_proposal_roidb_cache_follows_its_proposal_file(tmp_path, isolated_cfg, voc_writer,
                                                           monkeypatch, capsys):
    from datasets.pascal_voc import pascal_voc
    images = {'a': (40, 30, [('cat', (1, 1, 20, 10))]), 'b': (40, 30, [('dog', (5, 5, 30, 25))])}
    devkit = _voc(tmp_path, voc_writer, images)

    def fake_loader(self, gt_roidb):       # stands in for the .mat reader (SciPy)
        boxes = [np.loadtxt(self._selective_search_file(), ndmin=2)[:, :4]] * self.num_images
        return self.create_roidb_from_box_list(boxes, gt_roidb)
    monkeypatch.setattr(pascal_voc, '_load_selective_search_roidb', fake_loader)

    def proposals():
        d = pascal_voc('trainval', '2007', devkit_path=devkit, classes=['cat', 'dog'])
        return d.roidb[0]['boxes'][1:]
    mat = os.path.join(isolated_cfg.DATA_DIR, 'selective_search_data', 'voc_2007_trainval.mat')
    os.makedirs(os.path.dirname(mat))
    with open(mat, 'w') as f:
        f.write('0 0 5 5\n')
    np.testing.assert_array_equal(proposals(), [[0, 0, 5, 5]])
    with open(mat, 'w') as f:
        f.write('1 1 9 9\n')
    st = os.stat(mat)
    os.utime(mat, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    np.testing.assert_array_equal(proposals(), [[1, 1, 9, 9]])
    assert 'proposals changed since it was written' in capsys.readouterr().out


def test_an_empty_image_set_names_its_list_file_and_nothing_is_cached(tmp_path, isolated_cfg,
                                                                       voc_writer):
    from datasets.roidb_io import save_roidb
    devkit = _voc(tmp_path, voc_writer, {'a': (40, 30, [('cat', (1, 1, 20, 10))])}, split=())
    with pytest.raises(ValueError, match=r'image set file .*ImageSets/Main/trainval\.txt lists no '
                                         r'images'):
        _gt_imdb(devkit)
    cache = os.path.join(isolated_cfg.DATA_DIR, 'cache', 'x_gt_roidb.npz')
    with pytest.raises(ValueError, match='refusing to cache an empty roidb'):
        save_roidb(cache, [], {})
    assert not os.path.exists(cache)


def test_evaluation_scores_against_the_edited_annotation(tmp_path):
    from datasets.voc_eval import voc_eval
    ann = tmp_path / 'Annotations'
    ann.mkdir()

    def write_xml(box):
        (ann / 'img.xml').write_text(
            '<annotation><object><name>cat</name><difficult>0</difficult><bndbox><xmin>%d</xmin>'
            '<ymin>%d</ymin><xmax>%d</xmax><ymax>%d</ymax></bndbox></object></annotation>' % box)
    write_xml((10, 10, 50, 50))
    (tmp_path / 'set.txt').write_text('img\n')
    (tmp_path / 'det_cat.txt').write_text('img 0.9 60 60 100 100\n')
    args = (str(tmp_path / 'det_{:s}.txt'), str(ann / '{:s}.xml'), str(tmp_path / 'set.txt'), 'cat',
            str(tmp_path / 'cache'))
    assert voc_eval(*args)[2] == 0.0
    write_xml((60, 60, 100, 100))         # the annotation was wrong; fixed
    st = os.stat(str(ann / 'img.xml'))
    os.utime(str(ann / 'img.xml'), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert voc_eval(*args)[2] == 1.0


# ---- --wait -----------------------------------------------------------------------------------

@pytest.fixture
def tool_args(monkeypatch):
    monkeypatch.syspath_prepend(TOOLS)
    import _tool_args
    return _tool_args


def test_waiting_for_a_missing_model_is_bounded_and_says_for_what(tool_args, tmp_path, capsys,
                                                                 monkeypatch):
    missing = str(tmp_path / 'missing.caffemodel')
    with pytest.raises(SystemExit) as e:
        tool_args.wait_for_file(missing, True, timeout=0.05, poll=0.01)
    assert 'Gave up waiting for %s after 0:00:00' % missing in str(e.value.code)
    assert '--wait_timeout' in str(e.value.code) and 'FRCN_WAIT_TIMEOUT' in str(e.value.code)
    out = capsys.readouterr().out
    assert 'Waiting for %s to exist... (0:00:00 so far, giving up after 0:00:00)' % missing in out
    monkeypatch.setenv('FRCN_WAIT_TIMEOUT', '0.02')
    assert tool_args.wait_timeout() == 0.02
    with pytest.raises(SystemExit):
        tool_args.wait_for_file(missing, True, poll=0.01)
    monkeypatch.setenv('FRCN_WAIT_TIMEOUT', 'soon')
    with pytest.raises(SystemExit, match="FRCN_WAIT_TIMEOUT='soon'"):
        tool_args.wait_timeout()
    monkeypatch.delenv('FRCN_WAIT_TIMEOUT')
    assert tool_args.wait_timeout() == tool_args.DEFAULT_WAIT_TIMEOUT
    tool_args.wait_for_file(missing, False)                   # --wait 0: no waiting at all
    (tmp_path / 'there.caffemodel').write_bytes(b'')
    tool_args.wait_for_file(str(tmp_path / 'there.caffemodel'), True, timeout=0.01)


def test_test_net_takes_the_wait_bound_from_the_command_line(tool_args, tmp_path):
    import test_net as tool
    args = tool.parse_args(['--def', 'a', '--net', 'b', '--wait_timeout', '90'])
    assert args.wait and args.wait_timeout == 90
    assert tool.parse_args(['--net', 'b', '--wait_timeout', 'none']).wait_timeout == 0
    with pytest.raises(SystemExit):
        tool.parse_args(['--net', 'b', '--wait_timeout', '-1'])
    with pytest.raises(SystemExit, match=r'Gave up waiting for .*missing\.caffemodel'):
        tool.main(['--cpu', '--def', 'x.prototxt', '--net', str(tmp_path / 'missing.caffemodel'),
                   '--wait_timeout', '0.01'])


# ---- param_str, combined data sets, empty training sets ---------------------------------------

def test_param_str_keys_a_layer_does_not_read_are_errors_naming_it(tmp_path):
    text = ("input: 'cls' input_shape { dim: 1 dim: 18 dim: 2 dim: 2 }\n"
            "input: 'bbox' input_shape { dim: 1 dim: 36 dim: 2 dim: 2 }\n"
            "input: 'im_info' input_shape { dim: 1 dim: 3 }\n"
            "layer { name: 'proposal' type: 'Python' bottom: 'cls' bottom: 'bbox' bottom: 'im_info'"
            " top: 'rois' python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer'"
            " param_str: \"'feat_stride': 16\\n'scale': [8, 16, 32]\" } }\n")
    with pytest.raises(Exception, match=r"ProposalLayer 'proposal': param_str has unknown key\(s\) "
                                        r"'scale'; the layer reads 'feat_stride', 'ratios', 'scales'"):
        caffe.Net(_write(tmp_path, 'p.prototxt', text), caffe.TEST)
    zero = text.replace("'feat_stride': 16\\n'scale'", "'feat_stride': 0\\n'scales'")
    with pytest.raises(Exception, match=r"ProposalLayer 'proposal': 'feat_stride' must be >= 1"):
        caffe.Net(_write(tmp_path, 'z.prototxt', zero), caffe.TEST)
    bad = train_net_of(K).replace("'num_classes': 3", "'num_classes': 3\\n'num_clases': 4")
    with pytest.raises(Exception, match=r"RoIDataLayer 'input-data': param_str has unknown key\(s\) "
                                        r"'num_clases'"):
        caffe.Net(_write(tmp_path, 't.prototxt', bad), caffe.TRAIN)


def test_data_sets_of_different_classes_cannot_be_trained_together(tmp_path, isolated_cfg,
                                                                   voc_writer, tool_args):
    import train_net as tool
    custom = os.path.join(isolated_cfg.DATA_DIR, 'custom')
    os.makedirs(custom)
    for name, classes in (('pets', ['cat', 'dog']), ('farm', ['cow', 'dog'])):
        devkit = tmp_path / name
        voc_writer(devkit, '2007', {'a': (40, 30, [(classes[0], (1, 1, 20, 10))])},
                   {'trainval': ['a']})
        with open(os.path.join(custom, name + '.yml'), 'w') as f:
            f.write('devkit_path: %s\nyear: 2007\nclasses: [%s]\n' % (devkit, ', '.join(classes)))
    cfg.TRAIN.PROPOSAL_METHOD = 'gt'
    cfg.TRAIN.USE_FLIPPED = False
    with pytest.raises(ValueError, match=r"voc_custom_pets_trainval and voc_custom_farm_trainval "
                                         r"have different classes"):
        tool.combined_roidb('voc_custom_pets_trainval+voc_custom_farm_trainval')


def test_a_training_set_without_boxes_says_so(training, tmp_path):
    roidb, out = training
    for r in roidb:
        keep = r['gt_classes'] == 0
        r['gt_classes'] = r['gt_classes'][keep]
        r['max_overlaps'] = np.zeros(int(keep.sum()))
        r['boxes'] = r['boxes'][keep]
    cfg.TRAIN.BG_THRESH_LO = 0.5      # nothing usable either way
    with pytest.raises(ValueError, match='none of the 2 training images has a ground-truth box'):
        train_net(_solver(tmp_path, train_net_of(K)), roidb, out, max_iters=1)


# ---- files written -------------------------------------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def test_training_cleans_killed_snapshot_writes_and_writes_readable_files(training, tmp_path):
    roidb, out = training
    os.makedirs(out)
    tag = atomic_files._host_tag()
    stale = '.tiny_iter_4.caffemodel.%d-%s.q1w2e3r4.tmp' % (_dead_pid(), tag)
    unrelated = '.other_iter_4.caffemodel.%d-%s.q1w2e3r4.tmp' % (_dead_pid(), tag)
    for n in (stale, unrelated):
        open(os.path.join(out, n), 'wb').write(b'half a model')
    cfg.TRAIN.SNAPSHOT_ITERS = 2
    old = os.umask(0o022)
    try:
        paths = train_net(_solver(tmp_path, train_net_of(K)), roidb, out, max_iters=2)
    finally:
        os.umask(old)
    assert sorted(os.listdir(out)) == [unrelated, 'tiny_iter_2.caffemodel']
    assert os.stat(paths[0]).st_mode & 0o777 == 0o644


def test_detections_and_caches_are_written_whole_with_the_umask_mode(tmp_path, isolated_cfg,
                                                                      voc_writer):
    net = caffe.Net(_write(tmp_path, 'test.prototxt', detect_net_of(K)), caffe.TEST)
    db = ToyImdb(tmp_path)
    old = os.umask(0o027)
    try:
        frtest.test_net(net, db, thresh=0.0)
        devkit = _voc(tmp_path, voc_writer, {'a': (40, 30, [('cat', (1, 1, 20, 10))])}, split=('a',))
        _gt_imdb(devkit).roidb
    finally:
        os.umask(old)
    det_dir = db.evaluated[1]
    assert os.listdir(det_dir) == ['detections.pkl']
    assert os.stat(os.path.join(det_dir, 'detections.pkl')).st_mode & 0o777 == 0o640
    cache_dir = os.path.join(isolated_cfg.DATA_DIR, 'cache')
    assert os.listdir(cache_dir) == ['voc_2007_trainval_gt_roidb.npz']
    assert os.stat(os.path.join(cache_dir, os.listdir(cache_dir)[0])).st_mode & 0o777 == 0o640


def test_the_toy_generator_removes_what_a_killed_build_left(tmp_path):
    from datasets.toy_generator import make_toy_dataset
    out = tmp_path / 'toy'
    out.mkdir()
    gone = _dead_pid()
    (out / ('.toy-build-%d-abc' % gone)).mkdir()
    (out / ('.toy-build-%d-abc' % gone) / '000001.jpg').write_bytes(b'x')
    (out / ('.toy_manifest.json.%d.tmp' % gone)).write_text('{')
    running = out / ('.toy-build-%d-def' % os.getppid())        # another build, still running
    running.mkdir()
    make_toy_dataset(out, seed=0, num_trainval=1, num_test=1, size=64, max_objects=1,
                     min_object=8, max_object=16)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('.')) == [running.name]
