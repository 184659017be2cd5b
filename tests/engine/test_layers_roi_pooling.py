"""ROIPooling against a plain NumPy transcription of caffe-fast-rcnn's algorithm."""
import math

import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.layers.roi_pooling import caffe_round
from caffe.proto import caffe_pb2

from gradcheck import check_net_gradients

R = np.random.RandomState(3)


def c_round(v):
    """C's round(): half away from zero."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def reference_forward(x, rois, scale, ph_n, pw_n):
    """caffe-fast-rcnn's ROIPoolingLayer::Forward_cpu, loop for loop, in the data's float type."""
    ft = x.dtype.type
    n_rois = rois.shape[0]
    _, c, h, w = x.shape
    top = np.full((n_rois, c, ph_n, pw_n), -np.finfo(np.float32).max, dtype=x.dtype)
    argmax = np.full((n_rois, c, ph_n, pw_n), -1, dtype=np.int64)
    for n in range(n_rois):
        b = int(rois[n, 0])
        sw, sh, ew, eh = (c_round(float(ft(rois[n, i]) * ft(np.float32(scale)))) for i in (1, 2, 3, 4))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bin_h, bin_w = ft(rh) / ft(ph_n), ft(rw) / ft(pw_n)
        for ph in range(ph_n):
            for pw in range(pw_n):
                hs = min(max(int(math.floor(ft(ph) * bin_h)) + sh, 0), h)
                he = min(max(int(math.ceil(ft(ph + 1) * bin_h)) + sh, 0), h)
                ws = min(max(int(math.floor(ft(pw) * bin_w)) + sw, 0), w)
                we = min(max(int(math.ceil(ft(pw + 1) * bin_w)) + sw, 0), w)
                if he <= hs or we <= ws:
                    top[n, :, ph, pw] = 0
                    continue
                for ch in range(c):
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            if x[b, ch, hh, ww] > top[n, ch, ph, pw]:
                                top[n, ch, ph, pw] = x[b, ch, hh, ww]
                                argmax[n, ch, ph, pw] = hh * w + ww
    return top, argmax


def reference_backward(x_shape, rois, scale, argmax, top_diff, dtype):
    """caffe-fast-rcnn's backward: for every input cell inside a RoI, sum the diffs of the
    pooled units whose bin could hold the cell and whose argmax is that cell."""
    ft = np.dtype(dtype).type
    _, c, h, w = x_shape
    ph_n, pw_n = top_diff.shape[2:]
    diff = np.zeros(x_shape)
    for n in range(rois.shape[0]):
        b = int(rois[n, 0])
        sw, sh, ew, eh = (c_round(float(ft(rois[n, i]) * ft(np.float32(scale)))) for i in (1, 2, 3, 4))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bin_h, bin_w = ft(rh) / ft(ph_n), ft(rw) / ft(pw_n)
        for ch in range(c):
            for hh in range(max(0, sh), min(h, eh + 1)):
                for ww in range(max(0, sw), min(w, ew + 1)):
                    p0 = min(max(int(math.floor(ft(hh - sh) / bin_h)), 0), ph_n)
                    p1 = min(max(int(math.ceil(ft(hh - sh + 1) / bin_h)), 0), ph_n)
                    q0 = min(max(int(math.floor(ft(ww - sw) / bin_w)), 0), pw_n)
                    q1 = min(max(int(math.ceil(ft(ww - sw + 1) / bin_w)), 0), pw_n)
                    for ph in range(p0, p1):
                        for pw in range(q0, q1):
                            if argmax[n, ch, ph, pw] == hh * w + ww:
                                diff[b, ch, hh, ww] += top_diff[n, ch, ph, pw]
    return diff


def awkward_rois(n_batch, h, w, scale, count):
    """Random rois plus the hard cases: .5 coordinates after scaling, partly or wholly
    outside the map, tiny, single-cell, reversed (x2 < x1), and negative coordinates."""
    img_h, img_w = h / scale, w / scale
    rows = []
    for _ in range(count):
        x1, x2 = sorted(R.uniform(-0.2 * img_w, 1.2 * img_w, 2))
        y1, y2 = sorted(R.uniform(-0.2 * img_h, 1.2 * img_h, 2))
        rows.append([R.randint(n_batch), x1, y1, x2, y2])
    half = 0.5 / scale  # lands on .5 after scaling
    rows += [
        [0, 1 * half, 3 * half, 5 * half, 7 * half],
        [n_batch - 1, -3 * half, -1 * half, 1 * half, 9 * half],
        [0, 2.0 / scale, 1.0 / scale, 2.0 / scale, 1.0 / scale],        # one cell
        [0, 2.2 / scale, 1.1 / scale, 2.3 / scale, 1.2 / scale],        # tiny
        [0, 4.0 / scale, 2.0 / scale, 1.0 / scale, 3.0 / scale],        # x2 < x1
        [0, -9.0 / scale, -9.0 / scale, -5.0 / scale, -6.0 / scale],    # outside: empty bins
        [n_batch - 1, (w + 3) / scale, 0, (w + 8) / scale, h / scale],  # right of the map
        [0, 0, 0, (w - 1) / scale, (h - 1) / scale],                    # whole map
    ]
    return np.array(rows)


def make_net(scale, ph, pw, x, rois, dtype):
    text = ('force_backward: true\n'
            'input: "x" input_shape { dim: %d dim: %d dim: %d dim: %d }\n'
            'input: "rois" input_shape { dim: %d dim: 5 }\n'
            'layer { name: "pool" type: "ROIPooling" bottom: "x" bottom: "rois" top: "y" '
            'roi_pooling_param { pooled_h: %d pooled_w: %d spatial_scale: %r } }'
            % (x.shape + (rois.shape[0], ph, pw, scale)))
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    with caffe.precision(dtype):
        net = caffe.Net(param, caffe.TRAIN)
        net.blobs['x'].data[...] = x
        net.blobs['rois'].data[...] = rois
        net.forward()
    return net


@pytest.mark.parametrize('scale,ph,pw,dtype', [(0.25, 3, 3, np.float32), (0.0625, 2, 3, np.float32),
                                               (1.0, 4, 2, np.float64), (0.3, 3, 2, np.float32),
                                               (0.5, 7, 7, np.float64)])
def test_forward_and_backward_match_caffe(scale, ph, pw, dtype):
    x = R.randn(2, 3, 9, 11).astype(dtype)
    rois = awkward_rois(2, 9, 11, scale, 12).astype(dtype)
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    net = make_net(scale, ph, pw, x, rois, torch_dtype)
    top, argmax = reference_forward(x, rois, scale, ph, pw)
    np.testing.assert_array_equal(net.blobs['y'].data, top)
    dy = R.randn(*top.shape).astype(dtype)
    with caffe.precision(torch_dtype):
        net.backward(y=dy)
    want = reference_backward(x.shape, rois, scale, argmax, dy, dtype)
    np.testing.assert_allclose(net.blobs['x'].diff, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net.blobs['rois'].diff, 0)  # no gradient to the rois


def test_torchvision_kernel_matches_caffe_on_power_of_two_scales():
    # The claim the layer rests on: torchvision's roi_pool follows Caffe's binning.
    x = R.randn(2, 4, 12, 10).astype(np.float32)
    for scale in (1.0, 0.5, 0.25, 0.0625):
        rois = awkward_rois(2, 12, 10, scale, 20).astype(np.float32)
        out, arg = torch.ops.torchvision.roi_pool(torch.from_numpy(x), torch.from_numpy(rois),
                                                  scale, 3, 4)
        top, argmax = reference_forward(x, rois, scale, 3, 4)
        np.testing.assert_array_equal(out.numpy(), top)
        np.testing.assert_array_equal(arg.numpy(), argmax)


def test_caffe_round_is_half_away_from_zero():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 2.4, -2.6])
    assert caffe_round(v).tolist() == [1, 2, 3, -1, -2, -3, 0, 2, -3]


def test_hand_computed_values():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, 0, 3, 3],        # whole map, 2x2 bins of 2x2 cells
                     [0, 1, 1, 2, 2],        # 2x2 roi: each bin one cell
                     [0, 10, 10, 12, 12],    # outside: every bin empty -> 0
                     [0, 2, 0, 2, 3]])       # one column, 4 rows -> bins of 2 rows, 0.5 col
    net = make_net(1.0, 2, 2, x, rois, torch.float64)
    y = net.blobs['y'].data
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(y[1, 0], [[5, 6], [9, 10]])
    np.testing.assert_array_equal(y[2, 0], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(y[3, 0], [[6, 6], [14, 14]])


def test_first_maximum_wins_and_gradient_goes_there():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # two equal maxima: (0, 1) comes first
    net = make_net(1.0, 1, 1, x, np.array([[0, 0, 0, 1, 1]]), torch.float64)
    with caffe.precision(torch.float64):
        net.backward(y=np.array([[[[2.5]]]]))
    np.testing.assert_array_equal(net.blobs['x'].diff[0, 0], [[0, 2.5], [0, 0]])


def test_gradient_check():
    x = R.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.1  # distinct values: no ties
    rois = np.array([[0, 0, 0, 20, 16], [1, 4, 3, 27, 23], [1, 8, 8, 9, 9], [0, -6, 2, 10, 30]],
                    dtype=np.float64)
    text = ('force_backward: true\n'
            'input: "x" input_shape { dim: 2 dim: 2 dim: 6 dim: 7 }\n'
            'input: "rois" input_shape { dim: 4 dim: 5 }\n'
            'layer { name: "pool" type: "ROIPooling" bottom: "x" bottom: "rois" top: "y" '
            'roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 } }')
    check_net_gradients(text, {'x': x, 'rois': rois}, skip_inputs=['rois'], eps=1e-4)


def test_vectorised_on_many_rois():
    # 2000 rois in one call, as in a test pass of Fast R-CNN; compared on a sample.
    x = R.randn(1, 8, 20, 25).astype(np.float32)
    rois = awkward_rois(1, 20, 25, 0.0625, 2000).astype(np.float32)
    net = make_net(0.0625, 6, 6, x, rois, torch.float32)
    pick = R.choice(len(rois), 20, replace=False)
    top, _ = reference_forward(x, rois[pick], 0.0625, 6, 6)
    np.testing.assert_array_equal(net.blobs['y'].data[pick], top)


def test_errors_name_the_layer():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(caffe.ShapeError, match="'pool'.*batch index 1"):
        make_net(1.0, 2, 2, x, np.array([[1, 0, 0, 3, 3]]), torch.float64)
    text = ('input: "x" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
            'input: "rois" input_shape { dim: 2 dim: 4 }\n'
            'layer { name: "pool" type: "ROIPooling" bottom: "x" bottom: "rois" top: "y" '
            'roi_pooling_param { pooled_h: 2 pooled_w: 2 } }')
    with pytest.raises(caffe.ShapeError, match='must be == 5'):
        caffe.Net(protoio.parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
    text = text.replace('dim: 4 }\nlayer', 'dim: 5 }\nlayer').replace('pooled_h: 2', 'pooled_h: 0')
    with pytest.raises(caffe.NetError, match='pooled_h must be > 0'):
        caffe.Net(protoio.parse_text(text, caffe_pb2.NetParameter()), caffe.TEST)
