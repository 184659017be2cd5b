"""pycaffe's command-line scripts (caffe-fast-rcnn/python/{classify,detect,draw_net}.py) and
tools/extra/summarize.py, run on small real inputs.

draw_net renders through Graphviz's `dot` for real (`make setup` says how to install it;
CI installs it), as BVLC's test_draw.py does.
"""
import csv
import os
import re
import runpy
import shutil

import cv2
import h5py
import numpy as np
import pytest

import caffe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYCAFFE = os.path.join(ROOT, 'caffe-fast-rcnn', 'python')
EXTRA = os.path.join(ROOT, 'caffe-fast-rcnn', 'tools', 'extra')


def script(name):
    """The script's main() (its module run without executing __main__)."""
    return runpy.run_path(os.path.join(PYCAFFE, name), run_name='not_main')['main']


# Global average of each channel, then an identity InnerProduct and a Softmax: the class is
# the channel (in the net's BGR order) with the largest mean.
COLOUR_NET = """name: 'colour'
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: 'pool' type: 'Pooling' bottom: 'data' top: 'pool' pooling_param { pool: AVE global_pooling: true } }
layer { name: 'fc' type: 'InnerProduct' bottom: 'pool' top: 'fc' inner_product_param { num_output: 3 } }
layer { name: 'prob' type: 'Softmax' bottom: 'fc' top: 'prob' }
"""


@pytest.fixture
def colour_model(tmp_path):
    proto = tmp_path / 'deploy.prototxt'
    proto.write_text(COLOUR_NET)
    net = caffe.Net(str(proto), caffe.TEST)
    net.params['fc'][0].data[...] = np.eye(3) * 0.1
    net.params['fc'][1].data[...] = 0
    weights = tmp_path / 'colour.caffemodel'
    net.save(str(weights))
    return str(proto), str(weights)


def _image(path, bgr):
    img = np.zeros((12, 14, 3), np.uint8)
    img[...] = bgr
    cv2.imwrite(str(path), img)


def test_classify_ranks_known_images(tmp_path, colour_model, capsys):
    proto, weights = colour_model
    folder = tmp_path / 'images'
    folder.mkdir()
    for name, bgr in (('a_red', (20, 30, 250)), ('b_green', (10, 240, 40)), ('c_blue', (230, 20, 20))):
        _image(folder / (name + '.jpg'), bgr)
    out = tmp_path / 'pred.npy'
    main = script('classify.py')
    assert main([str(folder), str(out), '--model_def', proto, '--pretrained_model', weights,
                 '--images_dim', '10,10', '--mean_file', '']) == 0
    pred = np.load(out)
    assert pred.shape == (3, 3)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-5)
    # BGR net channels: red is class 2, green 1, blue 0 (the channel swap of RGB images).
    assert list(pred.argmax(1)) == [2, 1, 0]
    assert 'Classifying 3 inputs.' in capsys.readouterr().out
    # One image, centre crop only, with a per-channel mean in a .npy file.
    mean = tmp_path / 'mean.npy'
    np.save(mean, np.full((3, 4, 4), 100.0, np.float32))  # 4x4 != 8x8: reduced per channel
    assert main([str(folder / 'c_blue.jpg'), str(out), '--model_def', proto, '--pretrained_model',
                 weights, '--center_only', '--mean_file', str(mean)]) == 0
    assert np.load(out).shape == (1, 3) and np.load(out).argmax() == 0


def test_detect_classifies_listed_windows(tmp_path, colour_model):
    proto, weights = colour_model
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (20, 20, 240)   # left half red
    img[:, 30:] = (240, 20, 20)   # right half blue
    cv2.imwrite(str(tmp_path / 'scene.png'), img)
    windows = tmp_path / 'windows.csv'
    path = str(tmp_path / 'scene.png')
    windows.write_text('filename,xmin,ymin,xmax,ymax\n%s,2,5,25,35\n%s,35,5,58,35\n' % (path, path))
    main = script('detect.py')
    out = tmp_path / 'dets.csv'
    assert main(['--crop_mode', 'list', '--model_def', proto, '--pretrained_model', weights,
                 '--mean_file', '', '--context_pad', '0', str(windows), str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r['filename'] for r in rows] == [path, path]
    assert [[int(r[c]) for c in ('ymin', 'xmin', 'ymax', 'xmax')] for r in rows] == \
        [[5, 2, 35, 25], [5, 35, 35, 58]]
    probs = np.array([[float(r['class%d' % k]) for k in range(3)] for r in rows])
    assert list(probs.argmax(1)) == [2, 0]
    h5 = tmp_path / 'dets.h5'
    assert main(['--crop_mode', 'list', '--model_def', proto, '--pretrained_model', weights,
                 '--mean_file', '', '--context_pad', '0', str(windows), str(h5)]) == 0
    with h5py.File(h5, 'r') as f:
        np.testing.assert_allclose(f['prediction'][...], probs, rtol=1e-6)
        assert f['window'][...].tolist() == [[5, 2, 35, 25], [5, 35, 35, 58]]


def test_classify_and_detect_share_model_and_preprocessing_flags(tmp_path):
    """Both scripts take pycaffe's --model_def, --pretrained_model, --gpu, --mean_file,
    --input_scale, --raw_scale and --channel_swap with the same defaults, and both end
    with one clear message when the mean file is missing."""
    shared = ('model_def', 'pretrained_model', 'gpu', 'mean_file', 'input_scale', 'raw_scale',
              'channel_swap')
    defaults = []
    for name in ('classify.py', 'detect.py'):
        module = runpy.run_path(os.path.join(PYCAFFE, name), run_name='not_main')
        args = vars(module['parse_args'](['in', 'out']))
        defaults.append({k: args[k] for k in shared})
        with pytest.raises(SystemExit, match=r"mean file .*nope\.npy not found"):
            module['main'](['in', 'out', '--mean_file', str(tmp_path / 'nope.npy')])
    assert defaults[0] == defaults[1]
    assert defaults[0]['model_def'] == os.path.join(
        PYCAFFE, '../models/bvlc_reference_caffenet/deploy.prototxt')
    assert (defaults[0]['raw_scale'], defaults[0]['channel_swap']) == (255.0, '2,1,0')


def test_draw_net_writes_pictures_with_graphviz(tmp_path, capsys):
    assert shutil.which('dot'), ("Graphviz's dot is not installed: apt-get install graphviz "
                                 "(`make setup` says so; CI installs it)")
    proto = tmp_path / 'net.prototxt'
    proto.write_text(COLOUR_NET.replace("name: 'data' type: 'Input'",
                                        "name: 'data' type: 'Input' include { phase: TEST }"))
    main = script('draw_net.py')
    png = tmp_path / 'net.png'
    assert main([str(proto), str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000
    assert 'Drawing net to %s' % png in capsys.readouterr().out
    svg = tmp_path / 'net.svg'
    assert main([str(proto), str(svg), '--rankdir', 'TB', '--phase', 'TRAIN', '--display_lrm']) == 0
    text = svg.read_text()
    assert '<svg' in text and '(Pooling AVE)' in text and '(Input)' not in text  # TRAIN only
    with pytest.raises(ValueError, match='Unknown phase'):
        main([str(proto), str(svg), '--phase', 'VAL'])
    # A net of the repository, as BVLC's test_draw draws its models: a real PNG.
    model = os.path.join(ROOT, 'models', 'toy', 'faster_rcnn_end2end', 'train.prototxt')
    if os.path.isfile(model):
        out = tmp_path / 'model.png'
        assert main([model, str(out)]) == 0 and out.read_bytes()[:4] == b'\x89PNG'


SUMMARY_NET = """name: 's'
input: 'data' input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 2 } }
layer { name: 'pool1' type: 'Pooling' bottom: 'conv1' top: 'pool1' pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: 'fc' type: 'InnerProduct' bottom: 'pool1' top: 'fc' param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 2 } }
layer { name: 'py' type: 'Python' bottom: 'fc' bottom: 'nowhere' top: 'out' top: 'aux' loss_weight: 0.5
        python_param { module: 'mymod' layer: 'MyLayer' } }
layer { name: 'sink' type: 'Silence' bottom: 'aux' }
"""


def test_summarize_tables_a_net(tmp_path, capsys):
    proto = tmp_path / 'net.prototxt'
    proto.write_text(SUMMARY_NET)
    main = runpy.run_path(os.path.join(EXTRA, 'summarize.py'), run_name='not_main')['main']
    assert main([str(proto)]) == 0
    lines = capsys.readouterr().out.splitlines()
    plain = [re.sub(r'\033\[[\d;]*m', '', l).split() for l in lines]
    assert [p[0] for p in plain] == ['conv1', 'pool1', 'fc', 'py', 'sink']
    # The first param spec has nothing to say (lr 1, decay 1): an empty entry, as in Caffe's.
    assert plain[0] == ['conv1', 'Convolution', '(,', 'x2', 'Dx0)', 'data', '->', 'conv1', '3/2+1', '8/2']
    assert plain[1] == ['pool1', 'Pooling', 'conv1', '->', 'pool1', '2/2']
    assert plain[2] == ['fc', 'InnerProduct', '(x0,', 'x0)', 'pool1', '->', 'fc']
    assert plain[3][:2] == ['py', 'mymod.MyLayer'] and '0.5' in plain[3]
    # Colours: a blob keeps its colour from maker to reader; an unmade bottom is on red;
    # a top nobody reads is bold and underlined.
    conv_colour = re.search(r'\033\[(\d+)mconv1', lines[0].split('->')[1]).group(1)
    assert '\033[%smconv1' % conv_colour in lines[1].split('->')[0]
    assert '\033[41mdata' in lines[0] and '\033[41mnowhere' in lines[3]
    assert '\033[1;4mout' in lines[3]
    assert max(len(re.sub(r'\033\[[\d;]*m', '', l)) for l in lines) < 120
