"""DetectionEvaluate (SSD): scores DetectionOutput's detections against the ground truth,
row by row, for the solver's detection evaluation (mAP).

Bottoms: detections (1, 1, D, 7) [image, label, score, xmin, ymin, xmax, ymax] and SSD's
ground truth (1, 1, G, 8). Top (1, 1, C' + D', 5) where C' is the number of non-background
classes and D' the number of detection rows whose label is not -1:
  first, per class c: [-1, c, number of positives, -1, -1] (difficult boxes counted only
  with evaluate_difficult_gt);
  then per detection, by image, label and descending score: [image, label, score, tp, fp].
A detection is a true positive when its best-overlapping box of its class (first on ties)
overlaps at least `overlap_threshold` and no higher-scored detection took that box; a
detection whose best box is difficult is neither (tp = fp = 0) unless
evaluate_difficult_gt. With a name_size_file, boxes are compared in original-image pixels
(each image's size taken in turn, as Caffe counts images; resize_param undone).
"""
from __future__ import annotations

import torch

from .. import bbox_util, detection_results
from ..errors import CaffeError, LayerError
from ..layer import Layer
from . import register
from ._multibox import legacy_dim, signed32


@register('DetectionEvaluate')
class DetectionEvaluate(Layer):
    """See the module docstring."""

    allow_in_place = False
    exact_num_bottom = 2
    exact_num_top = 1

    def _fail(self, msg: str) -> LayerError:
        return LayerError('layer %r (DetectionEvaluate): %s' % (self.layer_param.name, msg))

    def setup(self, bottom, top):
        ep = self.layer_param.detection_evaluate_param
        if not ep.HasField('num_classes'):
            raise self._fail('Must provide num_classes.')
        self.num_classes = int(ep.num_classes)
        self.bg = signed32(ep.background_label_id)
        self.overlap_threshold = float(ep.overlap_threshold)
        if not self.overlap_threshold > 0:
            raise self._fail('overlap_threshold must be positive, got %g' % self.overlap_threshold)
        self.evaluate_difficult_gt = bool(ep.evaluate_difficult_gt)
        self.sizes = []
        if ep.HasField('name_size_file'):
            try:
                self.sizes = [(h, w) for _, h, w in
                              detection_results.read_name_size_file(ep.name_size_file)]
            except CaffeError as e:
                raise self._fail(str(e)) from None
        self.count = 0
        self.use_normalized = not self.sizes
        self.resize_param = ep.resize_param if ep.HasField('resize_param') else None
        self.classes = [c for c in range(self.num_classes) if c != self.bg]

    def reshape(self, bottom, top):
        d, g = bottom[0].shape, bottom[1].shape
        checks = (('detections', d, 7), ('ground truth', g, 8))
        for what, shape, width in checks:
            if (legacy_dim(shape, 0), legacy_dim(shape, 1), legacy_dim(shape, 3)) != (1, 1, width):
                raise self._fail('%s must be (1, 1, rows, %d), got %s'
                                 % (what, width, tuple(shape)))
        labels = bottom[0].tensor.reshape(-1, 7)[:, 1]
        self.num_valid = int((labels != -1).sum())
        top[0].reshape(1, 1, len(self.classes) + self.num_valid, 5)

    def forward(self, bottom, top):
        det = bottom[0].tensor.reshape(-1, 7)
        rows = bottom[1].tensor.reshape(-1, 8)
        dtype, dev = det.dtype, det.device
        item = torch.trunc(det[:, 0]).long()
        label = torch.trunc(det[:, 1]).long()
        bad = (item != -1) & (label == self.bg)
        if bool(bad.any()):
            r = int(torch.nonzero(bad)[0, 0])
            raise self._fail('Found background label in the detection results (row %d, label %d)'
                             % (r, int(label[r])))
        gt_items = torch.trunc(rows[:, 0]).long()
        num_img = int(torch.cat((item, gt_items, item.new_zeros(1))).max()) + 1
        try:
            gt = bbox_util.get_ground_truth(rows, num_img, self.bg, True, self.num_classes,
                                            stop_at_invalid=True)
        except bbox_util.GroundTruthError as e:
            raise self._fail(str(e)) from None
        gi, gs = torch.nonzero(gt.valid, as_tuple=True)     # image, slot (image-major order)
        g_box, g_lab, g_diff = gt.boxes[gi, gs], gt.labels[gi, gs], gt.difficult[gi, gs]

        out = torch.zeros((len(self.classes) + self.num_valid, 5), dtype=dtype, device=dev)
        counted = g_lab[self.evaluate_difficult_gt | ~g_diff]
        cls = torch.tensor(self.classes, dtype=torch.long, device=dev)
        k = len(self.classes)
        out[:k, 0] = -1
        out[:k, 1] = cls.to(dtype)
        out[:k, 2] = (counted[None, :] == cls[:, None]).sum(dim=1).to(dtype)
        out[:k, 3:] = -1

        keep = torch.nonzero((item != -1) & (label != -1)).reshape(-1)
        if keep.numel() == 0:
            self._advance(item)
            top[0].set_tensor(out.reshape(1, 1, -1, 5))
            return
        d_item, d_lab = item[keep], label[keep]
        d_score = det[keep, 2].to(torch.float32)
        d_box = det[keep, 3:7].to(torch.float32)
        same = (d_item[:, None] == gi[None, :]) & (d_lab[:, None] == g_lab[None, :])  # (D, G)
        has_gt = same.any(dim=1)
        # Order: image, label, then descending score where the label has ground truth
        # (Caffe sorts those), the rows' own order elsewhere.
        n = keep.numel()
        by_score = torch.empty(n, dtype=torch.long, device=dev)
        by_score[torch.sort(d_score, descending=True, stable=True).indices] = torch.arange(
            n, device=dev)
        second = torch.where(has_gt, by_score, torch.arange(n, device=dev))
        _, lab_rank = torch.unique(d_lab, return_inverse=True)
        # Every image with a row (label -1 rows included) takes a name-size entry.
        img_ids = torch.unique(item[item != -1])
        img_rank = torch.searchsorted(img_ids, d_item)
        order = torch.argsort((img_rank * (int(lab_rank.max()) + 1) + lab_rank) * n + second)

        # Overlaps of each detection with the boxes of its image and label.
        if self.use_normalized:
            dsz, gsz = bbox_util.bbox_size(d_box), bbox_util.bbox_size(g_box.to(torch.float32))
            ov = bbox_util.sized_jaccard_overlap(d_box, dsz, g_box.to(torch.float32), gsz, True)
        else:
            sizes = torch.tensor(self.sizes, dtype=torch.float32, device=dev)
            # Images are counted in order of id, continuing from the last batch.
            slot_of_img = (self.count + torch.arange(img_ids.numel(), device=dev)) % len(self.sizes)
            d_hw = sizes[slot_of_img[img_rank]]
            g_img_rank = torch.searchsorted(img_ids, gi).clamp_max(img_ids.numel() - 1)
            g_hw = sizes[slot_of_img[g_img_rank]]
            db, dsz = bbox_util.output_bbox(d_box, d_hw[:, 0], d_hw[:, 1], self.resize_param)
            gb, gsz = bbox_util.output_bbox(g_box.to(torch.float32), g_hw[:, 0], g_hw[:, 1],
                                            self.resize_param)
            ov = bbox_util.sized_jaccard_overlap(db, dsz, gb, gsz, False)
        ov = torch.where(same, ov, torch.full_like(ov, -2.0))
        best, jmax = ov.max(dim=1) if ov.shape[1] else (torch.full((n,), -2.0, device=dev),
                                                        torch.zeros(n, dtype=torch.long,
                                                                    device=dev))
        over = has_gt & (best >= self.overlap_threshold)
        diff_gt = g_diff[jmax] if g_diff.numel() else torch.zeros(n, dtype=torch.bool, device=dev)
        qualifies = over & (self.evaluate_difficult_gt | ~diff_gt)
        # The first qualifying detection (in output order) of each box is the true positive.
        pos = torch.empty(n, dtype=torch.long, device=dev)
        pos[order] = torch.arange(n, device=dev)
        big = torch.full((max(g_lab.numel(), 1),), n, dtype=torch.long, device=dev)
        q = torch.nonzero(qualifies).reshape(-1)
        first = big.scatter_reduce(0, jmax[q], pos[q], reduce='amin')
        tp = qualifies & (first[jmax] == pos)
        fp = ~over | (qualifies & ~tp)
        res = torch.stack((d_item.to(dtype), d_lab.to(dtype), d_score.to(dtype),
                           tp.to(dtype), fp.to(dtype)), dim=1)
        out[k:k + n] = res[order]
        self._advance(item)
        top[0].set_tensor(out.reshape(1, 1, -1, 5))

    def _advance(self, item: torch.Tensor) -> None:
        """Caffe counts one image of the name-size list per image seen in the detections."""
        if self.sizes:
            seen = int(torch.unique(item[item != -1]).numel())
            self.count = (self.count + seen) % len(self.sizes)
