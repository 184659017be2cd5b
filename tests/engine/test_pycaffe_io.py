"""caffe.io: proto/array conversions, Transformer, image loading/resizing, oversampling.

Covers what BVLC's python/caffe/test/test_io.py asserts (legacy and shape-form
BlobProtos, a shapeless proto, a scalar, Datum labels) plus the rest of the module.
"""
import cv2
import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2


# ---- BlobProto -------------------------------------------------------------------------------

def test_blobproto_legacy_4d_shape():
    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.arange(20, dtype=np.float32).tolist())
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 4, 5
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (1, 1, 4, 5)
    assert arr[0, 0, 3, 4] == 19


def test_blobproto_legacy_fields_win_over_shape():
    # A proto that sets any legacy field is read as 4-d, as pycaffe does.
    blob = caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 6)
    blob.channels = 6
    blob.num = blob.height = blob.width = 1
    blob.shape.dim.extend([2, 3])
    assert caffe.io.blobproto_to_array(blob).shape == (1, 6, 1, 1)


def test_blobproto_shape_form():
    data = np.random.RandomState(0).randn(3, 7).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.data.extend(data.ravel().tolist())
    blob.shape.dim.extend(data.shape)
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (3, 7)
    np.testing.assert_array_equal(arr, data)


def test_blobproto_without_shape_is_an_error():
    blob = caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 100)
    with pytest.raises(ValueError, match='100'):
        caffe.io.blobproto_to_array(blob)


def test_blobproto_scalar():
    blob = caffe_pb2.BlobProto()
    blob.data.append(123.0)
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == ()
    assert arr == 123


def test_blobproto_diff_and_double():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2])
    blob.double_data.extend([1.5, 2.5])
    blob.diff.extend([3.0, 4.0])
    data = caffe.io.blobproto_to_array(blob)
    assert data.dtype == np.float64 and data.tolist() == [1.5, 2.5]
    assert caffe.io.blobproto_to_array(blob, return_diff=True).tolist() == [3.0, 4.0]


def test_array_to_blobproto_round_trip_with_diff():
    rs = np.random.RandomState(1)
    arr, diff = rs.randn(2, 3, 4), rs.randn(2, 3, 4)
    blob = caffe.io.array_to_blobproto(arr, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    assert not blob.HasField('num')
    # Values are stored single precision, as in pycaffe.
    assert len(blob.data) == 24 and len(blob.double_data) == 0
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), arr.astype(np.float32))
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True),
                                  diff.astype(np.float32))
    again = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(again), arr.astype(np.float32))


def test_array_to_blobproto_checks_diff_size():
    with pytest.raises(ValueError, match='diff'):
        caffe.io.array_to_blobproto(np.zeros(4), np.zeros(5))


def test_blobprotovector_round_trip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 2, 2, 2), np.float32)]
    s = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(s, bytes)
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert [a.shape for a in back] == [(2, 3), (1, 2, 2, 2)]
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)
    # pycaffe's misspelt name still works.
    assert caffe.io.arraylist_to_blobprotovecor_str(arrays) == s


# ---- Datum -----------------------------------------------------------------------------------

def test_datum_label_only_when_given():
    with_label = caffe.io.array_to_datum(np.ones((10, 10, 3)), label=1)
    without = caffe.io.array_to_datum(np.ones((10, 10, 3)))
    assert with_label.label == 1
    assert not without.HasField('label')
    assert len(with_label.SerializeToString()) > len(without.SerializeToString())


def test_datum_uint8_goes_to_bytes_and_back():
    arr = np.random.RandomState(2).randint(0, 256, size=(3, 4, 5)).astype(np.uint8)
    datum = caffe.io.array_to_datum(arr, label=7)
    assert (datum.channels, datum.height, datum.width) == (3, 4, 5)
    assert len(datum.data) == 60 and len(datum.float_data) == 0
    back = caffe.io.datum_to_array(caffe_pb2.Datum.FromString(datum.SerializeToString()))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, arr)


def test_datum_float_goes_to_float_data_and_back():
    arr = np.random.RandomState(3).rand(2, 3, 4)
    datum = caffe.io.array_to_datum(arr)
    assert len(datum.data) == 0 and len(datum.float_data) == 24
    np.testing.assert_allclose(caffe.io.datum_to_array(datum), arr, rtol=1e-6)


def test_datum_needs_three_axes():
    with pytest.raises(ValueError, match='Incorrect array shape'):
        caffe.io.array_to_datum(np.zeros((4, 4)))


def test_encoded_datum_decodes_to_bgr_chw():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    ok, png = cv2.imencode('.png', rgb[:, :, ::-1])
    assert ok
    datum = caffe_pb2.Datum(channels=3, height=4, width=6, data=png.tobytes(), encoded=True)
    arr = caffe.io.datum_to_array(datum)
    assert arr.shape == (3, 4, 6)
    assert (arr[2] == 200).all() and (arr[:2] == 0).all()  # BGR: red is channel 2


# ---- Transformer -----------------------------------------------------------------------------

def _transformer(shape=(1, 3, 4, 5)):
    return caffe.io.Transformer({'data': shape})


def test_preprocess_order_of_steps_and_deprocess_inverts():
    rs = np.random.RandomState(4)
    img = rs.rand(4, 5, 3).astype(np.float32)
    mean = np.array([10.0, 20.0, 30.0])
    t = _transformer()
    t.set_transpose('data', (2, 0, 1))
    t.set_channel_swap('data', (2, 1, 0))
    t.set_raw_scale('data', 255)
    t.set_mean('data', mean)
    t.set_input_scale('data', 0.5)
    original = img.copy()
    out = t.preprocess('data', img)
    np.testing.assert_array_equal(img, original)  # the caller's image is untouched
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    expected = (img.transpose(2, 0, 1)[[2, 1, 0]] * 255 - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.deprocess('data', out[np.newaxis]), img, rtol=1e-5, atol=1e-5)


def test_preprocess_resizes_to_the_input_size():
    t = _transformer((1, 3, 6, 8))
    t.set_transpose('data', (2, 0, 1))
    out = t.preprocess('data', np.full((3, 4, 3), 0.25, np.float32))
    assert out.shape == (3, 6, 8)
    np.testing.assert_allclose(out, 0.25)


def test_elementwise_mean():
    t = _transformer((1, 2, 3, 3))
    t.set_transpose('data', (2, 0, 1))
    mean = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    t.set_mean('data', mean)
    out = t.preprocess('data', np.zeros((3, 3, 2), np.float32))
    np.testing.assert_array_equal(out, -mean)
    t1 = _transformer((1, 1, 3, 3))
    t1.set_mean('data', np.ones((3, 3)))  # H x W mean for a one-channel input
    assert t1.mean['data'].shape == (3, 3)


@pytest.mark.parametrize('call, message', [
    (lambda t: t.set_transpose('data', (1, 0)), 'Transpose order needs to have the same number'),
    (lambda t: t.set_channel_swap('data', (1, 0)), 'Channel swap needs to have the same number'),
    (lambda t: t.set_mean('data', np.zeros(2)), 'Mean channels incompatible with input.'),
    (lambda t: t.set_mean('data', np.zeros((1, 1, 3, 4, 5))), 'Mean shape invalid'),
    (lambda t: t.set_mean('data', np.zeros((3, 4, 4))), 'Mean shape incompatible with input shape.'),
    (lambda t: t.set_raw_scale('nope', 255), 'nope is not one of the net inputs'),
    (lambda t: t.preprocess('nope', np.zeros((4, 5, 3))), 'nope is not one of the net inputs'),
])
def test_transformer_checks(call, message):
    with pytest.raises(Exception, match=message):
        call(_transformer())


# ---- images ----------------------------------------------------------------------------------

def test_load_image_color_grey_alpha_and_16_bit(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    cv2.imwrite(str(tmp_path / 'c.png'), rgb[:, :, ::-1])
    img = caffe.io.load_image(str(tmp_path / 'c.png'))
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    np.testing.assert_allclose(img[0, 0], [1.0, 128 / 255.0, 0.0], atol=1e-6)  # RGB order

    grey = caffe.io.load_image(str(tmp_path / 'c.png'), color=False)
    assert grey.shape == (5, 7, 1)
    np.testing.assert_allclose(grey[0, 0, 0], 0.2125 + 0.7154 * 128 / 255.0, atol=1e-5)

    g = np.full((3, 4), 51, np.uint8)
    cv2.imwrite(str(tmp_path / 'g.png'), g)
    as_color = caffe.io.load_image(str(tmp_path / 'g.png'))
    assert as_color.shape == (3, 4, 3)
    np.testing.assert_allclose(as_color, 0.2, atol=1e-6)
    assert caffe.io.load_image(str(tmp_path / 'g.png'), color=False).shape == (3, 4, 1)

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 2] = 255  # red in OpenCV's BGRA
    rgba[..., 3] = 10
    cv2.imwrite(str(tmp_path / 'a.png'), rgba)
    img = caffe.io.load_image(str(tmp_path / 'a.png'))
    assert img.shape == (2, 2, 3)
    np.testing.assert_allclose(img[0, 0], [1, 0, 0])

    deep = np.full((2, 3), 65535 // 5, np.uint16)
    cv2.imwrite(str(tmp_path / 'd.png'), deep)
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / 'd.png'), color=False),
                               0.2, atol=1e-6)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.jpg'):
        caffe.io.load_image(str(tmp_path / 'nothere.jpg'))


def test_resize_image_shapes_range_and_constant():
    rs = np.random.RandomState(5)
    im = rs.rand(10, 12, 3).astype(np.float32) * 200 - 50
    for order in (0, 1, 2, 3, 4, 5):
        out = caffe.io.resize_image(im, (7, 9), interp_order=order)
        assert out.shape == (7, 9, 3) and out.dtype == np.float32
        assert out.min() >= im.min() - 1e-4 and out.max() <= im.max() + 1e-4
    # Nearest neighbour only picks existing values.
    near = caffe.io.resize_image(im, (20, 24), interp_order=0)
    assert np.isin(near, im).all()
    # Channels other than 1 and 3 are resized too.
    many = caffe.io.resize_image(rs.rand(6, 6, 5), (3, 3))
    assert many.shape == (3, 3, 5)
    one = caffe.io.resize_image(rs.rand(6, 6, 1), (4, 2))
    assert one.shape == (4, 2, 1)
    const = caffe.io.resize_image(np.full((4, 4, 3), 7.0), (2, 5))
    assert const.shape == (2, 5, 3) and (const == 7).all()


def test_resize_image_bilinear_values():
    # A horizontal ramp stays a ramp when upsampled (half-pixel-centre convention).
    im = np.tile(np.arange(4, dtype=np.float32), (2, 1))[:, :, None]
    out = caffe.io.resize_image(im, (2, 8))
    np.testing.assert_allclose(out[0, :, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-5)


def test_oversample_ten_crops():
    rs = np.random.RandomState(6)
    images = [rs.rand(6, 8, 2).astype(np.float32) for _ in range(2)]
    crops = caffe.io.oversample(images, (4, 4))
    assert crops.shape == (20, 4, 4, 2)
    for i, im in enumerate(images):
        c = crops[10 * i:10 * i + 10]
        np.testing.assert_array_equal(c[0], im[0:4, 0:4])
        np.testing.assert_array_equal(c[1], im[0:4, 4:8])
        np.testing.assert_array_equal(c[2], im[2:6, 0:4])
        np.testing.assert_array_equal(c[3], im[2:6, 4:8])
        np.testing.assert_array_equal(c[4], im[1:5, 2:6])
        np.testing.assert_array_equal(c[5:], c[:5, :, ::-1])


def test_oversample_rejects_bigger_crops():
    with pytest.raises(ValueError, match='larger'):
        caffe.io.oversample([np.zeros((3, 3, 1))], (4, 2))
