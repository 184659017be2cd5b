"""MS COCO data sets through pycocotools (``coco_2014_train`` and friends).

Layout, under ``DATA_DIR/coco``::

    annotations/instances_<set><year>.json       (image_info_<set><year>.json for test)
    images/<set><year>/COCO_<set><year>_<id:012d>.jpg

Classes are COCO's 80 categories plus '__background__'.  Crowd boxes get
overlap -1 with every class so training ignores them (and proposals that lie
inside a crowd region are marked the same way).  Evaluation writes the
standard results JSON and runs ``COCOeval``, printing the mean and per-class
AP over IoU 0.50:0.95 followed by COCOeval's summary.
"""

from __future__ import annotations

import json
import os
import os.path as osp
import pickle
import uuid
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from caffe import atomic_files
from datasets import ds_utils
from datasets.imdb import imdb
from datasets.roidb_io import file_stamps, fingerprint, load_roidb, save_roidb
from fast_rcnn.config import cfg
from utils.sparse import csr_matrix


def _filter_crowd_proposals(roidb: List[Dict[str, Any]], crowd_thresh: float
                            ) -> List[Dict[str, Any]]:
    """Mark proposals that mostly lie inside a crowd box with overlap -1 (ignored)."""
    from pycocotools import mask as COCOmask
    for entry in roidb:
        overlaps = entry['gt_overlaps'].toarray()
        if overlaps.shape[0] == 0:
            continue
        crowd_inds = np.where(overlaps.max(axis=1) == -1)[0]
        non_gt_inds = np.where(entry['gt_classes'] == 0)[0]
        if len(crowd_inds) == 0 or len(non_gt_inds) == 0:
            continue
        crowd_boxes = ds_utils.xyxy_to_xywh(entry['boxes'][crowd_inds, :]).astype(np.float64)
        non_gt_boxes = ds_utils.xyxy_to_xywh(entry['boxes'][non_gt_inds, :]).astype(np.float64)
        iscrowd = [1] * len(crowd_inds)
        ious = np.asarray(COCOmask.iou(non_gt_boxes, crowd_boxes, iscrowd))
        bad_inds = np.where(ious.max(axis=1) > crowd_thresh)[0]
        overlaps[non_gt_inds[bad_inds], :] = -1
        entry['gt_overlaps'] = csr_matrix(overlaps)
    return roidb


class coco(imdb):
    """A COCO image set, e.g. ``coco('train', '2014')``."""

    def __init__(self, image_set: str, year: str) -> None:
        imdb.__init__(self, 'coco_' + year + '_' + image_set)
        # COCO specific config options
        self.config = {'top_k': 2000,
                       'use_salt': True,
                       'cleanup': True,
                       'crowd_thresh': 0.7,
                       'rpn_file': None,
                       'min_size': 2}
        self._year = year
        self._image_set = image_set
        self._data_path = osp.join(cfg.DATA_DIR, 'coco')
        ann_file = self._get_ann_file()
        if not osp.exists(ann_file):
            raise FileNotFoundError(
                'data set {}: COCO annotation file not found: {}\nPut COCO under {} '
                '(annotations/instances_<set><year>.json and images/<set><year>/), e.g. '
                'by linking an existing copy: `ln -s /path/to/coco {}`'.format(
                    self.name, ann_file, self._data_path, self._data_path))
        from pycocotools.coco import COCO
        self._COCO = COCO(ann_file)
        cats = self._COCO.loadCats(self._COCO.getCatIds())
        self._classes = tuple(['__background__'] + [c['name'] for c in cats])
        self._class_to_ind = dict(zip(self.classes, range(self.num_classes)))
        self._class_to_coco_cat_id = dict(zip([c['name'] for c in cats],
                                              self._COCO.getCatIds()))
        self._image_index = self._load_image_set_index()
        # Default to roidb handler
        self.set_proposal_method('selective_search')
        self.competition_mode(False)

        # Some image sets are "views" (subsets) of others: their images and
        # proposals live with the parent set.
        self._view_map = {
            'minival2014': 'val2014',
            'valminusminival2014': 'val2014',
            'test-dev2015': 'test2015',
        }
        coco_name = image_set + year  # e.g., "val2014"
        self._data_name = self._view_map.get(coco_name, coco_name)
        # Splits with ground truth (test splits have none)
        self._gt_splits = ('train', 'val', 'minival', 'valminusminival')

    def _get_ann_file(self) -> str:
        prefix = 'instances' if self._image_set.find('test') == -1 else 'image_info'
        return osp.join(self._data_path, 'annotations',
                        prefix + '_' + self._image_set + self._year + '.json')

    def _load_image_set_index(self) -> List[int]:
        """Image ids of this set, in pycocotools' order."""
        return list(self._COCO.getImgIds())

    def _get_widths(self) -> List[int]:
        anns = self._COCO.loadImgs(self._image_index)
        return [int(ann['width']) for ann in anns]

    def image_path_at(self, i: int) -> str:
        """Return the absolute path to image ``i`` in the image sequence."""
        return self.image_path_from_index(self._image_index[i])

    def image_path_from_index(self, index: int) -> str:
        """Path of the image with COCO id ``index``."""
        file_name = 'COCO_' + self._data_name + '_' + str(index).zfill(12) + '.jpg'
        image_path = osp.join(self._data_path, 'images', self._data_name, file_name)
        if not osp.exists(image_path):
            raise FileNotFoundError('data set {}: image not found: {}'.format(
                self.name, image_path))
        return image_path

    # ------------------------------------------------------------------ roidbs
    def _cache_meta(self, kind: str) -> Dict[str, Any]:
        """What a cached roidb was built from (the annotation file's size and mtime too)."""
        return {'kind': kind, 'classes': list(self._classes),
                'images': fingerprint([str(i) for i in self._image_index]),
                'annotations': file_stamps([self._get_ann_file()])}

    def gt_roidb(self) -> List[Dict[str, Any]]:
        """Ground-truth roidb, read from (or written to) the cache."""
        cache_file = osp.join(self.cache_path, self.name + '_gt_roidb.npz')
        meta = self._cache_meta('gt')
        roidb = load_roidb(cache_file, meta) if osp.exists(cache_file) else None
        if roidb is not None and len(roidb) == self.num_images:
            print('{} gt roidb loaded from {}'.format(self.name, cache_file))
            return roidb
        gt_roidb = [self._load_coco_annotation(index) for index in self._image_index]
        save_roidb(cache_file, gt_roidb, meta)
        print('wrote gt roidb to {}'.format(cache_file))
        return gt_roidb

    def _load_coco_annotation(self, index: int) -> Dict[str, Any]:
        """Boxes and classes of image ``index``; crowd boxes get overlap -1."""
        ann_ids = self._COCO.getAnnIds(imgIds=index, iscrowd=None)
        objs = [obj for obj in self._COCO.loadAnns(ann_ids) if obj['area'] > 0]
        num_objs = len(objs)
        im_ann = self._COCO.loadImgs(index)[0]
        width, height = int(im_ann['width']), int(im_ann['height'])

        # COCO boxes are [x, y, w, h] with float corners -> inclusive pixel boxes
        xywh = np.array([obj['bbox'] for obj in objs], dtype=np.float64).reshape(num_objs, 4)
        x1 = xywh[:, 0]
        y1 = xywh[:, 1]
        x2 = np.minimum(width - 1, x1 + np.maximum(0, xywh[:, 2] - 1))
        y2 = np.minimum(height - 1, y1 + np.maximum(0, xywh[:, 3] - 1))
        xy = np.column_stack((x1, y1, x2, y2))
        ds_utils.validate_boxes(xy, width=width, height=height,
                                where='{} image id {}'.format(self._get_ann_file(), index))
        boxes = xy.astype(np.uint16)

        coco_cat_id_to_class_ind = {self._class_to_coco_cat_id[c]: self._class_to_ind[c]
                                    for c in self._classes[1:]}
        gt_classes = np.array([coco_cat_id_to_class_ind[o['category_id']] for o in objs],
                              dtype=np.int32)
        seg_areas = np.array([o['area'] for o in objs], dtype=np.float32)
        crowd = np.array([bool(o.get('iscrowd', 0)) for o in objs], dtype=bool)
        overlaps = np.zeros((num_objs, self.num_classes), dtype=np.float32)
        overlaps[np.flatnonzero(~crowd), gt_classes[~crowd]] = 1.0
        # crowd objects: overlap -1 with every class, so training excludes them
        overlaps[crowd, :] = -1.0
        return {'boxes': boxes,
                'gt_classes': gt_classes,
                'gt_overlaps': csr_matrix(overlaps),
                'flipped': False,
                'seg_areas': seg_areas}

    def rpn_roidb(self) -> List[Dict[str, Any]]:
        """Ground truth (for splits that have it) plus ``config['rpn_file']`` proposals."""
        from datasets.roidb_io import load_box_list
        filename = self.config['rpn_file']
        if not filename or not osp.exists(str(filename)):
            raise FileNotFoundError("data set {}: config['rpn_file'] = {!r} does not "
                                    "exist".format(self.name, filename))
        print('loading {}'.format(filename))
        box_list = load_box_list(filename)
        if self._image_set in self._gt_splits:
            gt_roidb = self.gt_roidb()
            roidb = imdb.merge_roidbs(gt_roidb,
                                      self.create_roidb_from_box_list(box_list, gt_roidb))
            return _filter_crowd_proposals(roidb, self.config['crowd_thresh'])
        return self.create_roidb_from_box_list(box_list, None)

    def selective_search_roidb(self) -> List[Dict[str, Any]]:
        return self._roidb_from_proposals('selective_search')

    def edge_boxes_roidb(self) -> List[Dict[str, Any]]:
        return self._roidb_from_proposals('edge_boxes_AR')

    def mcg_roidb(self) -> List[Dict[str, Any]]:
        return self._roidb_from_proposals('MCG')

    def _roidb_from_proposals(self, method: str) -> List[Dict[str, Any]]:
        """Roidb from pre-computed proposals of ``method`` (cached)."""
        top_k = self.config['top_k']
        cache_file = osp.join(self.cache_path, self.name +
                              '_{:s}_top{:d}'.format(method, top_k) + '_roidb.npz')
        meta = self._cache_meta(method)
        meta.update(top_k=top_k, min_size=self.config['min_size'],
                    crowd_thresh=self.config['crowd_thresh'],
                    proposals=file_stamps([self._proposal_file(method, i)
                                           for i in self._image_index]))
        roidb = load_roidb(cache_file, meta) if osp.exists(cache_file) else None
        if roidb is not None and len(roidb) == self.num_images:
            print('{:s} {:s} roidb loaded from {:s}'.format(self.name, method, cache_file))
            return roidb
        if self._image_set in self._gt_splits:
            gt_roidb = self.gt_roidb()
            method_roidb = self._load_proposals(method, gt_roidb)
            roidb = imdb.merge_roidbs(gt_roidb, method_roidb)
            # Do not use proposals that are contained in crowds
            roidb = _filter_crowd_proposals(roidb, self.config['crowd_thresh'])
        else:
            roidb = self._load_proposals(method, None)
        save_roidb(cache_file, roidb, meta)
        print('wrote {:s} roidb to {:s}'.format(method, cache_file))
        return roidb

    def _proposal_file(self, method: str, index: int) -> str:
        return osp.join(cfg.DATA_DIR, 'coco_proposals', method, 'mat', self._get_box_file(index))

    def _load_proposals(self, method: str, gt_roidb: Optional[List[Dict[str, Any]]]
                        ) -> List[Dict[str, Any]]:
        """Load per-image proposal .mat files (Hosang et al. layout)."""
        valid_methods = ['MCG', 'selective_search', 'edge_boxes_AR', 'edge_boxes_70']
        if method not in valid_methods:
            raise ValueError('unknown proposal method {!r}; use one of {}'.format(
                method, valid_methods))
        try:
            import scipy.io as sio  # only the legacy MATLAB proposal files need SciPy
        except ImportError:
            raise ImportError('reading COCO {} proposal .mat files needs SciPy '
                              '(pip install scipy)'.format(method)) from None
        top_k = self.config['top_k']
        box_list = []
        print('Loading {} boxes'.format(method))
        for i, index in enumerate(self._image_index):
            if i % 1000 == 0:
                print('{:d} / {:d}'.format(i + 1, len(self._image_index)))
            box_file = self._proposal_file(method, index)
            if not osp.exists(box_file):
                raise FileNotFoundError('data set {}: proposal file not found: {}'.format(
                    self.name, box_file))
            raw_data = sio.loadmat(box_file)['boxes']
            boxes = np.maximum(raw_data - 1, 0).astype(np.uint16)
            if method == 'MCG':
                # Boxes from the MCG website are in (y1, x1, y2, x2) order
                boxes = boxes[:, (1, 0, 3, 2)]
            # Remove duplicate and very small boxes, then take the top k
            boxes = boxes[ds_utils.unique_boxes(boxes), :]
            boxes = boxes[ds_utils.filter_small_boxes(boxes, self.config['min_size']), :]
            boxes = boxes[:top_k, :]
            im_ann = self._COCO.loadImgs(index)[0]
            ds_utils.validate_boxes(boxes, width=im_ann['width'], height=im_ann['height'],
                                    where=box_file)
            box_list.append(boxes)
        return self.create_roidb_from_box_list(box_list, gt_roidb)

    def _get_box_file(self, index: int) -> str:
        # first 14 chars / first 22 chars / all chars + .mat
        file_name = 'COCO_' + self._data_name + '_' + str(index).zfill(12) + '.mat'
        return osp.join(file_name[:14], file_name[:22], file_name)

    # -------------------------------------------------------------- evaluation
    def _print_detection_eval_metrics(self, coco_eval: Any) -> None:
        IoU_lo_thresh = 0.5
        IoU_hi_thresh = 0.95

        def _get_thr_ind(thr: float) -> int:
            inds = np.where((coco_eval.params.iouThrs > thr - 1e-5) &
                            (coco_eval.params.iouThrs < thr + 1e-5))[0]
            if inds.size == 0:
                raise ValueError('COCOeval has no IoU threshold {}'.format(thr))
            return int(inds[0])

        ind_lo = _get_thr_ind(IoU_lo_thresh)
        ind_hi = _get_thr_ind(IoU_hi_thresh)
        # precision has dims (iou, recall, cls, area range, max dets);
        # area range index 0: all area ranges; max dets index 2: 100 per image
        precision = coco_eval.eval['precision'][ind_lo:(ind_hi + 1), :, :, 0, 2]
        ap_default = np.mean(precision[precision > -1])
        print('~~~~ Mean and per-category AP @ IoU=[{:.2f},{:.2f}] ~~~~'.format(
            IoU_lo_thresh, IoU_hi_thresh))
        print('{:.1f}'.format(100 * ap_default))
        for cls_ind, cls in enumerate(self.classes):
            if cls == '__background__':
                continue
            # minus 1 because of __background__
            precision = coco_eval.eval['precision'][ind_lo:(ind_hi + 1), :, cls_ind - 1, 0, 2]
            valid = precision[precision > -1]
            ap = np.mean(valid) if valid.size else float('nan')
            print('{:.1f}'.format(100 * ap))
        print('~~~~ Summary metrics ~~~~')
        coco_eval.summarize()

    def _do_detection_eval(self, res_file: str, output_dir: str) -> Any:
        from pycocotools.cocoeval import COCOeval
        coco_dt = self._COCO.loadRes(res_file)
        coco_eval = COCOeval(self._COCO, coco_dt, iouType='bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
        self._print_detection_eval_metrics(coco_eval)
        eval_file = osp.join(output_dir, 'detection_results.pkl')
        # written by this run for later inspection; never read back by the project
        with atomic_files.atomic_open(eval_file) as fid:
            pickle.dump(coco_eval, fid, pickle.HIGHEST_PROTOCOL)
        print('Wrote COCO eval results to: {}'.format(eval_file))
        return coco_eval

    def _coco_results_one_category(self, boxes: Sequence[Any], cat_id: int
                                   ) -> List[Dict[str, Any]]:
        results = []
        for im_ind, index in enumerate(self.image_index):
            dets = boxes[im_ind]
            if len(dets) == 0:
                continue
            dets = np.asarray(dets, dtype=np.float64)
            xywh = ds_utils.xyxy_to_xywh(dets[:, 0:4]).tolist()
            scores = dets[:, -1].tolist()
            results.extend({'image_id': index, 'category_id': cat_id,
                            'bbox': b, 'score': s} for b, s in zip(xywh, scores))
        return results

    def _write_coco_results_file(self, all_boxes: Sequence[Sequence[Any]],
                                 res_file: str) -> None:
        # [{"image_id": 42, "category_id": 18, "bbox": [x, y, w, h], "score": 0.236}, ...]
        results = []
        for cls_ind, cls in enumerate(self.classes):
            if cls == '__background__':
                continue
            print('Collecting {} results ({:d}/{:d})'.format(cls, cls_ind,
                                                             self.num_classes - 1))
            coco_cat_id = self._class_to_coco_cat_id[cls]
            results.extend(self._coco_results_one_category(all_boxes[cls_ind], coco_cat_id))
        print('Writing results json to {}'.format(res_file))
        with atomic_files.atomic_open(res_file, 'w') as fid:
            json.dump(results, fid)

    def evaluate_detections(self, all_boxes: Sequence[Sequence[Any]],
                            output_dir: Optional[str] = None) -> Any:
        """Write the results JSON and, for splits with ground truth, run COCOeval."""
        output_dir = output_dir or 'output'
        self.check_detections(all_boxes)
        os.makedirs(output_dir, exist_ok=True)
        res_file = osp.join(output_dir, 'detections_' + self._image_set + self._year +
                            '_results')
        if self.config['use_salt']:
            res_file += '_{}'.format(str(uuid.uuid4()))
        res_file += '.json'
        self._write_coco_results_file(all_boxes, res_file)
        coco_eval = None
        # Only evaluate on non-test sets
        if self._image_set.find('test') == -1:
            coco_eval = self._do_detection_eval(res_file, output_dir)
        # Optionally clean up the results json file
        if self.config['cleanup']:
            os.remove(res_file)
        return coco_eval

    def competition_mode(self, on: bool) -> None:
        """Competition mode: unsalted results file, kept after evaluation."""
        if on:
            self.config['use_salt'] = False
            self.config['cleanup'] = False
        else:
            self.config['use_salt'] = True
            self.config['cleanup'] = True
