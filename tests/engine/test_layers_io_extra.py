"""HDF5Output (file contents, flushing, closing) and WindowData (R-CNN window files: parsing,
fg/bg sampling, Caffe's crop geometry against an independent NumPy computation, mirror, means,
errors naming file and line)."""
import gc
import os
import re
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.layers import data as data_layers
from caffe.layers import window_data

R = np.random.RandomState(21)


def make_net(text, phase=caffe.TRAIN):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, phase)


# ---- HDF5Output ------------------------------------------------------------------------------

def output_net(path, data_shape=(2, 3), label_shape=(2,)):
    dims = lambda s: ' '.join('dim: %d' % d for d in s)  # noqa: E731
    return make_net('layer { name: "in" type: "Input" top: "x" top: "y" input_param { '
                    'shape { %s } shape { %s } } }\n'
                    'layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y" '
                    'hdf5_output_param { file_name: "%s" } }'
                    % (dims(data_shape), dims(label_shape), path), caffe.TEST)


def run_batches(net, xs, ys):
    for x, y in zip(xs, ys):
        net.blobs['x'].data[...] = x
        net.blobs['y'].data[...] = y
        net.forward()


def test_hdf5_output_appends_each_batch_as_legacy_4d_rows(tmp_path):
    path = tmp_path / 'out.h5'
    net = output_net(path)
    # Created (truncated) at setup, as Caffe's H5Fcreate in LayerSetUp: no datasets yet.
    with h5py.File(path, 'r') as f:
        assert list(f) == []
    xs = R.randn(3, 2, 3).astype(np.float32)
    ys = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    run_batches(net, xs, ys)
    del net
    gc.collect()
    with h5py.File(path, 'r') as f:
        assert sorted(f) == ['data', 'label']
        # Caffe saves num x channels x height x width: (N, 3) is N x 3 x 1 x 1, (N,) N x 1 x 1 x 1.
        assert f['data'].shape == (6, 3, 1, 1) and f['label'].shape == (6, 1, 1, 1)
        assert f['data'].dtype == np.float32 and f['label'].dtype == np.float32
        np.testing.assert_array_equal(f['data'][:, :, 0, 0], xs.reshape(6, 3))
        np.testing.assert_array_equal(f['label'][:, 0, 0, 0], ys.reshape(6))


def test_hdf5_output_4d_rows_read_back_by_hdf5_data(tmp_path):
    path = tmp_path / 'out.h5'
    net = output_net(path, (2, 2, 3, 4), (2, 1))
    xs = R.randn(2, 2, 2, 3, 4).astype(np.float32)
    ys = R.randint(0, 9, (2, 2, 1)).astype(np.float32)
    run_batches(net, xs, ys)
    net.layers[1].close()  # what the net's deletion does
    with h5py.File(path, 'r') as f:
        assert f['data'].shape == (4, 2, 3, 4) and f['label'].shape == (4, 1, 1, 1)
    src = tmp_path / 'list.txt'
    src.write_text(str(path) + '\n')
    reader = make_net('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
                      'hdf5_data_param { source: "%s" batch_size: 4 } }' % src)
    reader.forward()
    np.testing.assert_array_equal(reader.blobs['data'].data, xs.reshape(4, 2, 3, 4))
    np.testing.assert_array_equal(reader.blobs['label'].data.ravel(), ys.ravel())


def test_hdf5_output_is_flushed_after_each_forward(tmp_path):
    path = tmp_path / 'out.h5'
    net = output_net(path)
    xs, ys = R.randn(2, 2, 3).astype(np.float32), np.zeros((2, 2), np.float32)
    read = ("import h5py, sys; f = h5py.File(sys.argv[1], 'r', locking=False); "
            "print(f['data'].shape[0], float(f['data'][:].sum()))")
    for i in range(2):
        run_batches(net, xs[i:i + 1], ys[i:i + 1])
        # Another process sees every row written so far while the file is still open here.
        out = subprocess.run([sys.executable, '-c', read, str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        assert int(out[0]) == 2 * (i + 1)
        assert float(out[1]) == pytest.approx(float(xs[:i + 1].sum()), rel=1e-5)
    del net


def test_hdf5_output_closed_by_the_exit_hook(tmp_path):
    path = tmp_path / 'out.h5'
    net = output_net(path)
    run_batches(net, [np.ones((2, 3))], [np.ones(2)])
    layer = net.layers[1]
    assert layer in data_layers._OPEN_OUTPUTS and data_layers._atexit_registered
    data_layers._close_open_outputs()  # what interpreter exit runs
    assert layer._file is None and layer not in data_layers._OPEN_OUTPUTS
    with h5py.File(path, 'r') as f:
        np.testing.assert_array_equal(f['data'][:], np.ones((2, 3, 1, 1)))
    with pytest.raises(caffe.LayerError, match="'out'.*closed"):
        net.forward()


@pytest.mark.slow
def test_hdf5_output_complete_at_interpreter_exit(tmp_path):
    path = tmp_path / 'out.h5'
    script = '''
import sys, numpy as np
sys.path.insert(0, %r)
import caffe
from google.protobuf import text_format
p = caffe.caffe_pb2.NetParameter()
text_format.Parse(%r, p)
net = caffe.Net(p, caffe.TEST)
for i in range(3):
    net.blobs['x'].data[...] = i
    net.forward()
''' % (caffe.__path__[0].rsplit('/', 1)[0],
       'layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } '
       'shape { dim: 2 } } } layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y" '
       'hdf5_output_param { file_name: "%s" } }' % path)
    subprocess.run([sys.executable, '-c', script], check=True, capture_output=True,
                   env=dict(os.environ, GLOG_minloglevel='2'))
    with h5py.File(path, 'r') as f:
        np.testing.assert_array_equal(f['data'][:, 0, 0, 0], [0, 0, 1, 1, 2, 2])


def test_hdf5_output_errors(tmp_path):
    net = output_net(tmp_path / 'a.h5', (2, 3), (3,))
    with pytest.raises(caffe.ShapeError, match="'out'.*same batch size.*2 vs 3"):
        net.forward()
    net = output_net(tmp_path / 'b.h5', (2, 3), (2,))
    net.forward()
    net.blobs['x'].reshape(2, 4)
    with pytest.raises(caffe.ShapeError, match="'out'.*data rows are 4x1x1 float32.*3x1x1 float32"):
        net.forward()
    with pytest.raises(caffe.NetError, match="'out'.*Failed to open HDF5 file .*nodir"):
        output_net(tmp_path / 'nodir' / 'c.h5')
    assert 'HDF5Output' in caffe.layer_type_list() and 'WindowData' in caffe.layer_type_list()


def test_hdf5_output_backward_does_nothing(tmp_path):
    net = make_net('force_backward: true\n'
                   'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
                   'layer { name: "s" type: "Sigmoid" bottom: "x" top: "y" }\n'
                   'layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y" '
                   'hdf5_output_param { file_name: "%s" } }' % (tmp_path / 'g.h5'))
    net.forward()
    net.backward()
    np.testing.assert_array_equal(net.blobs['x'].diff, [0, 0])


# ---- WindowData: fixtures and an independent reference ---------------------------------------

IMG0 = R.randint(0, 256, (30, 40, 3)).astype(np.uint8)  # H x W x BGR
IMG1 = R.randint(0, 256, (24, 20, 3)).astype(np.uint8)

WINDOWS = '''# 0
img0.png
3
30
40
4
1 0.9 0 0 5 5
2 0.75 10 8 25 20
0 0.2 3 3 12 9
3 0.45 1 1 4 4
# 1
img1.png
3
24
20
2
2 0.6 2 3 15 17
1 0.05 0 0 19 23
'''
# (image, label, x1, y1, x2, y2) of the kept windows, as the file lists them.
FG = [(0, 1, 0, 0, 5, 5), (0, 2, 10, 8, 25, 20), (1, 2, 2, 3, 15, 17)]
BG = [(0, 0, 3, 3, 12, 9), (1, 0, 0, 0, 19, 23)]
IMAGES = [IMG0, IMG1]


@pytest.fixture(scope='module')
def wdir(tmp_path_factory):
    d = tmp_path_factory.mktemp('windows')
    cv2.imwrite(str(d / 'img0.png'), IMG0)
    cv2.imwrite(str(d / 'img1.png'), IMG1)
    (d / 'windows.txt').write_text(WINDOWS)
    return d


def window_net(d, source='windows.txt', batch_size=10, fg_fraction=0.25, crop=10, pad=0,
               mode='warp', transform='', extra='', prefetch=4, phase=caffe.TRAIN):
    return make_net('layer { name: "w" type: "WindowData" top: "data" top: "label" '
                    'window_data_param { source: "%s" root_folder: "%s/" batch_size: %d '
                    'fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: %g context_pad: %d '
                    'crop_mode: "%s" %s } transform_param { crop_size: %d %s } '
                    'data_param { prefetch: %d } }'
                    % (d / source, d, batch_size, fg_fraction, pad, mode, extra, crop, transform,
                       prefetch), phase)


def c_round(v):
    """round() of C: halves away from zero (v holds float32 values, exact in float64)."""
    v = np.asarray(v, np.float64)
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(int)


def reference(img, box, crop, pad, square, flip, mean=None, mean_values=None, scale=1.0):
    """window_data_layer.cpp's output for one window, written with NumPy vectors (x, y)."""
    f = np.float32
    x1, y1, x2, y2 = box
    out = np.zeros((3, crop, crop), np.float32)
    if pad == 0 and not square:
        lo, hi, size, off = np.array([x1, y1]), np.array([x2, y2]), np.array([crop, crop]), [0, 0]
    else:
        grow = f(crop) / f(crop - 2 * pad)
        half = (np.array([x2 - x1 + 1, y2 - y1 + 1], np.float64) / 2).astype(f)
        centre = np.array([x1, y1], f) + half
        if square:
            half[:] = half.max()
        lo, hi = c_round(centre - half * grow), c_round(centre + half * grow)
        s = f(crop) / (hi - lo + 1).astype(f)
        limit = np.array([img.shape[1] - 1, img.shape[0] - 1])
        cut_lo, cut_hi = np.maximum(0, -lo), np.maximum(0, hi - limit)
        lo, hi = lo + cut_lo, hi - cut_hi
        size = c_round((hi - lo + 1).astype(f) * s)
        pad_lo, pad_hi = c_round(cut_lo.astype(f) * s), c_round(cut_hi.astype(f) * s)
        off = [pad_hi[0] if flip else pad_lo[0], pad_lo[1]]
        size = np.minimum(size, crop - np.array(off))
    patch = cv2.resize(img[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1], (int(size[0]), int(size[1])),
                       interpolation=cv2.INTER_LINEAR)
    if flip:
        patch = patch[:, ::-1]
    val = patch.transpose(2, 0, 1).astype(np.float32)
    ys, xs = slice(off[1], off[1] + size[1]), slice(off[0], off[0] + size[0])
    if mean is not None:
        m = (mean.shape[2] - crop) // 2
        val = val - mean[:, m:m + crop, m:m + crop][:, ys, xs]
    elif mean_values is not None:
        val = val - np.float32(mean_values).reshape(-1, 1, 1)
    out[:, ys, xs] = val * np.float32(scale)
    return out


def identify(item, candidates, **kw):
    """The (window, flip) pairs whose reference output equals `item` exactly."""
    return [(w, flip) for w in candidates for flip in (False, True)
            if np.array_equal(item, reference(IMAGES[w[0]], w[2:], flip=flip, **kw))]


# ---- WindowData: tests ---------------------------------------------------------------------------

def test_window_file_is_split_into_fg_and_bg(wdir):
    wf = window_data.read_window_file(str(wdir / 'windows.txt'), 'root/', 0.5, 0.3)
    assert [p for p, _, _ in wf.images] == ['root/img0.png', 'root/img1.png']
    assert [s for _, s, _ in wf.images] == [(3, 30, 40), (3, 24, 20)]
    assert [tuple(w[:6]) for w in wf.fg] == FG
    assert [tuple(w[:6]) for w in wf.bg] == BG  # the 0.05 window of class 1 is background: 0
    assert list(wf.fg[:, 6]) == [7, 8, 17] and list(wf.bg[:, 6]) == [9, 18]  # file lines
    assert wf.label_hist == {0: 2, 1: 1, 2: 2}  # the 0.45 window lies between: dropped


def test_fg_fraction_labels_and_every_item_is_a_caffe_crop(wdir):
    caffe.set_random_seed(4)
    net = window_net(wdir, batch_size=10, fg_fraction=0.25, crop=10, pad=2,
                     transform='mirror: true')
    assert net.blobs['data'].data.shape == (10, 3, 10, 10)
    assert net.blobs['label'].data.shape == (10,)
    seen = set()
    for _ in range(6):
        net.forward()
        data, label = net.blobs['data'].data, net.blobs['label'].data
        # int(10 * 0.25) = 2 foreground windows, after the 8 background ones.
        assert (label[:8] == 0).all() and set(label[8:]) <= {1, 2}
        for i, item in enumerate(data):
            hits = identify(item, BG if i < 8 else FG, crop=10, pad=2, square=False)
            assert len(hits) == 1 and hits[0][0][1] == label[i], (i, hits)
            seen.add(hits[0])
    # 48 background and 12 foreground draws: every window, both flips of most.
    assert {w for w, _ in seen} == set(BG) | set(FG)
    assert {flip for _, flip in seen} == {False, True}


def test_corner_window_geometry_by_hand(wdir):
    (wdir / 'corner.txt').write_text('# 0\nimg0.png\n3 30 40\n2\n1 0.9 0 0 5 5\n0 0.1 0 0 39 29\n')
    caffe.set_random_seed(1)
    net = window_net(wdir, 'corner.txt', batch_size=2, fg_fraction=0.5, crop=10, pad=2,
                     transform='mirror: true')
    # Grown by 10 / 6 about the centre (3, 3): x, y in -2..8 (11 wide), clipped to 0..8; the
    # 9 kept pixels warp to round(9 * 10/11) = 8, the 2 cut ones to round(2 * 10/11) = 2 of padding.
    warped = cv2.resize(IMG0[0:9, 0:9], (8, 8), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    plain = np.zeros((3, 10, 10), np.float32)
    plain[:, 2:10, 2:10] = warped
    mirrored = np.zeros((3, 10, 10), np.float32)
    mirrored[:, 2:10, 0:8] = warped[:, :, ::-1]  # the padding moves with the flip: right side
    flips = set()
    for _ in range(8):
        net.forward()
        fg = net.blobs['data'].data[1]
        assert np.array_equal(fg, plain) or np.array_equal(fg, mirrored)
        flips.add(np.array_equal(fg, mirrored))
        assert net.blobs['label'].data.tolist() == [0, 1]
    assert flips == {False, True}
    assert window_data.window_geometry(0, 0, 5, 5, 30, 40, 10, 2, False, False) == \
        (0, 0, 8, 8, 8, 8, 2, 2)
    # Rounding overshoot: x 0..2 grown by 10/4 about 1.5 is -2..5 (8 wide); the 6 kept
    # columns warp to round(7.5) = 8 after round(2.5) = 3 of padding: 11 > 10, cut to 7.
    # Mirrored, the padding is the right side's (none), so all 8 fit.
    assert window_data.window_geometry(0, 0, 2, 5, 30, 12, 10, 3, False, False) == \
        (0, 0, 5, 11, 7, 7, 3, 3)
    assert window_data.window_geometry(0, 0, 2, 5, 30, 12, 10, 3, False, True) == \
        (0, 0, 5, 11, 8, 7, 0, 3)
    # The same on rows; the top padding stays when mirrored (the left becomes the right's, 0).
    assert window_data.window_geometry(0, 0, 5, 2, 12, 30, 10, 3, False, True) == \
        (0, 0, 11, 5, 7, 7, 0, 3)


def test_warp_without_context_is_the_window_itself_with_mean_values_and_scale(wdir):
    (wdir / 'exact.txt').write_text('# 0\nimg0.png\n3\n30\n40\n1\n4 1 10 8 21 19\n')
    net = window_net(wdir, 'exact.txt', batch_size=3, fg_fraction=1, crop=12,
                     transform='mean_value: 10 mean_value: 20 mean_value: 30',
                     extra='scale: 0.5')
    net.forward()
    want = (IMG0[8:20, 10:22].transpose(2, 0, 1).astype(np.float32)
            - np.float32([10, 20, 30]).reshape(3, 1, 1)) * np.float32(0.5)
    for item in net.blobs['data'].data:
        np.testing.assert_array_equal(item, want)
    assert net.blobs['label'].data.tolist() == [4, 4, 4]
    with caffe.precision(torch.float64):  # float64 nets compute in float64
        net = window_net(wdir, 'exact.txt', batch_size=1, fg_fraction=1, crop=12,
                         transform='mean_value: 10.1', extra='scale: 0.3')
        net.forward()
    assert net.blobs['data'].data.dtype == np.float64
    np.testing.assert_array_equal(
        net.blobs['data'].data[0],
        (IMG0[8:20, 10:22].transpose(2, 0, 1) - np.float64(np.float32(10.1)))
        * np.float64(np.float32(0.3)))


@pytest.mark.parametrize('mode', ['warp', 'square'])
def test_mean_file_centre_is_subtracted_at_output_positions(wdir, mode):
    # 13 x 14: Caffe's offset (14 - 10) // 2 = 2 is taken from the width for both axes.
    mean = R.uniform(0, 255, (1, 3, 13, 14)).astype(np.float32)
    path = wdir / ('mean_%s.binaryproto' % mode)
    path.write_bytes(caffe.io.array_to_blobproto(mean).SerializeToString())
    caffe.set_random_seed(7)
    net = window_net(wdir, batch_size=6, fg_fraction=0.5, crop=10, pad=1, mode=mode,
                     transform='mirror: true mean_file: "%s"' % path, extra='scale: 0.25')
    for _ in range(3):
        net.forward()
        for i, item in enumerate(net.blobs['data'].data):
            hits = identify(item, BG if i < 3 else FG, crop=10, pad=1, square=mode == 'square',
                            mean=mean[0], scale=0.25)
            assert len(hits) == 1, (i, hits)


def test_square_mode_makes_the_region_square(wdir):
    # A 16 x 13 window, square mode, no context: half sizes 8 and 6.5 -> both 8.
    g = window_data.window_geometry(10, 8, 25, 20, 30, 40, 12, 0, True, False)
    # Centre (18, 14.5); y = 14.5 -+ 8 rounds away from zero to 7 and 23: 17 x 17 pixels.
    assert g == (10, 7, 26, 23, 12, 12, 0, 0)
    # Near the border: rows -5..11 (17), 5 cut off the top: 12 rows warp to round(12 * 12/17)
    # = 8 after round(5 * 12/17) = 4 rows of padding.
    g = window_data.window_geometry(10, 0, 25, 5, 30, 40, 12, 0, True, False)
    assert g == (10, 0, 26, 11, 12, 8, 0, 4)


def test_seeded_batches_repeat_and_do_not_depend_on_prefetch_or_cache(wdir):
    def run(seed=11, **kw):
        caffe.set_random_seed(seed)
        net = window_net(wdir, batch_size=8, fg_fraction=0.5, crop=8, pad=1,
                         transform='mirror: true', **kw)
        out = []
        for _ in range(3):
            net.forward()
            out.append((net.blobs['data'].data.copy(), net.blobs['label'].data.copy()))
        return out

    base = run()
    for other in (run(), run(prefetch=0), run(extra='cache_images: true')):
        for (d0, l0), (d1, l1) in zip(base, other):
            np.testing.assert_array_equal(d0, d1)
            np.testing.assert_array_equal(l0, l1)
    assert not np.array_equal(run(seed=12)[0][0], base[0][0])


MALFORMED = [
    ('7 0\nimg0.png\n', 1, 'expected "#"'),
    ('# 0\nimg0.png\nthree\n30\n40\n0\n', 3, "integer channels, got 'three'"),
    ('# 0\nimg0.png\n3\n30\n40\n1\n1 0.9 0 0 5\n', 7, 'ends where y2 of window 0'),
    ('# 0\nimg0.png\n3\n30\n40\n2\n0 0.1 0 0 5 5\n0 0.9 0 0 5 5\n', 8, 'class_index is 0'),
    ('# 0\nimg0.png\n3 30 40\n1\n1 0.x 0 0 5 5\n', 5, "number overlap of window 0.*'0.x'"),
    ('# 0\nimg0.png\n3 30 40\n1\n1 0.9 6 0 5 5\n', 5, 'x1 <= x2'),
    ('# 0\nimg0.png\n3 30 40\n1\n1 0.9 0 0 5 5\n# 4\nimg1.png\n3 24 20\n1\n1 0.9 0 0 5 5\n',
     10, 'image index 4 refers to no image'),
    ('# 0\nimg0.png\n1 30 40\n1\n1 0.9 0 0 5 5\n', 1, '1 channels'),
]


@pytest.mark.parametrize('text,line,message', MALFORMED)
def test_malformed_window_files_name_file_and_line(wdir, text, line, message):
    path = wdir / 'bad.txt'
    path.write_text(text)
    with pytest.raises(caffe.NetError, match="(?s)'w'.*%s, line %d: .*%s"
                       % (re.escape(str(path)), line, message)):
        window_net(wdir, 'bad.txt', batch_size=2, fg_fraction=1)


def test_window_data_setup_errors(wdir):
    (wdir / 'empty.txt').write_text('\n  \n')
    with pytest.raises(caffe.NetError, match="'w'.*Window file is empty.*empty.txt"):
        window_net(wdir, 'empty.txt')
    with pytest.raises(caffe.NetError, match="'w'.*Failed to open window file.*nothere.txt"):
        window_net(wdir, 'nothere.txt')
    (wdir / 'fgonly.txt').write_text('# 0\nimg0.png\n3 30 40\n1\n1 0.9 0 0 5 5\n')
    with pytest.raises(caffe.NetError, match="'w'.*no background windows.*takes 8"):
        window_net(wdir, 'fgonly.txt', batch_size=10, fg_fraction=0.25)
    with pytest.raises(caffe.NetError, match="'w'.*crop_size must be > 0"):
        window_net(wdir, crop=0)
    with pytest.raises(caffe.NetError, match="'w'.*context_pad 5"):
        window_net(wdir, crop=10, pad=5)
    with pytest.raises(caffe.NetError, match="'w'.*crop_mode"):
        window_net(wdir, mode='sqaure')
    with pytest.raises(caffe.NetError, match="'w'.*mean_file and mean_value"):
        window_net(wdir, transform='mean_value: 1 mean_file: "x"')
    mean = wdir / 'small_mean.binaryproto'
    mean.write_bytes(caffe.io.array_to_blobproto(np.zeros((1, 3, 8, 8), np.float32))
                     .SerializeToString())
    with pytest.raises(caffe.NetError, match="'w'.*3x8x8 mean"):
        window_net(wdir, crop=10, transform='mean_file: "%s"' % mean)


def test_missing_images_and_windows_outside_the_image(wdir):
    (wdir / 'missing.txt').write_text('# 0\nnope.png\n3 30 40\n1\n1 0.9 0 0 5 5\n')
    with pytest.raises(caffe.NetError, match="'w'.*nope.png.*missing.txt, line 1"):
        window_net(wdir, 'missing.txt', batch_size=2, fg_fraction=1, extra='cache_images: true')
    net = window_net(wdir, 'missing.txt', batch_size=2, fg_fraction=1, prefetch=0)
    with pytest.raises(caffe.LayerError, match="'w'.*Could not open or find file .*nope.png"):
        net.forward()
    # Without context the window is cut as it is: it must lie inside the image.
    (wdir / 'outside.txt').write_text('# 0\nimg0.png\n3 30 40\n1\n1 0.9 30 20 45 29\n')
    net = window_net(wdir, 'outside.txt', batch_size=2, fg_fraction=1, prefetch=0)
    with pytest.raises(caffe.LayerError, match="'w'.*30 20 45 29.*outside.txt, line 5"):
        net.forward()
    # With context it is clipped to the image instead.
    net = window_net(wdir, 'outside.txt', batch_size=2, fg_fraction=1, pad=1, prefetch=0)
    net.forward()
    w = (0, 1, 30, 20, 45, 29)
    for item in net.blobs['data'].data:
        assert identify(item, [w], crop=10, pad=1, square=False) == [(w, False)]


def test_transform_scale_is_ignored_like_caffe(wdir):
    (wdir / 'exact1.txt').write_text('# 0\nimg0.png\n3 30 40\n1\n4 1 10 8 21 19\n')
    net = window_net(wdir, 'exact1.txt', batch_size=1, fg_fraction=1, crop=12,
                     transform='scale: 0.5')
    net.forward()
    np.testing.assert_array_equal(net.blobs['data'].data[0],
                                  IMG0[8:20, 10:22].transpose(2, 0, 1).astype(np.float32))
