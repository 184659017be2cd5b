"""SSD's DataTransformer for annotated images: what AnnotatedData does to each image and its
boxes before they reach the net (Caffe's data_transformer.cpp of the SSD fork, the
AnnotatedDatum half).

For one image with its boxes (normalised [xmin, ymin, xmax, ymax], with class label,
instance id and difficult flag), in SSD's order:

1. **distort** (`distort_param`): photometric changes only (caffe/im_transforms.py);
2. **expand** (`expand_param`): with probability `prob`, the image is placed at a random
   integer offset on a canvas `ratio` times larger, ratio ~ U[1, max_expand_ratio], the
   canvas filled with the mean values (0 without them); boxes shrink with the image;
3. **sample** (`annotated_data_param.batch_sampler`): candidate crops are drawn
   (caffe/sampler.py); when any is kept, one of them chosen uniformly at random is cut out
   of the (expanded) image and the boxes are re-expressed in it, dropping those the
   `emit_constraint` rejects or that fall outside;
4. **transform**: mirror coin, resize (`resize_param`, interpolation drawn among
   `interp_mode`), noise (`noise_param`), then a crop_h x crop_w (or crop_size) window,
   random in TRAIN and centred in TEST; boxes follow the resize policy, the emit constraint
   and projection onto the window, the mirror (x -> 1 - x), and ExtrapolateBBox;
5. **mean, scale, mirror** of the pixels: the plain DataTransformer (caffe/data_transform.py)
   does the mean subtraction and scaling of the whole batch in one array operation, and
   mirrored images are flipped in their output slots.

Expansion and the crop are done together: only the chosen window of the expanded canvas is
ever made (filled with the mean, the image pasted where it overlaps), which gives the same
pixels as SSD's canvas-then-crop for far less memory traffic; SSD's re-encoding of each
intermediate image to JPEG, a lossy detour of its Datum plumbing, is not reproduced.

Randomness: one NumPy Generator owned by the transformer, seeded from the engine's stream
(caffe.set_random_seed) by init_rand(); per image the draws are made in the order above, so a
seed gives the same batches whatever the prefetch thread's timing.

Differences from SSD kept on purpose (SSD refuses or crashes in these cases): raw (not
encoded) Datums are distorted too; gray images skip the hue/saturation/channel steps; a
mean_file must match the output size (it is subtracted after the crop) and fills an
expansion canvas with its per-channel averages; `resize_param.prob` and `noise_param.prob`
are not consulted, as in SSD.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import im_transforms, sampler
from .data_transform import DataTransformer, engine_seed
from .errors import ImageError, LayerError, NetError
from .image_file import decode_image
from .phase import Phase
from .proto import caffe_pb2


class Annotations(NamedTuple):
    """An image's boxes, one row each, in the order SSD emits them (group by group)."""
    boxes: np.ndarray      # (N, 4) float64, normalised xmin, ymin, xmax, ymax
    labels: np.ndarray     # (N,) int64, the annotation group's label
    instances: np.ndarray  # (N,) int64, instance ids
    difficult: np.ndarray  # (N,) bool

    @staticmethod
    def from_datum(anno_datum: caffe_pb2.AnnotatedDatum) -> 'Annotations':
        """The boxes of an AnnotatedDatum, flattened group by group."""
        rows = [(g.group_label, a.instance_id, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax,
                 a.bbox.ymax, a.bbox.difficult)
                for g in anno_datum.annotation_group for a in g.annotation]
        if not rows:
            return Annotations.empty()
        arr = np.array(rows, dtype=np.float64)
        return Annotations(arr[:, 2:6].copy(), arr[:, 0].astype(np.int64),
                           arr[:, 1].astype(np.int64), arr[:, 6] != 0)

    @staticmethod
    def empty() -> 'Annotations':
        return Annotations(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                           np.zeros(0, bool))

    def keep(self, mask: np.ndarray, boxes: Optional[np.ndarray] = None) -> 'Annotations':
        """The rows where `mask` holds, with `boxes` (all rows) replacing the boxes."""
        boxes = self.boxes if boxes is None else boxes
        return Annotations(boxes[mask], self.labels[mask], self.instances[mask],
                           self.difficult[mask])

    @property
    def count(self) -> int:
        """The number of boxes."""
        return len(self.labels)


class Window(NamedTuple):
    """A rectangle of pixels: left column, top row, width, height."""
    x: int
    y: int
    w: int
    h: int


def _pixel_values(param: caffe_pb2.TransformationParameter) -> caffe_pb2.TransformationParameter:
    """The part of `param` the plain DataTransformer applies here: mean, scale, colour flags
    (the annotated transformer crops and mirrors itself, as the boxes must follow)."""
    p = caffe_pb2.TransformationParameter()
    p.scale = param.scale
    if param.HasField('mean_file'):
        p.mean_file = param.mean_file
    p.mean_value.extend(param.mean_value)
    p.force_color, p.force_gray = param.force_color, param.force_gray
    return p


class AnnotatedDataTransformer:
    """SSD's TransformationParameter applied to annotated images (see the module docstring)."""

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: int, layer: str = '',
                 dtype: np.dtype = np.float32, force_encoded_color: bool = False) -> None:
        self.param = param
        self.phase = Phase(int(phase))
        self.layer = layer
        where = 'layer %r (AnnotatedData) transform_param' % layer
        self.pixels = DataTransformer(_pixel_values(param), phase, layer, dtype,
                                      force_encoded_color=force_encoded_color)
        self.dtype = self.pixels.dtype
        k = int(param.crop_size)
        self.crop_h = k or int(param.crop_h)
        self.crop_w = k or int(param.crop_w)
        self.resize = param.resize_param if param.HasField('resize_param') else None
        if self.resize is not None:
            im_transforms.check_resize_param(self.resize, where)
        self.distort = param.distort_param if param.HasField('distort_param') else None
        if self.distort is not None:
            im_transforms.check_distort_param(self.distort, where)
        self.expand = param.expand_param if param.HasField('expand_param') else None
        if self.expand is not None and not self.expand.max_expand_ratio > 1:
            raise NetError('%s: expand_param.max_expand_ratio must be > 1 (got %g)'
                           % (where, self.expand.max_expand_ratio))
        self.noise = param.noise_param if param.HasField('noise_param') else None
        self.emit = param.emit_constraint if param.HasField('emit_constraint') else None
        if self.emit is not None and self.emit.emit_type not in (
                caffe_pb2.EmitConstraint.CENTER, caffe_pb2.EmitConstraint.MIN_OVERLAP):
            raise NetError('%s: unknown emit_constraint.emit_type %d'
                           % (where, self.emit.emit_type))
        self.rng: Optional[np.random.Generator] = None

    # ---- randomness and decoding -------------------------------------------------------------
    def init_rand(self) -> None:
        """(Re)seed the transformer's generator from the engine's stream."""
        self.rng = np.random.default_rng(engine_seed())

    def decode(self, datum: caffe_pb2.Datum, where: str) -> np.ndarray:
        """A Datum's picture as H x W x C uint8 (encoded images decoded by OpenCV, BGR)."""
        if datum.encoded:
            try:
                img = decode_image(np.frombuffer(datum.data, dtype=np.uint8),
                                   self.pixels.decode_flag(), where)
            except ImageError as e:
                raise LayerError('layer %r (AnnotatedData): %s' % (self.layer, e)) from None
            return im_transforms.hwc(img)
        self.pixels.note_raw_datum()
        c, h, w = int(datum.channels), int(datum.height), int(datum.width)
        if len(datum.float_data) or len(datum.data) != c * h * w or c * h * w == 0:
            raise LayerError('layer %r (AnnotatedData): %s holds %d bytes (%d floats) but '
                             'AnnotatedData needs uint8 pixels, channels x height x width = '
                             '%dx%dx%d' % (self.layer, where, len(datum.data),
                                           len(datum.float_data), c, h, w))
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w).transpose(1, 2, 0)

    # ---- shapes ------------------------------------------------------------------------------
    def output_shape(self, img_shape: Sequence[int], error: type = LayerError
                     ) -> Tuple[int, int, int]:
        """C x H x W that an H x W x C image becomes (SSD's InferBlobShape)."""
        h, w, c = (int(d) for d in img_shape)
        if self.resize is not None:
            w, h = sampler.infer_new_size(self.resize, w, h)
        if h < self.crop_h or w < self.crop_w:
            raise error('layer %r (AnnotatedData): the crop %d x %d is larger than the %d x %d '
                        'image' % (self.layer, self.crop_h, self.crop_w, h, w))
        return c, (self.crop_h or h), (self.crop_w or w)

    # ---- steps 1-3: distort, expand, sample --------------------------------------------------
    def _project(self, anno: Annotations, crop: np.ndarray,
                 boxes: Optional[np.ndarray] = None) -> Annotations:
        """SSD's TransformAnnotation core: emit constraint, then projection onto `crop`."""
        boxes = anno.boxes if boxes is None else boxes
        proj, keep = sampler.project_bbox(crop, boxes)
        if self.emit is not None:
            keep &= sampler.meet_emit_constraint(crop, boxes, self.emit)
        return anno.keep(keep, proj)

    def _expansion(self, h: int, w: int) -> Optional[Tuple[int, int, int, int]]:
        """(canvas height, width, top, left) of a random expansion, or None (none drawn)."""
        e = self.expand
        if e is None or self.rng.random() > e.prob or abs(e.max_expand_ratio - 1.0) < 1e-2:
            return None
        ratio = self.rng.uniform(1.0, e.max_expand_ratio)
        ch, cw = int(h * ratio), int(w * ratio)
        top = int(np.floor(self.rng.uniform(0.0, ch - h)))
        left = int(np.floor(self.rng.uniform(0.0, cw - w)))
        return ch, cw, top, left

    def _fill(self, channels: int) -> np.ndarray:
        """The colour of an expansion canvas: the mean values (as uint8), else zeros."""
        if self.pixels.mean_values is not None:
            m = self.pixels.mean_values
        elif self.pixels.mean is not None:
            m = self.pixels.mean.reshape(self.pixels.mean.shape[0], -1).mean(axis=1)
        else:
            m = np.zeros(1)
        m = np.broadcast_to(np.asarray(m, dtype=np.float64), (channels,))
        return np.clip(np.rint(m), 0, 255).astype(np.uint8)

    def augment(self, img: np.ndarray, anno: Annotations,
                batch_samplers: Sequence[caffe_pb2.BatchSampler]
                ) -> Tuple[np.ndarray, Annotations]:
        """Steps 1-3: the distorted, expanded and sampled image (H x W x C uint8) and boxes."""
        if self.rng is None:
            self.init_rand()
        if self.distort is not None:
            img = im_transforms.apply_distort(np.ascontiguousarray(img), self.distort, self.rng)
        h, w = img.shape[:2]
        canvas = self._expansion(h, w)
        ch, cw, top, left = canvas if canvas else (h, w, 0, 0)
        if canvas:
            expand_box = np.array([-left / w, -top / h, (cw - left) / w, (ch - top) / h])
            anno = self._project(anno, expand_box)
        window = Window(0, 0, cw, ch)
        if batch_samplers:
            samples = sampler.generate_batch_samples(anno.boxes, batch_samplers, self.rng)
            if len(samples):
                crop = sampler.clip_bbox(samples[int(self.rng.integers(len(samples)))])
                window = self._window(crop, ch, cw)
                anno = self._project(anno, crop)
        if not canvas and window == (0, 0, w, h):
            return img, anno
        return self._cut(img, window, top, left), anno

    @staticmethod
    def _window(crop: np.ndarray, h: int, w: int) -> Window:
        """The pixels SSD's CropImage cuts for a normalised crop of an h x w image."""
        x0, x1 = np.float32(crop[0]) * np.float32(w), np.float32(crop[2]) * np.float32(w)
        y0, y1 = np.float32(crop[1]) * np.float32(h), np.float32(crop[3]) * np.float32(h)
        return Window(int(x0), int(y0), max(1, int(x1 - x0)), max(1, int(y1 - y0)))

    def _cut(self, img: np.ndarray, win: Window, top: int, left: int) -> np.ndarray:
        """`win` of the canvas on which `img` sits at (top, left): a view when it lies inside
        the image, else the overlapping part of the image bordered with the canvas colour
        (one cv2.copyMakeBorder)."""
        h, w, c = img.shape
        x, y = win.x - left, win.y - top
        if x >= 0 and y >= 0 and x + win.w <= w and y + win.h <= h:
            return img[y:y + win.h, x:x + win.w]
        fill = self._fill(c)
        sx0, sy0 = max(x, 0), max(y, 0)
        sx1, sy1 = min(x + win.w, w), min(y + win.h, h)
        if sx1 <= sx0 or sy1 <= sy0:  # the window misses the image: all canvas
            return np.tile(fill, (win.h, win.w, 1))
        value = tuple(float(v) for v in fill) + (0.0,) * (4 - c)
        out = cv2.copyMakeBorder(np.ascontiguousarray(img[sy0:sy1, sx0:sx1]),
                                 sy0 - y, y + win.h - sy1, sx0 - x, x + win.w - sx1,
                                 cv2.BORDER_CONSTANT, value=value)
        return im_transforms.hwc(out)

    # ---- step 4: mirror coin, resize, noise, crop --------------------------------------------
    def finish(self, img: np.ndarray, anno: Annotations) -> Tuple[np.ndarray, bool, Annotations]:
        """Step 4: (H x W x C image ready for mean/scale, mirror flag, final boxes)."""
        if self.rng is None:
            self.init_rand()
        mirror = bool(self.param.mirror) and bool(self.rng.integers(2))
        old_h, old_w = img.shape[:2]
        if self.resize is not None:
            interp = im_transforms.choose_interp(self.resize, self.rng)
            img = im_transforms.apply_resize(img, self.resize, interp)
        if self.noise is not None:
            img = im_transforms.apply_noise(np.ascontiguousarray(img), self.noise, self.rng)
        h, w = img.shape[:2]
        ch, cw = self.crop_h or h, self.crop_w or w
        if h < ch or w < cw:
            raise LayerError('layer %r (AnnotatedData): the crop %d x %d is larger than the '
                             '%d x %d image' % (self.layer, ch, cw, h, w))
        y0 = x0 = 0
        if (ch, cw) != (h, w):
            if self.phase == Phase.TRAIN:
                y0 = int(self.rng.integers(h - ch + 1))
                x0 = int(self.rng.integers(w - cw + 1))
            else:
                y0, x0 = (h - ch) // 2, (w - cw) // 2
            img = img[y0:y0 + ch, x0:x0 + cw]
        crop = np.array([x0 / w, y0 / h, (x0 + cw) / w, (y0 + ch) / h])
        boxes = anno.boxes
        if self.resize is not None:
            boxes = sampler.update_bbox_by_resize_policy(self.resize, old_w, old_h, boxes)
        anno = self._project(anno, crop, boxes)
        if mirror and anno.count:
            b = anno.boxes
            anno = anno._replace(boxes=np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1))
        if self.resize is not None:
            anno = anno._replace(boxes=sampler.extrapolate_bbox(self.resize, old_h, old_w, crop,
                                                                anno.boxes))
        return img, mirror, anno

    # ---- step 5: the pixels of a batch -------------------------------------------------------
    def to_blob(self, images: Sequence[np.ndarray], mirrors: Sequence[bool]) -> np.ndarray:
        """N x C x H x W of the transformer's float type: mean and scale by the plain
        DataTransformer over the whole batch, then the mirrored items flipped in place."""
        batch = np.stack([im.transpose(2, 0, 1) for im in images])
        out = self.pixels.transform(batch)
        for i in np.flatnonzero(np.asarray(mirrors, dtype=bool)):
            out[i] = out[i, :, :, ::-1]
        return out

