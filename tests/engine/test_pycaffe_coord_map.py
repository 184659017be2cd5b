"""caffe.coord_map: coordinate maps through conv/pool/deconv/crop NetSpec graphs.

The cases of BVLC's python/caffe/test/test_coord_map.py (identity of 2x pool + 2x
deconv, shifts from padding, multi-bottom layers, anisotropic and N-d kernels, crop of
a crop, the crop() helper and its three errors), plus the primitives and a check that
a crop() layer really aligns two blobs in a running net.
"""
import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.coord_map import (AxisMismatchException, UndefinedMapException, compose, conv_params,
                             coord_map, coord_map_from_to, crop, inverse)


def coord_net_spec(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """data -> conv(ks, stride, pad) -> max pool(pool) -> deconv(2*dstride, dstride, dpad)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [s * 2 for s in dstride] if isinstance(dstride, list) else dstride * 2
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=deconv_ks, stride=dstride,
                               pad=dpad)
    return n


def test_conv_pool_deconv():
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, 0)
    n = coord_net_spec(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, -1)


def test_pass_through_and_1x1_conv_are_identity():
    n = coord_net_spec()
    base = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=10, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.conv1x1):
        assert coord_map_from_to(top, n.data) == base


@pytest.mark.parametrize('pad', [1, 4, 7])
def test_padding_shifts(pad):
    _, a, b = coord_map_from_to(*(lambda n: (n.deconv, n.data))(coord_net_spec()))
    n = coord_net_spec(pad=pad)
    _, a_pad, b_pad = coord_map_from_to(n.deconv, n.data)
    assert (a_pad, b_pad) == (a, b - pad)  # conv padding adds offset
    n = coord_net_spec(dpad=pad)
    _, a_pad, b_pad = coord_map_from_to(n.deconv, n.data)
    assert (a_pad, b_pad) == (a, b + pad)  # deconv padding removes it
    n = coord_net_spec(pad=pad, dpad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b)


def test_multi_bottom_layers_map_each_pair_alike():
    n = coord_net_spec()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10,
                                            kernel_size=5, stride=2, pad=0)
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux)


def test_anisotropic_maps_split_into_isotropic_ones():
    n3 = coord_net_spec(ks=3, stride=1, pad=0)
    n5 = coord_net_spec(ks=5, stride=2, pad=10)
    n35 = coord_net_spec(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax3, a3, b3 = coord_map_from_to(n3.deconv, n3.data)
    ax5, a5, b5 = coord_map_from_to(n5.deconv, n5.data)
    ax35, a35, b35 = coord_map_from_to(n35.deconv, n35.data)
    assert ax3 == ax5 == ax35 == 1
    assert (a3, b3) == (a35[0], b35[0])
    assert (a5, b5) == (a35[1], b35[1])


def test_nd_convolution():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1],
                           pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2, pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3
    assert np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


@pytest.mark.parametrize('offset', [0, 3, 10])
def test_crop_of_a_crop(offset):
    n = coord_net_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + offset)


def test_crop_helper_defines_a_crop_layer():
    n = coord_net_spec(pool=4, dstride=4)
    n.crop = crop(n.deconv, n.data)
    fn = n.crop.fn
    assert fn.type_name == 'Crop' and fn.inputs == (n.deconv, n.data)
    assert fn.params == {'crop_param': {'axis': 2, 'offset': [1]}}
    # In a NetSpec whose Deconvolution gets its convolution_param explicitly (the type
    # has no message of its own), the crop serialises too.
    m = caffe.NetSpec()
    m.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    m.pool = L.Pooling(m.data, pool=P.Pooling.MAX, kernel_size=4, stride=4)
    m.deconv = L.Deconvolution(m.pool, convolution_param=dict(num_output=1, kernel_size=8,
                                                             stride=4))
    m.crop = crop(m.deconv, m.data)
    layer = m.to_proto().layer[-1]
    assert layer.type == 'Crop' and list(layer.bottom) == ['deconv', 'data']
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [2]


def test_unconnected_tops_are_caught():
    n = coord_net_spec()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match='connected by spatial layers'):
        coord_map_from_to(n.ip, n.data)


def test_scale_mismatch_is_caught():
    n = coord_net_spec(pool=3, dstride=2)
    with pytest.raises(AssertionError, match='scale mismatch'):
        crop(n.deconv, n.data)


def test_negative_crop_is_caught():
    n = coord_net_spec(dpad=10)
    with pytest.raises(AssertionError, match='negative offset'):
        crop(n.deconv, n.data)


def test_primitives():
    conv = L.Convolution(L.Input(), kernel_size=3, stride=2, pad=1, dilation=2)
    ax, stride, ks, pad = conv_params(conv.fn)
    assert ax == 1 and stride.tolist() == [2] and ks.tolist() == [5] and pad.tolist() == [1]
    ax, a, b = coord_map(conv.fn)
    assert ax == 1 and a.tolist() == [0.5] and b.tolist() == [(1 - 2) / 2]
    nested = L.Convolution(L.Input(), convolution_param=dict(kernel_size=4, stride=4))
    assert coord_map(nested.fn)[1].tolist() == [0.25]
    m = (1, np.array([2.0]), np.array([3.0]))
    ax, a, b = compose(m, inverse(m))
    assert ax == 1 and a.tolist() == [1.0] and b.tolist() == [0.0]
    assert compose((None, 1, 0), (2, 3, 4)) == (2, 3, 4)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))
    with pytest.raises(UndefinedMapException):
        coord_map(L.InnerProduct(L.Input(), num_output=2).fn)
    with pytest.raises(AssertionError, match='legacy'):
        conv_params(L.Convolution(L.Input(), kernel_size=3, pad_h=1).fn)


def test_crop_aligns_blobs_in_a_running_net(tmp_path):
    """The offset crop() computes makes the deconv output line up with the input."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 16, 16]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=0, bias_term=False,
                           weight_filler=dict(type='constant', value=0))
    n.deconv = L.Deconvolution(n.conv, convolution_param=dict(
        num_output=1, kernel_size=1, stride=1, bias_term=False,
        weight_filler=dict(type='constant', value=1)))
    # conv 3x3 (no pad) shifts by one pixel; the reverse crop of data to conv then takes
    # data[1:-1]: the crop of `data` to `conv` must start at offset 1.
    n.crop = crop(n.data, n.conv)
    proto = n.to_proto()
    assert list(proto.layer[-1].crop_param.offset) == [1]
    path = tmp_path / 'crop.prototxt'
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TEST)
    x = np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16)
    net.blobs['data'].data[...] = x
    net.forward()
    assert net.blobs['crop'].data.shape == (1, 1, 14, 14)
    np.testing.assert_array_equal(net.blobs['crop'].data, x[:, :, 1:15, 1:15])
