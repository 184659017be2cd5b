"""mAP over a test pass from DetectionEvaluate rows (SSD's Solver::TestDetection).

Every test iteration's outputs are (1, 1, R, 5) blobs of DetectionEvaluate rows. Rows
with image -1 add to a label's number of positives; other rows are (score, tp, fp) of
one detection (rows with tp = fp = 0, detections of difficult boxes, are skipped). At the
end of the pass each label's AP is computed with `ap_version`, and the mean over all
labels that have a positives row (those without detections count as 0) is the output's
value, logged as `Test net output #i: <blob> = <mAP>`.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..bbox_util import compute_ap
from ._numbers import f32


class DetectionEvalError(ValueError):
    """Rows that are not DetectionEvaluate's (a test net output not 5 wide)."""


class DetectionAccumulator:
    """Collects DetectionEvaluate rows of a test pass, output by output."""

    def __init__(self) -> None:
        self.true_pos: Dict[int, Dict[int, List[Tuple[float, int]]]] = defaultdict(
            lambda: defaultdict(list))
        self.false_pos: Dict[int, Dict[int, List[Tuple[float, int]]]] = defaultdict(
            lambda: defaultdict(list))
        self.num_pos: Dict[int, Dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, output: int, rows: np.ndarray, name: str = '') -> None:
        """Add the rows (R, 5) of output number `output` from one test iteration."""
        rows = np.asarray(rows)
        if rows.ndim < 1 or rows.shape[-1] != 5:
            raise DetectionEvalError('eval_type "detection": test net output #%d %r has shape '
                                     '%s; every output must be DetectionEvaluate rows (width 5)'
                                     % (output, name, rows.shape))
        rows = rows.reshape(-1, 5)
        item = rows[:, 0].astype(np.int64)
        label = rows[:, 1].astype(np.int64)
        for lab, n in zip(label[item == -1].tolist(),
                          rows[item == -1, 2].astype(np.int64).tolist()):
            self.num_pos[output][lab] += n
        det = item != -1
        score = rows[det, 2].astype(np.float32)
        tp = rows[det, 3].astype(np.int64)
        fp = rows[det, 4].astype(np.int64)
        used = (tp != 0) | (fp != 0)
        for lab, s, t, f in zip(label[det][used].tolist(), score[used].tolist(),
                                tp[used].tolist(), fp[used].tolist()):
            self.true_pos[output][lab].append((s, t))
            self.false_pos[output][lab].append((s, f))

    def results(self, ap_version: str, warn=None) -> List[Tuple[int, float, Dict[int, float]]]:
        """(output, mAP, {label: AP}) for outputs 0 .. (number with detections) - 1.

        As Caffe, outputs are numbered from 0 up to the count of outputs that had any
        detection; a missing one among those is an error. A label with positives but no
        detections is warned about and scores 0.
        """
        out = []
        for i in range(len(self.true_pos)):
            if i not in self.true_pos:
                raise DetectionEvalError('Missing output_blob true_pos: %d' % i)
            if i not in self.num_pos:
                raise DetectionEvalError('Missing output_blob num_pos: %d' % i)
            aps: Dict[int, float] = {}
            total = np.float32(0)
            for label in sorted(self.num_pos[i]):
                if label not in self.true_pos[i]:
                    if warn is not None:
                        warn('Missing true_pos for label: %d' % label)
                    continue
                _, _, ap = compute_ap(self.true_pos[i][label], self.num_pos[i][label],
                                      self.false_pos[i][label], ap_version)
                aps[label] = ap
                total = np.float32(total + np.float32(ap))
            m = float(f32(total / np.float32(len(self.num_pos[i])))) if self.num_pos[i] else \
                float('nan')
            out.append((i, m, aps))
        return out


def detection_map(batches: List[List[np.ndarray]], ap_version: str = 'Integral'
                  ) -> Optional[float]:
    """mAP of the first output over test iterations (each a list of per-output row
    arrays); None if there were no detections."""
    acc = DetectionAccumulator()
    for outputs in batches:
        for j, rows in enumerate(outputs):
            acc.add(j, rows)
    res = acc.results(ap_version)
    return res[0][1] if res else None
