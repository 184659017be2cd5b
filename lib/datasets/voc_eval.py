"""PASCAL VOC detection evaluation (average precision per class), in Python.

Semantics are those of py-faster-rcnn's ``voc_eval`` (itself matching the VOC
devkit): detections are visited by descending confidence; each is matched to
the ground-truth box of the same image it overlaps most (IoU with +1 areas);
it is a true positive if that IoU is > ``ovthresh``, the box is not
'difficult' and was not matched before, a false positive if the IoU is too low
or the box was already taken, and ignored if the box is 'difficult'.

The implementation is vectorised: IoUs of all detections are computed at once
against the (padded) ground truth of their images, and "first detection to
claim a box" is found with one ``np.unique``.  That is exactly the sequential
rule, because a detection's matched box never depends on earlier matches.

Changes from the original, all in robustness:

* the annotation cache is JSON (no pickle), one file per image-set file and
  annotation folder, and an annotation is parsed again when the image list gains
  it or its XML file was edited since (size, mtime) -- the original's single
  ``annots.pkl`` went stale when the image set or an annotation changed;
* an empty detection file gives AP 0 instead of a crash; a detection whose
  image is not in the image set raises an error naming both files;
* detections with equal confidence keep file order (the original's unstable
  sort made their order, and thus the AP, platform dependent).
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Tuple

import numpy as np

from caffe import atomic_files
from datasets.ds_utils import AnnotationError

# Detections are matched in blocks of this many, to bound temporary memory.
_DET_BLOCK = 1 << 16


def _text(node: ET.Element, tag: str, filename: str, default: Any = None) -> Any:
    child = node.find(tag)
    if child is None or child.text is None:
        if default is not None:
            return default
        raise AnnotationError('{}: object lacks <{}>'.format(filename, tag))
    return child.text.strip()


def parse_rec(filename: str) -> List[Dict[str, Any]]:
    """Parse the objects of a PASCAL VOC annotation XML file.

    Returns one dict per object with 'name', 'pose', 'truncated', 'difficult'
    and 'bbox' ([xmin, ymin, xmax, ymax] exactly as written, 1-based).
    Missing <pose>/<truncated>/<difficult> tags (common in home-made data)
    default to 'Unspecified'/0/0.
    """
    try:
        tree = ET.parse(filename)
    except ET.ParseError as exc:
        raise AnnotationError('{}: not a valid XML file ({})'.format(filename, exc)) from None
    except OSError as exc:
        raise FileNotFoundError('annotation file {} cannot be read ({})'.format(
            filename, exc)) from None
    objects = []
    for ix, obj in enumerate(tree.findall('object')):
        where = '{} (object #{})'.format(filename, ix)
        bbox = obj.find('bndbox')
        if bbox is None:
            raise AnnotationError('{}: object has no <bndbox>'.format(where))
        try:
            coords = [float(_text(bbox, t, where)) for t in ('xmin', 'ymin', 'xmax', 'ymax')]
            rec = {'name': _text(obj, 'name', where),
                   'pose': _text(obj, 'pose', where, 'Unspecified'),
                   'truncated': int(float(_text(obj, 'truncated', where, '0'))),
                   'difficult': int(float(_text(obj, 'difficult', where, '0')))}
        except ValueError as exc:
            raise AnnotationError('{}: bad number ({})'.format(where, exc)) from None
        # integers stay ints, as the original parsed them
        rec['bbox'] = [int(c) if c.is_integer() else c for c in coords]
        objects.append(rec)
    return objects


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from a recall/precision curve.

    ``use_07_metric``: VOC2007's 11-point interpolated AP (mean of the best
    precision at recall >= 0, 0.1, ..., 1).  Otherwise the area under the
    monotone precision envelope (VOC2010 and later).
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ts = np.arange(0., 1.1, 0.1)  # same 11 floating-point thresholds as the devkit
        reached = rec[np.newaxis, :] >= ts[:, np.newaxis]
        best = np.where(reached, prec[np.newaxis, :], -np.inf).max(axis=1, initial=-np.inf)
        p = np.where(reached.any(axis=1), best, 0.0)
        # cumulative sum adds left to right like the reference loop (bit-identical)
        return float(np.cumsum(p / 11.)[-1])
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    # precision envelope: best precision at any recall >= this one
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    # sum (delta recall) * precision where recall changes
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _stamp(path: str) -> Any:
    """[size, mtime_ns] of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_annotations(annopath: str, imagesetfile: str, imagenames: List[str],
                      cachedir: str) -> Dict[str, List[Dict[str, Any]]]:
    """Parse (or read from the JSON cache) the annotations of ``imagenames``.

    The cache keeps each XML file's size and mtime with its objects; an annotation edited
    since is parsed again (and the cache rewritten), so evaluation never scores against
    boxes that are no longer in the file. An entry whose XML is gone is kept as cached.
    """
    os.makedirs(cachedir, exist_ok=True)
    key = hashlib.sha1((os.path.abspath(imagesetfile) + '\0' + annopath)
                       .encode('utf-8')).hexdigest()[:12]
    base = os.path.splitext(os.path.basename(imagesetfile))[0]
    cachefile = os.path.join(cachedir, 'annots_{}_{}.json'.format(base, key))
    recs: Dict[str, List[Dict[str, Any]]] = {}
    stamps: Dict[str, Any] = {}
    if os.path.isfile(cachefile):
        try:
            with open(cachefile, 'r', encoding='utf-8') as f:
                cached = json.load(f)
            if cached.get('annopath') == annopath and isinstance(cached['recs'], dict):
                recs = cached['recs']
                stamps = cached.get('stamps') or {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            recs, stamps = {}, {}  # unreadable cache: rebuild it
    todo = []
    for name in dict.fromkeys(imagenames):
        now = _stamp(annopath.format(name))
        if name not in recs or (now is not None and stamps.get(name) != now):
            todo.append((name, now))
    if not todo:
        return recs
    if recs:
        print('Reading {:d} new or edited annotation(s) (cache {:s})'.format(len(todo), cachefile))
    for i, (name, now) in enumerate(todo):
        recs[name] = parse_rec(annopath.format(name))
        stamps[name] = now
        if i % 100 == 0:
            print('Reading annotation for {:d}/{:d}'.format(i + 1, len(todo)))
    print('Saving cached annotations to {:s}'.format(cachefile))
    atomic_files.write_text(cachefile, json.dumps({'annopath': annopath, 'recs': recs,
                                                   'stamps': stamps}))
    return recs


def _read_detections(detfile: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read '<image id> <score> <x1> <y1> <x2> <y2>' lines -> ids, scores, boxes."""
    with open(detfile, 'r', encoding='utf-8') as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    tokens = ' '.join(lines).split()
    if len(tokens) != 6 * len(lines):
        bad = next(i for i, ln in enumerate(lines) if len(ln.split()) != 6)
        raise ValueError('{}: line {} does not have 6 fields "<image> <score> <x1> <y1> '
                         '<x2> <y2>": {!r}'.format(detfile, bad + 1, lines[bad]))
    if not lines:
        return np.zeros(0, dtype=str), np.zeros(0), np.zeros((0, 4))
    table = np.array(tokens, dtype=object).reshape(-1, 6)
    try:
        numbers = table[:, 1:].astype(np.float64)
    except ValueError as exc:
        raise ValueError('{}: non-numeric score or coordinate ({})'.format(
            detfile, exc)) from None
    return table[:, 0].astype(str), numbers[:, 0], numbers[:, 1:]


def voc_eval(detpath: str, annopath: str, imagesetfile: str, classname: str,
             cachedir: str, ovthresh: float = 0.5, use_07_metric: bool = False
             ) -> Tuple[np.ndarray, np.ndarray, float]:
    """Evaluate one class's detections; return (recall, precision, AP).

    detpath: ``detpath.format(classname)`` is the detection results file.
    annopath: ``annopath.format(imagename)`` is an image's annotation XML.
    imagesetfile: text file with one image name per line.
    cachedir: folder for the parsed-annotation cache.
    ovthresh: IoU a detection must exceed to match a box.
    use_07_metric: VOC2007 11-point AP instead of the area under the curve.
    """
    with open(imagesetfile, 'r', encoding='utf-8') as f:
        imagenames = [x.strip() for x in f.read().splitlines() if x.strip()]
    recs = _load_annotations(annopath, imagesetfile, imagenames, cachedir)

    # Ground truth of this class, padded to (num_images, G, 4)
    unique_names = list(dict.fromkeys(imagenames))
    per_image = [[o for o in recs[n] if o['name'] == classname] for n in unique_names]
    counts = np.array([len(r) for r in per_image], dtype=np.int64)
    G = int(counts.max()) if counts.size else 0
    gt = np.zeros((len(unique_names), max(G, 1), 4), dtype=np.float64)
    difficult = np.zeros((len(unique_names), max(G, 1)), dtype=bool)
    present = np.arange(max(G, 1))[np.newaxis, :] < counts[:, np.newaxis]
    if G:
        flat = [o for r in per_image for o in r]
        gt[present] = np.array([o['bbox'] for o in flat], dtype=np.float64)
        difficult[present] = np.array([bool(o['difficult']) for o in flat])
    # npos counts every listed image (duplicates in the list count twice, as before)
    name_to_row = {n: k for k, n in enumerate(unique_names)}
    rows_of_list = np.array([name_to_row[n] for n in imagenames], dtype=np.int64)
    npos = int((present & ~difficult)[rows_of_list].sum()) if len(imagenames) else 0

    detfile = detpath.format(classname)
    image_ids, confidence, BB = _read_detections(detfile)
    nd = image_ids.shape[0]
    sorted_ind = np.argsort(-confidence, kind='stable')
    BB = BB[sorted_ind, :]
    image_ids = image_ids[sorted_ind]

    tp = np.zeros(nd)
    fp = np.zeros(nd)
    if nd:
        if not unique_names:
            raise ValueError('{}: has detections but the image set {} is empty'.format(
                detfile, imagesetfile))
        names_arr = np.array(unique_names, dtype=str)
        order = np.argsort(names_arr)
        sorted_names = names_arr[order]
        pos = np.minimum(np.searchsorted(sorted_names, image_ids), len(order) - 1)
        found = sorted_names[pos] == image_ids
        if not np.all(found):
            missing = image_ids[~found][0]
            raise ValueError('{}: detection for image {!r}, which is not in the image set '
                             '{}'.format(detfile, str(missing), imagesetfile))
        det_rows = order[pos]

        ovmax = np.full(nd, -np.inf)
        jmax = np.zeros(nd, dtype=np.int64)
        for s in range(0, nd, _DET_BLOCK):
            e = min(nd, s + _DET_BLOCK)
            bb = BB[s:e, np.newaxis, :]           # (b, 1, 4)
            g = gt[det_rows[s:e]]                 # (b, G, 4)
            ixmin = np.maximum(g[..., 0], bb[..., 0])
            iymin = np.maximum(g[..., 1], bb[..., 1])
            ixmax = np.minimum(g[..., 2], bb[..., 2])
            iymax = np.minimum(g[..., 3], bb[..., 3])
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih
            uni = ((bb[..., 2] - bb[..., 0] + 1.) * (bb[..., 3] - bb[..., 1] + 1.) +
                   (g[..., 2] - g[..., 0] + 1.) * (g[..., 3] - g[..., 1] + 1.) - inters)
            with np.errstate(divide='ignore', invalid='ignore'):
                overlaps = inters / uni
            overlaps = np.where(present[det_rows[s:e]], overlaps, -np.inf)
            ovmax[s:e] = overlaps.max(axis=1)
            jmax[s:e] = overlaps.argmax(axis=1)

        hit = ovmax > ovthresh
        is_difficult = difficult[det_rows, jmax]
        candidates = np.flatnonzero(hit & ~is_difficult)
        gt_key = det_rows[candidates] * max(G, 1) + jmax[candidates]
        _, first = np.unique(gt_key, return_index=True)
        tp[candidates[first]] = 1.
        fp[candidates] = 1.
        fp[candidates[first]] = 0.
        fp[~hit] = 1.

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    with np.errstate(divide='ignore', invalid='ignore'):
        rec = tp / float(npos)
    # avoid divide by zero in case the first detection matches a difficult box
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)
    return rec, prec, ap
