"""SSD's data preparation: data/VOC0712/create_list.sh and create_data.sh (through
scripts/create_annoset.py and build/tools/convert_annoset, get_image_size) on a small VOC-style
devkit made here, and the tools' flags, formats and errors."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from caffe.cli import FlagError
from caffe.proto import caffe_pb2
from caffe.tools import convert_annoset, get_image_size

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAFFE = os.path.join(ROOT, 'caffe-fast-rcnn')
VOC = ('aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse '
       'motorbike person pottedplant sheep sofa train tvmonitor').split()

# image id -> (height, width, [(class, xmin, ymin, xmax, ymax, difficult)])
IMAGES = {
    '000001': (90, 120, [('dog', 10, 20, 50, 60, 0), ('cat', 60, 10, 110, 40, 0),
                         ('dog', 30, 50, 70, 85, 1)]),
    '000002': (100, 80, [('person', 5, 5, 40, 95, 0)]),
    '000003': (60, 70, [('car', 1, 2, 69, 59, 0), ('dog', 10, 10, 20, 20, 0)]),
    '000004': (75, 75, []),
    '000005': (80, 90, [('bird', 20, 20, 60, 70, 1)]),
    '000006': (64, 96, [('cat', 0, 0, 96, 64, 0)]),
}
TRAINVAL, TEST = ['000001', '000002', '000003', '000004'], ['000005', '000006']


def write_xml(path, h, w, objects, size=True):
    parts = ['<annotation><filename>x.jpg</filename>']
    if size:
        parts.append('<size><width>%d</width><height>%d</height><depth>3</depth></size>' % (w, h))
    for cls, x0, y0, x1, y1, diff in objects:
        parts.append('<object><name>%s</name><pose>Left</pose><truncated>0</truncated>'
                     '<difficult>%d</difficult><bndbox><xmin>%s</xmin><ymin>%s</ymin>'
                     '<xmax>%s</xmax><ymax>%s</ymax></bndbox></object>'
                     % (cls, diff, x0, y0, x1, y1))
    parts.append('</annotation>')
    with open(path, 'w') as f:
        f.write(''.join(parts))


def make_devkit(root):
    voc = os.path.join(root, 'VOC2007')
    for d in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        os.makedirs(os.path.join(voc, d), exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w, objects) in IMAGES.items():
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(voc, 'JPEGImages', name + '.jpg'), img)
        write_xml(os.path.join(voc, 'Annotations', name + '.xml'), h, w, objects)
    for subset, names in (('trainval', TRAINVAL), ('test', TEST)):
        with open(os.path.join(voc, 'ImageSets', 'Main', subset + '.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')
    return root


def read_db(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k.decode(), caffe_pb2.AnnotatedDatum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return out


def check_record(ad, root, name, image_bytes=True):
    h, w, objects = IMAGES[name]
    path = os.path.join(root, 'VOC2007', 'JPEGImages', name + '.jpg')
    assert ad.type == caffe_pb2.AnnotatedDatum.BBOX
    d = ad.datum
    assert (d.encoded, d.label, d.channels, d.height, d.width) == (True, -1, 3, h, w)
    if image_bytes:
        with open(path, 'rb') as f:
            assert d.data == f.read()          # the JPEG file as it is
    labels = {c: VOC.index(c) + 1 for c in VOC}
    want = {}
    for cls, x0, y0, x1, y1, diff in objects:
        want.setdefault(labels[cls], []).append(
            [x0 / np.float32(w), y0 / np.float32(h), x1 / np.float32(w), y1 / np.float32(h),
             diff])
    assert [g.group_label for g in ad.annotation_group] == list(want)   # first-seen order
    for g in ad.annotation_group:
        assert [a.instance_id for a in g.annotation] == list(range(len(want[g.group_label])))
        got = [[np.float32(a.bbox.xmin), np.float32(a.bbox.ymin), np.float32(a.bbox.xmax),
                np.float32(a.bbox.ymax), int(a.bbox.difficult)] for a in g.annotation]
        np.testing.assert_array_equal(np.array(got, np.float64),
                                      np.array(want[g.group_label], np.float32).astype(np.float64))


@pytest.fixture
def caffe_root(tmp_path):
    """A Caffe root in tmp_path using the project's scripts and tools, so that the scripts'
    outputs (lists beside them, examples/ links) stay out of the repository."""
    root = tmp_path / 'proj' / 'caffe-fast-rcnn'
    (root / 'build' / 'tools').mkdir(parents=True)
    os.symlink(os.path.join(CAFFE, 'python'), root / 'python')
    shutil.copytree(os.path.join(CAFFE, 'tools'), root / 'tools')
    shutil.copytree(os.path.join(CAFFE, 'scripts'), root / 'scripts')
    shutil.copytree(os.path.join(CAFFE, 'data', 'VOC0712'), root / 'data' / 'VOC0712',
                    ignore=shutil.ignore_patterns('*.txt'))
    for tool in ('convert_annoset', 'get_image_size'):
        os.symlink(os.path.join('..', '..', 'tools', tool), root / 'build' / 'tools' / tool)
    return root


def run(cmd, env):
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300)


def test_voc_create_list_and_create_data_make_the_real_lmdbs(caffe_root, tmp_path):
    devkit = make_devkit(str(tmp_path / 'VOCdevkit'))
    env = dict(os.environ, VOC_ROOT_DIR=devkit, CAFFE_PYTHON=sys.executable,
               HOME=str(tmp_path), GLOG_minloglevel='0')
    r = run(['bash', str(caffe_root / 'data' / 'VOC0712' / 'create_list.sh')], env)
    assert r.returncode == 0, r.stdout
    data = caffe_root / 'data' / 'VOC0712'
    trainval = (data / 'trainval.txt').read_text().split('\n')[:-1]
    assert sorted(trainval) == ['VOC2007/JPEGImages/%s.jpg VOC2007/Annotations/%s.xml'
                                % (n, n) for n in TRAINVAL]
    assert (data / 'test.txt').read_text() == ''.join(
        'VOC2007/JPEGImages/%s.jpg VOC2007/Annotations/%s.xml\n' % (n, n) for n in TEST)
    assert (data / 'test_name_size.txt').read_text() == '000005 80 90\n000006 64 96\n'
    r = run(['bash', str(data / 'create_data.sh')], env)
    assert r.returncode == 0, r.stdout
    assert 'A total of 4 images.' in r.stdout and 'Processed 4 files.' in r.stdout
    for subset, listed in (('trainval', trainval), ('test', None)):
        db = os.path.join(devkit, 'VOC0712', 'lmdb', 'VOC0712_%s_lmdb' % subset)
        link = caffe_root / 'examples' / 'VOC0712' / ('VOC0712_%s_lmdb' % subset)
        assert os.path.realpath(link) == os.path.realpath(db)
        records = read_db(db)
        order = [line.split()[0] for line in listed] if listed else \
            ['VOC2007/JPEGImages/%s.jpg' % n for n in TEST]
        assert [k for k, _ in records] == ['%08d_%s' % (i, p) for i, p in enumerate(order)]
        for key, ad in records:
            check_record(ad, devkit, key.split('/')[-1][:-4])
    # The engine's AnnotatedData reads the test LMDB back: boxes as in the XMLs.
    import caffe
    from google.protobuf import text_format
    param = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "d" type: "AnnotatedData" top: "data" top: "label" '
                      'data_param { source: "%s" batch_size: 1 backend: LMDB } '
                      'annotated_data_param { label_map_file: "%s" } }'
                      % (caffe_root / 'examples' / 'VOC0712' / 'VOC0712_test_lmdb',
                         data / 'labelmap_voc.prototxt'), param)
    net = caffe.Net(param, caffe.TEST)
    net.forward()
    h, w, objects = IMAGES['000005']
    assert net.blobs['data'].data.shape == (1, 3, h, w)
    (cls, x0, y0, x1, y1, diff), = objects
    np.testing.assert_array_equal(
        net.blobs['label'].data.reshape(-1),
        np.float32([0, VOC.index(cls) + 1, 0, x0 / np.float32(w), y0 / np.float32(h),
                    x1 / np.float32(w), y1 / np.float32(h), diff]))


def test_create_annoset_refuses_an_existing_database_without_redo(caffe_root, tmp_path):
    devkit = make_devkit(str(tmp_path / 'dk'))
    lst = tmp_path / 'l.txt'
    lst.write_text('VOC2007/JPEGImages/000002.jpg VOC2007/Annotations/000002.xml\n')
    out = tmp_path / 'db'
    out.mkdir()
    cmd = [sys.executable, str(caffe_root / 'scripts' / 'create_annoset.py'),
           '--anno-type=detection', '--label-map-file=%s'
           % (caffe_root / 'data' / 'VOC0712' / 'labelmap_voc.prototxt'), devkit, str(lst),
           str(out), str(tmp_path / 'ex')]
    env = dict(os.environ, CAFFE_PYTHON=sys.executable)
    r = run(cmd, env)
    assert r.returncode == 1 and 'already exists and I do not hear redo' in r.stdout
    r = run(cmd[:2] + ['--redo', '--encoded'] + cmd[2:], env)
    assert r.returncode == 0, r.stdout
    (key, ad), = read_db(str(out))
    # --encoded without --encode-type: the image is re-encoded (SSD's guess keeps the dot).
    check_record(ad, devkit, '000002', image_bytes=False)
    assert ad.datum.encoded and cv2.imdecode(np.frombuffer(ad.datum.data, np.uint8), 1).shape \
        == (100, 80, 3)
    r = run(cmd[:2] + ['--redo', '--anno-type=detection', '--label-map-file=/nope'] + cmd[4:],
            env)
    assert r.returncode == 1 and 'label map file: /nope does not exist' in r.stdout


# ---- convert_annoset and get_image_size in process ---------------------------------------------

LABELMAP = os.path.join(CAFFE, 'data', 'VOC0712', 'labelmap_voc.prototxt')


def convert(tmp_path, lines, *flags, root=None, name='db'):
    lst = tmp_path / (name + '.txt')
    lst.write_text(''.join(line + '\n' for line in lines))
    out = str(tmp_path / name)
    status = convert_annoset.main(list(flags) + [(root or str(tmp_path)) + '/', str(lst), out])
    return status, out


def test_json_and_txt_annotations(tmp_path):
    img = np.zeros((50, 100, 3), np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    (tmp_path / 'a.json').write_text(json.dumps({
        'image': {'height': 50, 'width': 100},
        'annotation': [{'category_id': 18, 'bbox': [10, 5, 30, 20], 'iscrowd': 1},
                       {'category_id': 1, 'bbox': [0, 0, 100, 50], 'iscrowd': 0}]}))
    (tmp_path / 'a.txt').write_text('3 10 5 40 25\n3 0 0 50 50\n')
    coco_map = os.path.join(CAFFE, 'data', 'coco', 'labelmap_coco.prototxt')
    status, out = convert(tmp_path, ['a.png a.json'], '--anno_type=detection',
                          '--label_type=json', '--label_map_file=' + coco_map, '--encoded',
                          '--encode_type=png', name='j')
    assert status == 0
    (_, ad), = read_db(out)
    assert [g.group_label for g in ad.annotation_group] == [17, 1]      # dog, person
    b = ad.annotation_group[0].annotation[0].bbox
    np.testing.assert_array_equal(np.float32([b.xmin, b.ymin, b.xmax, b.ymax]),
                                  np.float32([0.1, 0.1, 0.4, 0.5]))
    assert b.difficult
    with open(tmp_path / 'a.png', 'rb') as f:
        assert ad.datum.data == f.read()
    status, out = convert(tmp_path, ['a.png a.txt'], '-anno_type', 'detection',
                          '-label_type=txt', '-label_map_file', LABELMAP, name='t')
    assert status == 0
    (_, ad), = read_db(out)
    assert not ad.datum.encoded and len(ad.datum.data) == 3 * 50 * 100
    g, = ad.annotation_group
    assert g.group_label == 3 and [a.instance_id for a in g.annotation] == [0, 1]
    np.testing.assert_allclose([g.annotation[1].bbox.xmax, g.annotation[1].bbox.ymax], [0.5, 1])


def test_classification_resize_and_gray(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((40, 60, 3), 200, np.uint8))
    status, out = convert(tmp_path, ['a.png 7'], '--resize_height=20', '--resize_width=30',
                          '--gray', '--check_size', name='c')
    assert status == 0
    (key, ad), = read_db(out)
    assert key == '00000000_a.png' and not ad.HasField('type')
    d = ad.datum
    assert (d.channels, d.height, d.width, d.label, d.encoded) == (1, 20, 30, 7, False)
    status, out = convert(tmp_path, ['a.png 1'], '--min_dim=80', '--encode_type=jpg', name='m')
    (_, ad), = read_db(out)
    assert ad.datum.encoded and (ad.datum.height, ad.datum.width) == (80, 120)


def test_get_image_size_with_and_without_name_ids(tmp_path, capsys):
    for name, (h, w) in (('x', (30, 40)), ('y', (12, 9))):
        cv2.imwrite(str(tmp_path / (name + '.jpg')), np.zeros((h, w, 3), np.uint8))
    (tmp_path / 'l.txt').write_text('x.jpg x.xml\ny.jpg y.xml\n')
    out = tmp_path / 'sizes.txt'
    assert get_image_size.main([str(tmp_path), str(tmp_path / 'l.txt'), str(out)]) == 0
    assert out.read_text() == 'x 30 40\ny 12 9\n'
    (tmp_path / 'ids.txt').write_text('y 17\nx 5\n')
    assert get_image_size.main(['--name_id_file=%s' % (tmp_path / 'ids.txt'),
                                str(tmp_path), str(tmp_path / 'l.txt'), str(out)]) == 0
    assert out.read_text() == '5 30 40\n17 12 9\n'
    assert get_image_size.main([str(tmp_path)]) == 1
    assert 'Usage' in capsys.readouterr().err


def fatal(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith('F')]
    assert lines, err
    return lines[-1]


def test_errors_name_the_file_line_and_object(tmp_path, capsys):
    devkit = make_devkit(str(tmp_path / 'dk'))
    ann = os.path.join(devkit, 'VOC2007', 'Annotations')
    write_xml(os.path.join(ann, 'bad_class.xml'), 90, 120, [('dog', 1, 1, 5, 5, 0),
                                                            ('unicorn', 1, 1, 5, 5, 0)])
    write_xml(os.path.join(ann, 'bad_box.xml'), 90, 120, [('cat', 50, 1, 40, 5, 0)])
    jpg = 'VOC2007/JPEGImages/000001.jpg'
    det = ['--anno_type=detection', '--label_map_file=' + LABELMAP, '--check_label']

    status, _ = convert(tmp_path, [jpg + ' VOC2007/Annotations/bad_class.xml'], *det,
                        root=devkit, name='a')
    assert status == 1
    msg = fatal(capsys)
    assert 'bad_class.xml' in msg and 'object 1' in msg and 'unicorn' in msg

    status, _ = convert(tmp_path, [jpg + ' VOC2007/Annotations/bad_box.xml'], *det,
                        root=devkit, name='b')
    assert status == 1
    msg = fatal(capsys)
    assert 'bad_box.xml' in msg and 'object 0 (cat)' in msg and 'xmax < xmin' in msg

    status, _ = convert(tmp_path, ['VOC2007/JPEGImages/nothere.jpg '
                                   'VOC2007/Annotations/000001.xml'], *det, root=devkit, name='c')
    assert status == 1
    assert 'nothere.jpg' in fatal(capsys)

    status, _ = convert(tmp_path, [jpg + ' VOC2007/Annotations/000001.xml', jpg], *det,
                        root=devkit, name='d')
    assert status == 1
    msg = fatal(capsys)
    assert 'd.txt:2' in msg and '1:' in msg

    status, out = convert(tmp_path, [jpg + ' VOC2007/Annotations/000001.xml'], *det,
                          root=devkit, name='e')
    assert status == 0
    status, _ = convert(tmp_path, [jpg + ' VOC2007/Annotations/000001.xml'], *det,
                        root=devkit, name='e')
    assert status == 1 and 'exists' in fatal(capsys)

    # An unknown flag: gflags' error line (as every tool gives it) and status 1.
    assert convert_annoset.main(['--bogus=1', 'a', 'b', 'c']) == 1
    assert "ERROR: unknown command line flag 'bogus'" in capsys.readouterr().err


def test_gflags_parsing():
    flags = convert_annoset._flags()
    args = flags.parse(['r/', '--encoded=True', '-gray', '--noshuffle', '--min_dim', '300', 'l',
                        '--check_label=0', '--encode_type=', 'db'])
    assert args == ['r/', 'l', 'db']
    assert flags.encoded and flags.gray and not flags.shuffle
    assert flags.min_dim == 300 and not flags.check_label and flags.encode_type == ''
    with pytest.raises(FlagError, match="illegal value 'maybe'"):
        flags.parse(['--encoded=maybe'])
