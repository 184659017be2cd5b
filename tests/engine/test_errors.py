"""Bad input gives a clear error that says what is wrong and where, and leaves nothing half done.

Each case is something a user gets wrong in practice: a typo in a prototxt, a layer type
that does not exist, a bottom nobody produces, weights of another shape, a damaged
.caffemodel, a bug in their own Python layer. The error must name the file (with line
and column for text), the layer, the blob or the parameter, and the shapes involved.
"""
import os
import textwrap

import numpy as np
import pytest

import caffe
from caffe import weights
from caffe.errors import LayerError, NetError, ParseError, ShapeError

BASE = 'input: "x" input_shape { dim: 2 dim: 3 }\n'

IP_NET = """
name: "ipnet"
input: "x" input_shape { dim: 2 dim: 3 }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def _net_file(tmp_path, text, name='net.prototxt'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _build(tmp_path, text, phase=caffe.TEST):
    return caffe.Net(_net_file(tmp_path, text), phase)


def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    path = _net_file(tmp_path, BASE + 'layer {\n  name: "r"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(ParseError) as info:
        caffe.Net(path, caffe.TEST)
    e = info.value
    assert (e.path, e.line, e.column) == (path, 4, 3)
    msg = str(e)
    assert msg.startswith('%s:4:3: ' % path)
    assert 'has no field named "tpye"' in msg and 'Did you mean "type"?' in msg
    assert '  tpye: "ReLU"\n    ^' in msg  # the line, and a caret under the column
    path = _net_file(tmp_path, BASE + 'layer { name: "r" type: "ReLU" bottom: "x"\n', 'open.prototxt')
    with pytest.raises(ParseError, match=r'open\.prototxt:2:\d+: .*Expected "}"'):
        caffe.Net(path, caffe.TEST)


def test_missing_net_file_and_binary_as_text(tmp_path):
    with pytest.raises(NetError, match='net file not found: .*nope.prototxt'):
        caffe.Net(str(tmp_path / 'nope.prototxt'), caffe.TEST)
    path = tmp_path / 'model.caffemodel'
    path.write_bytes(b'\x0a\x03abc\xff\xfe\x00\x01')
    with pytest.raises(ParseError, match='model.caffemodel: not a text file'):
        caffe.Net(str(path), caffe.TEST)


def test_unknown_layer_type_names_it_and_suggests(tmp_path):
    with pytest.raises(NetError) as info:
        _build(tmp_path, BASE + 'layer { name: "act" type: "Relu" bottom: "x" top: "y" }')
    msg = str(info.value)
    assert "Unknown layer type 'Relu' (layer 'act')" in msg and "Did you mean 'ReLU'" in msg
    with pytest.raises(NetError, match=r"'InnerProdcut'.*Did you mean 'InnerProduct'"):
        _build(tmp_path, BASE + 'layer { name: "f" type: "InnerProdcut" bottom: "x" top: "y" }')


def test_missing_bottom_names_blob_and_layer(tmp_path):
    with pytest.raises(NetError, match=r"Unknown bottom blob 'dat' \(layer 'r', bottom index 0\); "
                                       r"blobs defined so far: 'x'"):
        _build(tmp_path, BASE + 'layer { name: "r" type: "ReLU" bottom: "dat" top: "y" }')


def test_input_without_shape(tmp_path):
    with pytest.raises(NetError, match=r'1 inputs but 0 input_shape entries'):
        _build(tmp_path, 'input: "x"\nlayer { name: "r" type: "ReLU" bottom: "x" top: "y" }')


def test_inner_product_blobs_of_another_shape_in_the_prototxt(tmp_path):
    text = BASE + """layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 }
        blobs { shape { dim: 2 dim: 4 } data: [1, 2, 3, 4, 5, 6, 7, 8] }
        blobs { shape { dim: 2 } data: [0, 0] } }"""
    with pytest.raises(ShapeError, match=r"layer 'ip': parameter 0 has shape \(2, 4\), expected \(2, 3\)"):
        _build(tmp_path, text)
    short = text.replace('dim: 4 } data: [1, 2, 3, 4, 5, 6, 7, 8]', 'dim: 3 } data: [1, 2, 3, 4, 5]')
    with pytest.raises(ShapeError, match=r"layer 'ip', blobs 0 given in the net: blob holds 5 "
                                         r"values but its shape 2 3 needs 6"):
        _build(tmp_path, short)


def test_eltwise_bottoms_of_different_shapes(tmp_path):
    text = BASE + ('input: "w" input_shape { dim: 2 dim: 4 }\n'
                   'layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "w" top: "y" }')
    with pytest.raises(ShapeError) as info:
        _build(tmp_path, text)
    msg = str(info.value)
    assert "'sum'" in msg and '2 3' in msg and '2 4' in msg


def test_top_produced_twice(tmp_path):
    text = BASE + ('layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n'
                   'layer { name: "b" type: "Sigmoid" bottom: "x" top: "y" }')
    with pytest.raises(NetError, match=r"net.prototxt: Top blob 'y' produced by multiple sources \(layer 'b'\)"):
        _build(tmp_path, text)


def test_include_and_exclude_on_one_layer(tmp_path):
    text = BASE + ('layer { name: "a" type: "ReLU" bottom: "x" top: "y" '
                   'include { phase: TEST } exclude { stage: "deploy" } }')
    with pytest.raises(NetError, match=r"net.prototxt: layer 'a' specifies both include and exclude"):
        _build(tmp_path, text)


PY_LAYER = '''
import caffe

def _check(values):
    raise ValueError("negative input %d" % values)

class Fragile(caffe.Layer):
    def setup(self, bottom, top):
        if self.param_str == "fail in setup":
            _check(-1)
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        if (bottom[0].data < 0).any():
            _check(-2)
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        raise RuntimeError("no backward here")
'''


def test_python_layer_exception_names_the_layer_and_keeps_the_traceback(tmp_path, monkeypatch):
    (tmp_path / 'fragile_layer.py').write_text(PY_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = BASE + ('force_backward: true\nlayer { name: "guard" type: "Python" bottom: "x" top: "y" '
                   'python_param { module: "fragile_layer" layer: "Fragile" param_str: "%s" } }')
    with pytest.raises(LayerError) as info:
        _build(tmp_path, text % 'fail in setup')
    msg = str(info.value)
    assert "layer 'guard' (Python) failed in setup: ValueError: negative input -1" in msg
    assert 'fragile_layer.py' in msg and 'in _check' in msg and 'Traceback' in msg

    net = _build(tmp_path, text % '')
    net.blobs['x'].data[...] = -1
    with pytest.raises(LayerError) as info:
        net.forward()
    msg = str(info.value)
    assert "layer 'guard' (Python) failed in forward: ValueError: negative input -2" in msg
    assert 'in forward' in msg and 'in _check' in msg
    net.blobs['x'].data[...] = 1
    net.forward()
    with pytest.raises(LayerError, match=r"layer 'guard' \(Python\) failed in backward: "
                                         r"RuntimeError: no backward here"):
        net.backward()


def test_python_layer_module_that_cannot_be_imported(tmp_path):
    text = BASE + ('layer { name: "p" type: "Python" bottom: "x" top: "y" '
                   'python_param { module: "no_such_module_here" layer: "L" } }')
    with pytest.raises(NetError, match=r"Python layer 'p': cannot import module 'no_such_module_here'"):
        _build(tmp_path, text)


# ---- weights files ----------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    net = _build(tmp_path, IP_NET)
    path = str(tmp_path / 'ip.caffemodel')
    net.save(path)
    return net, path


def test_truncated_caffemodel_names_the_file(tmp_path, saved):
    net, path = saved
    data = open(path, 'rb').read()
    cut = str(tmp_path / 'cut.caffemodel')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    before = [p.data.copy() for ps in net.params.values() for p in ps]
    with pytest.raises(ParseError, match=r'cut\.caffemodel: truncated or corrupt binary NetParameter'):
        net.copy_from(cut)
    with pytest.raises(ParseError, match=r'cut\.caffemodel'):
        caffe.Net(_net_file(tmp_path, IP_NET), cut, caffe.TEST)
    after = [p.data for ps in net.params.values() for p in ps]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_random_bytes_as_caffemodel(tmp_path, saved):
    net, _ = saved
    junk = str(tmp_path / 'junk.caffemodel')
    with open(junk, 'wb') as f:
        f.write(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ParseError, match=r'junk\.caffemodel: truncated or corrupt'):
        net.copy_from(junk)
    text = str(tmp_path / 'text.caffemodel')
    with open(text, 'w') as f:
        f.write(IP_NET)
    with pytest.raises(ParseError, match=r'text\.caffemodel: .*looks like text'):
        net.copy_from(text)
    with pytest.raises(ParseError, match=r'absent\.caffemodel: weights file not found'):
        net.copy_from(str(tmp_path / 'absent.caffemodel'))


def test_weights_of_another_shape_name_param_layer_and_shapes(tmp_path, saved):
    net, _ = saved
    wider = _build(tmp_path, IP_NET.replace('num_output: 2', 'num_output: 5'))
    path = str(tmp_path / 'wider.caffemodel')
    wider.save(path)
    before = [p.data.copy() for ps in net.params.values() for p in ps]
    with pytest.raises(ShapeError) as info:
        net.copy_from(path)
    msg = str(info.value)
    assert "wider.caffemodel: Cannot copy param 0 weights from layer 'ip2'; shape mismatch" in msg
    assert 'Source param shape is 5 4 (20); target param shape is 2 4 (8)' in msg
    # Nothing was copied, not even ip1 which fitted: the net is as it was.
    after = [p.data for ps in net.params.values() for p in ps]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    nobias = _build(tmp_path, IP_NET.replace('num_output: 2', 'num_output: 2 bias_term: false'))
    with pytest.raises(ShapeError, match=r"Incompatible number of blobs for layer 'ip2': the file "
                                         r"has 2, the net has 1"):
        nobias.copy_from(str(tmp_path / 'ip.caffemodel'))


def test_layers_the_net_lacks_are_skipped(tmp_path, saved, capfd, monkeypatch):
    net, path = saved
    small = _build(tmp_path, IP_NET.split('layer { name: "ip2"')[0])
    monkeypatch.setenv('GLOG_minloglevel', '0')
    small.copy_from(path)
    np.testing.assert_array_equal(small.params['ip1'][0].data, net.params['ip1'][0].data)
    lines = [l for l in capfd.readouterr().err.splitlines() if 'Ignoring source layer' in l]
    assert len(lines) == 1 and lines[0].startswith('I') and lines[0].endswith('] Ignoring source layer ip2')
    assert 'net.cpp' in lines[0]


def test_a_failed_save_leaves_the_old_file(tmp_path, saved, monkeypatch):
    net, path = saved
    old = open(path, 'rb').read()
    for ps in net.params.values():
        for p in ps:
            p.data[...] = 7

    def broken_fsync(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', broken_fsync)
    with pytest.raises(OSError, match='No space left'):
        net.save(path)
    assert open(path, 'rb').read() == old
    assert sorted(os.listdir(tmp_path)) == ['ip.caffemodel', 'net.prototxt']


def test_blob_value_count_that_does_not_fit_its_shape(tmp_path, saved):
    net, _ = saved
    param = weights.net_to_proto(net)
    del param.layer[0].blobs[1].data[-1]
    path = str(tmp_path / 'short.caffemodel')
    with open(path, 'wb') as f:
        f.write(param.SerializeToString())
    with pytest.raises(ShapeError, match=r"short\.caffemodel: layer 'ip1' param 1: the file holds "
                                         r"3 values for shape 4"):
        net.copy_from(path)
