"""Python layers through caffe.Net, as BVLC's python/caffe/test/test_python_layer.py tests
them: forward/backward/reshape through a chain of Python layers, an exception in setup
(a RuntimeError naming the layer, with the Python traceback), a layer with its own
learnable blob (saved, loaded, shared), the phase (compares equal to caffe.TRAIN/TEST and
prints as 'TRAIN'/'TEST'), plus param_str and a stateful data layer.
"""
import numpy as np
import pytest

import caffe

MODULE = __name__  # the prototxts import the layers below from this very module


class SimpleLayer(caffe.Layer):
    """Multiplies by ten."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 10 * top[0].diff


class ExceptionLayer(caffe.Layer):
    def setup(self, bottom, top):
        raise RuntimeError('setup went wrong on purpose')


class ForwardExceptionLayer(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ValueError('forward went wrong on purpose')


class ParameterLayer(caffe.Layer):
    """Identity with one learnable scalar whose gradient is always 1."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] = 1


class PhaseLayer(caffe.Layer):
    """Outputs its phase as a scalar and records str(phase)."""

    def setup(self, bottom, top):
        self.phase_name = str(self.phase)
        self.formatted = '%s/%s' % (self.phase, '{}'.format(self.phase))

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class CountingDataLayer(caffe.Layer):
    """Emits 0, 1, 2, ... in batches of `param_str` (an int), wrapping at 50."""

    def setup(self, bottom, top):
        self.batch = int(self.param_str)
        self.next = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch)

    def forward(self, bottom, top):
        top[0].data[...] = (np.arange(self.batch) + self.next) % 50
        self.next = (self.next + self.batch) % 50


def _net(tmp_path, text, phase=caffe.TRAIN, name='net.prototxt'):
    path = tmp_path / name
    path.write_text(text)
    return caffe.Net(str(path), phase)


def _chain(tmp_path):
    layers = ''.join(
        "layer { type: 'Python' name: '%s' bottom: '%s' top: '%s'\n"
        "  python_param { module: '%s' layer: 'SimpleLayer' } }\n" % (t, b, t, MODULE)
        for b, t in (('data', 'one'), ('one', 'two'), ('two', 'three')))
    return _net(tmp_path, "name: 'pythonnet' force_backward: true\n"
                          "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n" + layers)


def _single(tmp_path, cls, phase=caffe.TRAIN, bottom=True):
    text = "name: 'pythonnet' force_backward: true\n"
    if bottom:
        text += "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n"
    text += ("layer { type: 'Python' name: 'layer' %s top: 'top'\n"
             "  python_param { module: '%s' layer: '%s' } }\n"
             % ("bottom: 'data'" if bottom else '', MODULE, cls))
    return _net(tmp_path, text, phase, name=cls + '.prototxt')


def test_forward(tmp_path):
    net = _chain(tmp_path)
    net.blobs['data'].data[...] = 8
    net.forward()
    assert (net.blobs['three'].data == 8000).all()


def test_backward(tmp_path):
    net = _chain(tmp_path)
    net.blobs['three'].diff[...] = 7
    net.backward()
    assert (net.blobs['data'].diff == 7000).all()


def test_reshape(tmp_path):
    net = _chain(tmp_path)
    net.blobs['data'].reshape(4, 4, 4, 4)
    net.forward()
    for blob in net.blobs.values():
        assert blob.data.shape == (4, 4, 4, 4)


def test_exception_in_setup_names_the_layer_and_keeps_the_traceback(tmp_path):
    with pytest.raises(RuntimeError) as info:
        _single(tmp_path, 'ExceptionLayer', caffe.TEST)
    message = str(info.value)
    assert "'layer'" in message and 'setup went wrong on purpose' in message
    assert 'Traceback' in message and 'in setup' in message
    assert isinstance(info.value, caffe.LayerError)


def test_exception_in_forward_names_the_layer(tmp_path):
    net = _single(tmp_path, 'ForwardExceptionLayer')
    with pytest.raises(RuntimeError) as info:
        net.forward()
    message = str(info.value)
    assert "'layer'" in message and 'forward' in message
    assert 'ValueError: forward went wrong on purpose' in message


def test_layer_with_its_own_parameter(tmp_path):
    net = _single(tmp_path, 'ParameterLayer')
    net.forward()
    net.backward()
    layer = net.layers[list(net._layer_names).index('layer')]
    assert len(net.params['layer']) == 1
    assert layer.blobs[0].data[0] == 0
    assert layer.blobs[0].diff[0] == 1
    layer.blobs[0].data[0] += layer.blobs[0].diff[0]
    assert layer.blobs[0].data[0] == 1

    model = str(tmp_path / 'param.caffemodel')
    net.save(model)
    layer.blobs[0].data[0] = -1
    net.copy_from(model)
    assert layer.blobs[0].data[0] == 1

    net2 = _single(tmp_path, 'ParameterLayer')
    assert net2.params['layer'][0].data[0] == 0
    net2.share_with(net)
    assert net2.params['layer'][0].data[0] == 1
    net.params['layer'][0].data[0] = 5  # shared storage: visible in both nets
    assert net2.params['layer'][0].data[0] == 5
    # clear_param_diffs reaches Python layers' blobs too.
    net.clear_param_diffs()
    assert layer.blobs[0].diff[0] == 0


def test_phase(tmp_path):
    for phase, name in ((caffe.TRAIN, 'TRAIN'), (caffe.TEST, 'TEST')):
        net = _single(tmp_path, 'PhaseLayer', phase, bottom=False)
        assert net.forward()['top'] == phase
        layer = net.layers[0]
        assert layer.phase == phase and layer.phase_name == name
        assert layer.formatted == '%s/%s' % (name, name)


def test_param_str_and_state_across_forwards(tmp_path):
    text = ("layer { type: 'Python' name: 'counter' top: 'n'\n"
            "  python_param { module: '%s' layer: 'CountingDataLayer' param_str: '20' } }\n"
            % MODULE)
    net = _net(tmp_path, text)
    layer = net.layers[0]
    assert layer.param_str == '20' and layer.param_str_ == '20'
    seen = []
    for _ in range(6):
        seen.append(net.forward()['n'].copy())
    expected = (np.arange(120) % 50).reshape(6, 20)
    np.testing.assert_array_equal(np.array(seen), expected)


def test_missing_module_or_class_is_reported(tmp_path):
    bad_module = ("input: 'data' input_shape { dim: 1 }\n"
                  "layer { type: 'Python' name: 'p' bottom: 'data' top: 'p'\n"
                  "  python_param { module: 'no_such_module_here' layer: 'X' } }\n")
    with pytest.raises(caffe.NetError, match="'p'.*no_such_module_here"):
        _net(tmp_path, bad_module)
    bad_class = bad_module.replace('no_such_module_here', MODULE).replace("'X'", "'NoSuchLayer'")
    with pytest.raises(caffe.NetError, match='NoSuchLayer'):
        _net(tmp_path, bad_class, name='b.prototxt')
