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
    """Collects DetectionEvaluate rows of a test pass, output by output.

    The detection rows of each output are kept as arrays (label, score, tp, fp) in arrival
    order, the order Caffe pushes them in (compute_ap's ranking keeps it among equal
    scores); `true_pos` / `false_pos` show them as Caffe's per-label (score, flag) lists.
    """

    def __init__(self) -> None:
        self.num_pos: Dict[int, Dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._detections: Dict[int, List[np.ndarray]] = {}   # output -> (K, 4) chunks

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
        positives = item == -1                    # one row per label and iteration
        for lab, n in zip(label[positives].tolist(),
                          rows[positives, 2].astype(np.int64).tolist()):
            self.num_pos[output][lab] += n
        tp = rows[:, 3].astype(np.int64)
        fp = rows[:, 4].astype(np.int64)
        used = ~positives & ((tp != 0) | (fp != 0))   # tp = fp = 0: a difficult box's
        if used.any():
            self._detections.setdefault(output, []).append(np.column_stack((
                label[used], rows[used, 2].astype(np.float32), tp[used], fp[used])))

    def _by_label(self, output: int) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
        """label -> ((score, tp) rows, (score, fp) rows) of an output, in arrival order."""
        dets = np.concatenate(self._detections[output])
        labels = dets[:, 0].astype(np.int64)
        order = np.argsort(labels, kind='stable')
        found, starts = np.unique(labels[order], return_index=True)
        out = {}
        for lab, part in zip(found.tolist(), np.split(order, starts[1:])):
            d = dets[part]
            out[lab] = (d[:, [1, 2]], d[:, [1, 3]])
        return out

    def _lists(self, column: int) -> Dict[int, Dict[int, List[Tuple[float, int]]]]:
        return {i: {lab: [(s, int(f)) for s, f in pairs[column].tolist()]
                    for lab, pairs in self._by_label(i).items()}
                for i in self._detections}

    @property
    def true_pos(self) -> Dict[int, Dict[int, List[Tuple[float, int]]]]:
        """output -> label -> [(score, tp)] (Caffe's all_true_pos)."""
        return self._lists(0)

    @property
    def false_pos(self) -> Dict[int, Dict[int, List[Tuple[float, int]]]]:
        """output -> label -> [(score, fp)] (Caffe's all_false_pos)."""
        return self._lists(1)

    def results(self, ap_version: str, warn=None) -> List[Tuple[int, float, Dict[int, float]]]:
        """(output, mAP, {label: AP}) for outputs 0 .. (number with detections) - 1.

        As Caffe, outputs are numbered from 0 up to the count of outputs that had any
        detection; a missing one among those is an error. A label with positives but no
        detections is warned about and scores 0.
        """
        out = []
        for i in range(len(self._detections)):
            if i not in self._detections:
                raise DetectionEvalError('Missing output_blob true_pos: %d' % i)
            if i not in self.num_pos:
                raise DetectionEvalError('Missing output_blob num_pos: %d' % i)
            detections = self._by_label(i)
            aps: Dict[int, float] = {}
            total = np.float32(0)
            for label in sorted(self.num_pos[i]):
                if label not in detections:
                    if warn is not None:
                        warn('Missing true_pos for label: %d' % label)
                    continue
                tp, fp = detections[label]
                _, _, ap = compute_ap(tp, self.num_pos[i][label], fp, ap_version)
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
