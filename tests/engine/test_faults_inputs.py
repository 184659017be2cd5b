"""Bad input to the engine is an error naming what is at fault, never a silently wrong net.

* layers used in place that cannot run in place (by class), or that change the shape of
  the blob they share;
* weights files none of whose layers match the net (WARNING, once), partial matches (one
  INFO summary);
* degenerate layer parameters (num_output 0, stride 0, ...), which used to surface as a
  ZeroDivisionError from a filler;
* damaged images (a truncated JPEG decodes to a grey-padded picture with only a libjpeg
  warning naming no file) wherever images are read: caffe.image_file, caffe.io,
  ImageData, Data (encoded Datums), WindowData.
"""
import os

import cv2
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import image_file, protoio, weights
from caffe.errors import ImageError, NetError, ParseError, ShapeError

R = np.random.RandomState(5)


def net_file(tmp_path, text, name='net.prototxt'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


INPUT = 'input: "data" input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }\n'


# ---- in place ------------------------------------------------------------------------------

@pytest.mark.parametrize('layer', [
    'layer { name: "conv1" type: "Convolution" bottom: "data" top: "data" '
    'convolution_param { num_output: 3 kernel_size: 3 } }',
    'layer { name: "conv1" type: "Convolution" bottom: "data" top: "data" '   # same shape, still no
    'convolution_param { num_output: 3 kernel_size: 1 } }',
    'layer { name: "conv1" type: "InnerProduct" bottom: "data" top: "data" '
    'inner_product_param { num_output: 3 } }',
    'layer { name: "conv1" type: "Pooling" bottom: "data" top: "data" '
    'pooling_param { kernel_size: 1 stride: 1 } }',
    'layer { name: "conv1" type: "LRN" bottom: "data" top: "data" }',
    'layer { name: "conv1" type: "Flatten" bottom: "data" top: "data" }',
])
def test_layers_that_cannot_run_in_place_are_refused(tmp_path, layer):
    path = net_file(tmp_path, INPUT + layer)
    with pytest.raises(NetError) as e:
        caffe.Net(path, caffe.TEST)
    msg = str(e.value)
    assert path in msg and "layer 'conv1'" in msg and "top 'data'" in msg
    assert 'does not allow in-place computation' in msg


def test_in_place_use_that_changes_the_shape_is_refused(tmp_path, monkeypatch):
    (tmp_path / 'shrinking.py').write_text(
        'import caffe\n'
        'class Half(caffe.Layer):\n'
        '    def reshape(self, bottom, top):\n'
        '        s = bottom[0].shape\n'
        '        top[0].reshape(s[0], s[1], s[2] // 2, s[3] // 2)\n'
        '    def forward(self, bottom, top):\n'
        '        pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    path = net_file(tmp_path, INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "x" '
                    'convolution_param { num_output: 3 kernel_size: 1 } }\n'
                    'layer { name: "half" type: "Python" bottom: "x" top: "x" '
                    'python_param { module: "shrinking" layer: "Half" } }')
    with pytest.raises(NetError, match=r"layer 'half' \(Python\) is used in place on blob 'x' but "
                                       r"changes its shape from 2 x 3 x 8 x 8 to 2 x 3 x 4 x 4"):
        caffe.Net(path, caffe.TEST)


ELEMENTWISE = [
    ('ReLU', ''), ('Sigmoid', ''), ('TanH', ''), ('ELU', ''), ('PReLU', ''), ('Dropout', ''),
    ('Power', 'power_param { power: 2 scale: 0.5 shift: 1 }'), ('Exp', ''), ('Softmax', ''),
    ('BatchNorm', ''), ('Scale', 'scale_param { bias_term: true }'), ('Bias', ''), ('MVN', ''),
]


@pytest.mark.parametrize('kind,param', ELEMENTWISE)
def test_element_wise_layers_in_place_compute_what_they_compute_out_of_place(tmp_path, kind, param):
    def build(top):
        text = ('force_backward: true\n' + INPUT +
                'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param '
                '{ num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }\n'
                'layer { name: "l" type: "%s" bottom: "c" top: "%s" %s }\n'
                'layer { name: "loss" type: "EuclideanLoss" bottom: "%s" bottom: "data" top: "loss" }'
                % (kind, top, param, top))
        caffe.set_random_seed(3)
        return caffe.Net(net_file(tmp_path, text, top + '.prototxt'), caffe.TRAIN)
    x = R.randn(2, 3, 8, 8)
    outs = []
    for top in ('c', 'out'):
        net = build(top)
        net.blobs['data'].data[...] = x
        net.forward()
        net.backward()
        outs.append((net.blobs[top].data.copy(), net.blobs['data'].diff.copy(),
                     net.params['c'][0].diff.copy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- weights that do not fit ---------------------------------------------------------------

WNET = (INPUT + 'layer { name: "%s" type: "InnerProduct" bottom: "data" top: "a" '
        'inner_product_param { num_output: 4 } }\n'
        'layer { name: "%s" type: "InnerProduct" bottom: "a" top: "b" '
        'inner_product_param { num_output: 2 } }\n')


@pytest.fixture
def saved_weights(tmp_path):
    net = caffe.Net(net_file(tmp_path, WNET % ('fc1', 'fc2'), 'orig.prototxt'), caffe.TEST)
    path = str(tmp_path / 'orig.caffemodel')
    net.save(path)
    return path


def _log_lines(capfd, letter):
    return [l for l in capfd.readouterr().err.splitlines() if l.startswith(letter)]


def test_weights_matching_no_layer_warn_once_naming_the_file(tmp_path, saved_weights, capfd,
                                                             monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    deploy = net_file(tmp_path, WNET % ('new1', 'new2'), 'renamed.prototxt')
    capfd.readouterr()
    caffe.Net(deploy, saved_weights, caffe.TEST)
    warnings = _log_lines(capfd, 'W')
    assert len(warnings) == 1
    w = warnings[0]
    assert saved_weights in w and 'none of the 2 layers with parameters' in w
    assert 'new1, new2' in w and 'fc1, fc2' in w and 'initial' in w


def test_partial_matches_are_summarised_once_and_full_ones_not_at_all(tmp_path, saved_weights,
                                                                      capfd, monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    capfd.readouterr()
    caffe.Net(net_file(tmp_path, WNET % ('fc1', 'head'), 'half.prototxt'), saved_weights, caffe.TEST)
    err = capfd.readouterr().err
    assert not [l for l in err.splitlines() if l.startswith('W')]
    summary = [l for l in err.splitlines() if 'copied the parameters of' in l]
    assert len(summary) == 1 and summary[0].startswith('I')
    assert 'of 1 of the 2 layers' in summary[0] and summary[0].endswith(': head')
    caffe.Net(net_file(tmp_path, WNET % ('fc1', 'fc2'), 'same.prototxt'), saved_weights, caffe.TEST)
    err = capfd.readouterr().err
    assert 'copied the parameters' not in err and 'none of the' not in err


def test_layers_sharing_a_copied_layer_s_parameters_count_as_copied(tmp_path, saved_weights,
                                                                     capfd, monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    text = (WNET % ('fc1', 'fc2')).replace('inner_product_param { num_output: 4 }',
                                           'param { name: "w" } param { name: "b" } '
                                           'inner_product_param { num_output: 4 }')
    text += ('layer { name: "fc1_copy" type: "InnerProduct" bottom: "data" top: "c" '
             'param { name: "w" } param { name: "b" } inner_product_param { num_output: 4 } }\n')
    capfd.readouterr()
    caffe.Net(net_file(tmp_path, text, 'shared.prototxt'), saved_weights, caffe.TEST)
    assert 'copied the parameters' not in capfd.readouterr().err


def test_unreadable_weights_and_proto_files_are_named(tmp_path):
    junk = tmp_path / 'junk.h5'
    junk.write_bytes(b'not hdf5 at all')
    net = caffe.Net(net_file(tmp_path, WNET % ('fc1', 'fc2')), caffe.TEST)
    with pytest.raises(ParseError, match='junk.h5'):
        weights.load_hdf5(net, str(junk))
    with pytest.raises(ParseError, match='nowhere.prototxt'):
        protoio.read_text_or_binary(str(tmp_path / 'nowhere.prototxt'), caffe.caffe_pb2.NetParameter)


# ---- degenerate parameters -----------------------------------------------------------------

DEGENERATE = [
    ('Convolution', 'convolution_param { num_output: 0 kernel_size: 3 weight_filler { type: "xavier" } }',
     'num_output must be positive'),
    ('Deconvolution', 'convolution_param { num_output: 0 kernel_size: 3 weight_filler { type: "msra" } }',
     'num_output must be positive'),
    ('Convolution', 'convolution_param { num_output: 2 kernel_size: 3 stride: 0 }', 'stride must be positive'),
    ('Convolution', 'convolution_param { num_output: 2 kernel_size: 3 dilation: 0 }',
     'dilation must be positive'),
    ('Convolution', 'convolution_param { num_output: 2 kernel_size: 3 group: 0 }', 'group must be positive'),
    ('Convolution', 'convolution_param { num_output: 2 kernel_size: 11 }', 'too small for the kernel'),
    ('InnerProduct', 'inner_product_param { num_output: 0 weight_filler { type: "xavier" } }',
     'num_output must be positive'),
    ('Pooling', 'pooling_param { kernel_size: 2 stride: 0 }', 'stride must be positive'),
    ('Pooling', 'pooling_param { kernel_size: 20 }', 'too small for the kernel'),
    ('Embed', 'embed_param { num_output: 0 input_dim: 3 }', 'num_output must be positive'),
    ('Embed', 'embed_param { num_output: 2 input_dim: 0 }', 'input_dim must be positive'),
    ('InnerProduct', 'inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: -1 } }',
     'gaussian filler needs std >= 0'),
    ('InnerProduct', 'inner_product_param { num_output: 2 weight_filler { type: "uniform" min: 1 max: 0 } }',
     'uniform filler needs min <= max'),
]


@pytest.mark.parametrize('kind,param,words', DEGENERATE)
def test_degenerate_parameters_are_errors_naming_the_layer(tmp_path, kind, param, words):
    path = net_file(tmp_path, INPUT + 'layer { name: "odd" type: "%s" bottom: "data" top: "y" %s }'
                    % (kind, param))
    with pytest.raises((NetError, ShapeError)) as e:
        caffe.Net(path, caffe.TRAIN)
    assert "layer 'odd'" in str(e.value) and words in str(e.value)
    assert 'Traceback' not in str(e.value)


def test_roi_pooling_spatial_scale_and_accuracy_top_k_zero(tmp_path):
    rois = 'input: "rois" input_shape { dim: 1 dim: 5 }\n'
    with pytest.raises(NetError, match="layer 'pool': spatial_scale must be positive"):
        caffe.Net(net_file(tmp_path, INPUT + rois + 'layer { name: "pool" type: "ROIPooling" '
                           'bottom: "data" bottom: "rois" top: "p" roi_pooling_param { pooled_h: 2 '
                           'pooled_w: 2 spatial_scale: 0 } }'), caffe.TEST)
    with pytest.raises(NetError, match="layer 'acc' \\(Accuracy\\): top_k must be at least 1"):
        caffe.Net(net_file(tmp_path, 'input: "s" input_shape { dim: 2 dim: 3 }\n'
                           'input: "l" input_shape { dim: 2 }\nlayer { name: "acc" type: "Accuracy" '
                           'bottom: "s" bottom: "l" top: "a" accuracy_param { top_k: 0 } }'),
                  caffe.TEST)


# ---- images ----------------------------------------------------------------------------------

def _jpeg(h=48, w=64, **kw):
    yy, xx = np.mgrid[0:h, 0:w]
    im = np.dstack([xx * 4 % 256, yy * 5 % 256, (xx + yy) % 256]).astype(np.uint8)
    ok, buf = cv2.imencode('.jpg', im, [cv2.IMWRITE_JPEG_PROGRESSIVE, kw.get('progressive', 0)])
    assert ok
    return im, buf.tobytes()


@pytest.mark.parametrize('progressive', [0, 1])
@pytest.mark.parametrize('keep', [0.5, 0.95])
def test_a_truncated_jpeg_is_an_error_naming_the_file(tmp_path, progressive, keep):
    _, data = _jpeg(progressive=progressive)
    path = tmp_path / 'cut.jpg'
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ImageError, match=r'cut\.jpg.*truncated'):
        image_file.read_image(str(path))
    with pytest.raises(ImageError, match=r'cut\.jpg.*truncated'):
        image_file.check_complete(str(path))
    with pytest.raises(OSError, match=r'cut\.jpg.*truncated'):
        caffe.io.load_image(str(path))


def test_whole_images_pass_and_other_damage_is_named(tmp_path):
    im, data = _jpeg()
    (tmp_path / 'ok.jpg').write_bytes(data + b'\x00' * 64)          # bytes after EOI are allowed
    got = image_file.read_image(str(tmp_path / 'ok.jpg'))
    assert got.shape == im.shape
    image_file.check_complete(str(tmp_path / 'ok.jpg'))
    (tmp_path / 'big.jpg').write_bytes(_jpeg(400, 600)[1])            # the tail-only check
    image_file.check_complete(str(tmp_path / 'big.jpg'))
    (tmp_path / 'text.jpg').write_text('hello')
    with pytest.raises(ImageError, match=r'text\.jpg.*not an image'):
        image_file.read_image(str(tmp_path / 'text.jpg'))
    with pytest.raises(ImageError, match=r'gone\.png: no such file'):
        image_file.read_image(str(tmp_path / 'gone.png'))
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(ImageError, match=r'empty\.png.*empty'):
        image_file.read_image(str(tmp_path / 'empty.png'))
    ok, png = cv2.imencode('.png', im)
    (tmp_path / 'cut.png').write_bytes(png.tobytes()[:len(png) // 2])
    with pytest.raises(ImageError, match=r'cut\.png'):
        image_file.read_image(str(tmp_path / 'cut.png'))


def _write_lmdb(path, datums):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, d in enumerate(datums):
            txn.put(b'%08d' % i, d.SerializeToString())
    env.close()
    return str(path)


def _make_net(text):
    param = caffe.caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return caffe.Net(param, caffe.TEST)


def test_image_layers_name_the_damaged_image(tmp_path):
    _, data = _jpeg()
    cut = data[:len(data) // 2]
    # ImageData: the file
    (tmp_path / 'imgs').mkdir()
    (tmp_path / 'imgs' / 'cut.jpg').write_bytes(cut)
    (tmp_path / 'list.txt').write_text('cut.jpg 1\n')
    with pytest.raises((caffe.LayerError, NetError),
                       match=r"'im' \(ImageData\).*cut\.jpg.*truncated"):
        net = _make_net('layer { name: "im" type: "ImageData" top: "data" top: "label" '
                        'image_data_param { source: "%s" root_folder: "%s/imgs/" batch_size: 1 } }'
                        % (tmp_path / 'list.txt', tmp_path))
        net.forward()
    # Data: the record of an encoded Datum
    src = _write_lmdb(tmp_path / 'db', [caffe.caffe_pb2.Datum(data=cut, label=1, encoded=True,
                                                              channels=3)])
    with pytest.raises((caffe.LayerError, NetError), match=r"'d' \(Data\).*record '00000000'.*truncated"):
        net = _make_net('layer { name: "d" type: "Data" top: "data" top: "label" data_param '
                        '{ source: "%s" backend: LMDB batch_size: 1 } }' % src)
        net.forward()
    datum = caffe.caffe_pb2.Datum(data=cut, encoded=True, channels=3)
    with pytest.raises(ImageError, match='truncated'):
        caffe.io.datum_to_array(datum)


def test_window_data_names_a_truncated_cached_image(tmp_path):
    _, data = _jpeg()
    (tmp_path / 'w.jpg').write_bytes(data[:len(data) // 2])
    (tmp_path / 'windows.txt').write_text('# 0\n%s\n3 48 64\n1\n1 0.9 0 0 20 20\n'
                                          % (tmp_path / 'w.jpg'))
    with pytest.raises((caffe.LayerError, NetError), match=r"WindowData.*w\.jpg.*truncated"):
        net = _make_net('layer { name: "win" type: "WindowData" top: "data" top: "label" '
                        'transform_param { crop_size: 8 } window_data_param { source: "%s" '
                        'batch_size: 1 fg_threshold: 0.5 bg_threshold: 0.5 fg_fraction: 1 '
                        'cache_images: true } }'
                        % (tmp_path / 'windows.txt'))
        net.forward()
