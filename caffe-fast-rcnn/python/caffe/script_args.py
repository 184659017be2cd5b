"""The command-line arguments and set-up that pycaffe's classify.py and detect.py share: the
model files, the compute mode, and the Transformer's preprocessing (mean, scales, channel
order), with pycaffe's flag names, defaults and help texts.
"""
from __future__ import annotations

import argparse
import os
from typing import List, Optional

import numpy as np

from ._config import set_mode_cpu, set_mode_gpu


def add_model_args(parser: argparse.ArgumentParser, here: str) -> None:
    """--model_def, --pretrained_model (BVLC's reference CaffeNet, relative to the script's
    folder `here`, by default) and --gpu."""
    reference = os.path.join(here, '../models/bvlc_reference_caffenet/')
    parser.add_argument('--model_def', default=reference + 'deploy.prototxt',
                        help='Model definition file.')
    parser.add_argument('--pretrained_model',
                        default=reference + 'bvlc_reference_caffenet.caffemodel',
                        help='Trained model weights file.')
    parser.add_argument('--gpu', action='store_true', help='Switch for gpu computation.')


def add_preprocessing_args(parser: argparse.ArgumentParser, here: str, mean_help: str) -> None:
    """--mean_file (ImageNet's mean beside the script's folder `here` by default;
    `mean_help` says which layout the script expects), --input_scale, --raw_scale and
    --channel_swap."""
    parser.add_argument('--mean_file',
                        default=os.path.join(here, 'caffe/imagenet/ilsvrc_2012_mean.npy'),
                        help=mean_help)
    parser.add_argument('--input_scale', type=float,
                        help='Multiply input features by this scale to finish preprocessing.')
    parser.add_argument('--raw_scale', type=float, default=255.0,
                        help='Multiply raw input by this scale before preprocessing.')
    parser.add_argument('--channel_swap', default='2,1,0',
                        help='Order to permute input channels. The default converts RGB -> BGR '
                             'since BGR is the Caffe default by way of OpenCV.')


def read_mean(path: str) -> Optional[np.ndarray]:
    """The array in --mean_file, or None for '' (no mean subtraction); a missing file ends
    the script with a message saying how to go without one."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise SystemExit("mean file %s not found (give --mean_file '' for no mean subtraction)"
                         % path)
    return np.load(path)


def channel_swap(text: str) -> Optional[List[int]]:
    """--channel_swap '2,1,0' as [2, 1, 0]; None for ''."""
    return [int(s) for s in text.split(',')] if text else None


def set_mode(gpu: bool) -> None:
    """The compute mode --gpu asks for, announced as pycaffe's scripts announce it."""
    if gpu:
        set_mode_gpu()
        print('GPU mode')
    else:
        set_mode_cpu()
        print('CPU mode')
