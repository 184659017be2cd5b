"""Loop-based NumPy references of SSD/RefineDet's Caffe box maths and layers, for tests.

Written box by box and prior by prior, following the order of Caffe's own loops
(util/bbox_util.cpp, multibox_loss_layer.cpp, detection_output_layer.cpp,
detection_evaluate_layer.cpp), so that the vectorised engine can be checked against an
independent statement of the same rules. Slow on purpose; use small inputs.
"""
import math

import numpy as np

CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3
BIPARTITE, PER_PREDICTION = 0, 1
NONE, MAX_NEGATIVE, HARD_EXAMPLE = 0, 1, 2
SOFTMAX, LOGISTIC = 0, 1
L2, SMOOTH_L1 = 0, 1
FLT_MIN = float(np.finfo(np.float32).tiny)


# ---- single boxes ---------------------------------------------------------------------------

def size(b, normalized=True):
    if b[2] < b[0] or b[3] < b[1]:
        return 0.0
    w, h = b[2] - b[0], b[3] - b[1]
    return w * h if normalized else (w + 1) * (h + 1)


def jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w > 0 and h > 0:
        inter = w * h
        return inter / (size(a) + size(b) - inter)
    return 0.0


def encode(prior, var, box, code, in_target):
    if code == CORNER:
        d = [box[k] - prior[k] for k in range(4)]
        return d if in_target else [d[k] / var[k] for k in range(4)]
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == CENTER_SIZE:
        pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
        bw, bh = box[2] - box[0], box[3] - box[1]
        bcx, bcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        e = [(bcx - pcx) / pw, (bcy - pcy) / ph, math.log(bw / pw), math.log(bh / ph)]
        return e if in_target else [e[k] / var[k] for k in range(4)]
    e = [(box[0] - prior[0]) / pw, (box[1] - prior[1]) / ph,
         (box[2] - prior[2]) / pw, (box[3] - prior[3]) / ph]
    return e if in_target else [e[k] / var[k] for k in range(4)]


def decode(prior, var, loc, code, in_target, clip=False):
    v = [1.0] * 4 if in_target else list(var)
    if code == CORNER:
        out = [prior[k] + v[k] * loc[k] for k in range(4)]
    else:
        pw, ph = prior[2] - prior[0], prior[3] - prior[1]
        if code == CENTER_SIZE:
            pcx, pcy = (prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2
            cx = v[0] * loc[0] * pw + pcx
            cy = v[1] * loc[1] * ph + pcy
            w = math.exp(v[2] * loc[2]) * pw
            h = math.exp(v[3] * loc[3]) * ph
            out = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        else:
            scale = [pw, ph, pw, ph]
            out = [prior[k] + v[k] * loc[k] * scale[k] for k in range(4)]
    if clip:
        out = [min(max(x, 0.0), 1.0) for x in out]
    return out


def cross_boundary(b):
    return any(x < 0 or x > 1 for x in b)


# ---- matching -------------------------------------------------------------------------------

def match(gts, preds, label, match_type, threshold, ignore_cross):
    """MatchBBox; gts: list of (label, box); preds: list of boxes."""
    n = len(preds)
    idx, ovl = [-1] * n, [0.0] * n
    gt_ids = [g for g in range(len(gts)) if label == -1 or gts[g][0] == label]
    if not gt_ids:
        return idx, ovl
    overlaps = {}
    for i in range(n):
        if ignore_cross and cross_boundary(preds[i]):
            idx[i] = -2
            continue
        for j, g in enumerate(gt_ids):
            o = jaccard(preds[i], gts[g][1])
            if o > 1e-6:
                ovl[i] = max(ovl[i], o)
                overlaps.setdefault(i, {})[j] = o
    pool = list(range(len(gt_ids)))
    while pool:
        best_i, best_j, best = -1, -1, -1.0
        for i in sorted(overlaps):
            if idx[i] != -1:
                continue
            for j in pool:
                if j in overlaps[i] and overlaps[i][j] > best:
                    best_i, best_j, best = i, j, overlaps[i][j]
        if best_i == -1:
            break
        idx[best_i] = gt_ids[best_j]
        ovl[best_i] = best
        pool.remove(best_j)
    if match_type == PER_PREDICTION:
        for i in sorted(overlaps):
            if idx[i] != -1:
                continue
            bj, bo = -1, -1.0
            for j in range(len(gt_ids)):
                o = overlaps[i].get(j)
                if o is not None and o >= threshold and o > bo:
                    bj, bo = j, o
            if bj != -1:
                idx[i] = gt_ids[bj]
                ovl[i] = bo
    return idx, ovl


# ---- NMS ------------------------------------------------------------------------------------

def stable_desc(scores, idx):
    return sorted(idx, key=lambda k: -scores[k])      # Python's sort is stable


def nms_fast(boxes, scores, score_threshold, nms_threshold, eta, top_k):
    cand = stable_desc(scores, [i for i in range(len(scores)) if scores[i] > score_threshold])
    if top_k > -1:
        cand = cand[:top_k]
    thr = np.float32(nms_threshold)
    kept = []
    for i in cand:
        keep = all(jaccard(boxes[i], boxes[k]) <= thr for k in kept)
        if keep:
            kept.append(i)
            if eta < 1 and thr > 0.5:
                thr = np.float32(thr * np.float32(eta))
    return kept


def nms(boxes, scores, threshold, top_k):
    cand = stable_desc(scores, list(range(len(scores))))
    if top_k > -1:
        cand = cand[:top_k]
    kept = []
    for i in cand:
        if size(boxes[i]) < 1e-5:
            continue
        if all(jaccard(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
            if top_k > -1 and len(kept) >= top_k:
                break
    return kept


# ---- a head's inputs ------------------------------------------------------------------------

def head_inputs(loc, priors, p):
    """(n, priors as 2 x P x 4, P, classes C, share_location, loc classes, background id)
    of a MultiBoxLoss or DetectionOutput bottom set with parameters p."""
    n = loc.shape[0]
    pri = np.asarray(priors, np.float64).reshape(2, -1, 4)
    share = p['share_location']
    C = p['num_classes']
    return n, pri, pri.shape[1], C, share, 1 if share else C, p['background_label_id']


def refined_anchors(pri, arm_loc, i, code, in_target):
    """Image i's anchors: the priors, or with arm_loc the priors moved by the ARM's offsets
    (RefineDet)."""
    num_p = pri.shape[1]
    if arm_loc is None:
        return [list(pri[0, j]) for j in range(num_p)]
    al = np.asarray(arm_loc, np.float64).reshape(-1, num_p, 4)
    return [decode(pri[0, j], pri[1, j], al[i, j], code, in_target) for j in range(num_p)]


# ---- MultiBoxLoss ---------------------------------------------------------------------------

DEFAULTS = dict(loc_loss_type=SMOOTH_L1, conf_loss_type=SOFTMAX, loc_weight=1.0, share_location=True,
                match_type=PER_PREDICTION, overlap_threshold=0.5, use_prior_for_matching=True,
                background_label_id=0, use_difficult_gt=True, neg_pos_ratio=3.0,
                neg_overlap=0.5, code_type=CORNER, encode_variance_in_target=False,
                map_object_to_agnostic=False, ignore_cross_boundary_bbox=False, bp_inside=False,
                mining_type=MAX_NEGATIVE, nms_threshold=None, nms_top_k=0, sample_size=64,
                use_prior_for_nms=False, objectness_score=0.01, normalization=1)


def ground_truth(label, num_classes, bg, use_difficult, stop_at_invalid=False):
    gts = {}
    for row in np.asarray(label, np.float64).reshape(-1, 8):
        item = int(row[0])
        if item == -1:
            if stop_at_invalid:
                break
            continue
        lab = int(row[1])
        if num_classes == 2 and lab >= 2:
            lab = 1
        assert lab != bg
        diff = bool(row[7])
        if not use_difficult and diff:
            continue
        gts.setdefault(item, []).append((lab, [float(v) for v in row[3:7]], diff))
    return gts


def _conf_loss_row(x, label, loss_type):
    if loss_type == SOFTMAX:
        e = np.exp(x - x.max())
        return -math.log(max(e[label] / e.sum(), FLT_MIN))
    total = 0.0
    for c, v in enumerate(x):
        t = 1.0 if c == label else 0.0
        total -= v * (t - (v >= 0)) - math.log(1 + math.exp(v - 2 * v * (v >= 0)))
    return total


def _loc_loss_row(d, loss_type):
    if loss_type == SMOOTH_L1:
        return sum(0.5 * v * v if abs(v) < 1 else abs(v) - 0.5 for v in d)
    return sum(0.5 * v * v for v in d)


def _normalizer(mode, num, num_priors, valid):
    n = {0: num * num_priors, 1: valid, 2: num, 3: 1}[mode]
    return max(1.0, float(n))


def multibox_loss(loc, conf, priors, label, params, arm_conf=None, arm_loc=None,
                  propagate=(True, True)):
    """Loss and the gradients (loss weight 1) of Caffe's MultiBoxLoss."""
    p = dict(DEFAULTS, **params)
    n, pri, num_p, C, share, lc, bg = head_inputs(loc, priors, p)
    code, evit = p['code_type'], p['encode_variance_in_target']
    loc_r = np.asarray(loc, np.float64).reshape(n, num_p, lc, 4)
    conf_r = np.asarray(conf, np.float64).reshape(n, num_p, C)
    gts = ground_truth(label, C, bg, p['use_difficult_gt'])
    anchors = [refined_anchors(pri, arm_loc, i, code, evit) for i in range(n)]
    plain = [list(pri[0, j]) for j in range(num_p)]
    matches, overlaps = [], []
    for i in range(n):
        m, o = {}, {}
        if i in gts:
            g2 = [(g[0], g[1]) for g in gts[i]]
            if not p['use_prior_for_matching']:
                for c in range(lc):
                    lab = -1 if share else c
                    if not share and lab == bg:
                        continue
                    preds = [decode(plain[j], pri[1, j], loc_r[i, j, c], code, evit) for j in range(num_p)]
                    m[lab], o[lab] = match(g2, preds, lab, p['match_type'], p['overlap_threshold'],
                                           p['ignore_cross_boundary_bbox'])
            else:
                idx, ov = match(g2, anchors[i], -1, p['match_type'], p['overlap_threshold'],
                                p['ignore_cross_boundary_bbox'])
                if share:
                    m[-1], o[-1] = idx, ov
                else:
                    for c in range(lc):
                        if c == bg:
                            continue
                        m[c] = [g if g > -1 and gts[i][g][0] == c else -1 for g in idx]
                        o[c] = list(ov)
        matches.append(m)
        overlaps.append(o)

    def encoded(i, lab, j, anchor_set):
        gt_box = gts[i][matches[i][lab][j]][1]
        slot = 0 if share else lab
        anc = anchor_set[j]
        enc = encode(anc, pri[1, j], gt_box, code, evit)
        pred = list(loc_r[i, j, slot])
        if p['bp_inside']:
            mb = anc if p['use_prior_for_matching'] else decode(anc, pri[1, j], pred, code, evit)
            pred = [enc[k] if (mb[k] < 0 or mb[k] > 1) else pred[k] for k in range(4)]
        if evit:
            pred = [pred[k] / pri[1, j][k] for k in range(4)]
            enc = [enc[k] / pri[1, j][k] for k in range(4)]
        return pred, enc, slot

    negs = [[] for _ in range(n)]
    mining = p['mining_type']
    if mining != NONE:
        for i in range(n):
            losses = []
            for j in range(num_p):
                lab = bg
                for key in sorted(matches[i]):
                    if matches[i][key][j] > -1:
                        lab = gts[i][matches[i][key][j]][0]
                        break
                losses.append(float(np.float32(_conf_loss_row(conf_r[i, j], lab, p['conf_loss_type']))))
            if mining == HARD_EXAMPLE:
                for key in sorted(matches[i]):
                    for j in range(num_p):
                        if matches[i][key][j] > -1:
                            pred, enc, _ = encoded(i, key, j, plain)
                            d = [pred[k] - enc[k] for k in range(4)]
                            losses[j] = float(np.float32(losses[j] + np.float32(
                                _loc_loss_row(d, p['loc_loss_type']))))
            for key in sorted(matches[i]):
                mi, mo = matches[i][key], overlaps[i][key]

                def eligible(j):
                    if mining == MAX_NEGATIVE:
                        ok = mi[j] == -1 and mo[j] < p['neg_overlap']
                    else:
                        ok = True
                    if ok and arm_conf is not None:
                        ok = np.asarray(arm_conf).reshape(n, num_p, 2)[i, j, 1] >= np.float32(p['objectness_score'])
                    return ok
                cand = [j for j in range(num_p) if eligible(j)]
                if mining == MAX_NEGATIVE:
                    num_pos = sum(1 for j in range(num_p) if mi[j] > -1)
                    num_sel = min(int(np.float32(num_pos) * np.float32(p['neg_pos_ratio'])), len(cand))
                else:
                    num_sel = min(p['sample_size'], len(cand))
                if p['nms_threshold'] is not None and p['nms_threshold'] > 0:
                    if p['use_prior_for_nms']:
                        bxs = [plain[j] for j in cand]
                    else:
                        bxs = [decode(plain[j], pri[1, j], loc_r[i, j, 0], code, evit) for j in cand]
                    kept = nms(bxs, [losses[j] for j in cand], p['nms_threshold'], p['nms_top_k'])
                    sel = set(cand[k] for k in kept[:num_sel])
                else:
                    sel = set(stable_desc(losses, cand)[:num_sel])
                for j in range(num_p):
                    if mi[j] > -1:
                        if mining == HARD_EXAMPLE and j not in sel:
                            mi[j] = -1
                    elif mi[j] == -1 and j in sel:
                        negs[i].append(j)
    num_matches = sum(1 for i in range(n) for key in matches[i] for v in matches[i][key] if v > -1)
    norm = _normalizer(p['normalization'], n, num_p, num_matches)
    dloc = np.zeros_like(loc_r)
    loc_loss = 0.0
    for i in range(n):
        for key in sorted(matches[i]):
            for j in range(num_p):
                if matches[i][key][j] > -1:
                    pred, enc, slot = encoded(i, key, j, anchors[i])
                    d = [pred[k] - enc[k] for k in range(4)]
                    loc_loss += _loc_loss_row(d, p['loc_loss_type'])
                    for k in range(4):
                        if p['loc_loss_type'] == SMOOTH_L1:
                            g = d[k] if abs(d[k]) < 1 else float(np.sign(d[k]))
                        else:
                            g = d[k]
                        dloc[i, j, slot, k] = p['loc_weight'] * g / norm
    dconf = np.zeros_like(conf_r)
    conf_loss = 0.0
    agn = p['map_object_to_agnostic']

    def row_grad(x, target_label=None, target=None):
        if p['conf_loss_type'] == SOFTMAX:
            e = np.exp(x - x.max())
            prob = e / e.sum()
            g = prob.copy()
            g[target_label] -= 1
            return -math.log(max(prob[target_label], FLT_MIN)), g
        s = 1 / (1 + np.exp(-x))
        loss = 0.0
        for c, v in enumerate(x):
            loss -= v * (target[c] - (v >= 0)) - math.log(1 + math.exp(v - 2 * v * (v >= 0)))
        return loss, s - target

    if mining != NONE:
        for i in range(n):
            if i not in gts:
                continue
            rows = []
            for key in sorted(matches[i]):
                for j in range(num_p):
                    if matches[i][key][j] > -1:
                        lab = bg + 1 if agn else gts[i][matches[i][key][j]][0]
                        rows.append((j, lab, True))
            rows += [(j, bg, False) for j in negs[i]]
            for j, lab, pos in rows:
                x = conf_r[i, j]
                if p['conf_loss_type'] == SOFTMAX:
                    l, g = row_grad(x, target_label=lab)
                else:
                    t = np.full(C, float(bg))
                    if pos:
                        t[lab] = 1
                    elif 0 <= bg < C:
                        t[bg] = 1
                    l, g = row_grad(x, target=t)
                conf_loss += l
                dconf[i, j] = g / norm
    else:
        if p['conf_loss_type'] == SOFTMAX:
            labels = np.full((n, num_p), bg, np.int64)
            for i in range(n):
                if i in gts:
                    for key in sorted(matches[i]):
                        for j in range(num_p):
                            if matches[i][key][j] > -1:
                                labels[i, j] = bg + 1 if agn else gts[i][matches[i][key][j]][0]
            for i in range(n):
                for j in range(num_p):
                    l, g = row_grad(conf_r[i, j], target_label=labels[i, j])
                    conf_loss += l
                    dconf[i, j] = g / norm
        else:
            t = np.full(n * num_p * C, float(bg))
            for i in range(n):
                if i in gts:
                    for key in sorted(matches[i]):
                        for j in range(num_p):
                            if matches[i][key][j] > -1:
                                lab = bg + 1 if agn else gts[i][matches[i][key][j]][0]
                                t[i * num_p + j * C + lab] = 1
            t = t.reshape(n, num_p, C)
            for i in range(n):
                for j in range(num_p):
                    l, g = row_grad(conf_r[i, j], target=t[i, j])
                    conf_loss += l
                    dconf[i, j] = g / norm
    loss = 0.0
    if propagate[0]:
        loss += p['loc_weight'] * loc_loss / norm
    if propagate[1]:
        loss += conf_loss / norm
    return loss, dloc.reshape(np.shape(loc)), dconf.reshape(np.shape(conf)), num_matches


# ---- DetectionOutput ------------------------------------------------------------------------

def detection_output(loc, conf, priors, params, arm_conf=None, arm_loc=None):
    p = dict(dict(share_location=True, background_label_id=0, code_type=CORNER,
                  variance_encoded_in_target=False, keep_top_k=-1, confidence_threshold=None,
                  nms_threshold=0.3, eta=1.0, top_k=-1, objectness_score=0.01), **params)
    n, pri, num_p, C, share, lc, bg = head_inputs(loc, priors, p)
    thr = np.float32(-np.finfo(np.float32).max if p['confidence_threshold'] is None
                     else p['confidence_threshold'])                  # Caffe's float threshold
    loc_r = np.asarray(loc, np.float64).reshape(n, num_p, lc, 4)
    conf_r = np.asarray(conf, np.float64).reshape(n, num_p, C).astype(np.float32)
    rows = []
    for i in range(n):
        scores = conf_r[i].copy()
        if arm_conf is not None:
            a = np.asarray(arm_conf).reshape(n, num_p, 2)
            for j in range(num_p):
                if a[i, j, 1] < np.float32(p['objectness_score']):
                    scores[j] = 0
                    scores[j, 0] = 1
        anchors = refined_anchors(pri, arm_loc, i, p['code_type'],
                                  p['variance_encoded_in_target'])
        decoded = {}
        for c in range(lc):
            lab = -1 if share else c
            if lab == bg:
                continue
            decoded[lab] = [decode(anchors[j], pri[1, j], loc_r[i, j, c], p['code_type'],
                                   p['variance_encoded_in_target']) for j in range(num_p)]
        indices = {}
        for c in range(C):
            if c == bg:
                continue
            bx = decoded[-1 if share else c]
            indices[c] = nms_fast(bx, list(scores[:, c]), thr, p['nms_threshold'],
                                  p['eta'], p['top_k'])
        num_det = sum(len(v) for v in indices.values())
        if p['keep_top_k'] > -1 and num_det > p['keep_top_k']:
            pairs = [(float(scores[j, c]), c, j) for c in sorted(indices) for j in indices[c]]
            order = sorted(range(len(pairs)), key=lambda k: -pairs[k][0])[:p['keep_top_k']]
            new = {}
            for k in order:
                new.setdefault(pairs[k][1], []).append(pairs[k][2])
            indices = new
        for c in sorted(indices):
            bx = decoded[-1 if share else c]
            for j in indices[c]:
                rows.append([i, c, float(scores[j, c])] + list(bx[j]))
    if not rows:
        return np.array([[i] + [-1] * 6 for i in range(n)], np.float64)
    return np.array(rows, np.float64)


# ---- DetectionEvaluate ----------------------------------------------------------------------

def detection_evaluate(det, label, num_classes, bg=0, overlap_threshold=0.5,
                       evaluate_difficult_gt=True):
    """Rows of Caffe's DetectionEvaluate with normalised boxes (no name-size file)."""
    det = np.asarray(det, np.float64).reshape(-1, 7)
    gts = ground_truth(label, num_classes, bg, True, stop_at_invalid=True)
    out = []
    for c in range(num_classes):
        if c == bg:
            continue
        count = sum(1 for g in gts.values() for lab, _, d in g
                    if lab == c and (evaluate_difficult_gt or not d))
        out.append([-1, c, count, -1, -1])
    dets = {}
    for row in det:
        if int(row[0]) == -1:
            continue
        dets.setdefault(int(row[0]), {}).setdefault(int(row[1]), []).append(
            (float(np.float32(row[2])), list(row[3:7])))
    for img in sorted(dets):
        for lab in sorted(dets[img]):
            if lab == -1:
                continue
            boxes = dets[img][lab]
            gl = [(b, d) for l, b, d in gts.get(img, []) if l == lab]
            if not gl:
                out += [[img, lab, s, 0, 1] for s, _ in boxes]
                continue
            visited = [False] * len(gl)
            for s, b in sorted(boxes, key=lambda t: -t[0]):
                best, jmax = -1.0, -1
                for j, (g, _) in enumerate(gl):
                    o = jaccard(b, g)
                    if o > best:
                        best, jmax = o, j
                if best >= overlap_threshold:
                    if evaluate_difficult_gt or not gl[jmax][1]:
                        if not visited[jmax]:
                            out.append([img, lab, s, 1, 0])
                            visited[jmax] = True
                        else:
                            out.append([img, lab, s, 0, 1])
                    else:
                        out.append([img, lab, s, 0, 0])
                else:
                    out.append([img, lab, s, 0, 1])
    return np.array(out, np.float64)
