"""The pixel side of SSD's annotated-image augmentation (Caffe's util/im_transforms.cpp):
resizing with SSD's resize and interpolation modes, photometric distortion, and noise.

Images are H x W x C uint8 arrays in OpenCV's channel order (BGR, or one gray channel),
as cv2 decodes them. All the work is done by OpenCV (resizing, colour conversions, 256-entry
look-up tables applied by cv2.LUT), so no Python runs per pixel. Random numbers come from the
NumPy Generator the caller passes (the annotated transformer's, seeded by
caffe.set_random_seed), always drawn in the same order, so results repeat for a seed.

Distortion follows SSD's ApplyDistort: a fair coin picks one of two orders,

    brightness, contrast, saturation, hue, channel order     (coin > 1/2)
    brightness, saturation, hue, contrast, channel order     (otherwise)

and each step happens with its own probability: brightness adds U[-delta, delta], contrast
multiplies by U[lower, upper], saturation multiplies HSV's S and hue adds U[-delta, delta]
to HSV's H (OpenCV's 8-bit HSV, H in [0, 180)), each value rounded and saturated to
[0, 255] as cv::Mat::convertTo does; the last step shuffles the three channels. Gray images
get only brightness and contrast (HSV needs three channels).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import NetError
from .proto import caffe_pb2

_Resize = caffe_pb2.ResizeParameter

INTERP_MODES: Dict[int, int] = {
    _Resize.LINEAR: cv2.INTER_LINEAR,
    _Resize.AREA: cv2.INTER_AREA,
    _Resize.NEAREST: cv2.INTER_NEAREST,
    _Resize.CUBIC: cv2.INTER_CUBIC,
    _Resize.LANCZOS4: cv2.INTER_LANCZOS4,
}

PAD_MODES: Dict[int, int] = {
    _Resize.CONSTANT: cv2.BORDER_CONSTANT,
    _Resize.MIRRORED: cv2.BORDER_REFLECT_101,
    _Resize.REPEAT_NEAREST: cv2.BORDER_REPLICATE,
}


def hwc(img: np.ndarray) -> np.ndarray:
    """OpenCV returns H x W for one channel; keep images H x W x C throughout."""
    return img[:, :, np.newaxis] if img.ndim == 2 else img


# ---- resizing ---------------------------------------------------------------------------------

def check_resize_param(param: caffe_pb2.ResizeParameter, where: str) -> None:
    """Raise NetError naming `where` for a ResizeParameter SSD would refuse."""
    if not (param.height > 0 and param.width > 0):
        raise NetError('%s: resize_param needs height > 0 and width > 0 (got %d x %d)'
                       % (where, param.height, param.width))
    for m in param.interp_mode:
        if m not in INTERP_MODES:
            raise NetError('%s: unknown resize_param.interp_mode %d' % (where, m))
    if param.pad_mode not in PAD_MODES:
        raise NetError('%s: unknown resize_param.pad_mode %d' % (where, param.pad_mode))
    if param.resize_mode not in _RESIZERS:
        raise NetError('%s: unknown resize_param.resize_mode %d' % (where, param.resize_mode))


def choose_interp(param: caffe_pb2.ResizeParameter, rng: np.random.Generator) -> int:
    """The cv2 interpolation for one image: linear when none is listed, else one of the
    listed modes with equal probability (SSD rolls a fair die over them)."""
    modes = param.interp_mode
    if not len(modes):
        return cv2.INTER_LINEAR
    return INTERP_MODES[modes[int(rng.integers(len(modes)))]]


def pad_value(param: caffe_pb2.ResizeParameter, channels: int) -> Tuple[float, ...]:
    """The border colour of FIT_LARGE_SIZE_AND_PAD: pad_value once or per channel, else 0."""
    values = list(param.pad_value)
    if not values:
        return (0.0,) * 4
    if len(values) not in (1, channels):
        raise NetError('resize_param: Specify either 1 pad_value or as many as channels: %d'
                       % channels)
    if len(values) == 1:
        values = values * channels
    return tuple(float(v) for v in values) + (0.0,) * (4 - len(values))


def _warp(img, w, h, interp, param):
    return cv2.resize(img, (w, h), interpolation=interp)


def _fit_large_and_pad(img, w, h, interp, param):
    """Keep the aspect ratio, fit the larger side, pad the other to h x w (centred)."""
    rows, cols = img.shape[:2]
    orig = np.float32(cols) / np.float32(rows)
    if orig > np.float32(w) / np.float32(h):
        rh = int(np.floor(np.float32(w) / orig))
        out = cv2.resize(img, (w, rh), interpolation=interp)
        top = (h - rh) // 2
        border = (top, h - rh - top, 0, 0)
    else:
        rw = int(np.floor(orig * np.float32(h)))
        out = cv2.resize(img, (rw, h), interpolation=interp)
        left = (w - rw) // 2
        border = (0, 0, left, w - rw - left)
    return cv2.copyMakeBorder(out, *border, PAD_MODES[param.pad_mode],
                              value=pad_value(param, hwc(img).shape[2]))


def _fit_small(img, w, h, interp, param):
    """Keep the aspect ratio, fit the smaller side (the other overflows h x w)."""
    rows, cols = img.shape[:2]
    orig = np.float32(cols) / np.float32(rows)
    if orig < np.float32(w) / np.float32(h):
        size = (w, int(np.floor(np.float32(w) / orig)))
    else:
        size = (int(np.floor(orig * np.float32(h))), h)
    return cv2.resize(img, size, interpolation=interp)


_RESIZERS: Dict[int, Callable] = {
    _Resize.WARP: _warp,
    _Resize.FIT_LARGE_SIZE_AND_PAD: _fit_large_and_pad,
    _Resize.FIT_SMALL_SIZE: _fit_small,
}


def apply_resize(img: np.ndarray, param: caffe_pb2.ResizeParameter, interp: int) -> np.ndarray:
    """SSD's ApplyResize with the interpolation already chosen (see choose_interp)."""
    out = _RESIZERS[param.resize_mode](img, int(param.width), int(param.height), interp, param)
    return hwc(out)


# ---- photometric distortion -------------------------------------------------------------------

_IDENTITY = np.arange(256, dtype=np.float32)


def _lut(alpha: float, beta: float) -> np.ndarray:
    """256-entry table of saturate_cast<uchar>(v * alpha + beta) computed in float32, as
    cv::Mat::convertTo does on uint8 (rounding half to even, as cvRound)."""
    v = _IDENTITY * np.float32(alpha) + np.float32(beta)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def _apply_lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return hwc(cv2.LUT(img, table))


def _hsv_channel_lut(img: np.ndarray, channel: int, table: np.ndarray) -> np.ndarray:
    """Map one HSV channel of a BGR image through `table` and come back to BGR."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    tables = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=1)
    tables[:, channel] = table
    hsv = cv2.LUT(hsv, tables.reshape(256, 1, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _brightness(img, p, rng):
    if rng.random() < p.brightness_prob:
        delta = rng.uniform(-p.brightness_delta, p.brightness_delta)
        if abs(delta) > 0:
            return _apply_lut(img, _lut(1.0, delta))
    return img


def _contrast(img, p, rng):
    if rng.random() < p.contrast_prob:
        alpha = rng.uniform(p.contrast_lower, p.contrast_upper)
        if abs(alpha - 1.0) > 1e-3:
            return _apply_lut(img, _lut(alpha, 0.0))
    return img


def _saturation(img, p, rng):
    if rng.random() < p.saturation_prob:
        alpha = rng.uniform(p.saturation_lower, p.saturation_upper)
        if img.shape[2] == 3:
            return _hsv_channel_lut(img, 1, _lut(alpha, 0.0))
    return img


def _hue(img, p, rng):
    if rng.random() < p.hue_prob:
        delta = rng.uniform(-p.hue_delta, p.hue_delta)
        if abs(delta) > 0 and img.shape[2] == 3:
            return _hsv_channel_lut(img, 0, _lut(1.0, delta))
    return img


def _channel_order(img, p, rng):
    if rng.random() < p.random_order_prob and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, rng.permutation(3)])
    return img


_ORDER_A = (_brightness, _contrast, _saturation, _hue, _channel_order)
_ORDER_B = (_brightness, _saturation, _hue, _contrast, _channel_order)


def check_distort_param(p: caffe_pb2.DistortionParameter, where: str) -> None:
    """Raise NetError naming `where` for ranges SSD refuses (its CHECKs)."""
    problems = []
    if p.brightness_delta < 0:
        problems.append('brightness_delta must be non-negative')
    if p.hue_delta < 0:
        problems.append('hue_delta must be non-negative')
    for name in ('contrast', 'saturation'):
        lo, hi = getattr(p, name + '_lower'), getattr(p, name + '_upper')
        if getattr(p, name + '_prob') > 0 and (hi < lo or lo < 0):
            problems.append('%s_lower %g / %s_upper %g: need 0 <= lower <= upper'
                            % (name, lo, name, hi))
    if problems:
        raise NetError('%s: distort_param: %s' % (where, '; '.join(problems)))


def apply_distort(img: np.ndarray, param: caffe_pb2.DistortionParameter,
                  rng: np.random.Generator) -> np.ndarray:
    """SSD's ApplyDistort on an H x W x C uint8 image (see the module docstring)."""
    steps = _ORDER_A if rng.random() > 0.5 else _ORDER_B
    for step in steps:
        img = step(img, param, rng)
    return img


# ---- noise ------------------------------------------------------------------------------------

def _decolorize(img, p, rng):
    if img.shape[2] != 3:
        return img
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _gauss_blur(img, p, rng):
    return hwc(cv2.GaussianBlur(img, (7, 7), 1.5))


def _equalize_luma(img, equalize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if img.shape[2] == 1:
        return hwc(equalize(img[:, :, 0]))
    ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
    ycrcb[:, :, 0] = equalize(np.ascontiguousarray(ycrcb[:, :, 0]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def _hist_eq(img, p, rng):
    return _equalize_luma(img, cv2.equalizeHist)


def _clahe(img, p, rng):
    clahe = cv2.createCLAHE(clipLimit=4.0)
    return _equalize_luma(img, clahe.apply)


def _jpeg(img, p, rng):
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, int(p.jpeg)])
    return hwc(cv2.imdecode(buf, cv2.IMREAD_COLOR if img.shape[2] == 3 else cv2.IMREAD_GRAYSCALE))


def _erode(img, p, rng):
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3), (1, 1))
    return hwc(cv2.erode(img, element))


def _posterize(img, p, rng, div: int = 64):
    table = (np.arange(256) // div * div + div // 2).astype(np.uint8)
    return _apply_lut(img, table)


def _inverse(img, p, rng):
    return 255 - img


def _saltpepper(img, p, rng):
    sp = p.saltpepper_param
    channels = img.shape[2]
    values = [int(v) & 0xFF for v in sp.value]
    if len(values) not in (0, 1, channels):
        raise NetError('noise_param.saltpepper_param: Specify either 1 value or as many as '
                       'channels: %d' % channels)
    if not values:
        return img
    if len(values) == 1:
        values = values * channels
    n = int(np.floor(sp.fraction * img.shape[0] * img.shape[1]))
    out = img.copy()
    cols = rng.integers(0, img.shape[1], n)
    rows = rng.integers(0, img.shape[0], n)
    out[rows, cols] = np.array(values, dtype=np.uint8)
    return out


def _to_hsv(img, p, rng):
    return cv2.cvtColor(img, cv2.COLOR_BGR2HSV) if img.shape[2] == 3 else img


def _to_lab(img, p, rng):
    if img.shape[2] != 3:
        return img
    return cv2.cvtColor(img.astype(np.float32) * np.float32(1.0 / 255), cv2.COLOR_BGR2Lab)


# SSD's order of the noise effects; each runs when its switch is on.
_NOISES: Sequence[Tuple[Callable[[caffe_pb2.NoiseParameter], bool], Callable]] = (
    (lambda p: p.decolorize, _decolorize),
    (lambda p: p.gauss_blur, _gauss_blur),
    (lambda p: p.hist_eq, _hist_eq),
    (lambda p: p.clahe, _clahe),
    (lambda p: p.jpeg > 0, _jpeg),
    (lambda p: p.erode, _erode),
    (lambda p: p.posterize, _posterize),
    (lambda p: p.inverse, _inverse),
    (lambda p: p.saltpepper, _saltpepper),
    (lambda p: p.convert_to_hsv, _to_hsv),
    (lambda p: p.convert_to_lab, _to_lab),
)


def apply_noise(img: np.ndarray, param: caffe_pb2.NoiseParameter,
                rng: Optional[np.random.Generator]) -> np.ndarray:
    """SSD's ApplyNoise: every effect switched on in `param`, in SSD's order. As in SSD,
    `prob` is not consulted; convert_to_lab gives float32 L*a*b* values."""
    for on, effect in _NOISES:
        if on(param):
            img = effect(img, param, rng)
    return img
