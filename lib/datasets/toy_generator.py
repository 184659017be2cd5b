"""Synthetic "toy shapes" detection data set in PASCAL VOC 2007 layout.

Why this exists: the real VOC 2007 set (and ImageNet-pretrained weights) are
large downloads, and training a Faster R-CNN on them takes GPU-days. The demo
and the end-to-end tests need a data set that

* exercises exactly the same code path as VOC (``pascal_voc`` imdb, XML
  annotations, ``ImageSets/Main`` lists, VOC07 11-point evaluation),
* is learnable by a small net in a few thousand CPU iterations, and
* is not trivial: objects vary in scale and aspect ratio, overlap, get cut
  by the image border, and sit on cluttered backgrounds with distractors.

Every image is drawn from its own NumPy ``Generator`` seeded by
``(seed, split, index)``, so the output is byte-identical for the same
parameters, and the test split does not change when only the size of the
trainval split does.

Each class has three independent cues (outline, hue and surface texture), so
a detector can separate them easily; distractors are deliberately low in
saturation and untextured, so they only look like objects to a detector that
has not learnt colour yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "TOY_CLASSES",
    "SHAPE_CATALOGUE",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "make_toy_dataset",
    "render_scene",
    "ToyObject",
]

#: Default class names, in label order (background excluded). Label ``i + 1``
#: of the detector is ``TOY_CLASSES[i]``.
TOY_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")

#: Bumped by hand when the on-disk format changes; the manifest also stores a
#: hash of this file's source so that any code change triggers regeneration.
GENERATOR_VERSION = 1

MANIFEST_NAME = "toy_manifest.json"
DEVKIT_NAME = "VOCdevkit2007"
YEAR_DIR = "VOC2007"

# Split codes are mixed into each image's seed so that splits draw from
# unrelated random streams.
_SPLIT_CODES = {"trainval": 1, "test": 2}


@dataclass(frozen=True)
class _Style:
    """How one class looks: OpenCV hue (0..179), texture and max rotation."""

    hue: int
    texture: str
    max_rotation_deg: float


#: Every shape the generator knows. ``TOY_CLASSES`` uses the first five; the
#: others can be selected with ``classes=`` for harder experiments. Hues are
#: spread around the colour wheel and no two classes share a texture.
SHAPE_CATALOGUE: dict[str, _Style] = {
    "circle": _Style(hue=0, texture="radial", max_rotation_deg=30.0),
    "square": _Style(hue=112, texture="hstripes", max_rotation_deg=18.0),
    "triangle": _Style(hue=60, texture="checker", max_rotation_deg=25.0),
    "star": _Style(hue=27, texture="flat", max_rotation_deg=36.0),
    "ring": _Style(hue=150, texture="dstripes", max_rotation_deg=30.0),
    "cross": _Style(hue=90, texture="dots", max_rotation_deg=18.0),
    "diamond": _Style(hue=13, texture="vstripes", max_rotation_deg=10.0),
    "hexagon": _Style(hue=132, texture="rings", max_rotation_deg=30.0),
}


def _regular_star(points: int, inner: float) -> np.ndarray:
    """Unit star outline (radius 0.5) with ``points`` tips, tip pointing up."""
    angles = -np.pi / 2 + np.arange(2 * points) * (np.pi / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.5, 0.5 * inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_outline(arm: float) -> np.ndarray:
    """Unit plus-sign outline whose arms are ``arm`` of the full width thick."""
    a, b = arm / 2.0, 0.5
    return np.array(
        [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
         (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)],
        dtype=np.float64,
    )


# Polygon outlines in unit coordinates (x, y in [-0.5, 0.5]); they are scaled
# by the object's width and height, then rotated. Circle and ring are drawn as
# ellipses instead.
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]),
    "triangle": np.array([(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)]),
    "star": _regular_star(5, 0.42),
    "cross": _cross_outline(0.36),
    "diamond": np.array([(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)]),
    "hexagon": np.stack(
        [0.5 * np.cos(np.arange(6) * np.pi / 3), 0.5 * np.sin(np.arange(6) * np.pi / 3)],
        axis=1,
    ),
}

# Fixed-point precision used for OpenCV's sub-pixel drawing.
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass
class ToyObject:
    """One annotated object of a rendered scene (0-based inclusive box)."""

    name: str
    x1: int
    y1: int
    x2: int
    y2: int
    truncated: bool
    difficult: bool
    visible_fraction: float


# ---------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------


def _hsv_to_bgr(h: int, s: int, v: int) -> np.ndarray:
    """Convert one OpenCV-HSV colour to float32 BGR (0..255)."""
    px = np.array([[[h % 180, s, v]]], dtype=np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _muted_colour(rng: np.random.Generator, s_max: int, v_lo: int, v_hi: int) -> np.ndarray:
    """A low-saturation colour: used for backgrounds and clutter, never objects."""
    return _hsv_to_bgr(
        int(rng.integers(0, 180)), int(rng.integers(0, s_max + 1)), int(rng.integers(v_lo, v_hi + 1))
    )


def _saturate_u8(x: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8 in one OpenCV pass (much faster
    than ``np.clip(np.round(x))`` and equally deterministic)."""
    return cv2.add(x, 0.0, dtype=cv2.CV_8U)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted four-corner gradient with smooth low-frequency colour blotches.

    Everything is computed on a tiny grid and upsampled (bicubic to 1/8
    size, then bilinear), which is ~20x cheaper than full-size arithmetic
    and looks the same.
    """
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    corners = np.stack([_muted_colour(rng, 70, 70, 200) for _ in range(4)])
    v = np.linspace(0.0, 1.0, gh, dtype=np.float32)[:, None, None]
    u = np.linspace(0.0, 1.0, gw, dtype=np.float32)[None, :, None]
    grid = ((1 - v) * (1 - u) * corners[0] + (1 - v) * u * corners[1]
            + v * (1 - u) * corners[2] + v * u * corners[3])
    grid += rng.normal(0.0, rng.uniform(8.0, 22.0), size=(gh, gw, 3)).astype(np.float32)
    small = cv2.resize(grid, (max(2, w // 8), max(2, h // 8)), interpolation=cv2.INTER_CUBIC)
    return _saturate_u8(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


_NOISE_POOL_SIZE = 1 << 21
_NOISE_POOL: np.ndarray | None = None


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of ``shape``.

    Drawing ~250k normals per image dominated generation time, so images up
    to half the pool size take a randomly offset window of one fixed pool
    instead (larger ones draw afresh). The pool has a constant seed and
    size, so the output depends only on ``rng`` and ``shape``.
    """
    global _NOISE_POOL
    n = int(np.prod(shape))
    if 2 * n > _NOISE_POOL_SIZE:
        return rng.standard_normal(shape, dtype=np.float32)
    if _NOISE_POOL is None:
        _NOISE_POOL = np.random.default_rng(20160408).standard_normal(
            _NOISE_POOL_SIZE, dtype=np.float32)
    off = int(rng.integers(0, _NOISE_POOL_SIZE - n + 1))
    return _NOISE_POOL[off:off + n].reshape(shape)


def _random_blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    """Irregular star-convex polygon: a clutter shape that belongs to no class."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.45, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return np.round(pts * _ONE).astype(np.int32)


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, scale: float) -> None:
    """Lines, blobs and ellipses in muted colours, drawn under the objects."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        colour = _muted_colour(rng, 80, 40, 220).tolist()
        kind = rng.integers(0, 3)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(5, 30) * scale
        if kind == 0:
            cv2.fillPoly(img, [_random_blob(rng, cx, cy, r)], colour, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            axes = (int(r * _ONE), int(r * rng.uniform(0.3, 1.0) * _ONE))
            cv2.ellipse(img, (int(cx * _ONE), int(cy * _ONE)), axes, float(rng.uniform(0, 180)),
                        0, 360, colour, -1, cv2.LINE_AA, _SHIFT)
        else:
            half = np.array([r, r * rng.uniform(0.15, 0.5)])
            box = ((float(cx), float(cy)), (float(2 * half[0]), float(2 * half[1])),
                   float(rng.uniform(0, 180)))
            pts = np.round(cv2.boxPoints(box) * _ONE).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, _SHIFT)
    _draw_lines(rng, img, int(rng.integers(2, 7)), max_thickness=3)


def _draw_lines(rng: np.random.Generator, img: np.ndarray, count: int, max_thickness: int) -> None:
    """Random straight lines in muted colours (they cross objects when drawn last)."""
    h, w = img.shape[:2]
    for _ in range(count):
        p = rng.uniform((0, 0, 0, 0), (w, h, w, h))
        colour = _muted_colour(rng, 60, 30, 230).tolist()
        cv2.line(img, (int(p[0] * _ONE), int(p[1] * _ONE)), (int(p[2] * _ONE), int(p[3] * _ONE)),
                 colour, int(rng.integers(1, max_thickness + 1)), cv2.LINE_AA, _SHIFT)


def _shape_alpha(name: str, w: float, h: float, angle_deg: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage mask (uint8, 255 = inside) of one shape.

    The square canvas is the shape's circumscribed diameter plus a margin, so
    any rotation fits; the shape's centre is the canvas centre.
    """
    d = int(np.ceil(np.hypot(w, h))) + 4
    alpha = np.zeros((d, d), dtype=np.uint8)
    c = d / 2.0
    centre = (int(round(c * _ONE)), int(round(c * _ONE)))
    if name in ("circle", "ring"):
        axes = (int(round(w / 2 * _ONE)), int(round(h / 2 * _ONE)))
        cv2.ellipse(alpha, centre, axes, angle_deg, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
        if name == "ring":
            k = rng.uniform(0.45, 0.62)
            inner = (int(round(w / 2 * k * _ONE)), int(round(h / 2 * k * _ONE)))
            cv2.ellipse(alpha, centre, inner, angle_deg, 0, 360, 0, -1, cv2.LINE_AA, _SHIFT)
        return alpha
    pts = _POLYGONS[name] * np.array([w, h])
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    pts = pts @ rot + c
    cv2.fillPoly(alpha, [np.round(pts * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return alpha


def _texture(style: _Style, d: int, w: float, h: float, rng: np.random.Generator,
             rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """BGR uint8 appearance of a class over the window ``rows`` x ``cols`` of
    its d x d canvas (only the part that lands inside the image is computed).

    A two-tone pattern (base hue and a darker shade of it) identifies the
    class together with hue and outline; a random lighting ramp and jittered
    saturation/value keep instances from being identical. Patterns are built
    from a row vector and a column vector by broadcasting, never from full
    index grids.
    """
    hue = style.hue + int(rng.integers(-4, 5))
    base = _hsv_to_bgr(hue, int(rng.integers(175, 256)), int(rng.integers(175, 250)))
    yy = np.arange(rows[0], rows[1], dtype=np.float32)[:, None]
    xx = np.arange(cols[0], cols[1], dtype=np.float32)[None, :]
    c = d / 2.0
    period = float(max(3, min(int(rng.integers(4, 9)), int(min(w, h) // 4))))
    kind = style.texture
    if kind == "flat":
        p: np.ndarray | float = 0.0
    elif kind == "radial":
        p = np.minimum(((xx - c) / (w / 2)) ** 2 + ((yy - c) / (h / 2)) ** 2, 1.0)
    elif kind == "hstripes":
        p = (yy // period) % 2
    elif kind == "vstripes":
        p = (xx // period) % 2
    elif kind == "dstripes":
        p = ((xx + yy) // (1.4 * period)) % 2
    elif kind == "checker":
        p = (xx // period + yy // period) % 2
    elif kind == "dots":
        q = period + 2
        p = (((xx % q) - q / 2) ** 2 + ((yy % q) - q / 2) ** 2 < (0.32 * q) ** 2).astype(np.float32)
    elif kind == "rings":
        p = (np.sqrt((xx - c) ** 2 + (yy - c) ** 2) // period) % 2
    else:  # pragma: no cover - the catalogue is fixed
        raise ValueError(f"unknown texture {kind!r}")
    contrast = np.float32(rng.uniform(0.35, 0.5))
    g = rng.uniform(-0.12, 0.12, size=2).astype(np.float32)
    light = 1.0 + g[0] * (xx - c) / c + g[1] * (yy - c) / c
    shade = np.ascontiguousarray((1.0 - contrast * p) * light, dtype=np.float32)
    return _saturate_u8(cv2.merge([shade * b for b in base]))


# ---------------------------------------------------------------------------
# Scene rendering
# ---------------------------------------------------------------------------


def _image_classes(rng: np.random.Generator, index: int, count: int,
                   num_classes: int) -> list[int]:
    """Classes for one image: the first cycles with the image index so that
    every class appears once every ``num_classes`` images (coverage even in
    tiny sets); the rest are uniform."""
    first = index % num_classes
    rest = rng.integers(0, num_classes, size=count - 1).tolist()
    return [first] + rest


def render_scene(rng: np.random.Generator, index: int, classes: Sequence[str], size: int,
                 min_object: float, max_object: float, max_objects: int,
                 ) -> tuple[np.ndarray, list[ToyObject]]:
    """Draw one scene; return the BGR uint8 image and its (visible) boxes.

    Objects are painted back to front; an owner map records which object
    each pixel finally shows, so boxes are tight around what is visible (as
    VOC annotators box the visible extent) and occlusion is measured exactly.
    A placement that would hide more than 55% of an earlier object, or put
    more than 35% of the new one outside the image, is re-drawn; objects left
    less than half visible are marked ``difficult`` (ignored by VOC eval).
    """
    short = size
    long = int(round(size * rng.uniform(1.25, 1.42)))
    h, w = (long, short) if rng.random() < 0.25 else (short, long)
    scale = size / 240.0

    canvas = _background(rng, h, w)
    _draw_clutter(rng, canvas, scale)

    owner = np.full((h, w), -1, dtype=np.int16)
    full_area: list[int] = []
    visible: list[int] = []
    inside: list[int] = []
    names: list[str] = []
    rois: list[tuple[int, int, int, int]] = []
    n_obj = int(rng.integers(1, max_objects + 1))
    hi = min(max_object, 0.8 * min(h, w))
    lo = min(min_object, hi)
    for cls_idx in _image_classes(rng, index, n_obj, len(classes)):
        name = classes[cls_idx]
        style = SHAPE_CATALOGUE[name]
        for _attempt in range(25):
            s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            ar = float(np.exp(rng.uniform(np.log(0.6), np.log(1.65))))
            ow, oh = s * np.sqrt(ar), s / np.sqrt(ar)
            angle = float(rng.uniform(-style.max_rotation_deg, style.max_rotation_deg))
            alpha = _shape_alpha(name, ow, oh, angle, rng)
            d = alpha.shape[0]
            cx = rng.uniform(0.2 * ow, max(0.2 * ow + 1, w - 0.2 * ow))
            cy = rng.uniform(0.2 * oh, max(0.2 * oh + 1, h - 0.2 * oh))
            x0, y0 = int(round(cx - d / 2)), int(round(cy - d / 2))
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + d, w), min(y0 + d, h)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            solid = alpha > 127
            area = int(solid.sum())
            a_roi = alpha[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            s_roi = solid[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            n_inside = int(s_roi.sum())
            if area == 0 or n_inside < 0.65 * area:
                continue
            o_roi = owner[iy0:iy1, ix0:ix1]
            hidden = np.bincount(o_roi[s_roi & (o_roi >= 0)], minlength=len(visible))
            left = np.asarray(visible, dtype=np.int64) - hidden[:len(visible)]
            if np.any(left < 0.45 * np.asarray(full_area, dtype=np.int64)):
                continue
            colour = _texture(style, d, ow, oh, rng, (iy0 - y0, iy1 - y0), (ix0 - x0, ix1 - x0))
            a = a_roi.astype(np.float32) * np.float32(1.0 / 255.0)
            roi = np.ascontiguousarray(canvas[iy0:iy1, ix0:ix1])
            canvas[iy0:iy1, ix0:ix1] = cv2.blendLinear(colour, roi, a, 1.0 - a)
            o_roi[s_roi] = len(visible)
            rois.append((ix0, iy0, ix1, iy1))
            visible[:] = left.tolist()
            visible.append(n_inside)
            full_area.append(area)
            inside.append(n_inside)
            names.append(name)
            break

    # A few thin lines on top cross objects without hiding them; they are
    # not counted as occluders.
    _draw_lines(rng, canvas, int(rng.integers(0, 3)), max_thickness=1)
    out = canvas.astype(np.float32)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.8))
    out += _noise(rng, out.shape) * np.float32(rng.uniform(3.0, 8.0))
    image = _saturate_u8(out)

    objects: list[ToyObject] = []
    for k, name in enumerate(names):
        ix0, iy0, ix1, iy1 = rois[k]
        ys, xs = np.nonzero(owner[iy0:iy1, ix0:ix1] == k)
        if ys.size == 0:  # cannot happen given the 45% rule; keep boxes valid anyway
            continue
        frac = visible[k] / full_area[k]
        x1, x2 = ix0 + int(xs.min()), ix0 + int(xs.max())
        y1, y2 = iy0 + int(ys.min()), iy0 + int(ys.max())
        small = min(x2 - x1, y2 - y1) + 1 < 8
        objects.append(ToyObject(
            name=name, x1=x1, y1=y1, x2=x2, y2=y2,
            truncated=inside[k] < 0.95 * full_area[k],
            difficult=bool(frac < 0.5 or small),
            visible_fraction=round(float(frac), 4),
        ))
    return image, objects


# ---------------------------------------------------------------------------
# VOC writing
# ---------------------------------------------------------------------------


def _annotation_xml(image_id: str, width: int, height: int, objects: Iterable[ToyObject]) -> bytes:
    """VOC 2007 style annotation (1-based inclusive pixel boxes)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = YEAR_DIR
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "Toy shapes (synthetic)"
    ET.SubElement(source, "annotation").text = "toy_generator"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for ob in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = ob.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(ob.truncated))
        ET.SubElement(node, "difficult").text = str(int(ob.difficult))
        box = ET.SubElement(node, "bndbox")
        ET.SubElement(box, "xmin").text = str(ob.x1 + 1)
        ET.SubElement(box, "ymin").text = str(ob.y1 + 1)
        ET.SubElement(box, "xmax").text = str(ob.x2 + 1)
        ET.SubElement(box, "ymax").text = str(ob.y2 + 1)
    ET.indent(root, space="\t")
    return (ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _generator_sha256() -> str:
    """Hash of this module's source: a code change invalidates old data sets."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _resolve_classes(classes: Sequence[str] | int | None) -> tuple[str, ...]:
    """Accept None (defaults), a count (first N of the catalogue) or names."""
    if classes is None:
        return TOY_CLASSES
    if isinstance(classes, int):
        catalogue = tuple(SHAPE_CATALOGUE)
        if not 1 <= classes <= len(catalogue):
            raise ValueError(f"classes must be between 1 and {len(catalogue)}, got {classes}")
        return catalogue[:classes]
    names = tuple(str(c).strip() for c in classes if str(c).strip())
    unknown = [c for c in names if c not in SHAPE_CATALOGUE]
    if unknown:
        raise ValueError(f"unknown toy class(es) {unknown}; known: {sorted(SHAPE_CATALOGUE)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be a non-empty list of distinct names, got {list(names)}")
    return names


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == "toy_generator" else None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_builds(out: Path) -> None:
    """Remove what a killed earlier build left in ``out``: its ``.toy-build-<pid>-*``
    folder (a half-made set of images) and ``.<file>.<pid>.tmp`` files, only where
    process <pid> is gone (another build may be running)."""
    for entry in out.iterdir() if out.is_dir() else ():
        name = entry.name
        if name.startswith(".toy-build-"):
            pid = name[len(".toy-build-"):].split("-", 1)[0]
        elif name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
            pid = name[:-len(".tmp")].rsplit(".", 1)[-1]
        else:
            continue
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _is_complete(out: Path, manifest: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """True when ``out`` already holds a finished set made with ``params``."""
    if manifest is None or manifest.get("status") != "complete":
        return False
    if manifest.get("params") != params or manifest.get("generator_sha256") != _generator_sha256():
        return False
    year = out / DEVKIT_NAME / YEAR_DIR
    expected = params["num_trainval"] + params["num_test"]
    try:
        n_jpg = sum(1 for _ in (year / "JPEGImages").glob("*.jpg"))
    except OSError:
        return False
    return n_jpg == expected and (out / "classes.txt").is_file()


def make_toy_dataset(
    out_dir: str | os.PathLike[str] = "data/toy",
    seed: int = 0,
    num_trainval: int = 400,
    num_test: int = 200,
    size: int = 240,
    classes: Sequence[str] | int | None = None,
    min_object: float | None = None,
    max_object: float | None = None,
    max_objects: int = 5,
    jpeg_quality: int = 85,
    force: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Write the toy data set under ``out_dir`` in VOC 2007 layout.

    Layout: ``<out>/VOCdevkit2007/VOC2007/{JPEGImages,Annotations,
    ImageSets/Main}``, ``<out>/classes.txt`` and ``<out>/toy_manifest.json``.
    Image ids are six-digit and contiguous: trainval first, then test.

    ``size`` is the shorter image side; the longer one is 1.25-1.42 times it
    and a quarter of the images are portrait. Object sizes default to
    24..120 px at ``size=240`` and scale with it. If the manifest shows the
    same parameters and generator source, nothing is written unless
    ``force``. The set is built in a temporary folder and moved into place,
    so an interrupted run never leaves a half-written set behind.

    Returns a summary: paths, classes, split sizes, object counts,
    ``skipped`` and ``seconds``.
    """
    start = time.perf_counter()
    names = _resolve_classes(classes)
    if num_trainval < 1 or num_test < 0:
        raise ValueError("need num_trainval >= 1 and num_test >= 0")
    if not 64 <= size <= 4096:
        raise ValueError(f"size (shorter image side) must be in 64..4096, got {size}")
    if max_objects < 1:
        raise ValueError("max_objects must be >= 1")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError("jpeg_quality must be in 1..100")
    lo = float(min_object if min_object is not None else 24.0 * size / 240.0)
    hi = float(max_object if max_object is not None else 120.0 * size / 240.0)
    if not 8 <= lo <= hi:
        raise ValueError(f"need 8 <= min_object <= max_object, got {lo} and {hi}")

    out = Path(out_dir)
    params: dict[str, Any] = {
        "seed": int(seed), "num_trainval": int(num_trainval), "num_test": int(num_test),
        "size": int(size), "classes": list(names), "min_object": lo, "max_object": hi,
        "max_objects": int(max_objects), "jpeg_quality": int(jpeg_quality),
    }
    manifest = _read_manifest(out)
    if not force and _is_complete(out, manifest, params):
        summary = dict(manifest["summary"])  # type: ignore[index]
        summary.update(out_dir=str(out), devkit_dir=str(out / DEVKIT_NAME), skipped=True,
                       seconds=time.perf_counter() - start)
        if verbose:
            print(f"Toy data set in {out} is up to date; skipping (use --force to rebuild).")
        return summary

    devkit = out / DEVKIT_NAME
    if devkit.is_symlink() or (devkit.exists() and manifest is None):
        # Never delete something we did not make, e.g. a link to the real VOC.
        raise FileExistsError(
            f"{devkit} exists but was not made by the toy generator (no {MANIFEST_NAME} in {out}); "
            "choose another output folder or remove it yourself")
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out)

    build_manifest = {"generator": "toy_generator", "status": "building", "params": params}
    _atomic_write(out / MANIFEST_NAME, json.dumps(build_manifest, indent=2, sort_keys=True) + "\n")

    tmp_root = Path(tempfile.mkdtemp(prefix=f".toy-build-{os.getpid()}-", dir=out))
    try:
        summary = _build(tmp_root / DEVKIT_NAME, params, verbose)
        if devkit.exists():
            trash = tmp_root / "old"
            os.replace(devkit, trash)
        os.replace(tmp_root / DEVKIT_NAME, devkit)
        _atomic_write(out / "classes.txt", "".join(f"{c}\n" for c in names))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    final = {
        "generator": "toy_generator", "status": "complete",
        "generator_version": GENERATOR_VERSION, "generator_sha256": _generator_sha256(),
        "params": params, "summary": summary,
    }
    _atomic_write(out / MANIFEST_NAME, json.dumps(final, indent=2, sort_keys=True) + "\n")
    result = dict(summary)
    result.update(out_dir=str(out), devkit_dir=str(devkit), skipped=False,
                  seconds=time.perf_counter() - start)
    if verbose:
        print(f"Wrote {summary['num_images']} images, {summary['num_objects']} objects "
              f"to {devkit} in {result['seconds']:.1f}s")
    return result


def _build(devkit: Path, params: dict[str, Any], verbose: bool) -> dict[str, Any]:
    """Render every image and write the VOC files under ``devkit``."""
    year = devkit / YEAR_DIR
    jpeg_dir, ann_dir, sets_dir = year / "JPEGImages", year / "Annotations", year / "ImageSets" / "Main"
    for p in (jpeg_dir, ann_dir, sets_dir):
        p.mkdir(parents=True, exist_ok=True)
    names: list[str] = params["classes"]
    total = params["num_trainval"] + params["num_test"]
    width = max(6, len(str(total)))

    split_ids: dict[str, list[str]] = {"trainval": [], "test": []}
    # labels[cls][image_id]: 1 = has a non-difficult instance, 0 = difficult only.
    labels: dict[str, dict[str, int]] = {c: {} for c in names}
    per_class = {c: 0 for c in names}
    n_objects = n_difficult = 0
    serial = 0
    for split, count in (("trainval", params["num_trainval"]), ("test", params["num_test"])):
        for i in range(count):
            serial += 1
            image_id = f"{serial:0{width}d}"
            rng = np.random.default_rng([params["seed"], _SPLIT_CODES[split], i])
            image, objects = render_scene(rng, i, names, params["size"], params["min_object"],
                                          params["max_object"], params["max_objects"])
            q = int(np.clip(params["jpeg_quality"] + rng.integers(-6, 7), 1, 100))
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise RuntimeError(f"OpenCV failed to encode image {image_id}")
            (jpeg_dir / f"{image_id}.jpg").write_bytes(buf.tobytes())
            h, w = image.shape[:2]
            (ann_dir / f"{image_id}.xml").write_bytes(_annotation_xml(image_id, w, h, objects))
            split_ids[split].append(image_id)
            for ob in objects:
                n_objects += 1
                n_difficult += int(ob.difficult)
                per_class[ob.name] += 1
                labels[ob.name][image_id] = max(labels[ob.name].get(image_id, 0), int(not ob.difficult))
        if verbose:
            print(f"  {split}: {count} images")

    # train/val halves of trainval, chosen by a dedicated stream so they do
    # not depend on how many test images there are.
    tv = split_ids["trainval"]
    perm = np.random.default_rng([params["seed"], 99]).permutation(len(tv))
    n_train = (len(tv) + 1) // 2
    split_ids["train"] = sorted(tv[j] for j in perm[:n_train])
    split_ids["val"] = sorted(tv[j] for j in perm[n_train:])

    for split in ("trainval", "train", "val", "test"):
        ids = split_ids[split]
        _write_lines(sets_dir / f"{split}.txt", ids)
        for c in names:
            _write_lines(sets_dir / f"{c}_{split}.txt",
                         (f"{i} {labels[c].get(i, -1):2d}" for i in ids))
    return {
        "classes": list(names),
        "splits": {k: len(v) for k, v in split_ids.items()},
        "num_images": total,
        "num_objects": n_objects,
        "num_difficult": n_difficult,
        "objects_per_class": per_class,
    }
