"""DetectionOutput: SSD's and RefineDet's test-time decoder, NMS and result writer.

Bottoms: loc (N, P * L * 4), conf (N, P * C) class probabilities, priors (1, 2, P * 4);
RefineDet adds arm_conf (N, P * 2), ARM objectness (a prior whose objectness is below
`objectness_score` scores 1 for class 0 and 0 for the others), and arm_loc (N, P * 4)
(the ODM's boxes are decoded against the priors the ARM refined). Top (1, 1, K, 7) rows
[image, label, score, xmin, ymin, xmax, ymax] in normalised coordinates, ordered by image,
label, then descending score; with no detection at all, one row [i, -1, ..., -1] per image.

Per image and class (background skipped): scores above `confidence_threshold`, the
`nms_param.top_k` best, Caffe's greedy NMS (`nms_threshold`, adaptive `eta`); then, if the
image has more than `keep_top_k` detections, the best keep_top_k over all classes. Boxes
are not clipped. With `save_output_param` the detections are also mapped to original
image sizes (name_size_file, resize_param) and written as VOC, COCO or ILSVRC results
once every `num_test_image` images (see caffe.detection_results).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .. import _log, bbox_util, detection_results, labelmap
from ..errors import CaffeError, LayerError
from ..layer import Layer
from ..proto import caffe_pb2
from . import register
from ._multibox import check_predictions, priors_and_variances

FLT_MAX = float(np.finfo(np.float32).max)


@register('DetectionOutput')
class DetectionOutput(Layer):
    """See the module docstring."""

    allow_in_place = False
    min_bottom = 3
    max_bottom = 5
    exact_num_top = 1

    def _fail(self, msg: str) -> LayerError:
        return LayerError('layer %r (DetectionOutput): %s' % (self.layer_param.name, msg))

    # ---- set-up ---------------------------------------------------------------------------
    def setup(self, bottom, top):
        dp = self.layer_param.detection_output_param
        if not dp.HasField('num_classes'):
            raise self._fail('Must specify num_classes')
        self.num_classes = int(dp.num_classes)
        self.objectness_score = float(dp.objectness_score)
        self.share = bool(dp.share_location)
        self.loc_classes = 1 if self.share else self.num_classes
        self.bg = int(dp.background_label_id)
        if self.share and self.bg == -1:
            raise self._fail('background_label_id -1 with share_location leaves no location '
                             'predictions to decode')
        self.code_type = int(dp.code_type)
        if self.code_type not in bbox_util.boxes.DECODERS:
            raise self._fail('Unknown code_type %d' % self.code_type)
        self.variance_in_target = bool(dp.variance_encoded_in_target)
        self.keep_top_k = int(dp.keep_top_k)
        self.confidence_threshold = (float(dp.confidence_threshold)
                                     if dp.HasField('confidence_threshold') else -FLT_MAX)
        self.nms_threshold = float(dp.nms_param.nms_threshold)
        if self.nms_threshold < 0:
            raise self._fail('nms_threshold must be non negative, got %g' % self.nms_threshold)
        self.eta = float(dp.nms_param.eta)
        if not 0 < self.eta <= 1:
            raise self._fail('nms_param.eta must be in (0, 1], got %g' % self.eta)
        self.top_k = int(dp.nms_param.top_k) if dp.nms_param.HasField('top_k') else -1
        self.classes = [c for c in range(self.num_classes) if c != self.bg]
        if dp.visualize:
            _log.warning('detection_output_layer.cpp', 'layer %r: visualize needs a display '
                         'and is not supported; detections are computed as usual'
                         % self.layer_param.name)
        self._setup_saving(dp.save_output_param)

    def _setup_saving(self, sp: caffe_pb2.SaveOutputParameter) -> None:
        name = self.layer_param.name
        self.output_directory = sp.output_directory
        self.need_save = bool(self.output_directory)
        if self.need_save:
            os.makedirs(self.output_directory, exist_ok=True)
        self.output_prefix = sp.output_name_prefix
        self.output_format = sp.output_format
        self.label_names = {}
        if sp.HasField('label_map_file') and sp.label_map_file:
            try:
                self.label_names = labelmap.map_label_to_name(
                    labelmap.read_label_map(sp.label_map_file), True, sp.label_map_file)
            except (CaffeError, OSError) as e:
                raise self._fail('Failed to read label map file %s: %s'
                                 % (sp.label_map_file, e)) from None
        else:
            if sp.HasField('label_map_file'):
                _log.warning('detection_output_layer.cpp', 'Provide label_map_file if output '
                             'results to files.')
            self.need_save = False
        self.names, self.sizes = [], []
        if sp.HasField('name_size_file') and sp.name_size_file:
            try:
                entries = detection_results.read_name_size_file(sp.name_size_file)
            except CaffeError as e:
                raise self._fail(str(e)) from None
            self.names = [e[0] for e in entries]
            self.sizes = [(e[1], e[2]) for e in entries]
            self.num_test_image = (int(sp.num_test_image) if sp.HasField('num_test_image')
                                   else len(self.names))
            if self.num_test_image > len(self.names):
                raise self._fail('num_test_image %d is more than the %d images of %s'
                                 % (self.num_test_image, len(self.names), sp.name_size_file))
        else:
            if sp.HasField('name_size_file'):
                _log.warning('detection_output_layer.cpp', 'Provide name_size_file if output '
                             'results to files.')
            self.need_save = False
        if self.need_save:
            if self.output_format not in detection_results.WRITERS:
                raise self._fail('output_format %r is not one of %s' % (
                    self.output_format, ', '.join(sorted(detection_results.WRITERS))))
            if self.num_test_image <= 0:
                raise self._fail('num_test_image must be positive to save results')
            missing = [c for c in self.classes if c not in self.label_names]
            if missing:
                raise self._fail('label map %s has no name for label(s) %s (num_classes %d, '
                                 'background_label_id %d)' % (sp.label_map_file, missing,
                                                              self.num_classes, self.bg))
        self.resize_param = sp.resize_param if sp.HasField('resize_param') else None
        self.name_count = 0
        self.pending = []

    # ---- shapes ---------------------------------------------------------------------------
    def reshape(self, bottom, top):
        self.num, self.num_priors = check_predictions(bottom, self.loc_classes, self.num_classes,
                                                      self.share, 3, self._fail)
        top[0].reshape(1, 1, 1, 7)

    # ---- forward --------------------------------------------------------------------------
    def _decoded(self, bottom):
        """Scores (N, P, C) and decoded boxes (N, P, L, 4)."""
        n, p, c = self.num, self.num_priors, self.num_classes
        loc = bottom[0].tensor.reshape(n, p, self.loc_classes, 4)
        conf = bottom[1].tensor.reshape(n, p, c)
        prior_boxes, var = priors_and_variances(bottom[2].tensor, p)
        if len(bottom) >= 4:
            low = bottom[3].tensor.reshape(n, p, 2)[:, :, 1] < self.objectness_score
            only_first = torch.zeros(c, dtype=conf.dtype, device=conf.device)
            only_first[0] = 1
            conf = torch.where(low[..., None], only_first, conf)
        anchors = prior_boxes
        if len(bottom) >= 5:
            anchors = bbox_util.decode_bbox(prior_boxes, var, bottom[4].tensor.reshape(n, p, 4),
                                            self.code_type, self.variance_in_target)
        try:
            boxes = bbox_util.decode_bbox(anchors[..., None, :], var[:, None, :], loc,
                                          self.code_type, self.variance_in_target)
        except bbox_util.BoxError as e:
            raise self._fail(str(e)) from None
        return conf, boxes

    def detect(self, bottom):
        """(image, class, prior, score) of every detection kept, ordered by image, class,
        then Caffe's NMS order; and the decoded boxes (N, P, L, 4)."""
        conf, boxes = self._decoded(bottom)
        n, c = self.num, self.num_classes
        dev = conf.device
        # Caffe keeps scores as floats: threshold and rank the float32 values.
        scores = conf.to(torch.float32)
        above = scores > self.confidence_threshold
        if 0 <= self.bg < c:
            above[:, :, self.bg] = False
        img, pi, ci = torch.nonzero(above, as_tuple=True)     # within a class: priors ascending
        sc = scores[img, pi, ci]
        groups = img * c + ci
        order = bbox_util.nms.group_order(sc, groups, self.top_k)
        img, pi, ci, sc, groups = (t.index_select(0, order) for t in (img, pi, ci, sc, groups))
        slot = torch.zeros_like(ci) if self.share else ci
        keep = bbox_util.nms_ordered_groups(boxes[img, pi, slot], groups, self.nms_threshold,
                                            self.eta)
        img, pi, ci, sc = img[keep], pi[keep], ci[keep], sc[keep]
        if self.keep_top_k > -1 and img.numel():
            per_image = torch.bincount(img, minlength=n)
            if bool((per_image > self.keep_top_k).any()):
                order = bbox_util.nms.group_order(sc, img)       # by image, score
                starts = torch.cumsum(per_image, 0) - per_image
                rank = torch.empty_like(order)
                rank[order] = torch.arange(order.numel(), device=dev) - starts[img[order]]
                chosen = rank < self.keep_top_k
                img, pi, ci, sc = img[chosen], pi[chosen], ci[chosen], sc[chosen]
        return img, ci, pi, sc, boxes

    def forward(self, bottom, top):
        if self.need_save and self.name_count % self.num_test_image == 0 \
                and self.output_format == 'VOC':
            # A new pass begins: empty the class files, as Caffe's forward truncates them.
            detection_results.clear_voc_files(
                self.output_directory, self.output_prefix,
                [name for c, name in self.label_names.items() if c != self.bg])
        img, labels, pi, sc, boxes = self.detect(bottom)
        dtype, dev = bottom[0].tensor.dtype, bottom[0].tensor.device
        det = boxes[img, pi, torch.zeros_like(labels) if self.share else labels]
        if img.numel() == 0:
            _log.info('detection_output_layer.cpp', "Couldn't find any detections")
            out = torch.full((self.num, 7), -1.0, dtype=dtype, device=dev)
            out[:, 0] = torch.arange(self.num, dtype=dtype, device=dev)
        else:
            out = torch.cat((img.to(dtype)[:, None], labels.to(dtype)[:, None],
                             sc.to(dtype)[:, None], det.to(dtype)), dim=1)
        top[0].set_tensor(out.reshape(1, 1, -1, 7))
        if self.need_save:
            self._save(img, labels, sc, det)

    # ---- result files ---------------------------------------------------------------------
    def _save(self, img, labels, scores, boxes) -> None:
        img_np = img.cpu().numpy()
        for i in range(self.num):                   # images, in order: Caffe's name counter
            rows = np.nonzero(img_np == i)[0]
            if rows.size:
                if self.name_count >= len(self.names):
                    raise self._fail('image %d of the pass has no entry in the name size file '
                                     '(%d entries)' % (self.name_count + 1, len(self.names)))
                h, w = self.sizes[self.name_count]
                sel = torch.as_tensor(rows, device=boxes.device)
                out, _ = bbox_util.output_bbox(boxes[sel].float(), float(h), float(w),
                                               self.resize_param)
                name = self.names[self.name_count]
                for lab, s, b in zip(labels[sel].tolist(), scores[sel].tolist(), out.tolist()):
                    self.pending.append(detection_results.Detection(name, lab, s, *b))
            self.name_count += 1
            if self.name_count % self.num_test_image == 0:
                detection_results.WRITERS[self.output_format](
                    self.output_directory, self.output_prefix, self.pending, self.label_names,
                    self.classes)
                self.name_count = 0
                self.pending = []
