"""``imdb``: the image database base class every data set derives from.

An imdb knows its name, its classes (index 0 is always '__background__'), its
image identifiers and where each image lives; it builds a *roidb*, a list with
one dict per image:

``boxes``        (N, 4) boxes, inclusive pixel corners [x1, y1, x2, y2]
``gt_classes``   (N,) int32 class of each ground-truth box, 0 for proposals
``gt_overlaps``  (N, num_classes) sparse matrix (``.toarray()``) of each box's
                 IoU with the ground truth of each class
``flipped``      whether the entry describes the horizontally mirrored image
``seg_areas``    (N,) float32 object areas (0 for proposals)

How the roidb is made is chosen by ``set_proposal_method('gt' | 'rpn' |
'selective_search' ...)``, which picks the ``<method>_roidb`` method.
"""

from __future__ import annotations

import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from datasets.ds_utils import AnnotationError
from fast_rcnn.config import cfg
from utils.cython_bbox import bbox_overlaps
from utils.sparse import csr_matrix, vstack as sparse_vstack


class imdb(object):
    """Image database."""

    def __init__(self, name: str, classes: Optional[Sequence[str]] = None) -> None:
        self._name = name
        self._num_classes = 0
        self._classes: Sequence[str] = list(classes) if classes is not None else []
        self._image_index: List[Any] = []
        self._obj_proposer = 'selective_search'
        self._roidb: Optional[List[Dict[str, Any]]] = None
        self._roidb_handler: Callable[[], List[Dict[str, Any]]] = self.default_roidb
        # Data-set specific options (see subclasses)
        self.config: Dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def classes(self) -> Sequence[str]:
        return self._classes

    @property
    def image_index(self) -> List[Any]:
        return self._image_index

    @property
    def roidb_handler(self) -> Callable[[], List[Dict[str, Any]]]:
        return self._roidb_handler

    @roidb_handler.setter
    def roidb_handler(self, val: Callable[[], List[Dict[str, Any]]]) -> None:
        self._roidb_handler = val

    def set_proposal_method(self, method: str) -> None:
        """Build the roidb with ``self.<method>_roidb`` (e.g. 'gt', 'rpn')."""
        handler = getattr(self, '{}_roidb'.format(method), None)
        if not callable(handler):
            known = sorted(a[:-len('_roidb')] for a in dir(self)
                           if a.endswith('_roidb') and not a.startswith('_')
                           and a != 'default_roidb' and callable(getattr(self, a, None)))
            raise ValueError('imdb {}: unknown proposal method {!r}; this data set '
                             'offers {}'.format(self.name, method, known))
        self.roidb_handler = handler

    @property
    def roidb(self) -> List[Dict[str, Any]]:
        """The roidb, built on first use by the roidb handler."""
        if self._roidb is not None:
            return self._roidb
        self._roidb = self.roidb_handler()
        return self._roidb

    @property
    def cache_path(self) -> str:
        """``DATA_DIR/cache``, created if needed."""
        cache_path = osp.abspath(osp.join(cfg.DATA_DIR, 'cache'))
        os.makedirs(cache_path, exist_ok=True)
        return cache_path

    @property
    def num_images(self) -> int:
        return len(self.image_index)

    def image_path_at(self, i: int) -> str:
        raise NotImplementedError('{} does not implement image_path_at'.format(
            type(self).__name__))

    def default_roidb(self) -> List[Dict[str, Any]]:
        raise NotImplementedError('{} has no default roidb; call set_proposal_method '
                                  'first'.format(type(self).__name__))

    def evaluate_detections(self, all_boxes: Any, output_dir: Optional[str] = None) -> Any:
        """Score detections.

        ``all_boxes[cls][image]`` is ``[]`` or an (N, 5) array of
        [x1, y1, x2, y2, score] detections of class ``cls`` in that image.
        """
        raise NotImplementedError('{} does not implement evaluate_detections'.format(
            type(self).__name__))

    def check_detections(self, all_boxes: Any, source: str = 'the detections') -> None:
        """Refuse detections made for another data set: ``all_boxes`` must have one list
        per class of this imdb, each with one entry per image (``[]`` or an (N, 5) array).
        Evaluating a mismatch would score one data set's classes or images as another's."""
        n_cls = len(all_boxes) if hasattr(all_boxes, '__len__') else -1
        if n_cls != self.num_classes:
            raise ValueError('imdb {}: {} hold {} class list(s) but the data set has {} classes '
                             '({}); were they made by a net for another data set?'.format(
                                 self.name, source, n_cls, self.num_classes,
                                 ', '.join(self.classes[:8]) + (', ...' if self.num_classes > 8
                                                                else '')))
        for k, per_image in enumerate(all_boxes):
            n = len(per_image) if hasattr(per_image, '__len__') else -1
            if n != self.num_images:
                raise ValueError('imdb {}: {} have {} image entries for class {} ({!r}) but the '
                                 'data set has {} images; were they made on another image '
                                 'set?'.format(self.name, source, n, k, self.classes[k],
                                               self.num_images))
            for i, dets in enumerate(per_image):
                if len(dets) and (np.ndim(dets) != 2 or np.shape(dets)[1] != 5):
                    raise ValueError('imdb {}: {}: class {} image {} has detections of shape {}, '
                                     'expected (N, 5) [x1, y1, x2, y2, score]'.format(
                                         self.name, source, k, i, np.shape(dets)))

    def _get_widths(self) -> List[int]:
        """Image widths in pixels, read from the image headers (not decoded)."""
        from PIL import Image
        widths = []
        for i in range(self.num_images):
            path = self.image_path_at(i)
            try:
                with Image.open(path) as im:
                    widths.append(int(im.size[0]))
            except OSError as exc:
                raise OSError('imdb {}: cannot read the size of image {} ({})'.format(
                    self.name, path, exc)) from None
        return widths

    def append_flipped_images(self) -> None:
        """Append a mirrored copy of every roidb entry (data augmentation).

        A box [x1, x2] in an image of width W becomes [W - 1 - x2, W - 1 - x1].
        The arithmetic is done in signed integers (or the boxes' float type) and
        checked before it is cast back: with the original's unsigned 16-bit
        arithmetic a box reaching past the right edge wrapped around to ~65535
        and failed an opaque assert.  Here such a box raises an error that
        names the image, its width and the box.
        """
        num_images = self.num_images
        widths = self._get_widths()
        roidb = self.roidb
        if len(roidb) != num_images:
            raise ValueError('imdb {}: roidb has {} entries for {} images (flipped '
                             'twice?)'.format(self.name, len(roidb), num_images))
        for i in range(num_images):
            entry = roidb[i]
            boxes = np.asarray(entry['boxes'])
            work = boxes.astype(np.int64) if boxes.dtype.kind in 'ui' else boxes.copy()
            w = widths[i]
            flipped = work.copy()
            flipped[:, 0] = w - work[:, 2] - 1
            flipped[:, 2] = w - work[:, 0] - 1
            bad = flipped[:, 2] < flipped[:, 0]
            if boxes.dtype.kind == 'u':
                bad |= flipped[:, 0] < 0
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise AnnotationError(
                    'imdb {}: cannot flip image {} ({}, width {}): box {} {} is not '
                    'inside [0, width-1] with x1 <= x2; check its annotation and the '
                    'size recorded for the image'.format(
                        self.name, i, self.image_path_at(i), w, j, boxes[j].tolist()))
            new = {'boxes': flipped.astype(boxes.dtype, copy=False),
                   'gt_overlaps': entry['gt_overlaps'],
                   'gt_classes': entry['gt_classes'],
                   'flipped': True}
            if 'seg_areas' in entry:
                new['seg_areas'] = entry['seg_areas']
            roidb.append(new)
        self._image_index = self._image_index * 2

    def evaluate_recall(self, candidate_boxes: Optional[Sequence[np.ndarray]] = None,
                        thresholds: Optional[np.ndarray] = None, area: str = 'all',
                        limit: Optional[int] = None) -> Dict[str, Any]:
        """Recall of proposals against ground truth, over IoU thresholds.

        Each ground-truth box is greedily matched to a distinct proposal, best
        covered box first.  Returns a dict with 'ar' (average recall),
        'recalls', 'thresholds' and 'gt_overlaps'.
        """
        areas = {'all': 0, 'small': 1, 'medium': 2, 'large': 3,
                 '96-128': 4, '128-256': 5, '256-512': 6, '512-inf': 7}
        area_ranges = [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2],
                       [96 ** 2, 1e5 ** 2], [96 ** 2, 128 ** 2], [128 ** 2, 256 ** 2],
                       [256 ** 2, 512 ** 2], [512 ** 2, 1e5 ** 2]]
        if area not in areas:
            raise ValueError('evaluate_recall: unknown area range {!r}, use one of {}'
                             .format(area, list(areas)))
        lo, hi = area_ranges[areas[area]]
        collected = []
        num_pos = 0
        for i in range(self.num_images):
            entry = self.roidb[i]
            # max overlap == 1 excludes crowd boxes (their overlaps are -1)
            max_gt_overlaps = entry['gt_overlaps'].toarray().max(axis=1) \
                if entry['boxes'].shape[0] else np.zeros(0)
            gt_inds = np.where((entry['gt_classes'] > 0) & (max_gt_overlaps == 1))[0]
            gt_boxes = entry['boxes'][gt_inds, :]
            gt_areas = entry['seg_areas'][gt_inds]
            valid = np.where((gt_areas >= lo) & (gt_areas <= hi))[0]
            gt_boxes = gt_boxes[valid, :]
            num_pos += len(valid)

            if candidate_boxes is None:
                boxes = entry['boxes'][entry['gt_classes'] == 0, :]
            else:
                boxes = candidate_boxes[i]
            if boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
                continue
            if limit is not None and boxes.shape[0] > limit:
                boxes = boxes[:limit, :]
            overlaps = bbox_overlaps(boxes, gt_boxes)
            matched = np.zeros(gt_boxes.shape[0])
            # Greedy one-to-one matching: inherently sequential, one step per gt
            for j in range(min(boxes.shape[0], gt_boxes.shape[0])):
                argmax_overlaps = overlaps.argmax(axis=0)
                max_overlaps = overlaps.max(axis=0)
                gt_ind = int(max_overlaps.argmax())
                box_ind = int(argmax_overlaps[gt_ind])
                matched[j] = overlaps[box_ind, gt_ind]
                overlaps[box_ind, :] = -1
                overlaps[:, gt_ind] = -1
            collected.append(matched)

        gt_overlaps = np.sort(np.concatenate(collected)) if collected else np.zeros(0)
        if thresholds is None:
            thresholds = np.arange(0.5, 0.95 + 1e-5, 0.05)
        thresholds = np.asarray(thresholds, dtype=np.float64)
        with np.errstate(invalid='ignore', divide='ignore'):
            recalls = (gt_overlaps[np.newaxis, :] >= thresholds[:, np.newaxis]).sum(axis=1) \
                / float(num_pos)
        return {'ar': recalls.mean(), 'recalls': recalls, 'thresholds': thresholds,
                'gt_overlaps': gt_overlaps}

    def create_roidb_from_box_list(self, box_list: Sequence[np.ndarray],
                                   gt_roidb: Optional[List[Dict[str, Any]]]
                                   ) -> List[Dict[str, Any]]:
        """Make roidb entries for proposals; overlaps come from ``gt_roidb`` if given."""
        if len(box_list) != self.num_images:
            raise ValueError('imdb {}: got proposals for {} images but the data set has '
                             '{} (proposal file for another image set?)'.format(
                                 self.name, len(box_list), self.num_images))
        roidb = []
        for i in range(self.num_images):
            boxes = np.asarray(box_list[i])
            if boxes.ndim != 2 or (boxes.shape[0] and boxes.shape[1] < 4):
                raise ValueError('imdb {}: proposals of image {} have shape {}, expected '
                                 '(N, 4)'.format(self.name, i, boxes.shape))
            boxes = boxes[:, :4] if boxes.shape[0] else boxes.reshape(0, 4)
            num_boxes = boxes.shape[0]
            overlaps = np.zeros((num_boxes, self.num_classes), dtype=np.float32)
            if gt_roidb is not None and gt_roidb[i]['boxes'].size > 0 and num_boxes:
                gt_boxes = gt_roidb[i]['boxes']
                gt_classes = gt_roidb[i]['gt_classes']
                gt_overlaps = bbox_overlaps(boxes, gt_boxes)
                argmaxes = gt_overlaps.argmax(axis=1)
                maxes = gt_overlaps.max(axis=1)
                nz = np.where(maxes > 0)[0]
                overlaps[nz, gt_classes[argmaxes[nz]]] = maxes[nz]
            roidb.append({'boxes': boxes,
                          'gt_classes': np.zeros((num_boxes,), dtype=np.int32),
                          'gt_overlaps': csr_matrix(overlaps),
                          'flipped': False,
                          'seg_areas': np.zeros((num_boxes,), dtype=np.float32)})
        return roidb

    @staticmethod
    def merge_roidbs(a: List[Dict[str, Any]], b: List[Dict[str, Any]]
                     ) -> List[Dict[str, Any]]:
        """Append ``b``'s boxes to ``a``'s, image by image (``a`` is modified)."""
        if len(a) != len(b):
            raise ValueError('merge_roidbs: roidbs have {} and {} images'.format(
                len(a), len(b)))
        for ea, eb in zip(a, b):
            na, nb = ea['boxes'].shape[0], eb['boxes'].shape[0]
            ea['boxes'] = np.vstack((ea['boxes'], eb['boxes']))
            ea['gt_classes'] = np.hstack((ea['gt_classes'], eb['gt_classes']))
            ea['gt_overlaps'] = sparse_vstack([ea['gt_overlaps'], eb['gt_overlaps']])
            ea['seg_areas'] = np.hstack((
                ea.get('seg_areas', np.zeros(na, np.float32)),
                eb.get('seg_areas', np.zeros(nb, np.float32))))
        return a

    def competition_mode(self, on: bool) -> None:
        """Turn competition mode on or off (data sets with a salted output use it)."""
        pass
