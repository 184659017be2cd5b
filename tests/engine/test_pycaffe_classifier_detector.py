"""caffe.Classifier and caffe.Detector: pycaffe's image classification and windowed
detection wrappers, checked against the same steps done by hand with caffe.io."""
import cv2
import numpy as np
import pytest

import caffe

DEPLOY = """
name: 'tiny'
input: 'data' input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
        convolution_param { num_output: 4 kernel_size: 3 stride: 2
                            weight_filler { type: 'gaussian' std: 0.3 }
                            bias_filler { type: 'gaussian' std: 0.1 } } }
layer { type: 'ReLU' name: 'relu' bottom: 'conv' top: 'conv' }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip'
        inner_product_param { num_output: 5 weight_filler { type: 'gaussian' std: 0.3 } } }
layer { type: 'Softmax' name: 'prob' bottom: 'ip' top: 'prob' }
"""
MEAN = np.array([100.0, 110.0, 120.0])


@pytest.fixture
def model(tmp_path):
    proto = tmp_path / 'deploy.prototxt'
    proto.write_text(DEPLOY)
    weights = str(tmp_path / 'tiny.caffemodel')
    caffe.Net(str(proto), caffe.TEST).save(weights)
    return str(proto), weights


def _reference(proto, weights):
    net = caffe.Net(proto, caffe.TEST, weights=weights)
    t = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    t.set_transpose('data', (2, 0, 1))
    t.set_mean('data', MEAN)
    t.set_raw_scale('data', 255)
    t.set_channel_swap('data', (2, 1, 0))
    return net, t


def _run(net, t, crops):
    batch = np.stack([t.preprocess('data', c) for c in crops])
    return net.forward_all(data=batch)['prob']


def test_classifier_center_crop_and_oversample(model):
    proto, weights = model
    clf = caffe.Classifier(proto, weights, image_dims=(10, 12), mean=MEAN, raw_scale=255,
                           channel_swap=(2, 1, 0))
    assert isinstance(clf, caffe.Net) and clf.crop_dims.tolist() == [8, 8]
    rs = np.random.RandomState(0)
    images = [rs.rand(20, 14, 3).astype(np.float32) for _ in range(3)]
    net, t = _reference(proto, weights)
    resized = np.stack([caffe.io.resize_image(im, (10, 12)) for im in images])

    center = clf.predict(images, oversample=False)
    assert center.shape == (3, 5)
    np.testing.assert_allclose(center, _run(net, t, resized[:, 1:9, 2:10]), rtol=1e-5, atol=1e-6)

    averaged = clf.predict(images)
    per_crop = _run(net, t, caffe.io.oversample(resized, (8, 8)))
    np.testing.assert_allclose(averaged, per_crop.reshape(3, 10, 5).mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(averaged.sum(1), 1, rtol=1e-5)


def test_detector_windows(model, tmp_path):
    proto, weights = model
    rs = np.random.RandomState(1)
    rgb = (rs.rand(30, 40, 3) * 255).astype(np.uint8)
    image_file = str(tmp_path / 'im.png')
    cv2.imwrite(image_file, rgb[:, :, ::-1])
    det = caffe.Detector(proto, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    assert det.crop_dims.tolist() == [8, 8, 3]
    windows = [np.array([0, 0, 10, 10]), np.array([5, 7, 29, 39]), np.array([12, 3, 20, 30])]
    dets = det.detect_windows([(image_file, windows)])
    assert [d['filename'] for d in dets] == [image_file] * 3
    assert all(d['window'] is w for d, w in zip(dets, windows))
    image = caffe.io.load_image(image_file)
    net, t = _reference(proto, weights)
    expected = _run(net, t, [caffe.io.resize_image(image[w[0]:w[2], w[1]:w[3]], (8, 8))
                             for w in windows])
    np.testing.assert_allclose(np.stack([d['prediction'] for d in dets]), expected,
                               rtol=1e-5, atol=1e-6)


def test_detector_context_padding(model):
    proto, weights = model
    det = caffe.Detector(proto, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                         context_pad=1)
    # The padding fill is the mean in raw image space: [0, 1], RGB order.
    np.testing.assert_allclose(det.crop_mean.reshape(3), MEAN[::-1] / 255.0)
    image = np.full((20, 20, 3), 0.9, np.float32)
    # A window at the image corner: the context above and left lies outside the image
    # and is filled with the mean; the rest comes from the image.
    crop = det.crop(image, np.array([0, 0, 11, 11]))
    assert crop.shape == (8, 8, 3)
    np.testing.assert_allclose(crop[0, 0], MEAN[::-1] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(crop[-1, -1], 0.9, rtol=1e-5)
    # Without context the window is returned as cut.
    plain = caffe.Detector(proto, weights)
    assert plain.crop(image, np.array([2, 3, 7, 9])).shape == (5, 6, 3)
