"""Box utilities shared by the data sets: de-duplication, format changes, checks.

All functions take (N, 4) arrays of ``[x1, y1, x2, y2]`` boxes in inclusive
pixel indices (width = x2 - x1 + 1) and are vectorised.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np


class AnnotationError(ValueError):
    """A data set file holds an invalid annotation; the message names the file."""


def _boxes(name: str, boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError('{}: expected an (N, 4) array of boxes, got shape {}'.format(
            name, boxes.shape))
    return boxes


def unique_boxes(boxes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Return the sorted indices of the first occurrence of each distinct box.

    Boxes are compared after ``round(boxes * scale)``.  The original hashed each
    box to ``x1 + 1e3*y1 + 1e6*x2 + 1e9*y2``, which lets different boxes collide
    once a coordinate reaches 1000; comparing whole rows has no collisions and
    gives the same answer whenever the hash did not collide.
    """
    boxes = _boxes('unique_boxes', boxes)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    # "+ 0.0" turns -0.0 into 0.0 so the two compare as the same row
    rounded = np.round(boxes.astype(np.float64) * scale) + 0.0
    _, index = np.unique(rounded, axis=0, return_index=True)
    return np.sort(index)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Convert [x y w h] boxes to [x1 y1 x2 y2] (inclusive corners)."""
    boxes = _boxes('xywh_to_xyxy', boxes)
    return np.hstack((boxes[:, 0:2], boxes[:, 0:2] + boxes[:, 2:4] - 1))


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Convert [x1 y1 x2 y2] boxes (inclusive corners) to [x y w h]."""
    boxes = _boxes('xyxy_to_xywh', boxes)
    return np.hstack((boxes[:, 0:2], boxes[:, 2:4] - boxes[:, 0:2] + 1))


def box_problems(boxes: np.ndarray, width: float = 0, height: float = 0) -> List[str]:
    """Return one message per row: '' for a valid box, else what is wrong with it.

    A box is valid when its coordinates are finite, ``0 <= x1 <= x2`` and
    ``0 <= y1 <= y2``, and -- for a known (positive) image size --
    ``x2 < width`` and ``y2 < height``.  The checks are vectorised; strings are
    built only for invalid rows.
    """
    boxes = _boxes('box_problems', boxes).astype(np.float64, copy=False)
    x1, y1, x2, y2 = boxes.T
    checks = [
        (~np.isfinite(boxes).all(axis=1), 'a coordinate is not a finite number'),
        (x1 < 0, 'x1 < 0'),
        (y1 < 0, 'y1 < 0'),
        (x2 < x1, 'x2 < x1'),
        (y2 < y1, 'y2 < y1'),
    ]
    if width and width > 0:
        checks.append((x2 >= width, 'x2 >= image width {}'.format(width)))
    if height and height > 0:
        checks.append((y2 >= height, 'y2 >= image height {}'.format(height)))
    bad_any = np.zeros(boxes.shape[0], dtype=bool)
    for mask, _ in checks:
        bad_any |= mask
    out = [''] * boxes.shape[0]
    for i in np.flatnonzero(bad_any):
        out[i] = ', '.join(msg for mask, msg in checks if mask[i])
    return out


def validate_boxes(boxes: np.ndarray, width: float = 0, height: float = 0,
                   where: str = 'boxes') -> None:
    """Raise :class:`AnnotationError` unless every box is valid (see box_problems).

    ``width``/``height`` of 0 mean "unknown" and skip the right/bottom checks
    (the original's defaults of 0 made any non-empty call fail).  ``where``
    names the data (file, image) in the message.
    """
    problems = box_problems(boxes, width, height)
    bad = [i for i, p in enumerate(problems) if p]
    if bad:
        boxes = np.asarray(boxes)
        shown = '; '.join('box {} {}: {}'.format(i, boxes[i].tolist(), problems[i])
                          for i in bad[:5])
        more = '' if len(bad) <= 5 else ' (and {} more)'.format(len(bad) - 5)
        raise AnnotationError('{}: {} invalid box(es): {}{}'.format(
            where, len(bad), shown, more))


def filter_small_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Return the indices of boxes with x2 - x1 >= min_size and y2 - y1 > min_size.

    (The asymmetric >= / > and the missing +1 are the original's, kept so the
    same proposals survive.)
    """
    boxes = _boxes('filter_small_boxes', boxes)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.where((w >= min_size) & (h > min_size))[0]


def read_class_list(path: str) -> List[str]:
    """Read class names, one per line ('#' comments and blank lines ignored)."""
    names: List[str] = []
    with open(path, 'r', encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                names.append(line)
    if not names:
        raise AnnotationError('{}: no class names found (expected one per line)'.format(path))
    return names


def with_background(classes: Sequence[str], where: str) -> tuple:
    """Return ``classes`` as a tuple starting with '__background__', checked unique."""
    names = [str(c).strip() for c in classes]
    if not names or any(not n for n in names):
        raise AnnotationError('{}: class names must be non-empty strings, got {!r}'.format(
            where, list(classes)))
    if names[0] != '__background__':
        if '__background__' in names:
            raise AnnotationError("{}: '__background__' must come first, got {!r}".format(
                where, names))
        names = ['__background__'] + names
    lowered = [n.lower() for n in names]
    dups = sorted({n for n in lowered if lowered.count(n) > 1})
    if dups:
        raise AnnotationError('{}: duplicate class names (case-insensitive): {}'.format(
            where, dups))
    return tuple(names)
