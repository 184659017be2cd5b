"""WindowData: R-CNN's data layer, batches of image windows warped to crop_size x crop_size.

The window file (`window_data_param.source`) lists, for each image,

    # image_index
    image_path            (root_folder + image_path is read)
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2        (num_windows such lines)

with 0-based inclusive pixel corners. As in Caffe the file is read as a stream of
whitespace-separated tokens; windows with overlap >= fg_threshold are foreground (their
class_index must be > 0), windows with overlap < bg_threshold background (label forced to
0), the others are dropped. A window's image_index picks the image by its position in the
file (Caffe's image_database_), so files number their images 0, 1, 2, ...

Each batch takes batch_size - int(batch_size * fg_fraction) background windows, then the
foreground ones, each drawn uniformly (a 32-bit draw modulo the list size, as Caffe's
PrefetchRand) and, with transform_param.mirror, flipped when a second draw is odd. The draws
come from a NumPy generator seeded from the engine's stream (caffe.set_random_seed), owned by
the prefetch thread, so the batches do not depend on timing. The image is read in colour
(BGR) each time (or decoded from the file bytes kept in memory with cache_images).

Crop geometry follows window_data_layer.cpp in the net's float type: with context_pad > 0 or
crop_mode "square" the window is grown about its centre by crop / (crop - 2 * context_pad)
(square first makes it square on its longer side), rounded, clipped to the image; the clipped
part is warped (cv2.resize, bilinear like Caffe's cv::resize) to its share of the crop and
placed after the padding the clipped-off part would have taken (the right padding when
mirrored). The padding stays 0; pixels get (pixel - mean) * window_data_param.scale, the
mean being the centre crop of transform_param.mean_file at the OUTPUT position, or
transform_param.mean_value per channel. Note that Caffe's layer reads `scale` from
window_data_param, never transform_param (a V1 net's upgrade moves it there, where Caffe
then ignores it: we warn).
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from .. import _log, data_transform
from ..data_transform import DataTransformer
from ..errors import ImageError, LayerError, NetError
from ..image_file import decode_image, read_image
from . import register
from .db_data import Batch, _check_batch_size, _numpy_dtype, _PrefetchingLayer

# Columns of the window arrays.
IMAGE, LABEL, X1, Y1, X2, Y2, LINE = range(7)


class WindowFile(NamedTuple):
    """What a window file holds, split into foreground and background windows."""
    images: List[Tuple[str, Tuple[int, int, int], int]]  # (path, (C, H, W), line of its '#')
    fg: np.ndarray  # (n, 7) int64: image, label, x1, y1, x2, y2, line
    bg: np.ndarray
    label_hist: Dict[int, int]
    last_index: int


class _Tokens:
    """The whitespace-separated tokens of a file with their line numbers (a C++ >> stream)."""

    def __init__(self, text: str, path: str, layer: str):
        self.path, self.layer = path, layer
        self._it: Iterator[Tuple[str, int]] = (
            (tok, n) for n, line in enumerate(text.splitlines(), 1) for tok in line.split())
        self.line = 0

    def next(self) -> Optional[str]:
        """The next token, or None at the end of the file."""
        tok = next(self._it, None)
        if tok is None:
            return None
        self.line = tok[1]
        return tok[0]

    def error(self, message: str, line: Optional[int] = None) -> NetError:
        return NetError('layer %r (WindowData): window file %s, line %d: %s'
                        % (self.layer, self.path, self.line if line is None else line, message))

    def need(self, what: str) -> str:
        tok = self.next()
        if tok is None:
            raise self.error('the file ends where %s was expected' % what)
        return tok

    def integer(self, what: str) -> int:
        tok = self.need(what)
        try:
            return int(tok)
        except ValueError:
            raise self.error('expected an integer %s, got %r' % (what, tok)) from None

    def number(self, what: str) -> np.float32:
        tok = self.need(what)
        try:
            value = np.float32(float(tok))
        except ValueError:
            raise self.error('expected a number %s, got %r' % (what, tok)) from None
        if not np.isfinite(value):
            raise self.error('%s must be finite, got %r' % (what, tok))
        return value


def read_window_file(path: str, root_folder: str, fg_threshold: float, bg_threshold: float,
                     layer: str = '') -> WindowFile:
    """Parse an R-CNN window file (see the module docstring); errors name the file and line."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise NetError('layer %r (WindowData): Failed to open window file %s (%s)'
                       % (layer, path, e.strerror)) from None
    toks = _Tokens(text, path, layer)
    fg_t, bg_t = np.float32(fg_threshold), np.float32(bg_threshold)
    images: List[Tuple[str, Tuple[int, int, int], int]] = []
    fg: List[Tuple[int, ...]] = []
    bg: List[Tuple[int, ...]] = []
    hist: Dict[int, int] = {0: 0}
    hashtag = toks.next()
    if hashtag is None:
        raise NetError('layer %r (WindowData): Window file is empty: %s' % (layer, path))
    image_index = -1
    while hashtag is not None:
        if hashtag != '#':
            raise toks.error('expected "#" starting an image record, got %r' % hashtag)
        header_line = toks.line
        image_index = toks.integer('image index after "#"')
        image_path = root_folder + toks.need('image path')
        size = (toks.integer('channels'), toks.integer('height'), toks.integer('width'))
        images.append((image_path, size, header_line))
        num_windows = toks.integer('number of windows')
        if num_windows < 0:
            raise toks.error('the number of windows must be >= 0, got %d' % num_windows)
        for i in range(num_windows):
            what = 'window %d of image %d' % (i, image_index)
            label = toks.integer('class_index of %s' % what)
            overlap = toks.number('overlap of %s' % what)
            x1, y1, x2, y2 = (toks.integer('%s of %s' % (corner, what))
                              for corner in ('x1', 'y1', 'x2', 'y2'))
            if x2 < x1 or y2 < y1:
                raise toks.error('%s has x1 y1 x2 y2 = %d %d %d %d: corners are inclusive '
                                 'pixels with x1 <= x2 and y1 <= y2' % (what, x1, y1, x2, y2))
            if overlap >= fg_t:
                if label <= 0:
                    raise toks.error('%s overlaps %g >= fg_threshold %g, so it is foreground, '
                                     'but its class_index is %d (foreground classes are > 0)'
                                     % (what, overlap, fg_t, label))
                fg.append((image_index, label, x1, y1, x2, y2, toks.line))
                hist[label] = hist.get(label, 0) + 1
            elif overlap < bg_t:
                bg.append((image_index, 0, x1, y1, x2, y2, toks.line))
                hist[0] += 1
        if image_index % 100 == 0:
            _log.info('window_data_layer.cpp', 'num: %d %s %d %d %d windows to process: %d'
                      % ((image_index, image_path) + size + (num_windows,)))
        hashtag = toks.next()
    for rows in (fg, bg):
        for w in rows:
            if not 0 <= w[IMAGE] < len(images):
                raise toks.error('a window of image index %d refers to no image: the file lists '
                                 '%d images, indexed 0..%d in file order'
                                 % (w[IMAGE], len(images), len(images) - 1), w[LINE])
    as_array = lambda rows: np.array(rows, dtype=np.int64).reshape(-1, 7)  # noqa: E731
    return WindowFile(images, as_array(fg), as_array(bg), hist, image_index)


def _round(x) -> int:
    """C's round(): halves away from zero (np.round would round them to even)."""
    a = abs(float(x))
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1
    return int(r if x >= 0 else -r)


class Geometry(NamedTuple):
    """Where a window's pixels come from and where they go in the crop."""
    x1: int  # source rectangle in the image, inclusive corners
    y1: int
    x2: int
    y2: int
    width: int  # size the rectangle is warped to
    height: int
    pad_w: int  # offset of the warped rectangle in the crop_size x crop_size output
    pad_h: int


def window_geometry(x1: int, y1: int, x2: int, y2: int, img_h: int, img_w: int, crop: int,
                    context_pad: int, square: bool, mirror: bool,
                    ftype: type = np.float32) -> Geometry:
    """Caffe's crop geometry for one window, computed in the float type `ftype`.

    Without context padding and in "warp" mode the window itself is warped to the whole
    crop. Otherwise it is expanded so that, once warped, context_pad pixels of context
    surround it; the part outside the image is clipped off and leaves zero padding, sized
    by the same warping scale (mirrored windows keep the right-hand padding on the left).
    """
    if not (context_pad > 0 or square):
        return Geometry(x1, y1, x2, y2, crop, crop, 0, 0)
    f = ftype
    context_scale = f(crop) / f(crop - 2 * context_pad)
    half_h = f((y2 - y1 + 1) / 2.0)
    half_w = f((x2 - x1 + 1) / 2.0)
    center_x = f(x1) + half_w
    center_y = f(y1) + half_h
    if square:
        if half_h > half_w:
            half_w = half_h
        else:
            half_h = half_w
    x1 = _round(center_x - half_w * context_scale)
    x2 = _round(center_x + half_w * context_scale)
    y1 = _round(center_y - half_h * context_scale)
    y2 = _round(center_y + half_h * context_scale)
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - img_w + 1), max(0, y2 - img_h + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    scale_x = f(crop) / f(unclipped_w)
    scale_y = f(crop) / f(unclipped_h)
    width = _round(f(x2 - x1 + 1) * scale_x)
    height = _round(f(y2 - y1 + 1) * scale_y)
    pad_x1, pad_x2 = _round(f(pad_x1) * scale_x), _round(f(pad_x2) * scale_x)
    pad_y1 = _round(f(pad_y1) * scale_y)
    pad_h = pad_y1
    pad_w = pad_x2 if mirror else pad_x1
    # Rounding may overshoot the crop by a pixel: shrink the warped part to fit.
    height = min(height, crop - pad_h)
    width = min(width, crop - pad_w)
    return Geometry(x1, y1, x2, y2, width, height, pad_w, pad_h)


class _WindowBatches:
    """Samples, reads, warps and normalises one batch of windows per call (prefetch thread)."""

    def __init__(self, layer: 'WindowData', windows: WindowFile, cached: Optional[List[np.ndarray]],
                 rng: np.random.Generator):
        self.name = layer.layer_param.name
        self.source = layer.layer_param.window_data_param.source
        self.windows = windows
        self.cached = cached
        self.rng = rng
        self.batch_size = layer.batch_size
        self.num_fg = layer.num_fg
        self.channels = layer.channels
        self.crop = layer.crop_size
        self.context_pad = layer.context_pad
        self.square = layer.square
        self.mirror = layer.mirror
        self.scale = layer.scale
        self.mean = layer.mean
        self.mean_off = layer.mean_off
        self.mean_values = layer.mean_values
        self.dtype = layer.dtype

    def _image(self, index: int) -> np.ndarray:
        import cv2
        path = self.windows.images[index][0]
        try:
            if self.cached is not None:
                return decode_image(self.cached[index], cv2.IMREAD_COLOR, path)
            return read_image(path, cv2.IMREAD_COLOR)
        except ImageError as e:
            raise LayerError('layer %r (WindowData): Could not open or find file %s (image %d of '
                             'window file %s): %s' % (self.name, path, index, self.source, e)) \
                from None

    def sample(self) -> Tuple[np.ndarray, np.ndarray]:
        """The batch's windows (background first) and their mirror flags."""
        n = self.batch_size
        draws = self.rng.integers(0, 2 ** 32, size=(n, 2 if self.mirror else 1), dtype=np.uint64)
        n_bg = n - self.num_fg
        bg = self.windows.bg[draws[:n_bg, 0] % np.uint64(max(len(self.windows.bg), 1))]
        fg = self.windows.fg[draws[n_bg:, 0] % np.uint64(max(len(self.windows.fg), 1))]
        flips = (draws[:, 1] % 2 == 1) if self.mirror else np.zeros(n, dtype=bool)
        return np.concatenate([bg, fg]), flips

    def __call__(self) -> Batch:
        import cv2
        windows, flips = self.sample()
        k = self.crop
        out = np.zeros((self.batch_size, self.channels, k, k), dtype=self.dtype)
        labels = windows[:, LABEL].astype(self.dtype)
        ftype = self.dtype.type
        images: Dict[int, np.ndarray] = {}  # an image met twice in a batch is read once
        for i, (w, flip) in enumerate(zip(windows, flips)):
            index = int(w[IMAGE])
            img = images.get(index)
            if img is None:
                img = images[index] = self._image(index)
            g = window_geometry(int(w[X1]), int(w[Y1]), int(w[X2]), int(w[Y2]), img.shape[0],
                                img.shape[1], k, self.context_pad, self.square, bool(flip), ftype)
            if (g.x1 < 0 or g.y1 < 0 or g.x2 >= img.shape[1] or g.y2 >= img.shape[0]
                    or g.x2 < g.x1 or g.y2 < g.y1 or g.width <= 0 or g.height <= 0):
                raise LayerError('layer %r (WindowData): window x1 y1 x2 y2 = %d %d %d %d (window '
                                 'file %s, line %d) does not fit the %dx%d image %s%s'
                                 % (self.name, w[X1], w[Y1], w[X2], w[Y2], self.source, w[LINE],
                                    img.shape[1], img.shape[0], self.windows.images[index][0],
                                    '' if self.context_pad or self.square else
                                    ' (without context_pad the window must lie inside the image)'))
            patch = cv2.resize(img[g.y1:g.y2 + 1, g.x1:g.x2 + 1], (g.width, g.height),
                               interpolation=cv2.INTER_LINEAR)
            if flip:
                patch = patch[:, ::-1]
            rows = slice(g.pad_h, g.pad_h + g.height)
            cols = slice(g.pad_w, g.pad_w + g.width)
            dst = out[i, :, rows, cols]
            src = patch.transpose(2, 0, 1)
            if self.mean is not None:
                o = self.mean_off
                mean = self.mean[:, o + g.pad_h:o + g.pad_h + g.height,
                                 o + g.pad_w:o + g.pad_w + g.width]
                np.subtract(src, mean, out=dst, dtype=self.dtype)
            elif self.mean_values is not None:
                np.subtract(src, self.mean_values, out=dst, dtype=self.dtype)
            else:
                dst[...] = src
            if self.scale != 1:
                dst *= self.scale
        return out, labels


@register('WindowData')
class WindowData(_PrefetchingLayer):
    """R-CNN's window data layer (see the module docstring); tops: data and label."""
    exact_num_top = 2

    def setup(self, bottom, top):
        lp = self.layer_param
        p = lp.window_data_param
        tp = lp.transform_param
        name = lp.name
        _log.info('window_data_layer.cpp',
                  'Window data layer:\n  foreground (object) overlap threshold: %g\n'
                  '  background (non-object) overlap threshold: %g\n'
                  '  foreground sampling fraction: %g\n  cache_images: %d\n  root_folder: %s'
                  % (p.fg_threshold, p.bg_threshold, p.fg_fraction, p.cache_images,
                     p.root_folder))
        self.dtype = _numpy_dtype()
        # Caffe's base data layer builds a DataTransformer (checks and loads the mean, seeds
        # its unused generator from the engine's stream); the window layer reads its fields.
        self.transformer = DataTransformer(tp, self.phase, name, self.dtype)
        self.transformer.init_rand()
        self.crop_size = int(tp.crop_size)
        if self.crop_size <= 0:
            raise NetError('layer %r (WindowData): transform_param.crop_size must be > 0 (the '
                           'size windows are warped to), got %d' % (name, self.crop_size))
        self.mirror = bool(tp.mirror)
        self.context_pad = int(p.context_pad)
        if 2 * self.context_pad >= self.crop_size:
            raise NetError('layer %r (WindowData): context_pad %d leaves nothing of a crop_size '
                           '%d crop (2 * context_pad must be < crop_size)'
                           % (name, self.context_pad, self.crop_size))
        if p.crop_mode not in ('warp', 'square'):
            raise NetError('layer %r (WindowData): crop_mode must be "warp" or "square", got %r'
                           % (name, p.crop_mode))
        self.square = p.crop_mode == 'square'
        self.scale = self.dtype.type(p.scale)
        if tp.HasField('scale') and tp.scale != 1:
            _log.warning('window_data_layer.cpp', 'layer %s: WindowData scales by '
                         'window_data_param.scale (%g); transform_param.scale (%g) is ignored, '
                         'as in Caffe' % (name, p.scale, tp.scale))
        self.batch_size = _check_batch_size(name, int(p.batch_size))
        self.num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        if not 0 <= self.num_fg <= self.batch_size:
            raise NetError('layer %r (WindowData): fg_fraction %g must lie in [0, 1]'
                           % (name, p.fg_fraction))
        rng = np.random.default_rng(data_transform.engine_seed())  # Caffe's prefetch_rng_

        windows = read_window_file(p.source, p.root_folder, p.fg_threshold, p.bg_threshold, name)
        self.windows = windows
        _log.info('window_data_layer.cpp', 'Number of images: %d' % (windows.last_index + 1))
        for label in sorted(windows.label_hist):
            _log.info('window_data_layer.cpp', 'class %d has %d samples'
                      % (label, windows.label_hist[label]))
        _log.info('window_data_layer.cpp', 'Amount of context padding: %d' % self.context_pad)
        _log.info('window_data_layer.cpp', 'Crop mode: %s' % p.crop_mode)
        for kind, rows, need, rule in (
                ('background', windows.bg, self.batch_size - self.num_fg,
                 'overlap < bg_threshold %g' % p.bg_threshold),
                ('foreground', windows.fg, self.num_fg,
                 'overlap >= fg_threshold %g' % p.fg_threshold)):
            if need and not len(rows):
                raise NetError('layer %r (WindowData): window file %s has no %s windows (%s) '
                               'but each batch takes %d' % (name, p.source, kind, rule, need))
        # The image is always read in colour; the top takes the channels of the last record.
        path, (channels, _, _), line = windows.images[-1]
        if channels != 3:
            raise NetError('layer %r (WindowData): window file %s, line %d: %s has %d channels; '
                           'windows are read as 3-channel BGR images (the data top takes the '
                           'channels of the last image)' % (name, p.source, line, path, channels))
        self.channels = channels
        k = self.crop_size
        top[0].reshape(self.batch_size, channels, k, k)
        top[1].reshape(self.batch_size)
        _log.info('window_data_layer.cpp', 'output data size: %d,%d,%d,%d'
                  % (self.batch_size, channels, k, k))

        self.mean: Optional[np.ndarray] = None
        self.mean_values: Optional[np.ndarray] = None
        self.mean_off = 0
        if self.transformer.mean is not None:
            mean = self.transformer.mean
            c, mh, mw = mean.shape
            self.mean_off = (mw - k) // 2 if mw >= k else -1
            if c != channels or self.mean_off < 0 or self.mean_off + k > mh:
                raise NetError('layer %r (WindowData): the mean_file holds a %dx%dx%d mean; '
                               'WindowData subtracts its centre %dx%d (offset (width - crop_size)'
                               ' / 2 on both axes) from %d-channel windows, so it needs %d '
                               'channels and height and width >= crop_size'
                               % (name, c, mh, mw, k, k, channels, channels))
            self.mean = mean.astype(self.dtype)
        elif self.transformer.mean_values is not None:
            mv = self.transformer.mean_values
            if len(mv) not in (1, channels):
                raise NetError('layer %r (WindowData): Specify either 1 mean_value or as many as '
                               'channels: %d' % (name, channels))
            self.mean_values = np.broadcast_to(mv.astype(self.dtype), (channels,)) \
                .reshape(channels, 1, 1).copy()

        cached = None
        if p.cache_images:
            cached = []
            for path, _, line in windows.images:
                try:
                    with open(path, 'rb') as f:
                        cached.append(np.frombuffer(f.read(), dtype=np.uint8))
                except OSError as e:
                    raise NetError('layer %r (WindowData): Could not open or find file %s (window '
                                   'file %s, line %d): %s'
                                   % (name, path, p.source, line, e.strerror)) from None
        self._start(_WindowBatches(self, windows, cached, rng))
