"""Data layers: Input, DummyData, MemoryData (through Net.set_input_arrays), HDF5Data."""
import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import caffe

R = np.random.RandomState(5)


def make_net(text, phase=caffe.TEST):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, phase)


# ---- Input ---------------------------------------------------------------------------------------

def test_input_shapes_and_net_inputs():
    net = make_net('layer { name: "in" type: "Input" top: "a" top: "b" '
                   '        input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } } }\n'
                   'layer { name: "s" type: "Sigmoid" bottom: "a" top: "y" }')
    assert net.blobs['a'].data.shape == (2, 3) and net.blobs['b'].data.shape == (4,)
    assert net.inputs == ['a', 'b']
    a = R.randn(2, 3).astype(np.float32)
    out = net.forward(a=a, b=np.zeros(4, np.float32))
    np.testing.assert_allclose(out['y'], 1 / (1 + np.exp(-a)), rtol=1e-6)
    # The caller's shapes survive forward and Net.reshape().
    net.blobs['a'].reshape(5, 3)
    net.blobs['a'].data[...] = 1
    net.reshape()
    net.forward()
    assert net.blobs['y'].data.shape == (5, 3)
    np.testing.assert_allclose(net.blobs['y'].data, 1 / (1 + np.exp(-1)), rtol=1e-6)


def test_input_one_shape_for_all_tops_or_none():
    net = make_net('layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 3 dim: 1 } } }')
    assert net.blobs['a'].data.shape == net.blobs['b'].data.shape == (3, 1)
    net = make_net('layer { name: "in" type: "Input" top: "a" }')
    assert net.blobs['a'].data.shape == ()
    with pytest.raises(caffe.NetError, match="'in'.*once per top"):
        make_net('layer { name: "in" type: "Input" top: "a" top: "b" top: "c" '
                 '        input_param { shape { dim: 1 } shape { dim: 2 } } }')
    with pytest.raises(caffe.NetError, match='takes 0 bottom'):
        make_net('input: "x" input_shape { dim: 1 }\n'
                 'layer { name: "in" type: "Input" bottom: "x" top: "a" }')


# ---- DummyData ------------------------------------------------------------------------------------

def test_dummy_data_constant_filled_once_random_refilled():
    caffe.set_random_seed(4)
    net = make_net('layer { name: "d" type: "DummyData" top: "c" top: "g" top: "z" dummy_data_param { '
                   '  shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 1 dim: 2 }'
                   '  data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" std: 2 }'
                   '  data_filler { type: "constant" } } }')
    np.testing.assert_array_equal(net.blobs['c'].data, np.full((2, 3), 7))
    np.testing.assert_array_equal(net.blobs['z'].data, np.zeros((1, 2)))
    net.forward()
    g1 = net.blobs['g'].data.copy()
    assert g1.shape == (4,) and g1.std() > 0
    net.blobs['c'].data[...] = -1  # a constant top is not refilled
    net.forward()
    assert (net.blobs['g'].data != g1).all()
    np.testing.assert_array_equal(net.blobs['c'].data, np.full((2, 3), -1))
    # The random stream is the engine's: same seed, same values.
    caffe.set_random_seed(4)
    net2 = make_net('layer { name: "d" type: "DummyData" top: "c" top: "g" top: "z" dummy_data_param { '
                    '  shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 1 dim: 2 }'
                    '  data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" std: 2 }'
                    '  data_filler { type: "constant" } } }')
    net2.forward()
    np.testing.assert_array_equal(net2.blobs['g'].data, g1)


def test_dummy_data_legacy_dims_default_filler_and_errors():
    net = make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                   '  num: 2 channels: 3 channels: 1 height: 4 width: 5 } }')
    assert net.blobs['a'].data.shape == (2, 3, 4, 5) and net.blobs['b'].data.shape == (2, 1, 4, 5)
    net.forward()
    assert not net.blobs['a'].data.any()
    net = make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                   '  shape { dim: 3 } data_filler { type: "uniform" min: 1 max: 2 } } }')
    net.forward()
    for n in 'ab':
        assert net.blobs[n].data.shape == (3,) and (net.blobs[n].data >= 1).all()
    bad = [('shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1', 'Both shape and legacy'),
           ('num: 1 num: 2 num: 3 channels: 1 height: 1 width: 1', "'num' once"),
           ('shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }', "'shape' once"),
           ('shape { dim: 1 } data_filler { } data_filler { } data_filler { }', 'data fillers'),
           ('shape { dim: 1 } data_filler { type: "nope" }', 'Unknown filler')]
    for param, msg in bad:
        with pytest.raises(caffe.NetError, match="'d'.*" + msg):
            make_net('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { %s } }' % param)


# ---- MemoryData -----------------------------------------------------------------------------------

MEM = ('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
       '        memory_data_param { batch_size: 2 channels: 3 height: 2 width: 1 } }\n'
       'layer { name: "p" type: "Power" bottom: "data" top: "twice" power_param { scale: 2 } }\n')


def test_memory_data_cycles_through_batches_without_copying():
    net = make_net(MEM)
    assert net.blobs['data'].data.shape == (2, 3, 2, 1) and net.blobs['label'].data.shape == (2,)
    data = R.randn(6, 3, 2, 1).astype(np.float32)
    labels = np.arange(6, dtype=np.float32)
    net.set_input_arrays(data, labels)
    for step in range(4):
        i = (step % 3) * 2
        net.forward()
        np.testing.assert_array_equal(net.blobs['data'].data, data[i:i + 2])
        np.testing.assert_array_equal(net.blobs['label'].data, labels[i:i + 2].reshape(2, 1, 1, 1))
        np.testing.assert_allclose(net.blobs['twice'].data, 2 * data[i:i + 2])
        assert np.shares_memory(net.blobs['data'].data, data)
    # A new set of arrays starts from its first batch; 4-d labels are accepted too.
    net.set_input_arrays(data[:2].copy(), labels[:2].reshape(2, 1, 1, 1).copy())
    net.forward()
    np.testing.assert_array_equal(net.blobs['label'].data.ravel(), [0, 1])


def test_memory_data_checks_like_pycaffe():
    net = make_net(MEM)
    with pytest.raises(caffe.LayerError, match='Reset'):
        net.forward()
    good = R.randn(4, 3, 2, 1).astype(np.float32)
    lab = np.zeros(4, np.float32)
    bad = [((good[:3], lab[:3]), 'multiple of batch size'),
           ((good.astype(np.float64), lab), 'must be float32'),
           ((good, lab.astype(np.int64)), 'must be float32'),
           ((np.asfortranarray(R.randn(4, 3, 2, 2).astype(np.float32))[..., :1], lab), 'C contiguous'),
           ((good.reshape(4, 6), lab), '4-d'),
           ((R.randn(4, 2, 2, 1).astype(np.float32), lab), 'channels'),
           ((R.randn(4, 3, 1, 1).astype(np.float32), lab), 'height'),
           ((good, np.zeros(2, np.float32)), 'same first dimension')]
    for (d, l), msg in bad:
        with pytest.raises(caffe.ShapeError, match="'m'.*" + msg):
            net.set_input_arrays(d, l)
    with pytest.raises(caffe.NetError, match='positive'):
        make_net('layer { name: "m" type: "MemoryData" top: "d" top: "l" memory_data_param { batch_size: 2 } }')


# ---- HDF5Data ------------------------------------------------------------------------------------

def _h5(path, **datasets):
    with h5py.File(path, 'w') as f:
        for k, v in datasets.items():
            f[k] = v
    return str(path)


HDF5 = ('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
        '        hdf5_data_param { source: "%s" batch_size: %d %s } }')


def test_hdf5_data_reads_files_in_order_and_wraps(tmp_path):
    a = np.arange(4 * 2 * 3, dtype=np.float64).reshape(4, 2, 3)
    b = 100 + np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3)
    fa = _h5(tmp_path / 'a.h5', data=a, label=np.arange(4, dtype=np.int32))
    fb = _h5(tmp_path / 'b.h5', data=b, label=np.arange(10, 12, dtype=np.int32))
    src = tmp_path / 'list.txt'
    src.write_text('%s\n  %s\n' % (fa, fb))
    net = make_net(HDF5 % (src, 3, ''))
    assert net.blobs['data'].data.shape == (3, 2, 3) and net.blobs['label'].data.shape == (3,)
    rows = np.concatenate([a, b])
    labels = np.array([0, 1, 2, 3, 10, 11], dtype=np.float32)
    for step in range(4):  # 6 rows, batches of 3: the second epoch repeats the first
        net.forward()
        i = (step % 2) * 3
        np.testing.assert_array_equal(net.blobs['data'].data, rows[i:i + 3])
        np.testing.assert_array_equal(net.blobs['label'].data, labels[i:i + 3])
    net = make_net(HDF5 % (src, 4, ''))
    net.forward()
    net.forward()  # rows 4, 5 then wraps to 0, 1
    np.testing.assert_array_equal(net.blobs['label'].data, [10, 11, 0, 1])


def test_hdf5_data_shuffle_is_seeded_and_covers_every_row(tmp_path):
    fa = _h5(tmp_path / 'a.h5', data=np.arange(5.0)[:, None], label=np.arange(5.0))
    fb = _h5(tmp_path / 'b.h5', data=np.arange(5.0, 8.0)[:, None], label=np.arange(5.0, 8.0))
    src = tmp_path / 'list.txt'
    src.write_text('%s %s' % (fa, fb))

    def epoch():
        caffe.set_random_seed(9)
        net = make_net(HDF5 % (src, 1, 'shuffle: true'))
        seen = []
        for _ in range(16):
            net.forward()
            seen.append(float(net.blobs['label'].data[0]))
        return seen
    first = epoch()
    assert sorted(first[:8]) == list(range(8)) and sorted(first[8:]) == list(range(8))
    assert first[:8] != list(range(8))
    assert epoch() == first


def test_hdf5_data_errors(tmp_path):
    with pytest.raises(caffe.NetError, match="'h'.*Failed to open source file"):
        make_net(HDF5 % (tmp_path / 'missing.txt', 2, ''))
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n')
    with pytest.raises(caffe.NetError, match='at least 1 HDF5 filename'):
        make_net(HDF5 % (empty, 2, ''))
    src = tmp_path / 'list.txt'
    src.write_text(_h5(tmp_path / 'a.h5', data=np.zeros((3, 2))))
    with pytest.raises(caffe.LayerError, match="'h'.*Failed to find HDF5 dataset label"):
        make_net(HDF5 % (src, 2, ''))
    src.write_text(_h5(tmp_path / 'b.h5', data=np.zeros((3, 2)), label=np.zeros(4)))
    with pytest.raises(caffe.LayerError, match='same number'):
        make_net(HDF5 % (src, 2, ''))
    src.write_text(str(tmp_path / 'nothere.h5'))
    with pytest.raises(caffe.LayerError, match='Failed opening HDF5 file'):
        make_net(HDF5 % (src, 2, ''))


def test_data_layers_have_no_backward():
    net = make_net('force_backward: true\n'
                   'layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 } } }\n'
                   'layer { name: "s" type: "Sigmoid" bottom: "x" top: "y" }', caffe.TRAIN)
    net.forward()
    net.backward(y=np.ones(2, np.float32))
    np.testing.assert_allclose(net.blobs['x'].diff, [0.25, 0.25])
    for t in ('Input', 'DummyData', 'MemoryData', 'HDF5Data'):
        assert t in caffe.layer_type_list()
