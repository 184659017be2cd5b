"""Element-wise layers (Caffe's "neuron" layers): top has the bottom's shape.

Each is a small differentiable torch expression; the engine derives backward from it.
Dropout draws a random mask in TRAIN and so keeps the mask and writes its own backward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _config
from ..errors import NetError
from .base import TorchLayer
from . import register


class Neuron(TorchLayer):
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)


@register('ReLU')
class ReLU(Neuron):
    def setup(self, bottom, top):
        self.slope = self.layer_param.relu_param.negative_slope

    def compute(self, x):
        if self.slope:
            return F.leaky_relu(x, self.slope)
        return F.relu(x)
