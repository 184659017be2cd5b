"""Data (LMDB of Datums) and ImageData layers with transform_param, checked value by value
against hand-computed crops, means, scales and mirrors."""
import gc
import threading
import time

import cv2
import lmdb
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe

R = np.random.RandomState(11)
IMGS = R.randint(0, 256, (5, 3, 6, 8)).astype(np.uint8)  # 5 records, C x H x W = 3 x 6 x 8
LABELS = [7, 1, 4, 0, 9]


def make_net(text, phase=caffe.TEST):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, phase)


def write_lmdb(path, datums):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        # Keys written out of order: the layer must read them in key order.
        for i in reversed(range(len(datums))):
            txn.put(b'%08d_x' % i, datums[i].SerializeToString())
    env.close()
    return str(path)


@pytest.fixture(scope='module')
def raw_db(tmp_path_factory):
    d = tmp_path_factory.mktemp('raw')
    return write_lmdb(d / 'db', [caffe.io.array_to_datum(IMGS[i], LABELS[i]) for i in range(5)])


def data_net(source, batch_size=2, transform='', phase=caffe.TEST, extra='',
             tops=('data', 'label')):
    top = ' '.join('top: "%s"' % t for t in tops)
    return make_net('layer { name: "d" type: "Data" %s data_param { source: "%s" backend: LMDB '
                    'batch_size: %d %s } transform_param { %s } }' % (top, source, batch_size,
                                                                       extra, transform), phase)


def batches(net, n):
    out = []
    for _ in range(n):
        net.forward()
        out.append((net.blobs['data'].data.copy(),
                    net.blobs['label'].data.copy() if 'label' in net.blobs else None))
    return out


def f32(x):
    return np.asarray(x, dtype=np.float32)


# ---- Data: reading ---------------------------------------------------------------------------

def test_raw_records_in_key_order_cycling_with_labels(raw_db):
    net = data_net(raw_db)
    assert net.blobs['data'].data.shape == (2, 3, 6, 8) and net.blobs['label'].data.shape == (2,)
    got = batches(net, 4)
    order = [0, 1, 2, 3, 4, 0, 1, 2]
    for b, (data, label) in enumerate(got):
        idx = order[2 * b:2 * b + 2]
        np.testing.assert_array_equal(data, IMGS[idx].astype(np.float32))
        np.testing.assert_array_equal(label, [LABELS[i] for i in idx])
    assert net.blobs['data'].data.dtype == np.float32


def test_single_top_and_synchronous_loading(raw_db):
    net = data_net(raw_db, batch_size=3, tops=('data',), extra='prefetch: 0')
    assert list(net.blobs) == ['data']
    got = batches(net, 2)
    np.testing.assert_array_equal(got[1][0], IMGS[[3, 4, 0]])
    assert net.layers[0]._prefetcher is None


def test_float_data_records_and_float64_nets(tmp_path):
    arrs = R.randn(3, 2, 3, 3).astype(np.float32)
    src = write_lmdb(tmp_path / 'f', [caffe.io.array_to_datum(a, i) for i, a in enumerate(arrs)])
    net = data_net(src, batch_size=3, transform='scale: 3')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, arrs * np.float32(3))
    with caffe.precision(torch.float64):
        net = data_net(src, batch_size=3, transform='scale: 0.1')
        net.forward()
    assert net.blobs['data'].data.dtype == np.float64
    np.testing.assert_allclose(net.blobs['data'].data, arrs.astype(np.float64) * 0.1, rtol=1e-7)


# ---- Data: transform_param -------------------------------------------------------------------

def test_test_phase_center_crop_mean_values_scale(raw_db):
    net = data_net(raw_db, batch_size=5, transform='crop_size: 4 scale: 0.5 mean_value: 10 '
                                                     'mean_value: 20 mean_value: 30')
    assert net.blobs['data'].data.shape == (5, 3, 4, 4)
    net.forward()
    # Centre crop: rows (6-4)//2 = 1.., columns (8-4)//2 = 2..
    crop = IMGS[:, :, 1:5, 2:6].astype(np.float32)
    want = (crop - f32([10, 20, 30]).reshape(1, 3, 1, 1)) * np.float32(0.5)
    np.testing.assert_array_equal(net.blobs['data'].data, want)
    # One mean value serves every channel.
    net = data_net(raw_db, batch_size=5, transform='mean_value: 100')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, IMGS.astype(np.float32) - 100)


@pytest.fixture(scope='module')
def mean_file(tmp_path_factory):
    mean = R.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp('mean') / 'mean.binaryproto'
    path.write_bytes(caffe.io.array_to_blobproto(mean).SerializeToString())
    return str(path), mean[0]


def test_mean_file_is_subtracted_at_source_positions(raw_db, mean_file):
    path, mean = mean_file
    net = data_net(raw_db, batch_size=5,
                   transform='crop_size: 3 scale: 0.25 mean_file: "%s"' % path)
    net.forward()
    h0, w0 = (6 - 3) // 2, (8 - 3) // 2
    want = ((IMGS.astype(np.float32) - mean) * np.float32(0.25))[:, :, h0:h0 + 3, w0:w0 + 3]
    np.testing.assert_array_equal(net.blobs['data'].data, want)


def _matches(out, src, mean, k, scale):
    """All (h_off, w_off, mirrored) under which `out` is Caffe's transform of `src`."""
    full = (src.astype(np.float32) - mean) * np.float32(scale)
    hits = []
    for h in range(src.shape[1] - k + 1):
        for w in range(src.shape[2] - k + 1):
            crop = full[:, h:h + k, w:w + k]
            for flip in (False, True):
                if np.array_equal(out, crop[:, :, ::-1] if flip else crop):
                    hits.append((h, w, flip))
    return hits


def test_train_random_crop_and_mirror_with_mean_file(raw_db, mean_file):
    path, mean = mean_file
    caffe.set_random_seed(3)
    net = data_net(raw_db, batch_size=5, phase=caffe.TRAIN,
                   transform='crop_size: 4 mirror: true scale: 2 mean_file: "%s"' % path)
    seen = set()
    for data, label in batches(net, 8):
        for out, lab in zip(data, label):
            src = IMGS[LABELS.index(int(lab))]
            hits = _matches(out, src, mean, 4, 2)
            assert len(hits) == 1, hits
            seen.add(hits[0])
    # 40 draws from 3 x 5 offsets x 2 flips: both flips and many offsets occur.
    assert {f for _, _, f in seen} == {False, True}
    assert len({(h, w) for h, w, _ in seen}) >= 6


def test_train_randomness_is_seeded_and_independent_of_prefetch(raw_db):
    def run(seed, prefetch):
        caffe.set_random_seed(seed)
        net = data_net(raw_db, batch_size=4, phase=caffe.TRAIN, extra='prefetch: %d' % prefetch,
                       transform='crop_size: 5 mirror: true')
        return np.stack([d for d, _ in batches(net, 5)])
    a = run(5, 4)
    np.testing.assert_array_equal(a, run(5, 0))
    np.testing.assert_array_equal(a, run(5, 1))
    assert not np.array_equal(a, run(6, 4))


def test_test_phase_mirror_is_random_too_but_crop_is_centred(raw_db):
    # Caffe tosses the mirror coin in both phases; only crops are random in TRAIN alone.
    caffe.set_random_seed(0)
    net = data_net(raw_db, batch_size=5, transform='crop_size: 4 mirror: true')
    flips = set()
    for data, label in batches(net, 6):
        for out, lab in zip(data, label):
            hits = _matches(out, IMGS[LABELS.index(int(lab))], 0, 4, 1)
            assert [h[:2] for h in hits] == [(1, 2)]
            flips.add(hits[0][2])
    assert flips == {False, True}


# ---- Data: encoded records -------------------------------------------------------------------

def encoded_datum(img, label, ext='.png', channels=None):
    ok, buf = cv2.imencode(ext, img)
    assert ok
    d = caffe.caffe_pb2.Datum(data=buf.tobytes(), label=label, encoded=True,
                              channels=channels or (img.shape[2] if img.ndim == 3 else 1))
    return d


def test_encoded_png_color_and_gray(tmp_path):
    color = R.randint(0, 256, (5, 7, 3)).astype(np.uint8)   # H x W x BGR
    gray = R.randint(0, 256, (5, 7)).astype(np.uint8)
    src = write_lmdb(tmp_path / 'c', [encoded_datum(color, 3)])
    net = data_net(src, batch_size=2, transform='scale: 0.5')
    assert net.blobs['data'].data.shape == (2, 3, 5, 7)
    net.forward()
    want = color.transpose(2, 0, 1).astype(np.float32) * np.float32(0.5)
    np.testing.assert_array_equal(net.blobs['data'].data, np.stack([want, want]))
    np.testing.assert_array_equal(net.blobs['label'].data, [3, 3])
    # A gray PNG decodes natively to one channel; force_color makes three equal channels.
    src = write_lmdb(tmp_path / 'g', [encoded_datum(gray, 1)])
    net = data_net(src, batch_size=1)
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, gray[None, None])
    net = data_net(src, batch_size=1, transform='force_color: true')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, np.stack([gray] * 3)[None])
    # force_gray on a color image whose channels agree gives that one channel.
    same = np.repeat(gray[:, :, None], 3, axis=2)
    src = write_lmdb(tmp_path / 's', [encoded_datum(same, 2)])
    net = data_net(src, batch_size=1, transform='force_gray: true')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data, gray[None, None])


def test_encoded_jpeg_with_crop_and_varying_sizes(tmp_path):
    imgs = [R.randint(0, 256, (h, w, 3)).astype(np.uint8) for h, w in ((8, 10), (12, 9))]
    src = write_lmdb(tmp_path / 'j', [encoded_datum(im, i, '.jpg') for i, im in enumerate(imgs)])
    decoded = [cv2.imdecode(np.frombuffer(cv2.imencode('.jpg', im)[1], np.uint8), cv2.IMREAD_COLOR)
               for im in imgs]
    # batch_size 1: each batch takes the size of its image.
    net = data_net(src, batch_size=1)
    for dec in decoded + decoded[:1]:
        net.forward()
        np.testing.assert_array_equal(net.blobs['data'].data[0], dec.transpose(2, 0, 1))
    net = data_net(src, batch_size=1, transform='crop_size: 6')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data[0],
                                  decoded[0].transpose(2, 0, 1)[:, 1:7, 2:8])
    # Two sizes in one batch is an error naming the layer.
    net = data_net(src, batch_size=2)
    with pytest.raises(caffe.LayerError, match="'d'.*12x9.*one size"):
        net.forward()
    with pytest.raises(caffe.LayerError, match="'d'"):
        net.forward()  # a failed prefetcher keeps failing instead of hanging


# ---- Data: skipping ----------------------------------------------------------------------------

def test_rand_skip_and_data_parallel_skip(raw_db, monkeypatch):
    monkeypatch.setattr(caffe.data_transform, 'engine_seed', lambda: 7)
    net = data_net(raw_db, batch_size=3, extra='rand_skip: 5')   # 7 % 5 = 2 skipped
    net.forward()
    np.testing.assert_array_equal(net.blobs['label'].data, [LABELS[i] for i in (2, 3, 4)])
    monkeypatch.undo()
    # Solver 1 of 2 takes every other record of the endless stream in TRAIN ...
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    try:
        net = data_net(raw_db, batch_size=5, phase=caffe.TRAIN)
        net.forward()
        np.testing.assert_array_equal(net.blobs['label'].data,
                                      [LABELS[i] for i in (1, 3, 0, 2, 4)])
        # ... but every record in TEST, where only one solver runs.
        net = data_net(raw_db, batch_size=5)
        net.forward()
        np.testing.assert_array_equal(net.blobs['label'].data, LABELS)
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)


# ---- Data: errors ------------------------------------------------------------------------------

def test_user_errors_name_the_layer(raw_db, mean_file, tmp_path, monkeypatch):
    with pytest.raises(caffe.NetError, match="'d'.*cannot open LMDB.*No such file"):
        data_net(str(tmp_path / 'missing'))
    with pytest.raises(caffe.NetError, match="'d'.*Positive batch size"):
        data_net(raw_db, batch_size=0)
    with pytest.raises(caffe.NetError, match="'d'.*crop_size 7 is larger than the 6 x 8"):
        data_net(raw_db, transform='crop_size: 7')
    with pytest.raises(caffe.NetError, match="'d'.*either 1 mean_value or as many as channels: 3"):
        data_net(raw_db, transform='mean_value: 1 mean_value: 2')
    with pytest.raises(caffe.NetError, match="'d'.*Cannot specify mean_file and mean_value"):
        data_net(raw_db, transform='mean_value: 1 mean_file: "%s"' % mean_file[0])
    with pytest.raises(caffe.NetError, match="'d'.*cannot read mean_file"):
        data_net(raw_db, transform='mean_file: "%s"' % (tmp_path / 'nope.binaryproto'))
    other = tmp_path / 'm.binaryproto'
    other.write_bytes(caffe.io.array_to_blobproto(np.zeros((1, 3, 5, 8))).SerializeToString())
    with pytest.raises(caffe.NetError, match="'d'.*3x5x8 mean but the images are 3x6x8"):
        data_net(raw_db, transform='mean_file: "%s"' % other)
    with pytest.raises(caffe.NetError, match="'d'.*cannot set both force_color and force_gray"):
        data_net(raw_db, transform='force_color: true force_gray: true')
    with pytest.raises(caffe.NetError, match='takes at most 2 top'):
        data_net(raw_db, tops=('a', 'b', 'c'))
    empty = tmp_path / 'empty'
    lmdb.open(str(empty)).close()
    with pytest.raises(caffe.NetError, match="'d'.*holds no records"):
        data_net(str(empty))
    # LevelDB (Caffe's default backend) needs plyvel: without it, say how to get going.
    monkeypatch.setitem(__import__('sys').modules, 'plyvel', None)
    with pytest.raises(caffe.NetError, match="(?s)'d'.*plyvel.*LMDB.*looks like an LMDB"):
        make_net('layer { name: "d" type: "Data" top: "x" data_param { source: "%s" '
                 'batch_size: 1 } }' % raw_db)


def test_a_record_of_the_wrong_size_is_named_by_its_key(tmp_path):
    bad = caffe.io.array_to_datum(IMGS[0], 1)
    bad.height = 5                     # 3 x 5 x 8 = 120 but the record holds 144 bytes
    src = write_lmdb(tmp_path / 'bad', [caffe.io.array_to_datum(IMGS[1], 2), bad])
    net = data_net(src, batch_size=2)
    with pytest.raises(caffe.LayerError, match="'d' \\(Data\\): record '00000001_x' holds 144 "
                       "values but channels x height x width = 3x5x8"):
        net.forward()


def test_a_database_read_by_a_net_is_read_by_the_tools_in_the_same_process(raw_db, tmp_path):
    """One read-only environment per LMDB per process (caffe/db.py), shared by the Data layer
    and compute_image_mean: py-lmdb refuses to open one path twice in a process."""
    from caffe.tools import compute_image_mean
    net = data_net(raw_db)
    out = tmp_path / 'mean.binaryproto'
    assert compute_image_mean.main([raw_db, str(out)]) == 0
    mean = caffe.io.blobproto_to_array(caffe.io.caffe_pb2.BlobProto.FromString(out.read_bytes()))
    np.testing.assert_allclose(mean[0], IMGS.astype(np.float32).mean(0), rtol=1e-6)
    net.forward()          # the net's reading is not disturbed by the tool closing its handle
    np.testing.assert_array_equal(net.blobs['label'].data, LABELS[:2])


def test_prefetch_thread_ends_with_the_net(raw_db):
    net = data_net(raw_db)
    thread = net.layers[0]._prefetcher.thread
    assert thread.is_alive()
    del net
    gc.collect()
    deadline = time.time() + 3
    while thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    assert not thread.is_alive()
    assert thread not in threading.enumerate()


# ---- classic prototxts ---------------------------------------------------------------------------

LENET = '''
name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "%(src)s" batch_size: 4 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "%(src)s" batch_size: 2 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
'''

V1_CAFFENET_DATA = '''
layers { name: "data" type: DATA top: "data" top: "label"
  data_param { source: "%(src)s" backend: LMDB batch_size: 2 crop_size: 4 mirror: true
               mean_file: "%(mean)s" }
  include { phase: TRAIN } }
layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
  inner_product_param { num_output: 3 } }
'''


def test_lenet_style_train_and_test_nets_share_one_database(raw_db):
    train = make_net(LENET % {'src': raw_db}, caffe.TRAIN)
    test = make_net(LENET % {'src': raw_db}, caffe.TEST)
    out = train.forward()
    assert train.blobs['data'].data.shape == (4, 3, 6, 8) and np.isfinite(out['loss'])
    np.testing.assert_allclose(train.blobs['data'].data, IMGS[:4] * np.float32(0.00390625))
    out = test.forward()
    assert test.blobs['data'].data.shape == (2, 3, 6, 8) and 0 <= out['accuracy'] <= 1
    train.backward()


def test_v1_data_layer_transform_fields_are_upgraded(raw_db, mean_file):
    path, mean = mean_file
    net = make_net(V1_CAFFENET_DATA % {'src': raw_db, 'mean': path}, caffe.TRAIN)
    tp = net.layers[0].layer_param.transform_param
    assert tp.crop_size == 4 and tp.mirror and tp.mean_file == path
    net.forward()
    for out, lab in zip(net.blobs['data'].data, net.blobs['label'].data):
        assert len(_matches(out, IMGS[LABELS.index(int(lab))], mean, 4, 1)) == 1


# ---- ImageData -----------------------------------------------------------------------------------

@pytest.fixture
def image_list(tmp_path):
    imgs = [R.randint(0, 256, (6, 8, 3)).astype(np.uint8) for _ in range(3)]
    (tmp_path / 'imgs').mkdir()
    names = ['a.png', 'b c.png', 'd.png']  # a space in a name: the label is the last field
    for name, im in zip(names, imgs):
        assert cv2.imwrite(str(tmp_path / 'imgs' / name), im)
    lst = tmp_path / 'list.txt'
    lst.write_text(''.join('%s %d\n' % (n, 10 + i) for i, n in enumerate(names)) + '\n')
    return tmp_path, imgs


def image_net(tmp_path, params='', transform='', phase=caffe.TEST, batch_size=2):
    return make_net('layer { name: "im" type: "ImageData" top: "data" top: "label" '
                    'image_data_param { source: "%s" root_folder: "%s/imgs/" batch_size: %d %s } '
                    'transform_param { %s } }' % (tmp_path / 'list.txt', tmp_path, batch_size,
                                                  params, transform), phase)


def test_image_data_reads_list_in_order_with_transform(image_list):
    tmp_path, imgs = image_list
    net = image_net(tmp_path, transform='crop_size: 4 mean_value: 5 scale: 2')
    assert net.blobs['data'].data.shape == (2, 3, 4, 4)
    got = batches(net, 3)
    order = [0, 1, 2, 0, 1, 2]
    for b, (data, label) in enumerate(got):
        idx = order[2 * b:2 * b + 2]
        want = [(imgs[i].transpose(2, 0, 1)[:, 1:5, 2:6].astype(np.float32) - 5) * 2 for i in idx]
        np.testing.assert_array_equal(data, np.stack(want))
        np.testing.assert_array_equal(label, [10 + i for i in idx])


def test_image_data_gray_and_resize(image_list):
    tmp_path, imgs = image_list
    net = image_net(tmp_path, params='is_color: false', batch_size=3)
    net.forward()
    gray = [cv2.imread(str(tmp_path / 'imgs' / n), cv2.IMREAD_GRAYSCALE)
            for n in ('a.png', 'b c.png', 'd.png')]
    np.testing.assert_array_equal(net.blobs['data'].data, np.stack(gray)[:, None])
    # 6 x 8 -> 3 x 4 with linear interpolation: an exact 2x shrink averages 2 x 2 blocks.
    net = image_net(tmp_path, params='new_height: 3 new_width: 4', batch_size=1)
    net.forward()
    src = imgs[0].transpose(2, 0, 1).astype(np.float64)
    blocks = src.reshape(3, 3, 2, 4, 2).mean(axis=(2, 4))
    assert net.blobs['data'].data.shape == (1, 3, 3, 4)
    assert np.abs(net.blobs['data'].data[0] - blocks).max() <= 1


def test_image_data_shuffle_is_seeded_and_reshuffles_each_pass(image_list):
    tmp_path, _ = image_list

    def labels(seed):
        caffe.set_random_seed(seed)
        net = image_net(tmp_path, params='shuffle: true', batch_size=3)
        return [tuple(l.astype(int)) for _, l in batches(net, 6)]
    a = labels(1)
    assert a == labels(1)
    assert all(sorted(p) == [10, 11, 12] for p in a)   # each pass is one permutation
    assert len(set(a)) > 1 and a != labels(2)


def test_image_data_errors(image_list, monkeypatch):
    tmp_path, _ = image_list
    with pytest.raises(caffe.NetError, match="'im'.*new_height and new_width"):
        image_net(tmp_path, params='new_height: 3')
    with pytest.raises(caffe.NetError, match="'im'.*takes 2 top"):
        make_net('layer { name: "im" type: "ImageData" top: "data" '
                 'image_data_param { source: "x" } }')
    with pytest.raises(caffe.NetError, match="'im'.*cannot open source file"):
        make_net('layer { name: "im" type: "ImageData" top: "data" top: "l" '
                 'image_data_param { source: "%s" } }' % (tmp_path / 'none.txt'))
    (tmp_path / 'list.txt').write_text('a.png 1\nmissing.png 2\n')
    net = image_net(tmp_path, batch_size=2)
    with pytest.raises(caffe.LayerError, match="'im'.*Could not load .*missing.png"):
        net.forward()
    (tmp_path / 'list.txt').write_text('a.png one\n')
    with pytest.raises(caffe.NetError, match='list.txt:1: expected "path label"'):
        image_net(tmp_path)
    (tmp_path / 'list.txt').write_text('a.png 1\n')
    monkeypatch.setattr(caffe.data_transform, 'engine_seed', lambda: 4)
    with pytest.raises(caffe.NetError, match="'im'.*Not enough points to skip"):
        image_net(tmp_path, params='rand_skip: 9')


def test_net_spec_lenet_and_a_solver_on_data_layers(raw_db, tmp_path):
    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=2, backend=P.Data.LMDB, source=raw_db, ntop=2,
                             transform_param=dict(scale=1. / 255))
    n.ip = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    (tmp_path / 'net.prototxt').write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / 'net.prototxt'), caffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs['data'].data, IMGS[:2] * np.float32(1. / 255))
    # The classic solver set-up: one prototxt, a TRAIN net and a TEST net on the database.
    (tmp_path / 'lenet.prototxt').write_text(LENET % {'src': raw_db})
    (tmp_path / 'solver.prototxt').write_text(
        'net: "%s" base_lr: 0.01 lr_policy: "fixed" max_iter: 3 test_iter: 2 '
        'test_interval: 2 display: 0 snapshot_prefix: "%s/s"'
        % (tmp_path / 'lenet.prototxt', tmp_path))
    solver = caffe.SGDSolver(str(tmp_path / 'solver.prototxt'))
    solver.step(3)
    assert solver.iter == 3 and len(solver.test_nets) == 1
    # Three TRAIN batches of 4 from 5 records: the third is records 3, 4, 0, 1.
    np.testing.assert_array_equal(solver.net.blobs['label'].data,
                                  [LABELS[i] for i in (3, 4, 0, 1)])
