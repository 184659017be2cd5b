"""Transform an imdb's roidb into a *trainable* roidb.

An imdb's roidb says, per image, which boxes there are (ground truth and
proposals) and how much each overlaps the ground truth of each class.  Training
needs a little more, computed once here rather than in every minibatch:

* :func:`prepare_roidb` adds the image path, its width and height (read from
  the file header, not by decoding the image), and for every box the class it
  overlaps most (``max_classes``) and by how much (``max_overlaps``);
* :func:`add_bbox_regression_targets` adds the compact regression targets
  ``bbox_targets`` (N, 5: class, dx, dy, dw, dh) of the Fast R-CNN head,
  normalised per class, and returns the means and standard deviations used,
  which :class:`fast_rcnn.train.SolverWrapper` folds back into the ``bbox_pred``
  weights when it saves a snapshot.

Everything is vectorised over boxes; the only Python loops are over images.
Problems with the data raise an error naming the image at fault.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from caffe.image_file import check_complete
from fast_rcnn.bbox_transform import bbox_transform
from fast_rcnn.config import cfg
from utils.cython_bbox import bbox_overlaps

__all__ = ['prepare_roidb', 'add_bbox_regression_targets', 'RoidbError']


class RoidbError(ValueError):
    """A roidb entry is inconsistent (the message names the image)."""


def _image_size(path: str) -> Tuple[int, int]:
    """Return ``(width, height)`` of the image at ``path`` from its header.

    PIL only parses the header on ``open`` (the pixels are decoded on first
    access, which never happens here), so this costs a fraction of a
    millisecond per image even for large JPEGs.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except FileNotFoundError:
        raise FileNotFoundError('cannot read image {}: no such file'.format(path)) from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise OSError('cannot read image {}: {}'.format(path, exc)) from None
    # A truncated JPEG has a whole header; catch it now rather than when a minibatch
    # reads it, possibly hours into training (reads the file's last 4 KB).
    check_complete(path)
    return int(width), int(height)


def _dense(matrix: Any) -> np.ndarray:
    """A roidb ``gt_overlaps`` (csr_matrix, SciPy sparse or ndarray) as a dense array."""
    return matrix.toarray() if hasattr(matrix, 'toarray') else np.asarray(matrix)


def prepare_roidb(imdb: Any) -> None:
    """Enrich ``imdb.roidb`` in place with what training needs.

    Adds ``image`` (path), ``width``, ``height``, ``max_classes`` and
    ``max_overlaps`` to every entry.  An entry's box is background exactly when
    its best overlap is 0, so the original's two sanity checks are kept (a box
    with overlap 0 must have class 0, a box with overlap > 0 a foreground
    class); they catch a gt_overlaps matrix whose column 0 holds overlaps.

    Sizes: an entry that already has ``width`` and ``height`` keeps them;
    otherwise they are read from the image header, once per file (a flipped
    entry shares its file with the unflipped one).
    """
    roidb = imdb.roidb
    num_images = len(imdb.image_index)
    if len(roidb) != num_images:
        raise RoidbError('prepare_roidb: imdb {} has {} images but its roidb has {} entries'
                         .format(getattr(imdb, 'name', '?'), num_images, len(roidb)))
    sizes: Dict[str, Tuple[int, int]] = {}
    for i in range(num_images):
        entry = roidb[i]
        path = imdb.image_path_at(i)
        entry['image'] = path
        if 'width' not in entry or 'height' not in entry:
            if path not in sizes:
                sizes[path] = _image_size(path)
            entry['width'], entry['height'] = sizes[path]

        where = 'imdb {} image {} ({})'.format(getattr(imdb, 'name', '?'), i, path)
        if 'gt_overlaps' not in entry or 'boxes' not in entry:
            raise RoidbError('{}: roidb entry lacks boxes/gt_overlaps'.format(where))
        # need gt_overlaps as a dense array for argmax
        gt_overlaps = _dense(entry['gt_overlaps'])
        boxes = np.asarray(entry['boxes'])
        if gt_overlaps.ndim != 2 or boxes.ndim != 2 or boxes.shape[1] != 4 \
                or gt_overlaps.shape[0] != boxes.shape[0]:
            raise RoidbError('{}: boxes {} and gt_overlaps {} do not describe the same '
                             'number of boxes'.format(where, boxes.shape, gt_overlaps.shape))
        # max overlap with gt over classes (columns), and the class it was with
        max_overlaps = gt_overlaps.max(axis=1) if gt_overlaps.shape[1] else \
            np.zeros(boxes.shape[0], dtype=np.float32)
        max_classes = gt_overlaps.argmax(axis=1) if gt_overlaps.shape[1] else \
            np.zeros(boxes.shape[0], dtype=np.int64)
        entry['max_classes'] = max_classes
        entry['max_overlaps'] = max_overlaps
        # sanity checks: overlap 0 <=> background
        bad_bg = np.flatnonzero((max_overlaps == 0) & (max_classes != 0))
        if bad_bg.size:
            raise RoidbError('{}: box {} has overlap 0 but class {} (must be background)'
                             .format(where, int(bad_bg[0]), int(max_classes[bad_bg[0]])))
        bad_fg = np.flatnonzero((max_overlaps > 0) & (max_classes == 0))
        if bad_fg.size:
            raise RoidbError('{}: box {} overlaps an object ({:.3f}) but its best class is 0 '
                             '(background); gt_overlaps column 0 must stay empty'
                             .format(where, int(bad_fg[0]), float(max_overlaps[bad_fg[0]])))


def _precomputed_means_stds(num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """cfg.TRAIN.BBOX_NORMALIZE_{MEANS,STDS} repeated for every class, (K, 4) each."""
    means = np.tile(np.asarray(cfg.TRAIN.BBOX_NORMALIZE_MEANS, dtype=np.float64),
                    (num_classes, 1))
    stds = np.tile(np.asarray(cfg.TRAIN.BBOX_NORMALIZE_STDS, dtype=np.float64),
                   (num_classes, 1))
    return means, stds


def add_bbox_regression_targets(roidb: List[Dict[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
    """Add ``bbox_targets`` to every entry; return the flattened (4K,) means and stds.

    Means and stds are per class and coordinate: the fixed
    cfg.TRAIN.BBOX_NORMALIZE_{MEANS,STDS} when
    cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED, otherwise the empirical
    statistics of the foreground targets over the whole roidb (class 0 gets
    0 and 0).  With cfg.TRAIN.BBOX_NORMALIZE_TARGETS the foreground targets are
    normalised with them in place; the net then learns normalised deltas, and
    the snapshot code un-normalises its weights with the returned arrays.

    One deliberate difference: a class whose targets have zero spread (a single
    example, say) gets std 1 instead of 0 for those coordinates, because the
    original divided by zero there and trained on NaN.  Classes without any
    example keep std 0, as in the original.
    """
    if len(roidb) == 0:
        raise RoidbError('add_bbox_regression_targets: the roidb is empty')
    if 'max_classes' not in roidb[0]:
        raise RoidbError('add_bbox_regression_targets: roidb entries lack max_classes; '
                         'did you call prepare_roidb first?')

    # Infer number of classes from the number of columns in gt_overlaps
    num_classes = int(roidb[0]['gt_overlaps'].shape[1])
    for entry in roidb:
        entry['bbox_targets'] = _compute_targets(entry['boxes'], entry['max_overlaps'],
                                                 entry['max_classes'])

    all_targets = np.concatenate([entry['bbox_targets'] for entry in roidb], axis=0)
    classes = all_targets[:, 0].astype(np.int64)
    if classes.size and classes.max() >= num_classes:
        where = next(e.get('image', '?') for e in roidb
                     if e['bbox_targets'].shape[0] and e['bbox_targets'][:, 0].max() >= num_classes)
        raise RoidbError('add_bbox_regression_targets: image {} has a box of class {} but the '
                         'roidb has {} classes'.format(where, int(classes.max()), num_classes))

    if cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
        # Use fixed / precomputed "means" and "stds" instead of empirical values
        means, stds = _precomputed_means_stds(num_classes)
    else:
        # var(x) = E(x^2) - E(x)^2, accumulated per class with bincount; the
        # background rows (class 0) do not count.
        fg = classes > 0
        cls_fg = classes[fg]
        t_fg = all_targets[fg, 1:].astype(np.float64)
        counts = np.bincount(cls_fg, minlength=num_classes).astype(np.float64)
        sums = np.stack([np.bincount(cls_fg, weights=t_fg[:, j], minlength=num_classes)
                         for j in range(4)], axis=1)
        squared_sums = np.stack([np.bincount(cls_fg, weights=t_fg[:, j] ** 2,
                                             minlength=num_classes) for j in range(4)], axis=1)
        denom = (counts + cfg.EPS)[:, np.newaxis]
        means = sums / denom
        # clamp the rounding error that can make a zero variance slightly negative
        stds = np.sqrt(np.maximum(squared_sums / denom - means ** 2, 0.0))
        degenerate = (counts[:, np.newaxis] > 0) & (stds <= 0)
        stds[degenerate] = 1.0

    print('bbox target means:')
    print(means)
    print(means[1:, :].mean(axis=0))  # ignore bg class
    print('bbox target stdevs:')
    print(stds)
    print(stds[1:, :].mean(axis=0))  # ignore bg class

    if cfg.TRAIN.BBOX_NORMALIZE_TARGETS:
        print('Normalizing targets')
        for entry in roidb:
            targets = entry['bbox_targets']
            cls = targets[:, 0].astype(np.int64)
            fg = np.flatnonzero(cls > 0)
            if fg.size:
                targets[fg, 1:] = ((targets[fg, 1:] - means[cls[fg]]) / stds[cls[fg]]) \
                    .astype(targets.dtype, copy=False)
    else:
        print('NOT normalizing targets')

    # These values will be needed for making predictions
    # (the predictions will need to be unnormalized and uncentered)
    return means.ravel(), stds.ravel()


def _compute_targets(rois: np.ndarray, overlaps: np.ndarray,
                     labels: np.ndarray) -> np.ndarray:
    """Return the compact (N, 5) [class, dx, dy, dw, dh] targets of one image.

    A box is a regression example when its best overlap is at least
    cfg.TRAIN.BBOX_THRESH; its target is the ground-truth box (a box with
    overlap exactly 1) it overlaps most.  Other rows stay all zero (class 0
    means "no regression").  An image without ground truth has no examples.
    """
    rois = np.asarray(rois, dtype=np.float64)
    overlaps = np.asarray(overlaps)
    targets = np.zeros((rois.shape[0], 5), dtype=np.float32)
    # Indices of ground-truth ROIs
    gt_inds = np.flatnonzero(overlaps == 1)
    if gt_inds.size == 0:
        # Bail if the image has no ground-truth ROIs
        return targets
    # Indices of examples for which we try to make predictions
    ex_inds = np.flatnonzero(overlaps >= cfg.TRAIN.BBOX_THRESH)
    if ex_inds.size == 0:
        return targets

    # Each example regresses onto the ground-truth box it overlaps most
    ex_gt_overlaps = bbox_overlaps(rois[ex_inds], rois[gt_inds])
    gt_assignment = ex_gt_overlaps.argmax(axis=1)
    gt_rois = rois[gt_inds[gt_assignment]]
    ex_rois = rois[ex_inds]

    targets[ex_inds, 0] = np.asarray(labels)[ex_inds]
    targets[ex_inds, 1:] = bbox_transform(ex_rois, gt_rois)
    return targets
