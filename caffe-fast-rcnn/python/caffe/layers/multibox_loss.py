"""MultiBoxLoss: SSD's training loss, and RefineDet's ARM/ODM losses.

Bottoms: loc (N, P * L * 4), conf (N, P * C), priors (1, 2, P * 4), label (1, 1, G, 8) (SSD's
ground truth rows); RefineDet's ODM loss adds arm_conf (N, P * 2, softmaxed) and
arm_loc (N, P * 4). One scalar top:

    loss = loc_weight * L_loc / normaliser + L_conf / normaliser

1. Ground truth: rows grouped by image (difficult boxes dropped unless use_difficult_gt;
   with two classes labels 2+ become 1, RefineDet's class-agnostic ARM).
2. Matching: priors (or, with arm_loc, the priors the ARM refined) against ground truth,
   BIPARTITE then optionally PER_PREDICTION (bbox_util.match_bbox). Without
   use_prior_for_matching the decoded predictions are matched instead, per class when
   the location is not shared.
3. Mining (share_location only): MAX_NEGATIVE picks the unmatched priors with the
   largest confidence loss, neg_pos_ratio per match; HARD_EXAMPLE ranks everything by
   confidence + localisation loss (sample_size, optional NMS over the loss). With
   arm_conf, priors whose ARM objectness is below objectness_score are never mined.
4. L_loc: smooth L1 (or L2 / 2) between the matched predictions and their encoded
   ground truth (against the refined priors when arm_loc is given). L_conf: softmax or
   logistic cross-entropy over matched and mined priors (all priors when not mining).
5. The normaliser follows loss_param.normalization (the legacy `normalize` if that is
   all that is set): VALID = number of matches, BATCH_SIZE = N, FULL = N * P, NONE = 1.

Backward is Caffe's: matches and mined sets are constants; the loc gradient goes to the
matched predictions, the conf gradient to the rows of the confidence loss; priors,
labels and the ARM inputs get none. Caffe's quirks are kept: with
encode_variance_in_target the gradient is that of pred / variance, and without mining
the LOGISTIC targets of image i are written at offset i * P (not i * P * C).
"""
from __future__ import annotations

import torch

from .. import bbox_util
from ..errors import LayerError
from ..layer import Layer
from ..proto import caffe_pb2
from ..bbox_util.mining import FLT_MIN
from . import register
from ._multibox import check_predictions, priors_and_variances, signed32

_MB = caffe_pb2.MultiBoxLossParameter
_NORM = caffe_pb2.LossParameter


def loss_normalizer(mode: int, num: int, num_priors: int, valid: int) -> float:
    """Caffe's LossLayer::GetNormalizer (at least 1); valid -1 means 'all'."""
    if mode == _NORM.FULL:
        n = num * num_priors
    elif mode == _NORM.VALID:
        n = num * num_priors if valid == -1 else valid
    elif mode == _NORM.BATCH_SIZE:
        n = num
    elif mode == _NORM.NONE:
        n = 1
    else:
        raise ValueError('Unknown normalization mode: %r' % (mode,))
    return max(1.0, float(n))


def _enum_name(enum, value) -> str:
    try:
        return enum.Name(int(value))
    except ValueError:
        return str(value)


@register('MultiBoxLoss')
class MultiBoxLoss(Layer):
    """See the module docstring."""

    allow_in_place = False
    min_bottom = 4
    max_bottom = 6
    exact_num_top = 1
    is_loss = True

    def allow_force_backward(self, bottom_index: int) -> bool:
        # Caffe inherits LossLayer's rule (all but bottom 1), and then dies on the prior
        # and label bottoms; only the two predictions can take a gradient.
        return bottom_index in (0, 1)

    def _fail(self, msg: str) -> LayerError:
        return LayerError('layer %r (MultiBoxLoss): %s' % (self.layer_param.name, msg))

    # ---- set-up ---------------------------------------------------------------------------
    def setup(self, bottom, top):
        lp = self.layer_param
        mp = lp.multibox_loss_param
        self.mp = mp
        self.propagate = [bool(b) for b in lp.propagate_down] or [True, True, False, False]
        if not mp.HasField('num_classes'):
            raise self._fail('Must provide num_classes.')
        self.num_classes = int(mp.num_classes)
        if self.num_classes < 1:
            raise self._fail('num_classes should not be less than 1.')
        self.share = bool(mp.share_location)
        self.loc_classes = 1 if self.share else self.num_classes
        self.bg = signed32(mp.background_label_id)
        self.mining = int(mp.mining_type)
        if self.mining not in (_MB.NONE, _MB.MAX_NEGATIVE, _MB.HARD_EXAMPLE):
            raise self._fail('Unknown mining type %d' % self.mining)
        self.do_neg_mining = self.mining != _MB.NONE
        if mp.HasField('do_neg_mining') and bool(mp.do_neg_mining) != self.do_neg_mining:
            raise self._fail('do_neg_mining (deprecated) is %s but mining_type is %s'
                             % (mp.do_neg_mining, _enum_name(_MB.MiningType, self.mining)))
        lossp = lp.loss_param
        if not lossp.HasField('normalization') and lossp.HasField('normalize'):
            self.normalization = _NORM.VALID if lossp.normalize else _NORM.BATCH_SIZE
        else:
            self.normalization = int(lossp.normalization)
        if self.do_neg_mining and not self.share:
            raise self._fail('Currently only support negative mining if share_location is true.')
        self.loc_weight = float(mp.loc_weight)
        self.loc_loss_type = int(mp.loc_loss_type)
        if self.loc_loss_type not in (_MB.L2, _MB.SMOOTH_L1):
            raise self._fail('Unknown localization loss type %d' % self.loc_loss_type)
        self.conf_loss_type = int(mp.conf_loss_type)
        if self.conf_loss_type == _MB.SOFTMAX:
            if not 0 <= self.bg < self.num_classes:
                raise self._fail('background_label_id should be within [0, num_classes) for '
                                 'Softmax (background_label_id %d, num_classes %d)'
                                 % (self.bg, self.num_classes))
        elif self.conf_loss_type != _MB.LOGISTIC:
            raise self._fail('Unknown confidence loss type %d' % self.conf_loss_type)
        if int(mp.match_type) not in (_MB.BIPARTITE, _MB.PER_PREDICTION):
            raise self._fail('Unknown matching type %d' % mp.match_type)
        if int(mp.code_type) not in bbox_util.boxes.ENCODERS:
            raise self._fail('Unknown code_type %d' % mp.code_type)
        if self.mining == _MB.HARD_EXAMPLE and int(mp.sample_size) <= 0:
            raise self._fail('sample_size must be positive for HARD_EXAMPLE mining, got %d'
                             % mp.sample_size)
        if mp.map_object_to_agnostic:
            want = 2 if self.bg >= 0 else 1
            if self.num_classes != want:
                raise self._fail('map_object_to_agnostic needs num_classes %d with '
                                 'background_label_id %d, got %d'
                                 % (want, self.bg, self.num_classes))
        self.nms_threshold = float(mp.nms_param.nms_threshold) if mp.HasField('nms_param') else 0.0
        self.nms_top_k = int(mp.nms_param.top_k) if mp.HasField('nms_param') else -1
        # Label entries of the match map: -1 (shared location) or each non-background class.
        self.entries = [-1] if self.share else [c for c in range(self.num_classes) if c != self.bg]
        self._saved = None

    def reshape(self, bottom, top):
        self.num, self.num_priors = check_predictions(bottom, self.loc_classes, self.num_classes,
                                                      self.share, 4, self._fail)
        if bottom[3].count % 8:
            raise self._fail('label %s is not rows of 8 values [item, label, instance, xmin, '
                             'ymin, xmax, ymax, difficult]' % (tuple(bottom[3].shape),))
        top[0].reshape()

    # ---- forward --------------------------------------------------------------------------
    def _matches(self, loc, prior_boxes, var, anchors, gt):
        """Match map (N, L, P) and recorded overlaps (N, L, P), as FindMatches."""
        mp = self.mp
        n, p = loc.shape[0], loc.shape[1]
        dev = loc.device
        mtype, thr = int(mp.match_type), float(mp.overlap_threshold)
        if mp.use_prior_for_matching:
            boxes = anchors.expand(n, p, 4)
            ignore = bbox_util.is_cross_boundary(boxes) if mp.ignore_cross_boundary_bbox else None
            idx, best = bbox_util.match_bbox(bbox_util.jaccard_overlap(boxes, gt.boxes),
                                             gt.valid, mtype, thr, ignore)
            if self.share:
                return idx[:, None], best[:, None]
            lab = gt.labels.gather(1, idx.clamp_min(0)) if gt.labels.shape[1] else idx
            ent = torch.tensor(self.entries, device=dev)
            take = (idx > -1)[:, None, :] & (lab[:, None, :] == ent[None, :, None])
            m = torch.where(take, idx[:, None, :], torch.full_like(take, -1, dtype=torch.long))
            return m, best[:, None, :].expand(n, len(self.entries), p)
        slots = [0] if self.share else self.entries
        preds = loc[:, :, slots, :].permute(0, 2, 1, 3)                  # (N, L, P, 4)
        boxes = bbox_util.decode_bbox(prior_boxes, var, preds, mp.code_type,
                                      mp.encode_variance_in_target, clip=False)
        if self.share:
            valid = gt.valid[:, None, :]
        else:
            ent = torch.tensor(self.entries, device=dev)
            valid = gt.valid[:, None, :] & (gt.labels[:, None, :] == ent[None, :, None])
        el = boxes.shape[1]
        valid = valid.expand(n, el, gt.valid.shape[1])
        ignore = bbox_util.is_cross_boundary(boxes) if mp.ignore_cross_boundary_bbox else None
        ov = bbox_util.jaccard_overlap(boxes, gt.boxes[:, None])         # (N, L, P, G)
        g = ov.shape[-1]
        idx, best = bbox_util.match_bbox(ov.reshape(n * el, p, g), valid.reshape(n * el, g),
                                         mtype, thr, None if ignore is None
                                         else ignore.reshape(n * el, p))
        return idx.reshape(n, el, p), best.reshape(n, el, p)

    def _encode_matches(self, loc, match, gt, anchors, var, rows):
        """Caffe's EncodeLocPrediction for the matches at `rows` = (image, entry, prior):
        the prediction it trains (bp_inside may swap in the target) and the target."""
        mp = self.mp
        n_i, l_i, p_i = rows
        slot = n_i.new_tensor([0] if self.share else self.entries)[l_i]
        pred = loc[n_i, p_i, slot]
        gt_box = gt.boxes[n_i, match[n_i, l_i, p_i]]
        anc = anchors[n_i, p_i] if anchors.dim() == 3 else anchors[p_i]
        v = var[p_i]
        try:
            enc = bbox_util.encode_bbox(anc, v, gt_box, mp.code_type, mp.encode_variance_in_target)
        except bbox_util.BoxError as e:
            raise self._fail('cannot encode the matched ground truth: %s' % e) from None
        if mp.bp_inside:
            mb = anc if mp.use_prior_for_matching else bbox_util.decode_bbox(
                anc, v, pred, mp.code_type, mp.encode_variance_in_target, clip=False)
            pred = torch.where((mb < 0) | (mb > 1), enc, pred)
        if mp.encode_variance_in_target:
            pred, enc = pred / v, enc / v
        return pred, enc, slot

    def _check_labels(self, labels: torch.Tensor, what: str) -> None:
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            raise self._fail('%s label %d is outside [0, num_classes = %d)'
                             % (what, int(labels[bad][0]), self.num_classes))

    def forward(self, bottom, top):
        mp = self.mp
        n, p, c = self.num, self.num_priors, self.num_classes
        loc = bottom[0].tensor.reshape(n, p, self.loc_classes, 4)
        conf = bottom[1].tensor.reshape(n, p, c)
        prior_boxes, var = priors_and_variances(bottom[2].tensor, p)
        try:
            gt = bbox_util.get_ground_truth(bottom[3].tensor.reshape(-1, 8), n, self.bg,
                                            mp.use_difficult_gt, c)
        except bbox_util.GroundTruthError as e:
            raise self._fail(str(e)) from None
        arm_conf = bottom[4].tensor.reshape(n, p, 2) if len(bottom) >= 5 else None
        anchors = prior_boxes
        if len(bottom) >= 6:
            anchors = bbox_util.decode_bbox(prior_boxes, var, bottom[5].tensor.reshape(n, p, 4),
                                            mp.code_type, mp.encode_variance_in_target)
        has_gt = gt.valid.any(dim=1)
        try:
            match, overlap = self._matches(loc, prior_boxes, var, anchors, gt)
        except bbox_util.BoxError as e:
            raise self._fail(str(e)) from None
        match = torch.where(has_gt[:, None, None], match, torch.full_like(match, -1))

        negative = torch.zeros((n, p), dtype=torch.bool, device=loc.device)
        if self.do_neg_mining:
            match, negative = self._mine(loc, conf, prior_boxes, var, gt, match, overlap,
                                         has_gt, arm_conf)
        positive = match > -1
        num_matches = int(positive.sum())
        norm = loss_normalizer(self.normalization, n, p, num_matches)

        loc_loss = torch.zeros((), dtype=loc.dtype, device=loc.device)
        loc_saved = None
        if num_matches >= 1:
            rows = torch.nonzero(positive, as_tuple=True)
            pred, enc, slot = self._encode_matches(loc, match, gt, anchors, var, rows)
            d = pred - enc
            loc_loss = bbox_util.loc_loss(d, self.loc_loss_type).sum()
            loc_saved = (rows[0], rows[2], slot, d)

        conf_loss, conf_saved = self._conf_loss(conf, gt, match, negative)
        total = torch.zeros((), dtype=loc.dtype, device=loc.device)
        if self.propagate[0]:
            total = total + self.loc_weight * loc_loss / norm
        if len(self.propagate) > 1 and self.propagate[1]:
            total = total + conf_loss / norm
        self._saved = (norm, loc_saved, conf_saved)
        top[0].set_tensor(total.reshape(()))

    def _mine(self, loc, conf, prior_boxes, var, gt, match, overlap, has_gt, arm_conf):
        """MineHardExamples: the negatives, and (HARD_EXAMPLE) the matches kept."""
        mp = self.mp
        m, mo = match[:, 0], overlap[:, 0]
        labels = torch.where(m > -1, gt.labels.gather(1, m.clamp_min(0)) if gt.labels.shape[1]
                             else m, torch.full_like(m, self.bg))
        if self.conf_loss_type == _MB.SOFTMAX:
            self._check_labels(labels, 'a matched ground-truth')
        ranking = bbox_util.conf_loss(conf, labels, self.conf_loss_type).float()
        if self.mining == _MB.HARD_EXAMPLE:
            rows = torch.nonzero(m[:, None] > -1, as_tuple=True)
            loc_part = torch.zeros_like(ranking)
            if rows[0].numel():
                pred, enc, _ = self._encode_matches(loc, match, gt, prior_boxes, var, rows)
                loc_part[rows[0], rows[2]] = bbox_util.loc_loss(pred - enc,
                                                                self.loc_loss_type).float()
            ranking = ranking + loc_part
        eligible = bbox_util.eligible_for_mining(self.mining, m, mo, float(mp.neg_overlap))
        eligible &= has_gt[:, None]                  # images without ground truth: no mining
        if arm_conf is not None:
            eligible &= arm_conf[:, :, 1] >= float(mp.objectness_score)
        nms_boxes = None
        if mp.HasField('nms_param') and self.nms_threshold > 0:
            if mp.use_prior_for_nms:
                nms_boxes = prior_boxes.expand(m.shape[0], -1, 4)
            else:
                nms_boxes = bbox_util.decode_bbox(prior_boxes, var, loc[:, :, 0], mp.code_type,
                                                  mp.encode_variance_in_target)
        mined = bbox_util.mine_hard_examples(ranking, m, eligible, self.mining,
                                             float(mp.neg_pos_ratio), int(mp.sample_size),
                                             nms_boxes, self.nms_threshold, self.nms_top_k)
        dropped = (m > -1) & ~mined.positive
        m = torch.where(dropped, torch.full_like(m, -1), m)
        return m[:, None], mined.negative

    def _conf_loss(self, conf, gt, match, negative):
        """L_conf and what its backward needs (rows, grad before scaling)."""
        mp = self.mp
        n, p, c = conf.shape
        bg = self.bg
        obj_label = bg + 1 if mp.map_object_to_agnostic else None

        def gt_label(m):
            if obj_label is not None:
                return torch.full_like(m, obj_label)
            return gt.labels.gather(1, m.clamp_min(0)) if gt.labels.shape[1] else m

        if self.do_neg_mining:
            m = match[:, 0]
            pos = m > -1
            sel = pos | negative
            if not bool(sel.any()):
                return torch.zeros((), dtype=conf.dtype, device=conf.device), None
            labels = torch.where(pos, gt_label(m), torch.full_like(m, bg))
            rows = torch.nonzero(sel, as_tuple=True)
            x = conf[rows]
            lab = labels[rows]
            if self.conf_loss_type == _MB.SOFTMAX:
                self._check_labels(lab, 'a confidence target')
                prob = torch.softmax(x, dim=-1)
                picked = prob.gather(1, lab[:, None])[:, 0]
                loss = -torch.log(picked.clamp_min(FLT_MIN)).sum()
                grad = prob.clone()
                grad[torch.arange(lab.numel(), device=x.device), lab] -= 1
            else:
                target = torch.full_like(x, float(bg))
                is_pos = pos[rows]
                self._check_labels(lab[is_pos], 'a confidence target')
                pr = torch.nonzero(is_pos).reshape(-1)
                target[pr, lab[pr]] = 1
                if 0 <= bg < c:
                    target[torch.nonzero(~is_pos).reshape(-1), bg] = 1
                loss = bbox_util.logistic_terms(x, target).sum()
                grad = torch.sigmoid(x) - target
            return loss, (rows, grad)

        # No mining: every prior of every image.
        has = match > -1                                              # (N, L, P)
        if self.conf_loss_type == _MB.SOFTMAX:
            # A prior matched under several classes takes the last one (Caffe overwrites).
            el = match.shape[1]
            last = (el - 1) - has.flip(1).long().argmax(dim=1)            # (N, P)
            m_last = match.gather(1, last[:, None])[:, 0]
            labels = torch.where(has.any(dim=1), gt_label(m_last), torch.full_like(m_last, bg))
            self._check_labels(labels[has.any(dim=1)], 'a confidence target')
            prob = torch.softmax(conf, dim=-1)
            picked = prob.gather(2, labels[..., None])[..., 0]
            loss = -torch.log(picked.clamp_min(FLT_MIN)).sum()
            grad = prob.clone()
            grad.scatter_add_(2, labels[..., None], -torch.ones_like(picked)[..., None])
        else:
            target = torch.full((n * p * c,), float(bg), dtype=conf.dtype, device=conf.device)
            n_i, l_i, p_i = torch.nonzero(has, as_tuple=True)
            if n_i.numel():
                lab = (torch.full_like(n_i, obj_label) if obj_label is not None
                       else gt.labels[n_i, match[n_i, l_i, p_i]])
                self._check_labels(lab, 'a confidence target')
                target[n_i * p + p_i * c + lab] = 1              # Caffe's per-image offset is P
            target = target.reshape(n, p, c)
            loss = bbox_util.logistic_terms(conf, target).sum()
            grad = torch.sigmoid(conf) - target
        return loss, (None, grad)

    # ---- backward -------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self._fail('MultiBoxLoss Layer cannot backpropagate to prior inputs.')
        if len(propagate_down) > 3 and propagate_down[3]:
            raise self._fail('MultiBoxLoss Layer cannot backpropagate to label inputs.')
        if self._saved is None:
            raise self._fail('backward before forward')
        norm, loc_saved, conf_saved = self._saved
        scale = top[0].diff_tensor.reshape(()) / norm
        if propagate_down[0]:
            g = torch.zeros(bottom[0].shape, dtype=bottom[0].tensor.dtype,
                            device=bottom[0].tensor.device)
            if loc_saved is not None:
                n_i, p_i, slot, d = loc_saved
                gv = g.view(self.num, self.num_priors, self.loc_classes, 4)
                gv[n_i, p_i, slot] = bbox_util.loc_loss_grad(d, self.loc_loss_type) * (
                    self.loc_weight * scale)
            bottom[0].set_diff_tensor(g)
        if propagate_down[1]:
            g = torch.zeros(bottom[1].shape, dtype=bottom[1].tensor.dtype,
                            device=bottom[1].tensor.device)
            if conf_saved is not None:
                rows, grad = conf_saved
                gv = g.view(self.num, self.num_priors, self.num_classes)
                if rows is None:
                    gv.copy_(grad * scale)
                else:
                    gv[rows] = grad * scale
            bottom[1].set_diff_tensor(g)
        for i in range(4, len(bottom)):            # the ARM inputs: no gradient, as Caffe
            if propagate_down[i]:
                bottom[i].set_diff_tensor(torch.zeros_like(bottom[i].tensor))
