"""Python layers configured by `param_str`, as BVLC's test_python_layer_with_param_str.py
(a multiplier read from the string, chained twice) plus py-faster-rcnn's YAML form."""
import pytest
import yaml

import caffe

MODULE = __name__


class SimpleParamLayer(caffe.Layer):
    """Multiplies by the number in its param_str."""

    def setup(self, bottom, top):
        try:
            self.value = float(self.param_str)
        except ValueError:
            raise ValueError('Parameter string must be a legible float, got %r' % self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.value * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.value * top[0].diff


class YamlParamLayer(caffe.Layer):
    """Reads its settings as py-faster-rcnn's layers do: yaml.safe_load(param_str_)."""

    def setup(self, bottom, top):
        params = yaml.safe_load(self.param_str_)
        self.scale = params['scale']
        self.shift = params.get('shift', 0)
        top[0].reshape(*bottom[0].data.shape)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.scale * bottom[0].data + self.shift


def _net(tmp_path, layers, name='net.prototxt'):
    path = tmp_path / name
    path.write_text("name: 'pythonnet' force_backward: true\n"
                    "input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }\n" + layers)
    return caffe.Net(str(path), caffe.TRAIN)


def _mul_net(tmp_path):
    return _net(tmp_path, (
        "layer { type: 'Python' name: 'mul10' bottom: 'data' top: 'mul10'\n"
        "  python_param { module: '%s' layer: 'SimpleParamLayer' param_str: '10' } }\n"
        "layer { type: 'Python' name: 'mul2' bottom: 'mul10' top: 'mul2'\n"
        "  python_param { module: '%s' layer: 'SimpleParamLayer' param_str: '2' } }\n")
        % (MODULE, MODULE))


def test_forward(tmp_path):
    net = _mul_net(tmp_path)
    net.blobs['data'].data[...] = 8
    net.forward()
    assert (net.blobs['mul2'].data == 2 * 10 * 8).all()


def test_backward(tmp_path):
    net = _mul_net(tmp_path)
    net.blobs['mul2'].diff[...] = 7
    net.backward()
    assert (net.blobs['data'].diff == 2 * 10 * 7).all()


def test_yaml_param_str(tmp_path):
    net = _net(tmp_path, (
        "layer { type: 'Python' name: 'affine' bottom: 'data' top: 'out'\n"
        "  python_param { module: '%s' layer: 'YamlParamLayer'\n"
        "                 param_str: \"'scale': 3\\n'shift': -1\" } }\n") % MODULE)
    net.blobs['data'].data[...] = 2
    assert (net.forward()['out'] == 5).all()


def test_bad_param_str_fails_setup_naming_the_layer(tmp_path):
    with pytest.raises(RuntimeError, match="'mul'.*legible float, got 'ten'"):
        _net(tmp_path, (
            "layer { type: 'Python' name: 'mul' bottom: 'data' top: 'mul'\n"
            "  python_param { module: '%s' layer: 'SimpleParamLayer' param_str: 'ten' } }\n")
            % MODULE)
