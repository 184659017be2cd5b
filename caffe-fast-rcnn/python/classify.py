#!/usr/bin/env python3
"""Classify images with a Caffe model from the command line, as pycaffe's classify.py.

    classify.py INPUT OUTPUT.npy [--model_def deploy.prototxt] [--pretrained_model x.caffemodel]
                [--center_only] [--images_dim 256,256] [--mean_file mean.npy] [--gpu] ...

INPUT is an image, a folder of images (those ending in --ext) or a .npy array of images;
the class probabilities (one row per image, averaged over ten crops unless --center_only)
are saved to OUTPUT with numpy.save.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from typing import List, Optional

import numpy as np

import caffe
from caffe import script_args

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('input_file', help='Input image, directory, or npy.')
    p.add_argument('output_file', help='Output npy filename.')
    script_args.add_model_args(p, HERE)
    p.add_argument('--center_only', action='store_true',
                   help='Predict from the center crop alone instead of averaging the '
                        'predictions of ten crops (the default).')
    p.add_argument('--images_dim', default='256,256',
                   help="Canonical 'height,width' dimensions of input images.")
    script_args.add_preprocessing_args(
        p, HERE, "Data set image mean of [Channels x Height x Width] dimensions (numpy "
                 "array). Set to '' for no mean subtraction.")
    p.add_argument('--ext', default='jpg',
                   help='Image file extension to take as input when a directory is given as '
                        'the input file.')
    return p.parse_args(argv)


def load_mean(path: str, net_file: str) -> Optional[np.ndarray]:
    """The mean array of --mean_file (None for ''). A C x H x W mean whose H x W is not the
    net's input size is reduced to one value per channel, which Transformer accepts."""
    mean = script_args.read_mean(path)
    if mean is not None and mean.ndim == 3:
        net = caffe.Net(net_file, caffe.TEST)
        if tuple(mean.shape[1:]) != tuple(net.blobs[net.inputs[0]].data.shape[2:]):
            mean = mean.mean(1).mean(1)
    return mean


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    image_dims = [int(s) for s in args.images_dim.split(',')]
    mean = load_mean(args.mean_file, args.model_def)
    script_args.set_mode(args.gpu)
    classifier = caffe.Classifier(args.model_def, args.pretrained_model, image_dims=image_dims,
                                  mean=mean, input_scale=args.input_scale,
                                  raw_scale=args.raw_scale,
                                  channel_swap=script_args.channel_swap(args.channel_swap))
    input_file = os.path.expanduser(args.input_file)
    if input_file.endswith('npy'):
        print('Loading file: %s' % input_file)
        inputs = np.load(input_file)
    elif os.path.isdir(input_file):
        print('Loading folder: %s' % input_file)
        inputs = [caffe.io.load_image(f)
                  for f in sorted(glob.glob(os.path.join(input_file, '*.' + args.ext)))]
    else:
        print('Loading file: %s' % input_file)
        inputs = [caffe.io.load_image(input_file)]
    print('Classifying %d inputs.' % len(inputs))
    start = time.time()
    predictions = classifier.predict(inputs, not args.center_only)
    print('Done in %.2f s.' % (time.time() - start))
    print('Saving results into %s' % args.output_file)
    np.save(args.output_file, predictions)
    return 0


if __name__ == '__main__':
    sys.exit(main())
