"""The box side of SSD's annotated-image augmentation (Caffe's util/sampler.cpp and the
normalised-box helpers of util/bbox_util.cpp that it and the annotated DataTransformer use).

Boxes are rows [xmin, ymin, xmax, ymax] in normalised image coordinates (the image spans
[0, 1] on both axes; a box's width is xmax - xmin). Every function works on whole (N, 4)
arrays at once: the batch samplers draw all their `max_trials` candidate crops in one go and
test them against all objects with one overlap matrix, and the transforms of an image's
annotations are array operations, never a Python loop per box. Overlap and area come from
caffe.bbox_util (the one home of SSD's box maths).

What SSD does, in the words of this module:

* a **Sampler** draws a crop: scale s ~ U[min_scale, max_scale], aspect ratio
  a ~ U[min_aspect_ratio, max_aspect_ratio] clamped to [s^2, 1/s^2] (so the crop fits in the
  image), width s*sqrt(a), height s/sqrt(a), then a top-left corner uniform over the places
  where the crop fits;
* a **SampleConstraint** keeps a candidate when some object satisfies it. Caffe's loop has a
  quirk that is kept: only the first kind of bound given (Jaccard overlap, else sample
  coverage, else object coverage) decides, because an object that passes it marks the
  candidate as found before the later kinds are tested. No bound at all keeps every
  candidate;
* a **BatchSampler** tries `max_trials` candidates and keeps the first `max_sample` (all, if
  max_sample is unset) that satisfy its constraint; `GenerateBatchSamples` concatenates the
  keeps of every batch sampler with `use_original_image`, in order;
* an **EmitConstraint** says whether an object survives a crop: CENTER keeps it when its
  centre lies in the crop (edges included), MIN_OVERLAP when the part of it inside the crop
  is more than `emit_overlap` of its area;
* **ProjectBBox** expresses a box in a crop's coordinates, clipped to [0, 1]; a box that
  misses the crop or is left with no area is dropped.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch

from .bbox_util import bbox_size, jaccard_overlap
from .errors import NetError
from .proto import caffe_pb2

_Resize = caffe_pb2.ResizeParameter
_Emit = caffe_pb2.EmitConstraint


def _area(boxes: np.ndarray) -> np.ndarray:
    """Normalised area of each box (0 for an inverted one), by bbox_util.bbox_size."""
    return bbox_size(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float64))).numpy()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Jaccard overlaps, by bbox_util.jaccard_overlap."""
    return jaccard_overlap(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)),
                           torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))).numpy()


# ---- normalised-box helpers (Caffe's bbox_util) ------------------------------------------------

def clip_bbox(boxes: np.ndarray) -> np.ndarray:
    """Caffe's ClipBBox: every coordinate clamped to [0, 1]."""
    return np.clip(boxes, 0.0, 1.0)


def project_bbox(src: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Caffe's ProjectBBox over many boxes: (boxes in `src`'s coordinates, clipped; keep mask).

    A box is kept when it overlaps `src` with positive extent on both axes and keeps a
    positive area after clipping.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    touches = ((boxes[:, 0] < src[2]) & (boxes[:, 2] > src[0]) &
               (boxes[:, 1] < src[3]) & (boxes[:, 3] > src[1]))
    w, h = src[2] - src[0], src[3] - src[1]
    proj = (boxes - np.array([src[0], src[1], src[0], src[1]])) / np.array([w, h, w, h])
    proj = clip_bbox(proj)
    positive = (proj[:, 2] > proj[:, 0]) & (proj[:, 3] > proj[:, 1])
    return proj, touches & positive


def intersect_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) areas of the intersections of every box of `a` with every box of `b`
    (Caffe's IntersectBBox followed by BBoxSize: disjoint or touching boxes give 0)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = rb - lt
    return np.where((wh > 0).all(axis=-1), wh[..., 0] * wh[..., 1], 0.0)


def bbox_coverage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Caffe's BBoxCoverage: the share of each box of `a` that lies in each box of `b`."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter = intersect_area(a, b)
    area = _area(a)[:, None]
    return np.where(inter > 0, inter / np.where(area > 0, area, 1.0), 0.0)


def meet_emit_constraint(src: np.ndarray, boxes: np.ndarray,
                         emit: caffe_pb2.EmitConstraint) -> np.ndarray:
    """Caffe's MeetEmitConstraint over many boxes: which boxes survive the crop `src`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if emit.emit_type == _Emit.CENTER:
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx >= src[0]) & (cx <= src[2]) & (cy >= src[1]) & (cy <= src[3])
    if emit.emit_type == _Emit.MIN_OVERLAP:
        return bbox_coverage(boxes, src.reshape(1, 4))[:, 0] > emit.emit_overlap
    raise NetError('EmitConstraint: unknown emit_type %d' % emit.emit_type)


# ---- resizing policies (Caffe's im_transforms UpdateBBoxByResizePolicy / InferNewSize) ---------

def infer_new_size(param: caffe_pb2.ResizeParameter, old_w: int, old_h: int) -> Tuple[int, int]:
    """(width, height) of an old_w x old_h image after `param`: the fixed height x width,
    except FIT_SMALL_SIZE, which keeps the aspect ratio and makes the smaller side fit."""
    w, h = int(param.width), int(param.height)
    if param.resize_mode == _Resize.FIT_SMALL_SIZE:
        orig = np.float32(old_w) / np.float32(old_h)
        if orig < np.float32(w) / np.float32(h):
            h = int(np.float32(w) / orig)
        else:
            w = int(orig * np.float32(h))
    return w, h


def update_bbox_by_resize_policy(param: caffe_pb2.ResizeParameter, old_w: int, old_h: int,
                                 boxes: np.ndarray) -> np.ndarray:
    """Where normalised boxes of an old_w x old_h image land after resizing by `param`
    (Caffe's UpdateBBoxByResizePolicy): WARP and FIT_SMALL_SIZE keep them (clipped to the
    image), FIT_LARGE_SIZE_AND_PAD squeezes them into the band between the paddings."""
    new_w, new_h = float(param.width), float(param.height)
    orig_aspect = float(np.float32(old_w) / np.float32(old_h))
    px = boxes * np.array([old_w, old_h, old_w, old_h], dtype=np.float64)
    x0, y0, x1, y1 = px[:, 0], px[:, 1], px[:, 2], px[:, 3]
    mode = param.resize_mode
    if mode == _Resize.FIT_LARGE_SIZE_AND_PAD:
        if orig_aspect > new_w / new_h:
            pad = (new_h - new_w / orig_aspect) / 2
            x0 = np.maximum(0.0, x0 * new_w / old_w)
            x1 = np.minimum(new_w, x1 * new_w / old_w)
            y0 = pad + np.maximum(0.0, y0 * (new_h - 2 * pad) / old_h)
            y1 = pad + np.minimum(new_h, y1 * (new_h - 2 * pad) / old_h)
        else:
            pad = (new_w - orig_aspect * new_h) / 2
            x0 = pad + np.maximum(0.0, x0 * (new_w - 2 * pad) / old_w)
            x1 = pad + np.minimum(new_w, x1 * (new_w - 2 * pad) / old_w)
            y0 = np.maximum(0.0, y0 * new_h / old_h)
            y1 = np.minimum(new_h, y1 * new_h / old_h)
    else:
        if mode == _Resize.FIT_SMALL_SIZE:
            if orig_aspect < new_w / new_h:
                new_h = new_w / orig_aspect
            else:
                new_w = orig_aspect * new_h
        elif mode != _Resize.WARP:
            raise NetError('ResizeParameter: unknown resize_mode %d' % mode)
        x0 = np.maximum(0.0, x0 * new_w / old_w)
        x1 = np.minimum(new_w, x1 * new_w / old_w)
        y0 = np.maximum(0.0, y0 * new_h / old_h)
        y1 = np.minimum(new_h, y1 * new_h / old_h)
    return np.stack([x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h], axis=1)


def extrapolate_bbox(param: caffe_pb2.ResizeParameter, height: int, width: int,
                     crop: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Caffe's ExtrapolateBBox: with FIT_SMALL_SIZE and both height_scale and width_scale
    set, boxes are rescaled from the crop's size to the given scales; otherwise unchanged."""
    hs, ws = float(param.height_scale), float(param.width_scale)
    if not (hs > 0 and ws > 0 and param.resize_mode == _Resize.FIT_SMALL_SIZE):
        return boxes
    orig_aspect = width / height
    rh, rw = float(param.height), float(param.width)
    if orig_aspect < rw / rh:
        rh = rw / orig_aspect
    else:
        rw = rh * orig_aspect
    crop_h = rh * (crop[3] - crop[1])
    crop_w = rw * (crop[2] - crop[0])
    if crop_w < ws or crop_h < hs:
        raise NetError('ResizeParameter: the crop (%g x %g) is smaller than height_scale x '
                       'width_scale (%g x %g)' % (crop_h, crop_w, hs, ws))
    return boxes * np.array([crop_w / ws, crop_h / hs, crop_w / ws, crop_h / hs])


# ---- batch samplers (Caffe's util/sampler.cpp) -------------------------------------------------

def check_batch_sampler(bs: caffe_pb2.BatchSampler, where: str) -> None:
    """Raise NetError naming `where` when a sampler's ranges cannot be sampled (Caffe CHECKs)."""
    s = bs.sampler
    problems = []
    if not s.max_scale >= s.min_scale:
        problems.append('max_scale %g < min_scale %g' % (s.max_scale, s.min_scale))
    if not s.min_scale > 0:
        problems.append('min_scale %g must be > 0' % s.min_scale)
    if not s.max_scale <= 1:
        problems.append('max_scale %g must be <= 1' % s.max_scale)
    if not s.max_aspect_ratio >= s.min_aspect_ratio:
        problems.append('max_aspect_ratio %g < min_aspect_ratio %g'
                        % (s.max_aspect_ratio, s.min_aspect_ratio))
    if not s.min_aspect_ratio > 0:
        problems.append('min_aspect_ratio %g must be > 0' % s.min_aspect_ratio)
    if not np.isfinite(s.max_aspect_ratio):
        problems.append('max_aspect_ratio must be finite')
    if problems:
        raise NetError('%s: %s' % (where, '; '.join(problems)))


def sample_bboxes(sampler: caffe_pb2.Sampler, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` crops drawn by `sampler` (Caffe's SampleBBox, n times at once): (n, 4)."""
    scale = rng.uniform(sampler.min_scale, sampler.max_scale, n)
    ratio = rng.uniform(sampler.min_aspect_ratio, sampler.max_aspect_ratio, n)
    ratio = np.minimum(np.maximum(ratio, scale ** 2), 1.0 / scale ** 2)
    w = np.minimum(scale * np.sqrt(ratio), 1.0)
    h = np.minimum(scale / np.sqrt(ratio), 1.0)
    x0 = rng.random(n) * (1.0 - w)
    y0 = rng.random(n) * (1.0 - h)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1)


class _Measures:
    """Overlaps of candidate crops with the objects, computed once (lazily) for all the
    candidates of an image, whichever batch samplers ask for them."""

    def __init__(self, samples: np.ndarray, objects: np.ndarray):
        self.samples, self.objects = samples, objects
        self._cache: dict = {}

    def get(self, kind: str) -> np.ndarray:
        if kind not in self._cache:
            s, o = self.samples, self.objects
            self._cache[kind] = {
                'jaccard_overlap': lambda: _iou(s, o),
                'sample_coverage': lambda: bbox_coverage(s, o),
                'object_coverage': lambda: bbox_coverage(o, s).T,
            }[kind]()
        return self._cache[kind]


_KINDS = ('jaccard_overlap', 'sample_coverage', 'object_coverage')


def _satisfy(measures: _Measures, rows: slice, constraint: caffe_pb2.SampleConstraint
             ) -> np.ndarray:
    c = constraint
    n = rows.stop - rows.start
    for kind in _KINDS:
        lo, hi = 'min_' + kind, 'max_' + kind
        if not (c.HasField(lo) or c.HasField(hi)):
            continue
        if len(measures.objects) == 0:
            return np.zeros(n, dtype=bool)
        value = measures.get(kind)[rows]
        ok = np.ones(value.shape, dtype=bool)
        if c.HasField(lo):
            ok &= value >= getattr(c, lo)
        if c.HasField(hi):
            ok &= value <= getattr(c, hi)
        # The first kind of bound given decides (see the module docstring).
        return ok.any(axis=1)
    return np.ones(n, dtype=bool)


def satisfy_sample_constraint(samples: np.ndarray, objects: np.ndarray,
                              constraint: caffe_pb2.SampleConstraint) -> np.ndarray:
    """Which candidate crops (rows of `samples`) satisfy `constraint` w.r.t. some object."""
    objects = np.asarray(objects, dtype=np.float64).reshape(-1, 4)
    return _satisfy(_Measures(samples, objects), slice(0, len(samples)), constraint)


def generate_batch_samples(objects: np.ndarray, batch_samplers: Sequence[caffe_pb2.BatchSampler],
                           rng: np.random.Generator) -> np.ndarray:
    """Caffe's GenerateBatchSamples: the crops every batch sampler keeps, in order, (K, 4).

    All the samplers' candidates are drawn first and measured against the objects together
    (one overlap matrix per image), then each sampler keeps its first max_sample."""
    objects = np.asarray(objects, dtype=np.float64).reshape(-1, 4)
    active = [bs for bs in batch_samplers if bs.use_original_image and bs.max_trials > 0]
    if not active:
        return np.zeros((0, 4))
    cands = [sample_bboxes(bs.sampler, int(bs.max_trials), rng) for bs in active]
    measures = _Measures(np.concatenate(cands), objects)
    kept, start = [], 0
    for bs, cand in zip(active, cands):
        rows = slice(start, start + len(cand))
        start = rows.stop
        cand = cand[_satisfy(measures, rows, bs.sample_constraint)]
        if bs.HasField('max_sample'):
            cand = cand[:int(bs.max_sample)]
        kept.append(cand)
    return np.concatenate(kept)
