"""Gradient checks of the first layers, and of the checker itself."""
import numpy as np
import pytest

from gradcheck import check_net_gradients

R = np.random.RandomState(1)


def test_conv_ip_relu_softmax_loss():
    net = """
    force_backward: true
    input: "x" input_shape { dim: 2 dim: 3 dim: 5 dim: 6 }
    input: "y" input_shape { dim: 2 }
    layer { name: "c" type: "Convolution" bottom: "x" top: "c"
            convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 1
                                weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.1 } }
    layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 2 stride: 1 } }
    layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" loss_weight: 0.7 }
    """
    check_net_gradients(net, {'x': R.randn(2, 3, 5, 6), 'y': np.array([0., 2.])}, skip_inputs=['y'])


def test_checker_catches_a_wrong_gradient(monkeypatch):
    from caffe.layers import neuron
    net = """
    force_backward: true
    input: "x" input_shape { dim: 3 dim: 4 }
    layer { name: "r" type: "ReLU" bottom: "x" top: "r" }
    """
    monkeypatch.setattr(neuron.ReLU, 'compute', lambda self, x: x.clamp(min=0) * 2 - x.detach().clamp(min=0))
    with pytest.raises(AssertionError):
        check_net_gradients(net, {'x': R.randn(3, 4)})
