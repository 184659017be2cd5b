"""Single boxes: sizes, overlaps, clipping, encoding and decoding against priors, and the
mapping of normalised boxes back to an original image (Caffe's BBoxSize, JaccardOverlap,
ClipBBox, EncodeBBox, DecodeBBox, OutputBBox).

Boxes are rows of [xmin, ymin, xmax, ymax] in the last axis; every function broadcasts
over the leading axes, so a batch of images and all of its priors go through one call.
SSD works in normalised image coordinates, where a box's width is xmax - xmin (no "+ 1"
as in pixel boxes): that is what `normalized=True` means, as in Caffe.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from ..proto import caffe_pb2

_CODE = caffe_pb2.PriorBoxParameter
_RESIZE = caffe_pb2.ResizeParameter


class BoxError(ValueError):
    """A box that Caffe's box maths refuses (CHECK failures in util/bbox_util.cpp)."""


def bbox_size(boxes: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Area of each box (..., 4) -> (...); 0 for a box with xmax < xmin or ymax < ymin."""
    extra = 0.0 if normalized else 1.0
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    area = (w + extra) * (h + extra)
    return torch.where((w < 0) | (h < 0), torch.zeros_like(area), area)


def jaccard_overlap(a: torch.Tensor, b: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Intersection over union of every box of `a` (..., N, 4) with every box of `b`
    (..., M, 4): (..., N, M), leading axes broadcast.

    Caffe's JaccardOverlap: boxes that do not intersect have overlap 0; the intersection
    of touching boxes has zero area (normalised) or one pixel's width (pixel boxes).
    """
    if normalized:
        # A non-positive width or height means no overlap: clamping it to 0 gives Caffe's 0.
        w = (torch.minimum(a[..., :, None, 2], b[..., None, :, 2])
             - torch.maximum(a[..., :, None, 0], b[..., None, :, 0])).clamp_(min=0)
        h = (torch.minimum(a[..., :, None, 3], b[..., None, :, 3])
             - torch.maximum(a[..., :, None, 1], b[..., None, :, 1])).clamp_(min=0)
        inter = w.mul_(h)
        union = (bbox_size(a)[..., :, None] + bbox_size(b)[..., None, :]) - inter
        return inter.div_(union.clamp_(min=torch.finfo(inter.dtype).tiny))
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = rb - lt
    disjoint = (wh < 0).any(dim=-1)
    inter = (wh[..., 0] + 1) * (wh[..., 1] + 1)
    union = bbox_size(a, False)[..., :, None] + bbox_size(b, False)[..., None, :] - inter
    iou = inter / union.clamp_min(torch.finfo(inter.dtype).tiny)
    return torch.where(disjoint, torch.zeros_like(iou), iou)


def sized_jaccard_overlap(a: torch.Tensor, a_size: torch.Tensor, b: torch.Tensor,
                          b_size: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Caffe's JaccardOverlap on NormalizedBBox messages that carry their own `size`.

    The union uses the sizes the boxes carry (set when they were scaled or clipped, which
    for pixel boxes includes the "+ 1"), and the intersection of boxes that do not meet is
    Caffe's [0, 0, 0, 0] box, whose pixel width is 1: DetectionEvaluate's overlaps in
    original-image pixels are this, not `jaccard_overlap(normalized=False)`.
    a (N, 4) with sizes (N,), b (M, 4) with sizes (M,) -> (N, M).
    """
    extra = 0.0 if normalized else 1.0
    disjoint = ((b[None, :, 0] > a[:, None, 2]) | (b[None, :, 2] < a[:, None, 0])
                | (b[None, :, 1] > a[:, None, 3]) | (b[None, :, 3] < a[:, None, 1]))
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = torch.where(disjoint[..., None], torch.zeros_like(rb), rb - lt) + extra
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (a_size[:, None] + b_size[None, :] - inter)
    return torch.where((wh[..., 0] > 0) & (wh[..., 1] > 0), iou, torch.zeros_like(iou))


def clip_bbox(boxes: torch.Tensor, height: float = 1.0, width: float = 1.0) -> torch.Tensor:
    """Caffe's ClipBBox: coordinates into [0, width] x [0, height] ([0, 1] by default)."""
    lo = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x = torch.minimum(torch.maximum(boxes[..., 0::2], lo), torch.as_tensor(
        width, dtype=boxes.dtype, device=boxes.device))
    y = torch.minimum(torch.maximum(boxes[..., 1::2], lo), torch.as_tensor(
        height, dtype=boxes.dtype, device=boxes.device))
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def is_cross_boundary(boxes: torch.Tensor) -> torch.Tensor:
    """Caffe's IsCrossBoundaryBBox: a coordinate outside [0, 1]; (..., 4) -> (...) bool."""
    return ((boxes < 0) | (boxes > 1)).any(dim=-1)


# ---- encoding and decoding against priors ------------------------------------------------------

def _wh(boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def _require_positive(what: str, t: torch.Tensor) -> None:
    if t.numel() and not bool((t > 0).all()):
        bad = float(t[~(t > 0)].reshape(-1)[0])
        raise BoxError('%s must be positive for this code type, got %g' % (what, bad))


def _variances(var: torch.Tensor) -> torch.Tensor:
    _require_positive('every prior variance', var)
    return var


def _encode_corner(prior, var, box, in_target):
    d = box - prior
    return d if in_target else d / _variances(var)


def _encode_center_size(prior, var, box, in_target):
    pw, ph = _wh(prior)
    _require_positive('prior width and height', torch.stack((pw, ph)))
    bw, bh = _wh(box)
    _require_positive('ground-truth box width and height', torch.stack((bw, bh)))
    pcx, pcy = (prior[..., 0] + prior[..., 2]) / 2, (prior[..., 1] + prior[..., 3]) / 2
    bcx, bcy = (box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2
    out = torch.stack(((bcx - pcx) / pw, (bcy - pcy) / ph,
                       torch.log(bw / pw), torch.log(bh / ph)), dim=-1)
    return out if in_target else out / var


def _encode_corner_size(prior, var, box, in_target):
    pw, ph = _wh(prior)
    _require_positive('prior width and height', torch.stack((pw, ph)))
    scale = torch.stack((pw, ph, pw, ph), dim=-1)
    out = (box - prior) / scale
    return out if in_target else out / _variances(var)


def _decode_corner(prior, var, loc, in_target):
    return prior + (loc if in_target else var * loc)


def _decode_center_size(prior, var, loc, in_target):
    pw, ph = _wh(prior)
    _require_positive('prior width and height', torch.stack((pw, ph)))
    pcx, pcy = (prior[..., 0] + prior[..., 2]) / 2, (prior[..., 1] + prior[..., 3]) / 2
    if not in_target:
        loc = var * loc
    cx = loc[..., 0] * pw + pcx
    cy = loc[..., 1] * ph + pcy
    w = torch.exp(loc[..., 2]) * pw
    h = torch.exp(loc[..., 3]) * ph
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def _decode_corner_size(prior, var, loc, in_target):
    pw, ph = _wh(prior)
    _require_positive('prior width and height', torch.stack((pw, ph)))
    scale = torch.stack((pw, ph, pw, ph), dim=-1)
    return prior + (loc if in_target else var * loc) * scale


_Coder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
ENCODERS: Dict[int, _Coder] = {_CODE.CORNER: _encode_corner,
                               _CODE.CENTER_SIZE: _encode_center_size,
                               _CODE.CORNER_SIZE: _encode_corner_size}
DECODERS: Dict[int, _Coder] = {_CODE.CORNER: _decode_corner,
                               _CODE.CENTER_SIZE: _decode_center_size,
                               _CODE.CORNER_SIZE: _decode_corner_size}


def _coder(table: Dict[int, _Coder], code_type: int) -> _Coder:
    try:
        return table[int(code_type)]
    except KeyError:
        raise BoxError('unknown code_type %r (CORNER = 1, CENTER_SIZE = 2, CORNER_SIZE = 3)'
                       % (code_type,)) from None


def encode_bbox(prior: torch.Tensor, variance: torch.Tensor, box: torch.Tensor, code_type: int,
                encode_variance_in_target: bool = False) -> torch.Tensor:
    """Caffe's EncodeBBox: the regression target of `box` relative to `prior`.

    All three are (..., 4) and broadcast. With `encode_variance_in_target` the variances
    are left to the network (the target is not divided by them).
    """
    return _coder(ENCODERS, code_type)(prior, variance, box, bool(encode_variance_in_target))


def decode_bbox(prior: torch.Tensor, variance: torch.Tensor, loc: torch.Tensor, code_type: int,
                variance_encoded_in_target: bool = False, clip: bool = False) -> torch.Tensor:
    """Caffe's DecodeBBox: the box a location prediction `loc` stands for, given its prior.

    Broadcasts over leading axes; `clip` clips the result into [0, 1].
    """
    out = _coder(DECODERS, code_type)(prior, variance, loc, bool(variance_encoded_in_target))
    return clip_bbox(out) if clip else out


# ---- back to the original image ---------------------------------------------------------------

def _scale(boxes: torch.Tensor, height: torch.Tensor, width: torch.Tensor
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Caffe's ScaleBBox: multiply by the image size; the size is a pixel size ("+ 1")
    unless the image is at most 1 x 1."""
    scaled = boxes * torch.stack((width, height, width, height), dim=-1)
    pixel = (width > 1) | (height > 1)
    size = torch.where(pixel, bbox_size(scaled, normalized=False), bbox_size(scaled))
    return scaled, size


def _project(src: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Caffe's ProjectBBox: boxes into the frame of `src` and clipped; a box that misses
    `src` is left as it was (Caffe returns false without touching it)."""
    miss = ((boxes[..., 0] >= src[..., 2]) | (boxes[..., 2] <= src[..., 0])
            | (boxes[..., 1] >= src[..., 3]) | (boxes[..., 3] <= src[..., 1]))
    sw, sh = _wh(src)
    origin = torch.stack((src[..., 0], src[..., 1], src[..., 0], src[..., 1]), dim=-1)
    proj = clip_bbox((boxes - origin) / torch.stack((sw, sh, sw, sh), dim=-1))
    return torch.where(miss[..., None], boxes, proj)


def output_bbox(boxes: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                resize_param: Optional[caffe_pb2.ResizeParameter] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Caffe's OutputBBox: normalised boxes (N, 4) to pixels of their original images
    (heights and widths (N,)), undoing the test-time resize. Returns the boxes and the
    sizes Caffe attaches to them (used by `sized_jaccard_overlap`).
    """
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device).expand(boxes.shape[:-1])
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device).expand(boxes.shape[:-1])
    mode = resize_param.resize_mode if resize_param is not None else 0
    if not mode:
        return _scale(clip_bbox(boxes), height, width)
    if mode == _RESIZE.WARP:
        return _scale(clip_bbox(boxes), height, width)
    rh, rw = float(resize_param.height), float(resize_param.width)
    if mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        if rh <= 0 or rw <= 0:
            raise BoxError('resize_param height and width must be positive for '
                           'FIT_LARGE_SIZE_AND_PAD, got %g x %g' % (rh, rw))
        resize_aspect = rw / rh
        aspect = width / height
        wide = aspect > resize_aspect
        pad_h = (rh - rw / aspect) / 2 / rh
        pad_w = (rw - rh * aspect) / 2 / rw
        zero, one = torch.zeros_like(aspect), torch.ones_like(aspect)
        src = torch.where(wide[..., None], torch.stack((zero, pad_h, one, 1 - pad_h), dim=-1),
                          torch.stack((pad_w, zero, 1 - pad_w, one), dim=-1))
        return _scale(clip_bbox(_project(src, boxes)), height, width)
    if mode == _RESIZE.FIT_SMALL_SIZE:
        hs, ws = int(resize_param.height_scale), int(resize_param.width_scale)
        if hs == 0 or ws == 0:
            return _scale(clip_bbox(boxes), height, width)
        scaled, _ = _scale(boxes, torch.full_like(height, hs), torch.full_like(width, ws))
        clipped = torch.stack((torch.minimum(scaled[..., 0].clamp_min(0), width),
                               torch.minimum(scaled[..., 1].clamp_min(0), height),
                               torch.minimum(scaled[..., 2].clamp_min(0), width),
                               torch.minimum(scaled[..., 3].clamp_min(0), height)), dim=-1)
        return clipped, bbox_size(clipped)  # Caffe's ClipBBox(h, w) sizes without "+ 1"
    raise BoxError('unknown resize_mode %r' % (mode,))
