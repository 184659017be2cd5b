"""Caffe's build/tools on small real inputs: convert_imageset, compute_image_mean,
extract_features, upgrade_net_proto_text/binary, upgrade_solver_proto_text, and the
gflags-style flag parser they share (caffe/cli.py).

Each tool runs in-process through caffe.tools (fast); one test runs the executables under
caffe-fast-rcnn/build/tools as a user would.
"""
import os
import re
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

import caffe
from caffe import cli, protoio
from caffe.io import blobproto_to_array
from caffe.net import read_net_param
from caffe.proto import caffe_pb2
from caffe.tools import TOOLS, tool_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_TOOLS = os.path.join(ROOT, 'caffe-fast-rcnn', 'build', 'tools')


def run(name, *args):
    return tool_main(name)([str(a) for a in args])


def read_lmdb(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = [(k.decode(), caffe_pb2.Datum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return items


@pytest.fixture
def images(tmp_path):
    """Five small images (three PNG, two JPEG; one 7x5, the others 6x8) and their list."""
    rng = np.random.RandomState(0)
    root = tmp_path / 'imgs'
    root.mkdir()
    names, arrays = [], {}
    for i, (ext, shape) in enumerate([('png', (6, 8)), ('png', (6, 8)), ('jpg', (6, 8)),
                                      ('png', (7, 5)), ('jpeg', (6, 8))]):
        img = rng.randint(0, 256, size=shape + (3,)).astype(np.uint8)
        name = 'img %d.%s' % (i, ext)  # a space in the name: the label is after the last one
        cv2.imwrite(str(root / name), img)
        names.append(name)
        arrays[name] = cv2.imread(str(root / name))  # JPEG: what the decoder gives back
    listing = tmp_path / 'list.txt'
    listing.write_text(''.join('%s %d\n' % (n, i % 3) for i, n in enumerate(names)))
    return root, listing, names, arrays


def _raw(datum):
    return np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)


def test_convert_imageset_raw_resized_and_grey(images, tmp_path):
    root, listing, names, arrays = images
    out = tmp_path / 'raw_lmdb'
    assert run('convert_imageset', str(root) + '/', listing, out) == 0
    assert sorted(os.listdir(out)) == ['data.mdb', 'lock.mdb']
    items = read_lmdb(out)
    assert [k for k, _ in items] == ['%08d_%s' % (i, n) for i, n in enumerate(names)]
    for (key, datum), (i, name) in zip(items, enumerate(names)):
        assert datum.label == i % 3 and not datum.encoded
        np.testing.assert_array_equal(_raw(datum), arrays[name].transpose(2, 0, 1))  # BGR, CHW

    resized = tmp_path / 'resized'
    assert run('convert_imageset', '-resize_height=4', '--resize_width', '3', '-gray',
               str(root) + '/', listing, resized) == 0
    for (key, datum), name in zip(read_lmdb(resized), names):
        grey = cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE)
        want = cv2.resize(grey, (3, 4), interpolation=cv2.INTER_LINEAR)
        assert (datum.channels, datum.height, datum.width) == (1, 4, 3)
        np.testing.assert_array_equal(_raw(datum)[0], want)


def test_convert_imageset_encoded_shuffled_and_checked(images, tmp_path):
    root, listing, names, arrays = images
    enc = tmp_path / 'enc'
    assert run('convert_imageset', '-encoded', '-shuffle', str(root) + '/', listing, enc) == 0
    items = read_lmdb(enc)
    got_names = sorted(k.split('_', 1)[1] for k, _ in items)
    assert got_names == sorted(names)  # every image once, whatever the order
    for key, datum in items:
        name = key.split('_', 1)[1]
        assert datum.encoded and datum.label == names.index(name) % 3
        # Nothing had to change: the file's own bytes (jpeg counts as jpg).
        assert datum.data == (root / name).read_bytes()
    png = tmp_path / 'as_png'
    assert run('convert_imageset', '-encode_type=png', str(root) + '/', listing, png) == 0
    for key, datum in read_lmdb(png):
        name = key.split('_', 1)[1]
        decoded = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded, arrays[name])  # PNG is lossless
    # -check_size: the 7x5 image differs from the first one's 6x8.
    assert run('convert_imageset', '-check_size', str(root) + '/', listing, tmp_path / 'chk') == 1
    # The database must not exist yet, as in Caffe (mkdir fails).
    assert run('convert_imageset', str(root) + '/', listing, png) == 1
    # Without plyvel, leveldb is refused with a clear error (or works if it is installed).
    try:
        import plyvel  # noqa: F401
    except ImportError:
        assert run('convert_imageset', '-backend', 'leveldb', str(root) + '/', listing,
                   tmp_path / 'ldb') == 1


def test_convert_imageset_skips_unreadable_images(images, tmp_path, capfd):
    root, listing, names, arrays = images
    listing.write_text(listing.read_text() + 'missing.png 1\n')
    out = tmp_path / 'db'
    assert run('convert_imageset', str(root) + '/', listing, out) == 0
    assert len(read_lmdb(out)) == len(names)
    assert 'Could not open or find file %s/missing.png' % root in capfd.readouterr().err


def test_data_tools_refuse_truncated_images_naming_them(images, tmp_path, capfd):
    """Every data tool reads images through caffe.image_file: a JPEG cut short (which
    OpenCV's imread would pad with grey) is named. convert_imageset skips it, as Caffe skips
    images it cannot read; get_image_size and convert_annoset stop; compute_image_mean stops
    on an encoded record holding one."""
    root, listing, names, arrays = images
    whole = (root / names[2]).read_bytes()
    (root / 'cut.jpg').write_bytes(whole[:len(whole) // 2])
    listing.write_text(listing.read_text() + 'cut.jpg 1\n')
    capfd.readouterr()
    out = tmp_path / 'db'
    assert run('convert_imageset', str(root) + '/', listing, out) == 0
    assert [k for k, _ in read_lmdb(out)] == ['%08d_%s' % (i, n) for i, n in enumerate(names)]
    err = capfd.readouterr().err
    assert re.search(r'(?m)^E.*cut\.jpg.*truncated', err), err
    ssd_list = tmp_path / 'ssd.txt'   # SSD's tools split lines on white space
    ssd_list.write_text('%s 0\ncut.jpg 1\n' % names[2].replace(' ', '_'))
    os.rename(root / names[2], root / names[2].replace(' ', '_'))
    assert run('get_image_size', str(root) + '/', ssd_list, tmp_path / 'sizes.txt') == 1
    assert re.search(r'(?m)^F.*cut\.jpg.*truncated', capfd.readouterr().err)
    assert not (tmp_path / 'sizes.txt').exists()
    assert run('convert_annoset', str(root) + '/', ssd_list, tmp_path / 'anno') == 1
    assert re.search(r'(?m)^F.*cut\.jpg.*truncated', capfd.readouterr().err)
    env = lmdb.open(str(tmp_path / 'cut_db'), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b'0', caffe_pb2.Datum(data=whole[:len(whole) // 2], encoded=True,
                                      label=4).SerializeToString())
    env.close()
    assert run('compute_image_mean', tmp_path / 'cut_db') == 1
    assert re.search(r'(?m)^F.*label 4.*truncated', capfd.readouterr().err)


def test_write_records_commits_in_batches_and_grows_the_lmdb_map(tmp_path, monkeypatch, capfd):
    """db.write_records, which every converter uses: a commit (and Caffe's progress line)
    every `every` records and after the last; an LMDB whose map fills up doubles it."""
    from caffe import db
    monkeypatch.setattr(db, '_LMDB_START_MAP', 1 << 16)   # 64 KB, for 500 KB of records
    monkeypatch.setenv('GLOG_minloglevel', '0')
    records = [('%08d' % i, bytes([i]) * 10000) for i in range(50)]
    out = db.open_db('lmdb', str(tmp_path / 'grow'), 'new')
    assert db.write_records(out, iter(records), 'convert_imageset.cpp', every=20) == 50
    out.close()
    back = db.open_db('lmdb', str(tmp_path / 'grow'), 'read')
    assert [(k.decode(), v) for k, v in back.items()] == records
    back.close()
    err = capfd.readouterr().err
    assert [line.split('] ')[1] for line in err.splitlines() if 'Processed' in line] == \
        ['Processed 20 files.', 'Processed 40 files.', 'Processed 50 files.']
    assert 'Opened lmdb %s' % (tmp_path / 'grow') in err


def test_launcher_loads_pytorch_only_for_tools_that_need_it():
    """build/tools/* start through caffe/tools/launch.py: the NO_ENGINE tools without the
    caffe package's __init__ (no PyTorch: a fraction of a second to start), the others with
    the whole engine."""
    launch = os.path.join(ROOT, 'caffe-fast-rcnn', 'python', 'caffe', 'tools', 'launch.py')
    probe = ('import runpy, sys\n'
             'sys.argv = [sys.argv[1], sys.argv[2]]\n'
             'try:\n    runpy.run_path(sys.argv[0], run_name="__main__")\n'
             'except SystemExit:\n    pass\n'
             'import caffe\n'
             'from caffe.tools import NO_ENGINE, tool_main\n'
             'if sys.argv[1] in NO_ENGINE:\n'
             '    for name in sorted(NO_ENGINE):\n        tool_main(name)\n'
             'print("torch" in sys.modules, hasattr(caffe, "Net"))\n')
    for tool, want in (('get_image_size', 'False False'), ('extract_features', 'True True')):
        done = subprocess.run([sys.executable, '-c', probe, launch, tool], capture_output=True,
                              text=True, cwd=ROOT)
        assert done.stdout.split('\n')[-2] == want, (tool, done.stdout, done.stderr)
        assert 'Usage' in done.stderr or 'usage' in done.stderr.lower()


def test_compute_image_mean_equals_numpy_and_caffe_reads_it(images, tmp_path):
    root, listing, names, arrays = images
    same = [n for n in names if arrays[n].shape == (6, 8, 3)]
    listing.write_text(''.join('%s 0\n' % n for n in same))
    for flags in ([], ['-encoded']):
        db = tmp_path / ('db%d' % len(flags))
        assert run('convert_imageset', *flags, str(root) + '/', listing, db) == 0
        mean_file = tmp_path / ('mean%d.binaryproto' % len(flags))
        assert run('compute_image_mean', '-backend=lmdb', db, mean_file) == 0
        blob = protoio.read_binary(str(mean_file), caffe_pb2.BlobProto)
        assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 6, 8)
        assert not blob.HasField('shape')  # Caffe writes the legacy 4-D fields
        want = np.mean([arrays[n].transpose(2, 0, 1).astype(np.float64) for n in same], axis=0)
        mean = blobproto_to_array(blob)
        assert mean.shape == (1, 3, 6, 8)
        np.testing.assert_allclose(mean[0], want, rtol=1e-6)
    # A Data layer reads it as its mean_file.
    net_file = tmp_path / 'net.prototxt'
    net_file.write_text(
        "layer { name: 'd' type: 'Data' top: 'data' top: 'label' data_param { source: '%s' "
        "batch_size: 1 backend: LMDB } transform_param { mean_file: '%s' } }"
        % (tmp_path / 'db0', tmp_path / 'mean0.binaryproto'))
    net = caffe.Net(str(net_file), caffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs['data'].data[0],
                               arrays[same[0]].transpose(2, 0, 1) - mean[0], rtol=1e-5, atol=1e-4)
    # Sizes must agree, and the argument count is checked.
    listing.write_text(''.join('%s 0\n' % n for n in names))
    mixed = tmp_path / 'mixed'
    assert run('convert_imageset', str(root) + '/', listing, mixed) == 0
    assert run('compute_image_mean', mixed, tmp_path / 'm.binaryproto') == 1
    assert run('compute_image_mean') == 1


EXTRACT_NET = """
layer { name: 'd' type: 'Data' top: 'data' top: 'label'
        data_param { source: '%s' batch_size: 2 backend: LMDB } transform_param { scale: 0.01 } }
layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: 'gaussian' std: 1 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'conv' top: 'ip'
        inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 1 } } }
"""


def test_extract_features_equals_net_forward(images, tmp_path):
    root, listing, names, arrays = images
    same = [n for n in names if arrays[n].shape == (6, 8, 3)]
    listing.write_text(''.join('%s 0\n' % n for n in same))
    db = tmp_path / 'imgs_db'
    assert run('convert_imageset', str(root) + '/', listing, db) == 0
    proto = tmp_path / 'net.prototxt'
    proto.write_text(EXTRACT_NET % db)
    net = caffe.Net(str(proto), caffe.TEST)
    weights = tmp_path / 'w.caffemodel'
    net.save(str(weights))
    out_conv, out_ip = tmp_path / 'f_conv', tmp_path / 'f_ip'
    assert run('extract_features', weights, proto, 'conv,ip', '%s,%s' % (out_conv, out_ip),
               3, 'lmdb', 'CPU') == 0
    ref = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    want = {'conv': [], 'ip': []}
    for _ in range(3):  # 3 batches of 2 from 4 records: the data wraps around as in Caffe
        ref.forward()
        for b in want:
            want[b].extend(ref.blobs[b].data.copy())
    for blob, path in (('conv', out_conv), ('ip', out_ip)):
        items = read_lmdb(path)
        assert [k for k, _ in items] == ['%010d' % i for i in range(6)]
        shape = ref.blobs[blob].data.shape[1:]
        legacy = tuple(shape) + (1,) * (3 - len(shape))
        for (key, datum), w in zip(items, want[blob]):
            assert (datum.channels, datum.height, datum.width) == legacy
            np.testing.assert_array_equal(np.asarray(datum.float_data, np.float32), w.ravel())
    # Blob and dataset counts must agree; an unknown blob is named.
    assert run('extract_features', weights, proto, 'conv,ip', tmp_path / 'x', 1, 'lmdb') == 1
    assert run('extract_features', weights, proto, 'nope', tmp_path / 'y', 1, 'lmdb') == 1
    assert run('extract_features', weights, proto) == 1


V1_NET = """name: "v1net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_upgrade_net_proto_text_gives_what_the_engine_builds(tmp_path):
    old = tmp_path / 'v1.prototxt'
    old.write_text(V1_NET)
    new = tmp_path / 'new.prototxt'
    assert run('upgrade_net_proto_text', old, new) == 0
    text = new.read_text()
    assert 'layers {' not in text and 'input_dim' not in text and 'blobs_lr' not in text
    upgraded = protoio.read_text(str(new), caffe_pb2.NetParameter)
    assert (upgraded.layer[0].name, upgraded.layer[0].type, list(upgraded.layer[0].top)) == \
        ('input', 'Input', ['data'])
    assert list(upgraded.layer[0].input_param.shape[0].dim) == [2, 3, 8, 8]
    # Past the Input layer, exactly the layers the engine builds from the V1 file.
    engine = read_net_param(str(old))
    assert list(upgraded.layer[1:]) == list(engine.layer)
    assert upgraded.layer[1].param[1].lr_mult == 2 and upgraded.layer[1].param[1].decay_mult == 0
    # Both nets compute the same thing.
    a = caffe.Net(str(old), caffe.TEST)
    b = caffe.Net(str(new), caffe.TEST)
    assert list(b.blobs) == list(a.blobs) and b.inputs == a.inputs == ['data']
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            pb.data[...] = pa.data
    x = np.random.RandomState(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(data=x)['prob'], b.forward(data=x)['prob'])
    # Already current: written out unchanged, status 0.
    again = tmp_path / 'again.prototxt'
    assert run('upgrade_net_proto_text', new, again) == 0
    assert protoio.read_text(str(again), caffe_pb2.NetParameter) == upgraded
    # Wrong argument count: 1; unparsable input: 2.
    assert run('upgrade_net_proto_text', old) == 1
    bad = tmp_path / 'bad.prototxt'
    bad.write_text('layer { name: ')
    assert run('upgrade_net_proto_text', bad, tmp_path / 'o') == 2


def test_upgrade_net_proto_binary_keeps_the_weights(tmp_path):
    old = caffe_pb2.NetParameter()
    protoio.parse_text(V1_NET, old)
    rng = np.random.RandomState(1)
    for layer, shapes in ((old.layers[0], [(4, 3, 3, 3), (4,)]), (old.layers[3], [(5, 36), (5,)])):
        for s in shapes:
            b = layer.blobs.add()
            b.shape.dim.extend(s)
            b.data.extend(rng.standard_normal(int(np.prod(s))).astype(np.float32).tolist())
    src, dst = tmp_path / 'old.caffemodel', tmp_path / 'new.caffemodel'
    src.write_bytes(old.SerializeToString())
    assert run('upgrade_net_proto_binary', src, dst) == 0
    new = protoio.read_binary(str(dst), caffe_pb2.NetParameter)
    assert not len(new.layers) and [l.type for l in new.layer] == \
        ['Input', 'Convolution', 'ReLU', 'Pooling', 'InnerProduct', 'Softmax']
    proto = tmp_path / 'net.prototxt'
    proto.write_text(V1_NET)
    from_old = caffe.Net(str(proto), caffe.TEST, weights=str(src))
    from_new = caffe.Net(str(proto), caffe.TEST, weights=str(dst))
    for name in from_old.params:
        for a, b in zip(from_old.params[name], from_new.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    assert np.abs(from_new.params['fc'][0].data).sum() > 0


def test_upgrade_solver_proto_text(tmp_path):
    old = tmp_path / 'solver.prototxt'
    old.write_text('net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\nmomentum: 0.9\n')
    new = tmp_path / 'new.prototxt'
    assert run('upgrade_solver_proto_text', old, new) == 0
    solver = protoio.read_text(str(new), caffe_pb2.SolverParameter)
    assert solver.type == 'Nesterov' and not solver.HasField('solver_type')
    assert solver.net == 'n.prototxt' and solver.momentum == pytest.approx(0.9)
    assert run('upgrade_solver_proto_text', new, tmp_path / 'same.prototxt') == 0
    assert run('upgrade_solver_proto_text') == 1


def test_gflags_style_flags():
    f = cli.Flags('t', 'usage', 'tools/t.cpp')
    f.define('gray', False, 'g')
    f.define('resize_width', 0, 'w')
    f.define('backend', 'lmdb', 'b')
    assert f.parse(['a', '-gray', '--resize_width', '7', 'b', '-backend=leveldb', 'c']) == ['a', 'b', 'c']
    assert (f.gray, f.resize_width, f.backend) == (True, 7, 'leveldb')
    assert f.parse(['-nogray', '--', '-x']) == ['-x'] and f.gray is False
    assert f.parse(['--gray=true']) == [] and f.gray is True
    with pytest.raises(cli.FlagError, match="unknown command line flag 'nope'"):
        f.parse(['-nope'])
    with pytest.raises(cli.FlagError, match="illegal value 'x'"):
        f.parse(['-resize_width=x'])
    with pytest.raises(SystemExit):
        f.parse(['--help'])


def test_build_tools_executables(tmp_path, capfd):
    """The files under build/tools run the tools (through the caffe-fast-rcnn/tools wrapper)."""
    for name in TOOLS:
        path = os.path.join(BUILD_TOOLS, name)
        assert os.access(path, os.X_OK), path
    old = tmp_path / 'v1.prototxt'
    old.write_text(V1_NET)
    env = dict(os.environ, CAFFE_PYTHON=sys.executable, GLOG_minloglevel="0")
    done = subprocess.run([os.path.join(BUILD_TOOLS, 'upgrade_net_proto_text'), str(old),
                           str(tmp_path / 'new.prototxt')], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'Wrote upgraded NetParameter text proto to' in done.stderr
    # Wrong argument count: gflags' usage and status 1.
    capfd.readouterr()
    assert run('convert_imageset') == 1
    assert 'convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME' in capfd.readouterr().err


def test_setup_py_installs_every_tool_and_only_the_engine():
    """setup.py's console commands are the tools (and caffe); its packages are caffe's only
    (the detector's generic names, utils, datasets, nms, ..., stay out of site-packages)."""
    text = open(os.path.join(ROOT, 'setup.py')).read()
    for name, target in TOOLS.items():
        module, func = target.split(':')
        assert "'%s = caffe.tools.%s:%s'" % (name, module, func) in text
    assert "'caffe = caffe.tool:main'" in text
    assert "include=['caffe', 'caffe.*']" in text and "package_dir={'': ENGINE}" in text
