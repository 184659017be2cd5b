"""caffe.Detector: R-CNN style windowed detection with a classification Net
(pycaffe's detector.py).

Each window (ymin, xmin, ymax, xmax) of an image is cropped, optionally with a border of
surrounding context (`context_pad` pixels of the net input are context, as in R-CNN
feature extraction, the part outside the image filled with the mean), warped to the
net's input size, preprocessed with a caffe.io.Transformer and classified; the results
come back as one dict per window. Selective Search proposals need the external
`selective_search_ijcv_with_python` package, as in pycaffe.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import io as caffe_io
from .net import Net
from .phase import TEST


class Detector(Net):
    """A TEST-phase Net that classifies image windows; see the module docstring."""

    def __init__(self, model_file: str, pretrained_file: Optional[str],
                 mean: Optional[np.ndarray] = None, input_scale: Optional[float] = None,
                 raw_scale: Optional[float] = None, channel_swap: Optional[Sequence[int]] = None,
                 context_pad: Optional[int] = None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        self.transformer = caffe_io._input_transformer(self, mean, input_scale, raw_scale,
                                                       channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows: Iterable[Tuple[str, Sequence[Sequence[int]]]]
                       ) -> List[Dict]:
        """Classify windows of images: [(image filename, [window, ...]), ...] ->
        [{'window': w, 'prediction': first net output, 'filename': f}, ...]."""
        images_windows = [(fname, list(windows)) for fname, windows in images_windows]
        window_inputs = []
        for fname, windows in images_windows:
            image = caffe_io.load_image(fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, window))
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + tuple(self.blobs[in_].data.shape[2:]), dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for fname, windows in images_windows:
            for window in windows:
                detections.append({'window': window, 'prediction': predictions[ix],
                                   'filename': fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Sequence[str]) -> List[Dict]:
        """detect_windows over Selective Search proposals (needs the external
        `selective_search_ijcv_with_python` package and MATLAB, as in pycaffe)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError as e:
            raise ImportError('detect_selective_search needs the selective_search_ijcv_with_python '
                              'package on sys.path: %s' % e) from e
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd='selective_search_rcnn')
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im: np.ndarray, window: Sequence[int]) -> np.ndarray:
        """The window (ymin, xmin, ymax, xmax) of an H x W x K image, with `context_pad`
        context around it when configured (then already at the net's input size)."""
        window = np.asarray(window)
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if not self.context_pad:
            return crop
        crop_size = self.blobs[self.inputs[0]].width  # R-CNN's inputs are square
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        box = window.astype(np.float64)
        half_h = (box[2] - box[0] + 1) / 2.0
        half_w = (box[3] - box[1] + 1) / 2.0
        center = (box[0] + half_h, box[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        # How much of the context box lies outside the image, in net input pixels.
        pad_y = int(round(max(0, -box[0]) * scale_h))
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ValueError('Detector.crop: window %s lies outside the %dx%d image'
                             % (list(window), im_h, im_w))
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        context_crop = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        context_crop = caffe_io.resize_image(context_crop, (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return out

    def configure_crop(self, context_pad: Optional[int]) -> None:
        """Set the crop size (the net input as H x W x K) and the context padding; with
        context, the fill value is the mean brought back to raw image space."""
        in_ = self.inputs[0]
        inv_transpose = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_transpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inv_transpose)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean /= raw_scale
        self.crop_mean = crop_mean
