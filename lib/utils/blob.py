"""Turn images into the network's input blob.

``prep_im_for_blob`` mean-subtracts and rescales one image so its shorter side
is ``target_size`` (unless the longer side would then exceed ``max_size``);
``im_list_to_blob`` zero-pads a list of such images to a common size and stacks
them as an N x 3 x H x W float32 blob, the layout Caffe's data blobs use.
``image_pyramid_blob`` is the test-time input: one image at several scales.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np


def im_list_to_blob(ims: Sequence[np.ndarray]) -> np.ndarray:
    """Stack H x W x 3 images (already mean-subtracted) into an N x 3 x H x W blob.

    Images smaller than the largest one are padded with zeros at the bottom
    and right, so their pixel coordinates are unchanged.
    """
    if len(ims) == 0:
        raise ValueError('im_list_to_blob: the image list is empty')
    for i, im in enumerate(ims):
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError('im_list_to_blob: image {} must be H x W x 3, got shape {}'
                             .format(i, im.shape))
    max_shape = np.array([im.shape for im in ims]).max(axis=0)
    num_images = len(ims)
    blob = np.zeros((num_images, int(max_shape[0]), int(max_shape[1]), 3),
                    dtype=np.float32)
    for i, im in enumerate(ims):
        blob[i, 0:im.shape[0], 0:im.shape[1], :] = im
    # N x H x W x C -> N x C x H x W
    return blob.transpose((0, 3, 1, 2))


def prep_im_for_blob(im: np.ndarray, pixel_means: np.ndarray, target_size: int,
                     max_size: int) -> Tuple[np.ndarray, float]:
    """Mean-subtract and rescale an image for use in a blob.

    Returns the float32 image and the scale factor applied (boxes must be
    multiplied by it).  The caller's array is not modified.
    """
    if im is None or im.ndim != 3:
        raise ValueError('prep_im_for_blob: expected an H x W x 3 image, got {}'.format(
            None if im is None else im.shape))
    im = np.subtract(im, pixel_means, dtype=np.float32)
    im_shape = im.shape
    im_size_min = np.min(im_shape[0:2])
    im_size_max = np.max(im_shape[0:2])
    im_scale = float(target_size) / float(im_size_min)
    # Prevent the biggest axis from being more than max_size
    if np.round(im_scale * im_size_max) > max_size:
        im_scale = float(max_size) / float(im_size_max)
    im = cv2.resize(im, None, None, fx=im_scale, fy=im_scale,
                    interpolation=cv2.INTER_LINEAR)
    return im, im_scale


def image_pyramid_blob(im: np.ndarray, pixel_means: np.ndarray, scales: Sequence[int],
                       max_size: int, who: str) -> Tuple[np.ndarray, np.ndarray]:
    """The test-time data blob: the BGR image `im`, mean-subtracted once, at each of
    `scales` (shorter side, longer side capped at `max_size`), and the scale factors.
    `who` names the caller in the error a malformed image gets."""
    if im is None or np.ndim(im) != 3 or im.shape[2] != 3:
        raise ValueError('{}: expected an H x W x 3 BGR image, got {}'.format(
            who, None if im is None else np.shape(im)))
    im_orig = im.astype(np.float32, copy=True)
    im_orig -= pixel_means
    im_size_min = np.min(im_orig.shape[0:2])
    im_size_max = np.max(im_orig.shape[0:2])
    processed_ims = []
    im_scale_factors = []
    for target_size in scales:
        im_scale = float(target_size) / float(im_size_min)
        # Prevent the biggest axis from being more than max_size
        if np.round(im_scale * im_size_max) > max_size:
            im_scale = float(max_size) / float(im_size_max)
        processed_ims.append(cv2.resize(im_orig, None, None, fx=im_scale, fy=im_scale,
                                        interpolation=cv2.INTER_LINEAR))
        im_scale_factors.append(im_scale)
    return im_list_to_blob(processed_ims), np.array(im_scale_factors)
