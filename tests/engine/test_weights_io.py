""".caffemodel reading and writing through the wire format keeps protobuf's exact semantics.

weights.py skips protobuf for the big packed value fields (see its docstring). These tests
hold it to what protobuf itself does: the bytes it writes are the bytes protobuf would
serialise, and what it reads equals protobuf's parse for files a real Caffe wrote, legacy
files, double-precision blobs, values split over several chunks or written unpacked.
"""
import glob
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import weights
from caffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
R = np.random.RandomState(3)

NET = """
name: "io"
input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 1 }
                            bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" include { phase: TEST }
        inner_product_param { num_output: 2 bias_term: false weight_filler { type: "xavier" } } }
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / 'net.prototxt'
    path.write_text(NET)
    return caffe.Net(str(path), caffe.TEST)


def _protobuf_reference(net, write_diff=False):
    """Net::ToProto built with protobuf's own API (the slow, obviously right way)."""
    ref = caffe_pb2.NetParameter(name=net._name)
    ref.input.extend(net.inputs)
    for li, layer in enumerate(net.layers):
        lp = ref.layer.add()
        lp.CopyFrom(net._param.layer[li])
        for b in layer.blobs:
            bp = lp.blobs.add()
            bp.shape.dim.extend(b.data.shape)
            bp.data.extend(b.data.ravel().tolist())
            if write_diff:
                bp.diff.extend(b.diff.ravel().tolist())
    return ref


def test_saved_bytes_are_protobufs_serialisation(net, tmp_path):
    for ps in net.params.values():
        for p in ps:
            p.diff[...] = R.randn(*p.diff.shape)
    path = str(tmp_path / 'w.caffemodel')
    net.save(path)
    with open(path, 'rb') as f:
        assert f.read() == _protobuf_reference(net).SerializeToString()
    assert weights.net_to_proto(net, write_diff=True) == _protobuf_reference(net, write_diff=True)
    assert [f for f in os.listdir(tmp_path) if f.endswith('.tmp')] == []


def test_double_precision_blobs_round_trip(tmp_path):
    path = tmp_path / 'net.prototxt'
    path.write_text(NET)
    with caffe.precision(torch.float64):
        net64 = caffe.Net(str(path), caffe.TEST)
        out = str(tmp_path / 'w64.caffemodel')
        net64.save(out)
    param = caffe_pb2.NetParameter()
    with open(out, 'rb') as f:
        param.ParseFromString(f.read())
    bp = param.layer[0].blobs[0]
    assert len(bp.double_data) == 108 and len(bp.data) == 0
    np.testing.assert_array_equal(np.array(bp.double_data), net64.params['conv'][0].data.ravel())
    net32 = caffe.Net(str(path), out, caffe.TEST)
    np.testing.assert_array_equal(net32.params['conv'][0].data,
                                  net64.params['conv'][0].data.astype(np.float32))


def _read_both(path):
    """(fast reader's values, protobuf's values) for every blob of the file."""
    wf = weights.read_weights(path)
    plain = caffe_pb2.NetParameter()
    with open(path, 'rb') as f:
        plain.ParseFromString(f.read())
    caffe.upgrade.upgrade_net(plain)
    fast, slow = [], []
    for la, lb in zip(wf.param.layer, plain.layer):
        assert la.name == lb.name and len(la.blobs) == len(lb.blobs)
        for ba, bb in zip(la.blobs, lb.blobs):
            assert weights.proto_shape(ba) == weights.proto_shape(bb)
            fast.append((wf.array(ba), wf.values(ba, diff=True)))
            dtype = np.float64 if len(bb.double_data) else np.float32
            data = bb.double_data if len(bb.double_data) else bb.data
            diff = bb.double_diff if len(bb.double_diff) else bb.diff
            slow.append((np.array(data, dtype).reshape(weights.proto_shape(bb)),
                         np.array(diff, np.float64 if len(bb.double_diff) else np.float32)))
    assert wf.full_param() == plain
    return fast, slow


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(HERE, 'conformance_fixtures', '*',
                                                               '*.caffemodel'))),
                         ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_files_written_by_caffe_read_as_protobuf_reads_them(path):
    fast, slow = _read_both(path)
    assert len(fast) == len(slow)
    if fast:  # the values came through the fast path, not protobuf's fallback
        assert weights.read_weights(path)._lifted
    for (a, da), (b, db) in zip(fast, slow):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(da.ravel(), db)


def _key(field, wt):
    return weights._varint((field << 3) | wt)


def _packed(field, arr):
    raw = arr.tobytes()
    return _key(field, 2) + weights._varint(len(raw)) + raw


def _layer_file(tmp_path, blob_bodies, name='b.caffemodel'):
    layer = _key(1, 2) + weights._varint(2) + b'ip'
    for body in blob_bodies:
        layer += _key(7, 2) + weights._varint(len(body)) + body
    data = _key(100, 2) + weights._varint(len(layer)) + layer
    path = str(tmp_path / name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def test_unusual_encodings_read_as_protobuf_reads_them(tmp_path):
    shape = caffe_pb2.BlobShape(dim=[2, 3]).SerializeToString()
    shape_field = _key(7, 2) + weights._varint(len(shape)) + shape
    v = R.randn(6)
    bodies = [
        # values in two packed chunks (protobuf concatenates them), diff too
        shape_field + _packed(5, v[:2].astype('<f4')) + _packed(6, v.astype('<f4'))
        + _packed(5, v[2:].astype('<f4')),
        # unpacked floats (wire type 5), legal although Caffe never writes them
        shape_field + b''.join(_key(5, 5) + np.float32(x).tobytes() for x in v),
        # double_data wins over data, as in Caffe's Blob::FromProto
        _packed(5, np.ones(6, '<f4')) + shape_field + _packed(8, v.astype('<f8')),
        # legacy shape only
        caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3).SerializeToString()
        + _packed(5, v.astype('<f4')),
    ]
    fast, slow = _read_both(_layer_file(tmp_path, bodies))
    for i, ((a, da), (b, db)) in enumerate(zip(fast, slow)):
        np.testing.assert_array_equal(a, b, err_msg=str(i))
        np.testing.assert_array_equal(da.ravel(), db, err_msg=str(i))
    np.testing.assert_array_equal(fast[0][0].ravel(), v.astype(np.float32))
    assert fast[2][0].dtype == np.float64


def test_what_the_scanner_does_not_know_goes_to_protobuf(tmp_path):
    # An unknown group field (wire types 3/4) before the layers: protobuf keeps it as an
    # unknown field; the scanner gives up and protobuf parses the whole file.
    shape = caffe_pb2.BlobShape(dim=[3]).SerializeToString()
    body = _key(7, 2) + weights._varint(len(shape)) + shape + _packed(5, np.arange(3, dtype='<f4'))
    path = _layer_file(tmp_path, [body])
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(_key(999, 3) + _key(1, 0) + b'\x07' + _key(999, 4) + data)
    wf = weights.read_weights(path)
    assert wf._lifted == []
    np.testing.assert_array_equal(wf.array(wf.param.layer[0].blobs[0]), [0, 1, 2])


def test_v1_file_with_settings_and_blobs_reads_as_protobuf_reads_it(tmp_path):
    model = caffe_pb2.NetParameter(name='old')
    for i in range(3):
        v1 = model.layers.add(name='l%d' % i, type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
        v1.bottom.append('x')
        v1.blobs_lr.extend([1, 2])
        v1.inner_product_param.num_output = 3
        v1.blobs.add(num=1, channels=1, height=3, width=4, data=R.randn(12).tolist())
        v1.blobs.add(num=1, channels=1, height=1, width=3, data=R.randn(3).tolist())
    path = str(tmp_path / 'v1.caffemodel')
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    fast, slow = _read_both(path)
    for (a, _), (b, _) in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    assert weights.read_weights_param(path).layer[2].param[1].lr_mult == 2


def test_proto_to_array_of_large_and_small_blobs():
    for n in (6, 10000):
        v = R.randn(n).astype(np.float32)
        bp = caffe_pb2.BlobProto(data=v.tolist())
        bp.shape.dim.append(n)
        out = weights.proto_to_array(bp)
        np.testing.assert_array_equal(out, v)
        assert out.flags.writeable
        bp = weights.blob_to_proto(v.reshape(2, -1))
        assert list(bp.shape.dim) == [2, n // 2] and np.array_equal(np.array(bp.data, np.float32), v)
    bp = caffe_pb2.BlobProto(data=[1, 2, 3])
    bp.shape.dim.append(4)
    with pytest.raises(caffe.ShapeError, match='holds 3 values but its shape 4 needs 4'):
        weights.proto_to_array(bp)
