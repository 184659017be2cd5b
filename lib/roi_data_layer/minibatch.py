"""Build the blobs of one training minibatch from a few roidb entries.

Two flavours, chosen by cfg.TRAIN.HAS_RPN:

* Faster R-CNN (RPN in the net): the blobs are the image (``data``), its
  ``im_info`` [[height, width, scale]] and its ground-truth boxes
  ``gt_boxes`` (G, 5: x1, y1, x2, y2, class) in the scaled image; the net
  makes and samples its own RoIs.
* Fast R-CNN (precomputed proposals): RoIs are sampled here, a fixed share
  of foreground (overlap >= FG_THRESH) and background (overlap in
  [BG_THRESH_LO, BG_THRESH_HI)), and come with ``labels`` and, with
  cfg.TRAIN.BBOX_REG, the expanded regression ``bbox_targets`` and their
  inside/outside weights.

:func:`get_allrois_minibatch` is the OHEM variant: no sampling, every RoI of
the image is labelled and handed over, so that the net's readonly branch can
score them all and OHEMDataLayer can pick the hardest.

Random draws (scale, RoI sampling) use NumPy's global generator in the same
order as py-faster-rcnn, so a given ``np.random.seed`` reproduces its batches.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.random as npr

from caffe.image_file import read_image
from fast_rcnn.config import cfg
from utils.blob import im_list_to_blob, prep_im_for_blob

__all__ = ['get_minibatch', 'get_allrois_minibatch', 'MinibatchError']

Blobs = Dict[str, np.ndarray]


class MinibatchError(ValueError):
    """The roidb entries or the config cannot make a minibatch (names the image)."""


def _rois_per_image(num_images: int) -> Tuple[int, int]:
    """RoIs per image and foreground RoIs per image for cfg.TRAIN.BATCH_SIZE."""
    if num_images <= 0:
        raise MinibatchError('get_minibatch: no roidb entries given')
    if cfg.TRAIN.BATCH_SIZE % num_images != 0:
        raise MinibatchError('num_images ({}) must divide BATCH_SIZE ({})'.format(
            num_images, cfg.TRAIN.BATCH_SIZE))
    rois_per_image = cfg.TRAIN.BATCH_SIZE // num_images
    fg_rois_per_image = int(np.round(cfg.TRAIN.FG_FRACTION * rois_per_image))
    return rois_per_image, fg_rois_per_image


def _rpn_blobs(roidb: Sequence[Dict[str, Any]], im_blob: np.ndarray,
               im_scales: Sequence[float]) -> Blobs:
    """``gt_boxes`` and ``im_info`` of a single-image Faster R-CNN minibatch."""
    if len(roidb) != 1:
        raise MinibatchError('with TRAIN.HAS_RPN the minibatch must hold a single image '
                             '(TRAIN.IMS_PER_BATCH: 1), got {}'.format(len(roidb)))
    entry = roidb[0]
    # gt boxes: (x1, y1, x2, y2, cls)
    gt_inds = np.flatnonzero(np.asarray(entry['gt_classes']) != 0)
    gt_boxes = np.empty((gt_inds.size, 5), dtype=np.float32)
    gt_boxes[:, 0:4] = np.asarray(entry['boxes'])[gt_inds, :] * im_scales[0]
    gt_boxes[:, 4] = np.asarray(entry['gt_classes'])[gt_inds]
    im_info = np.array([[im_blob.shape[2], im_blob.shape[3], im_scales[0]]],
                       dtype=np.float32)
    return {'gt_boxes': gt_boxes, 'im_info': im_info}


def _assemble(im_scales: Sequence[float],
              per_image: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              blobs: Blobs) -> Blobs:
    """Stack the per-image (labels, rois, targets, inside weights) into blobs."""
    rois_list, labels_list, targets_list, inside_list = [], [], [], []
    for im_i, (labels, im_rois, bbox_targets, inside) in enumerate(per_image):
        rois = _project_im_rois(im_rois, im_scales[im_i])
        batch_ind = np.full((rois.shape[0], 1), im_i, dtype=np.float32)
        rois_list.append(np.hstack((batch_ind, rois.astype(np.float32, copy=False))))
        labels_list.append(labels.astype(np.float32, copy=False))
        targets_list.append(bbox_targets)
        inside_list.append(inside)
    blobs['rois'] = np.concatenate(rois_list, axis=0) if rois_list else \
        np.zeros((0, 5), dtype=np.float32)
    blobs['labels'] = np.concatenate(labels_list) if labels_list else \
        np.zeros((0,), dtype=np.float32)
    if cfg.TRAIN.BBOX_REG:
        inside = np.concatenate(inside_list, axis=0)
        blobs['bbox_targets'] = np.concatenate(targets_list, axis=0)
        blobs['bbox_inside_weights'] = inside
        blobs['bbox_outside_weights'] = (inside > 0).astype(np.float32)
    return blobs


def get_minibatch(roidb: Sequence[Dict[str, Any]], num_classes: int) -> Blobs:
    """Given a few roidb entries, sample a minibatch from them; return its blobs.

    The keys are the RoIDataLayer top names: ``data`` plus ``im_info`` and
    ``gt_boxes`` (cfg.TRAIN.HAS_RPN), or ``rois``, ``labels`` and, with
    cfg.TRAIN.BBOX_REG, ``bbox_targets``, ``bbox_inside_weights`` and
    ``bbox_outside_weights``.
    """
    num_images = len(roidb)
    # Sample random scales to use for each image in this batch
    random_scale_inds = npr.randint(0, high=len(cfg.TRAIN.SCALES), size=num_images)
    rois_per_image, fg_rois_per_image = _rois_per_image(num_images)

    # Get the input image blob, formatted for caffe
    im_blob, im_scales = _get_image_blob(roidb, random_scale_inds)
    blobs: Blobs = {'data': im_blob}

    if cfg.TRAIN.HAS_RPN:
        blobs.update(_rpn_blobs(roidb, im_blob, im_scales))
        return blobs

    per_image = []
    for entry in roidb:
        labels, _overlaps, im_rois, bbox_targets, inside = _sample_rois(
            entry, fg_rois_per_image, rois_per_image, num_classes)
        per_image.append((labels, im_rois, bbox_targets, inside))
    return _assemble(im_scales, per_image, blobs)


_warned_bg_lo = False


def get_allrois_minibatch(roidb: Sequence[Dict[str, Any]], num_classes: int) -> Blobs:
    """The OHEM minibatch: every usable RoI of the images, labelled, no sampling.

    Foreground RoIs (overlap >= FG_THRESH) keep their class, all RoIs with
    overlap < BG_THRESH_HI are background: cfg.TRAIN.BG_THRESH_LO is treated
    as 0, because hard examples are exactly the ones a low-overlap cut would
    throw away (the OHEM code asserted BG_THRESH_LO == 0; here a non-zero
    value is ignored with a warning).  Not available with cfg.TRAIN.HAS_RPN:
    there the RPN makes the RoIs inside the net (ProposalTargetLayer passes
    them all through when cfg.TRAIN.USE_OHEM).
    """
    global _warned_bg_lo
    if cfg.TRAIN.HAS_RPN:
        raise MinibatchError('get_allrois_minibatch (OHEM with precomputed proposals) does not '
                             'apply with TRAIN.HAS_RPN: the RPN branch makes the RoIs in the '
                             'net; use get_minibatch')
    if cfg.TRAIN.BG_THRESH_LO != 0 and not _warned_bg_lo:
        warnings.warn('OHEM uses every RoI below TRAIN.BG_THRESH_HI as background; '
                      'TRAIN.BG_THRESH_LO = {} is ignored (treated as 0)'
                      .format(cfg.TRAIN.BG_THRESH_LO), stacklevel=2)
        _warned_bg_lo = True

    num_images = len(roidb)
    # Sample random scales to use for each image in this batch
    random_scale_inds = npr.randint(0, high=len(cfg.TRAIN.SCALES), size=num_images)
    _rois_per_image(num_images)  # same divisibility rule as get_minibatch

    im_blob, im_scales = _get_image_blob(roidb, random_scale_inds)
    blobs: Blobs = {'data': im_blob}
    per_image = []
    for entry in roidb:
        labels, _overlaps, im_rois, bbox_targets, inside = _all_rois(entry, num_classes)
        per_image.append((labels, im_rois, bbox_targets, inside))
    return _assemble(im_scales, per_image, blobs)


def _entry_arrays(entry: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``max_classes``, ``max_overlaps`` and ``boxes`` of a prepared roidb entry."""
    try:
        return (np.asarray(entry['max_classes']), np.asarray(entry['max_overlaps']),
                np.asarray(entry['boxes']))
    except KeyError as exc:
        raise MinibatchError('roidb entry for {} lacks {}; was the roidb prepared '
                             '(fast_rcnn.train.get_training_roidb)?'.format(
                                 entry.get('image', '?'), exc)) from None


def _regression_data(entry: Dict[str, Any], keep_inds: np.ndarray) -> np.ndarray:
    """The compact bbox_targets rows of ``keep_inds`` (zeros when BBOX_REG is off)."""
    if 'bbox_targets' in entry:
        return np.asarray(entry['bbox_targets'])[keep_inds, :]
    if cfg.TRAIN.BBOX_REG:
        raise MinibatchError('roidb entry for {} has no bbox_targets; call '
                             'roi_data_layer.roidb.add_bbox_regression_targets (SolverWrapper '
                             'does) before training with TRAIN.BBOX_REG'
                             .format(entry.get('image', '?')))
    return np.zeros((keep_inds.size, 5), dtype=np.float32)


def _sample_rois(roidb: Dict[str, Any], fg_rois_per_image: int, rois_per_image: int,
                 num_classes: int):
    """Sample foreground and background RoIs of one image.

    Returns (labels, overlaps, rois, bbox_targets, bbox_inside_weights); the
    foreground RoIs come first, background labels are 0.
    """
    # label = class RoI has max overlap with
    labels, overlaps, rois = _entry_arrays(roidb)

    # Select foreground RoIs as those with >= FG_THRESH overlap
    fg_inds = np.flatnonzero(overlaps >= cfg.TRAIN.FG_THRESH)
    # Guard against the case when an image has fewer than fg_rois_per_image
    fg_rois_per_this_image = int(min(fg_rois_per_image, fg_inds.size))
    # Sample foreground regions without replacement
    if fg_inds.size > 0:
        fg_inds = npr.choice(fg_inds, size=fg_rois_per_this_image, replace=False)

    # Select background RoIs as those within [BG_THRESH_LO, BG_THRESH_HI)
    bg_inds = np.flatnonzero((overlaps < cfg.TRAIN.BG_THRESH_HI) &
                             (overlaps >= cfg.TRAIN.BG_THRESH_LO))
    # The rest of the image's share is background, if there is enough of it
    bg_rois_per_this_image = int(min(rois_per_image - fg_rois_per_this_image, bg_inds.size))
    if bg_inds.size > 0:
        bg_inds = npr.choice(bg_inds, size=bg_rois_per_this_image, replace=False)

    keep_inds = np.append(fg_inds, bg_inds).astype(np.int64)
    labels = labels[keep_inds].copy()
    # Clamp labels for the background RoIs to 0
    labels[fg_rois_per_this_image:] = 0
    overlaps = overlaps[keep_inds]
    rois = rois[keep_inds]

    bbox_targets, bbox_inside_weights = _get_bbox_regression_labels(
        _regression_data(roidb, keep_inds), num_classes)
    return labels, overlaps, rois, bbox_targets, bbox_inside_weights


def _all_rois(roidb: Dict[str, Any], num_classes: int):
    """Every foreground and background RoI of one image (OHEM), labelled.

    Same return values as :func:`_sample_rois`; background is overlap <
    BG_THRESH_HI with no lower bound.
    """
    labels, overlaps, rois = _entry_arrays(roidb)
    fg_inds = np.flatnonzero(overlaps >= cfg.TRAIN.FG_THRESH)
    bg_inds = np.flatnonzero(overlaps < cfg.TRAIN.BG_THRESH_HI)
    keep_inds = np.append(fg_inds, bg_inds).astype(np.int64)
    labels = labels[keep_inds].copy()
    labels[fg_inds.size:] = 0
    overlaps = overlaps[keep_inds]
    rois = rois[keep_inds]
    bbox_targets, bbox_inside_weights = _get_bbox_regression_labels(
        _regression_data(roidb, keep_inds), num_classes)
    return labels, overlaps, rois, bbox_targets, bbox_inside_weights


def _read_image(path: str, entry: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Read a BGR image; an error naming the file when it is missing, truncated or not an
    image (caffe.image_file), or when its pixels do not have the size the roidb's boxes
    were checked and flipped against."""
    im = read_image(path)
    if entry is not None and 'width' in entry and 'height' in entry and \
            im.shape[:2] != (int(entry['height']), int(entry['width'])):
        raise MinibatchError(
            'image {} decodes to {}x{} (width x height) but its roidb entry says {}x{}, the '
            'size its boxes were checked and flipped against. Usually an EXIF orientation '
            'tag: OpenCV rotates the pixels, the header and the annotations do not (save the '
            'image rotated, without the tag); or the file changed since the roidb was '
            'made'.format(path, im.shape[1], im.shape[0], entry['width'], entry['height']))
    return im


def _get_image_blob(roidb: Sequence[Dict[str, Any]],
                    scale_inds: Sequence[int]) -> Tuple[np.ndarray, List[float]]:
    """Read, flip (for flipped entries), mean-subtract and rescale the images.

    Returns the N x 3 x H x W blob and the scale factor of each image.
    """
    processed_ims = []
    im_scales = []
    for i, entry in enumerate(roidb):
        if 'image' not in entry:
            raise MinibatchError('roidb entry {} has no image path; call '
                                 'roi_data_layer.roidb.prepare_roidb first'.format(i))
        im = _read_image(entry['image'], entry)
        if entry.get('flipped', False):
            im = im[:, ::-1, :]
        target_size = cfg.TRAIN.SCALES[scale_inds[i]]
        im, im_scale = prep_im_for_blob(im, cfg.PIXEL_MEANS, target_size, cfg.TRAIN.MAX_SIZE)
        im_scales.append(im_scale)
        processed_ims.append(im)

    # Create a blob to hold the input images
    blob = im_list_to_blob(processed_ims)
    return blob, im_scales


def _project_im_rois(im_rois: np.ndarray, im_scale_factor: float) -> np.ndarray:
    """Project image RoIs into the rescaled training image."""
    return np.asarray(im_rois, dtype=np.float64) * im_scale_factor


def _get_bbox_regression_labels(bbox_target_data: np.ndarray,
                                num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Expand compact (N, 5) [class, dx, dy, dw, dh] targets to the net's N x 4K layout.

    Only the four columns of the RoI's class are non-zero, in both the
    targets and the inside weights (cfg.TRAIN.BBOX_INSIDE_WEIGHTS), so that the
    smooth-L1 loss only trains that class's regressor.  Class-0 rows stay zero.

    Returns:
        bbox_targets (ndarray): N x 4K blob of regression targets
        bbox_inside_weights (ndarray): N x 4K blob of loss weights
    """
    bbox_target_data = np.asarray(bbox_target_data)
    clss = bbox_target_data[:, 0].astype(np.int64)
    n = clss.size
    bbox_targets = np.zeros((n, 4 * num_classes), dtype=np.float32)
    bbox_inside_weights = np.zeros(bbox_targets.shape, dtype=np.float32)
    inds = np.flatnonzero(clss > 0)
    if inds.size == 0:
        return bbox_targets, bbox_inside_weights
    if clss[inds].max() >= num_classes:
        raise MinibatchError('a RoI has class {} but the net has num_classes {} (check the '
                             "data layer's param_str)".format(int(clss[inds].max()), num_classes))
    cols = 4 * clss[inds][:, np.newaxis] + np.arange(4)
    rows = inds[:, np.newaxis]
    bbox_targets[rows, cols] = bbox_target_data[inds, 1:]
    bbox_inside_weights[rows, cols] = np.asarray(cfg.TRAIN.BBOX_INSIDE_WEIGHTS, dtype=np.float32)
    return bbox_targets, bbox_inside_weights
