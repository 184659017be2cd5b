"""PriorBox and Permute (SSD): exact values on hand-made inputs, gradients, errors, and
their part of the ssd_normalize_permute_prior fixture (made by RefineDet's Caffe)."""
import math
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'conformance_fixtures',
                       'ssd_normalize_permute_prior')


def build(text, phase=caffe.TEST):
    return caffe.Net(protoio.parse_text(text, caffe_pb2.NetParameter()), phase)


def prior_net(params, feat=(1, 2, 2, 2), data=(1, 3, 20, 20)):
    return build('input: "feat" input_shape { %s }\ninput: "data" input_shape { %s }\n'
                 'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "p" '
                 'prior_box_param { %s } }'
                 % (' '.join('dim: %d' % d for d in feat), ' '.join('dim: %d' % d for d in data),
                    params))


def priors_of(params, **shapes):
    net = prior_net(params, **shapes)
    net.forward()
    return net.blobs['p'].data.copy()


def test_hand_values_min_max_and_ratios():
    # 2 x 2 cells on a 20 x 20 image: step 10, centres 5 and 15. Ratios 1, 2, 1/2 (the
    # repeated 2 and the 0.5 already added by flip are skipped): 4 priors per cell.
    out = priors_of('min_size: 4 max_size: 9 aspect_ratio: 2 aspect_ratio: 2.0000001 '
                    'aspect_ratio: 0.5 flip: true variance: 0.1')
    assert out.shape == (1, 2, 2 * 2 * 4 * 4)
    boxes = out[0, 0].reshape(2, 2, 4, 4)
    r2 = math.sqrt(2)
    cell = lambda cx, cy: np.array([  # noqa: E731
        [cx - 2, cy - 2, cx + 2, cy + 2],
        [cx - 3, cy - 3, cx + 3, cy + 3],                       # sqrt(4 * 9) = 6
        [cx - 2 * r2, cy - r2, cx + 2 * r2, cy + r2],             # 4 * sqrt(2) x 4 / sqrt(2)
        [cx - r2, cy - 2 * r2, cx + r2, cy + 2 * r2]]) / 20
    np.testing.assert_allclose(boxes[0, 0], cell(5, 5), atol=1e-6)
    np.testing.assert_allclose(boxes[0, 1], cell(15, 5), atol=1e-6)   # w moves x
    np.testing.assert_allclose(boxes[1, 0], cell(5, 15), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.1, rtol=1e-6)


def reference_priors(fh, fw, img_h, img_w, mins, maxs, ratios, flip, clip, var, step_h, step_w,
                     offset):
    ars = [1.0]
    for r in ratios:
        if all(abs(r - a) >= 1e-6 for a in ars):
            ars.append(r)
            if flip:
                ars.append(1 / r)
    out = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + offset) * step_w, (h + offset) * step_h
            for k, s in enumerate(mins):
                s = int(s)
                sizes = [(s, s)]
                if maxs:
                    sizes.append((math.sqrt(s * int(maxs[k])),) * 2)
                sizes += [(s * math.sqrt(a), s / math.sqrt(a)) for a in ars if abs(a - 1) >= 1e-6]
                for bw, bh in sizes:
                    out.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                                (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    boxes = np.array(out).reshape(-1)
    if clip:
        boxes = np.clip(boxes, 0, 1)
    v = np.tile(var if len(var) == 4 else var * 4, len(out))
    return np.stack([boxes, v])[None]


@pytest.mark.parametrize('params,kw,feat,data', [
    ('min_size: 30 min_size: 60 max_size: 60 max_size: 111 aspect_ratio: 3 flip: false '
     'clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2',
     dict(mins=[30, 60], maxs=[60, 111], ratios=[3], flip=False, clip=True,
          var=[0.1, 0.1, 0.2, 0.2], offset=0.5), (1, 8, 3, 5), (1, 3, 90, 150)),
    ('min_size: 12.7 aspect_ratio: 2 aspect_ratio: 3 img_h: 64 img_w: 80 step_h: 16 step_w: 20 '
     'offset: 0 variance: 0.2',
     dict(mins=[12.7], maxs=[], ratios=[2, 3], flip=True, clip=False, var=[0.2], offset=0.0,
          img_h=64, img_w=80, step_h=16, step_w=20), (2, 4, 4, 4), (2, 3, 30, 30)),
    ('min_size: 8 img_size: 32 step: 4',
     dict(mins=[8], maxs=[], ratios=[], flip=True, clip=False, var=[0.1], offset=0.5,
          img_h=32, img_w=32, step_h=4, step_w=4), (1, 1, 8, 8), (1, 1, 1, 1)),
])
def test_against_reference(params, kw, feat, data):
    fh, fw = feat[2], feat[3]
    kw = dict(kw)
    img_h, img_w = kw.pop('img_h', data[2]), kw.pop('img_w', data[3])
    step_h = kw.pop('step_h', img_h / fh)
    step_w = kw.pop('step_w', img_w / fw)
    want = reference_priors(fh, fw, img_h, img_w, step_h=step_h, step_w=step_w, **kw)
    got = priors_of(params, feat=feat, data=data)
    np.testing.assert_allclose(got, want, atol=2e-7)


def test_recomputed_when_shapes_change():
    net = prior_net('min_size: 4')
    net.forward()
    a = net.blobs['p'].data.copy()
    net.blobs['feat'].reshape(1, 2, 4, 4)
    net.reshape()
    net.forward()
    assert net.blobs['p'].data.shape == (1, 2, 4 * 4 * 4)
    assert not np.allclose(net.blobs['p'].data[0, 0, :4], a[0, 0, :4])


@pytest.mark.parametrize('params,msg', [
    ('', 'must provide min_size'),
    ('min_size: 10 max_size: 5', 'max_size must be greater than min_size'),
    ('min_size: 10 min_size: 20 max_size: 30', '1 max_size values for 2 min_size'),
    ('min_size: 10 variance: 0.1 variance: 0.2', 'give 1 or 4 variance values'),
    ('min_size: 10 img_size: 30 img_h: 20 img_w: 20', 'Either img_size or img_h/img_w'),
    ('min_size: 10 step: 3 step_h: 4 step_w: 4', 'Either step or step_h/step_w'),
])
def test_errors(params, msg):
    with pytest.raises(caffe.LayerError, match=r"'pb' \(PriorBox\).*" + msg):
        prior_net(params)


# ---- Permute --------------------------------------------------------------------------------

def permute_net(order, shape=(2, 3, 4, 5), force=True):
    return ('%sinput: "x" input_shape { %s }\nlayer { name: "perm" type: "Permute" bottom: "x" '
            'top: "y" permute_param { %s } }'
            % ('force_backward: true\n' if force else '', ' '.join('dim: %d' % d for d in shape),
               ' '.join('order: %d' % o for o in order)))


@pytest.mark.parametrize('order,full', [([0, 2, 3, 1], [0, 2, 3, 1]), ([2], [2, 0, 1, 3]),
                                        ([1, 0], [1, 0, 2, 3]), ([], [0, 1, 2, 3])])
def test_permute_forward_backward(order, full):
    x = np.random.RandomState(0).randn(2, 3, 4, 5)
    with caffe.precision(torch.float64):
        net = build(permute_net(order), caffe.TRAIN)
        net.blobs['x'].data[...] = x
        net.forward()
        np.testing.assert_array_equal(net.blobs['y'].data, np.transpose(x, full))
        dy = np.random.RandomState(1).randn(*net.blobs['y'].shape)
        net.backward(y=dy)
    np.testing.assert_array_equal(net.blobs['x'].diff, np.transpose(dy, np.argsort(full)))


def test_permute_gradient():
    check_net_gradients(permute_net([0, 3, 1, 2], (2, 2, 3, 2)),
                        {'x': np.random.RandomState(2).randn(2, 2, 3, 2)})


@pytest.mark.parametrize('order,msg', [([0, 4], 'order 4 should be less than the input dimension'),
                                       ([1, 1], 'there are duplicate orders')])
def test_permute_errors(order, msg):
    with pytest.raises(caffe.LayerError, match=r"'perm' \(Permute\): " + msg):
        build(permute_net(order))


# ---- the fixture made by RefineDet's Caffe, without its Normalize layer ----------------------

def test_fixture_permute_flatten_prior_parts():
    """ssd_normalize_permute_prior minus Normalize: the recorded `norm` output is fed in,
    and Convolution -> Permute -> Flatten and PriorBox must give Caffe's values and diffs."""
    with open(os.path.join(FIXTURE, 'net.prototxt')) as f:
        text = f.read()
    layers = [l for l in text.splitlines() if l.startswith('layer')]
    kept = [l for l in layers if 'type: "Normalize"' not in l]
    head = ('force_backward: true\ninput: "norm" input_shape { dim: 1 dim: 8 dim: 5 dim: 6 }\n'
            'input: "feat" input_shape { dim: 1 dim: 8 dim: 5 dim: 6 }\n'
            'input: "data" input_shape { dim: 1 dim: 3 dim: 40 dim: 48 }\n')
    net = build(head + '\n'.join(kept))
    arr = np.load(os.path.join(FIXTURE, 'arrays.npz'))
    net.params['loc'][0].data[...] = arr['param/loc/0']
    net.params['loc'][1].data[...] = arr['param/loc/1']
    for k in ('norm', 'feat', 'data'):
        net.blobs[k].data[...] = arr['data/' + k]
    net.forward()
    for k in ('loc', 'loc_perm', 'loc_flat', 'priors'):
        np.testing.assert_allclose(net.blobs[k].data, arr['data/' + k], rtol=1e-5, atol=1e-6)
    net.backward(loc_flat=arr['top_diff/loc_flat'], priors=arr['top_diff/priors'])
    for k in ('norm', 'loc', 'loc_perm', 'loc_flat'):
        np.testing.assert_allclose(net.blobs[k].diff, arr['diff/' + k], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(net.blobs['data'].diff, 0)
