"""caffe.Classifier: a Net that classifies images (pycaffe's classifier.py).

Images (H x W x K, float in [0, 1], as caffe.io.load_image gives) are resized to
`image_dims`, cropped to the net's input size (ten crops averaged with `oversample`,
else the centre crop), preprocessed with a caffe.io.Transformer configured from the
constructor's mean / input_scale / raw_scale / channel_swap, and run through the net;
`predict` returns the first output (class probabilities), one row per image.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import io as caffe_io
from .net import Net
from .phase import TEST


class Classifier(Net):
    """A TEST-phase Net with image preprocessing; see the module docstring."""

    def __init__(self, model_file: str, pretrained_file: Optional[str],
                 image_dims: Optional[Sequence[int]] = None, mean: Optional[np.ndarray] = None,
                 input_scale: Optional[float] = None, raw_scale: Optional[float] = None,
                 channel_swap: Optional[Sequence[int]] = None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = caffe_io._input_transformer(self, mean, input_scale, raw_scale,
                                                       channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = np.array(image_dims)

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class probabilities (N x C) of N images; averaged over ten crops if `oversample`."""
        if len(inputs) == 0:
            raise ValueError('Classifier.predict: no images given')
        h, w = int(self.image_dims[0]), int(self.image_dims[1])
        resized = np.zeros((len(inputs), h, w, inputs[0].shape[2]), dtype=np.float32)
        for ix, im in enumerate(inputs):
            resized[ix] = caffe_io.resize_image(im, (h, w))
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)
        else:
            center = self.image_dims / 2.0
            box = np.concatenate([center - self.crop_dims / 2.0,
                                  center + self.crop_dims / 2.0]).astype(int)
            crops = resized[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.zeros((crops.shape[0], crops.shape[3], crops.shape[1], crops.shape[2]),
                            dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        out = self.forward_all(**{in_: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
