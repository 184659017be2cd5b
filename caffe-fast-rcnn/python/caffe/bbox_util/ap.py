"""Average precision of one class from scored true/false positives (Caffe's ComputeAP).

Three conventions, as SSD's solver offers them through `ap_version`:
  "11point"      VOC2007: mean over recall 0, 0.1, ..., 1 of the best precision at that
                 recall or above.
  "MaxIntegral"  VOC2012 / ILSVRC: area under the precision envelope (precision made
                 non-increasing from the right).
  "Integral"     area under the raw precision/recall steps.
Arithmetic is float32 and sums run in Caffe's order, so results match its to the bit.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

_EPS = np.float32(1e-6)


def _ordered_sum(terms: np.ndarray) -> np.float32:
    """Sum float32 terms one after another, first to last (not pairwise)."""
    if terms.size == 0:
        return np.float32(0)
    return np.cumsum(terms.astype(np.float32), dtype=np.float32)[-1]


def _eleven_point(prec: np.ndarray, rec: np.ndarray) -> float:
    # Best precision at recall >= t for t = j / 10 (rec is non-decreasing, so a suffix).
    best = np.maximum.accumulate(prec[::-1])[::-1]
    max_precs = np.zeros(11, np.float32)
    for j in range(11):            # eleven recall points, not a loop over detections
        first = int(np.searchsorted(rec.astype(np.float64), j / 10.0, side='left'))
        if first < rec.size:
            max_precs[j] = best[first]
    return float(_ordered_sum((max_precs / np.float32(11))[::-1]))


def _max_integral(prec: np.ndarray, rec: np.ndarray) -> float:
    envelope = np.maximum.accumulate(prec[::-1])[::-1]     # cur_prec at each i
    step = np.abs(rec[1:] - rec[:-1])                      # |cur_rec - rec[i]|, cur_rec = rec[i+1]
    terms = np.where(step > _EPS, envelope[:-1] * step, np.float32(0))
    ap = _ordered_sum(terms[::-1])                         # Caffe walks from the end
    return float(np.float32(ap + np.float32(rec[0] * envelope[0])))


def _integral(prec: np.ndarray, rec: np.ndarray) -> float:
    step = np.abs(rec - np.concatenate(([np.float32(0)], rec[:-1])).astype(np.float32))
    terms = np.where(step > _EPS, prec * step, np.float32(0))
    return float(_ordered_sum(terms))


AP_VERSIONS: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    '11point': _eleven_point, 'MaxIntegral': _max_integral, 'Integral': _integral}


def compute_ap(tp: Sequence[Tuple[float, int]], num_pos: int, fp: Sequence[Tuple[float, int]],
               ap_version: str) -> Tuple[np.ndarray, np.ndarray, float]:
    """Caffe's ComputeAP: (precision, recall, ap) from (score, is_tp) and (score, is_fp)
    pairs of one class's detections and its number of positives.

    Detections are ranked by descending score (ties keep their order). No detections or
    no positives give ap 0 and empty curves.
    """
    if ap_version not in AP_VERSIONS:
        raise ValueError('Unknown ap_version: %s (choose from %s)'
                         % (ap_version, ', '.join(sorted(AP_VERSIONS))))
    if len(tp) != len(fp):
        raise ValueError('tp must have same size as fp (%d vs %d)' % (len(tp), len(fp)))
    tp_arr = np.asarray(tp, dtype=np.float64).reshape(-1, 2)
    fp_arr = np.asarray(fp, dtype=np.float64).reshape(-1, 2)
    if tp_arr.shape[0] and (np.abs(tp_arr[:, 0] - fp_arr[:, 0]) > 1e-6).any():
        raise ValueError('tp and fp must list the same detections (scores differ)')
    if tp_arr.shape[0] and (tp_arr[:, 1] != 1 - fp_arr[:, 1]).any():
        raise ValueError('each detection must be either a true or a false positive')
    empty = np.zeros(0, np.float32)
    if tp_arr.shape[0] == 0 or num_pos == 0:
        return empty, empty, 0.0
    scores = tp_arr[:, 0].astype(np.float32)
    order = np.argsort(-scores, kind='stable')
    tp_cum = np.cumsum(tp_arr[order, 1].astype(np.int64))
    fp_cum = np.cumsum(fp_arr[order, 1].astype(np.int64))
    if (tp_cum > num_pos).any():
        raise ValueError('more true positives (%d) than positives (%d)'
                         % (int(tp_cum[-1]), num_pos))
    with np.errstate(invalid='ignore', divide='ignore'):
        prec = tp_cum.astype(np.float32) / (tp_cum + fp_cum).astype(np.float32)
    rec = tp_cum.astype(np.float32) / np.float32(num_pos)
    return prec, rec, AP_VERSIONS[ap_version](prec, rec)
