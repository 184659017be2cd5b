"""Caffe's DataTransformer: what `transform_param` does to the images a data layer reads.

For every image of C x H x W values (a Datum's bytes or floats, or a decoded picture in
OpenCV's BGR channel order), Caffe's data_transformer.cpp computes each output value as

    out[c, h, w'] = (x[c, h_off + h, w_off + w] - mean) * scale

in this order:

1. crop: with `crop_size` k the output is k x k. In TRAIN the offsets are drawn at random
   (h_off uniform in [0, H - k], then w_off in [0, W - k]); in TEST the crop is centred,
   h_off = (H - k) // 2, w_off = (W - k) // 2. Without crop_size the image is kept whole.
2. mean: `mean_file` (a BlobProto of the UNCROPPED C x H x W size) is subtracted at the
   source position of each value, so a crop takes the matching window of the mean; or
   `mean_value`, one value for all channels or one per channel. Not both.
3. scale: the difference is multiplied by `scale`.
4. mirror: with `mirror: true` each image is flipped left-right with probability 1/2 (w' =
   k - 1 - w). As in Caffe this coin is tossed in BOTH phases: prototxts ask for it in TRAIN
   only by setting it only there.

`force_color` / `force_gray` choose how an encoded (JPEG/PNG) Datum is decoded: 3-channel
BGR or 1-channel gray; by default it is decoded "natively" (gray stays gray). They mean
nothing for raw Datums (Caffe logs an error and ignores them).

Here the transform runs with NumPy array operations in the net's float type, each rounded
as Caffe's float arithmetic rounds it (Caffe loops over values): a batch that shares one
window (TEST, or no crop) and is not mirrored is converted in one operation over the whole
batch; otherwise each image is converted, in one pass, straight into its output slot,
mirrored slots being negatively strided views. The scale is one operation over the batch. Random draws
come from a NumPy Generator owned by the transformer and seeded, as Caffe's InitRand does,
from the engine's random stream (`caffe.set_random_seed`), so a data layer that prefetches
in a thread of its own draws the same numbers whatever the timing.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from . import _config, _log, protoio, weights
from .errors import CaffeError, LayerError, NetError
from .phase import Phase
from .proto import caffe_pb2


def engine_seed() -> int:
    """A 32-bit seed drawn from the engine's CPU random stream (Caffe's caffe_rng_rand())."""
    gen = _config.generator(torch.device('cpu'))
    return int(torch.randint(0, 2 ** 32, (1,), generator=gen, dtype=torch.int64).item())


def load_mean_file(path: str, layer: str = '') -> np.ndarray:
    """The mean image of a .binaryproto BlobProto as a float32 C x H x W array.

    Caffe's mean files (compute_image_mean) hold a 1 x C x H x W blob; a 3-axis blob is
    taken as C x H x W. A blob with several items contributes its first, as Caffe reads
    only C*H*W values of it.
    """
    where = ('layer %r: ' % layer) if layer else ''
    try:
        bp = protoio.read_binary(path, caffe_pb2.BlobProto)
        arr = weights.proto_to_array(bp)
    except CaffeError as e:
        raise NetError('%scannot read mean_file %s: %s' % (where, path, e)) from None
    if arr.ndim == 4 and arr.shape[0] >= 1:
        arr = arr[0]
    elif arr.ndim != 3:
        raise NetError('%smean_file %s holds a blob of shape %s; expected 1 x C x H x W'
                       % (where, path, tuple(arr.shape)))
    return np.ascontiguousarray(arr, dtype=np.float32)


class DataTransformer:
    """Caffe's TransformationParameter applied to batches of images (see the module doc)."""

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: int,
                 layer: str = '', dtype: np.dtype = np.float32,
                 force_encoded_color: bool = False) -> None:
        self.param = param
        self.phase = Phase(int(phase))
        self.layer = layer
        self.dtype = np.dtype(dtype)
        self.scale = np.float32(param.scale)
        self.crop_size = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.force_color = bool(param.force_color) or bool(force_encoded_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise NetError('layer %r: cannot set both force_color and force_gray' % layer)
        self.mean: Optional[np.ndarray] = None
        self.mean_values: Optional[np.ndarray] = None
        if param.HasField('mean_file') and len(param.mean_value):
            raise NetError('layer %r: Cannot specify mean_file and mean_value at the same time'
                           % layer)
        if param.HasField('mean_file'):
            _log.info('data_transformer.cpp', 'Loading mean file from: %s' % param.mean_file)
            self.mean = load_mean_file(param.mean_file, layer)
        elif len(param.mean_value):
            self.mean_values = np.array(param.mean_value, dtype=np.float32)
        self._warned_raw_force = False
        # Seeded by init_rand(), which the layer calls where Caffe does (after its own draws).
        self.rng: Optional[np.random.Generator] = None

    # ---- randomness ------------------------------------------------------------------------
    def needs_rand(self) -> bool:
        """Random mirroring (any phase) or random crops (TRAIN) need a generator."""
        return self.mirror or (self.phase == Phase.TRAIN and self.crop_size > 0)

    def init_rand(self) -> None:
        """(Re)seed the transformer's generator from the engine's stream, when it needs one."""
        self.rng = np.random.default_rng(engine_seed()) if self.needs_rand() else None

    # ---- decoding --------------------------------------------------------------------------
    def decode_flag(self) -> int:
        """The cv2.imdecode flag for encoded Datums: forced color or gray, else native."""
        import cv2
        if self.force_color:
            return cv2.IMREAD_COLOR
        if self.force_gray:
            return cv2.IMREAD_GRAYSCALE
        return cv2.IMREAD_ANYCOLOR

    def note_raw_datum(self) -> None:
        """A raw (not encoded) Datum met force_color/force_gray: say so once, as Caffe does."""
        if (self.force_color or self.force_gray) and not self._warned_raw_force:
            self._warned_raw_force = True
            _log.error('data_transformer.cpp', 'force_color and force_gray only for encoded datum')

    # ---- shapes ----------------------------------------------------------------------------
    def infer_shape(self, chw: Sequence[int]) -> Tuple[int, int, int]:
        """The C x h x w an image of shape `chw` becomes (Caffe's InferBlobShape)."""
        c, h, w = (int(d) for d in chw)
        if c <= 0:
            raise LayerError('layer %r: images need at least one channel, got shape %s'
                             % (self.layer, (c, h, w)))
        k = self.crop_size
        if h < k or w < k:
            raise LayerError('layer %r: crop_size %d is larger than the %d x %d image'
                             % (self.layer, k, h, w))
        return (c, k, k) if k else (c, h, w)

    def check(self, chw: Sequence[int], error: type = LayerError) -> Tuple[int, int, int]:
        """Raise `error` unless images of shape `chw` fit crop_size, the mean file and the
        mean values; returns the transformed C x h x w."""
        c, h, w = (int(d) for d in chw)
        try:
            out = self.infer_shape((c, h, w))
        except LayerError as e:
            raise error(str(e)) from None
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise error('layer %r: the mean_file holds a %s mean but the images are %s '
                        '(C x H x W before cropping must match)'
                        % (self.layer, 'x'.join(map(str, self.mean.shape)),
                           'x'.join(map(str, (c, h, w)))))
        if self.mean_values is not None and len(self.mean_values) not in (1, c):
            raise error('layer %r: Specify either 1 mean_value or as many as channels: %d'
                        % (self.layer, c))
        return out

    # ---- the transform ---------------------------------------------------------------------
    def transform(self, batch: np.ndarray) -> np.ndarray:
        """Transform N x C x H x W images (uint8 or float) into N x C x h x w of `dtype`.

        Random choices are made per image: first the mirror coins of the whole batch, then
        the row offsets, then the column offsets.
        """
        if batch.ndim != 4:
            raise LayerError('layer %r: expected a batch of N x C x H x W images, got shape %s'
                             % (self.layer, batch.shape))
        n, c, h, w = batch.shape
        _, oh, ow = self.check((c, h, w))
        if self.rng is None and self.needs_rand():
            self.init_rand()
        flips = self.rng.integers(0, 2, size=n).astype(bool) if self.mirror else None
        k = self.crop_size
        random_crop = bool(k) and self.phase == Phase.TRAIN
        if random_crop:
            h_off = self.rng.integers(0, h - k + 1, size=n)
            w_off = self.rng.integers(0, w - k + 1, size=n)
        else:
            h_off = w_off = None
            h0, w0 = ((h - k) // 2, (w - k) // 2) if k else (0, 0)
        out = np.empty((n, c, oh, ow), dtype=self.dtype)
        if not random_crop and flips is None:
            # One window for the whole batch (TEST, or no crop), no mirroring: one array op.
            self._subtract(batch[:, :, h0:h0 + oh, w0:w0 + ow], h0, w0, out)
        else:
            # Per-image windows: each image is converted straight into its (possibly
            # mirrored, i.e. negatively strided) slot of the output, one pass per image.
            for i in range(n):
                if random_crop:
                    h0, w0 = int(h_off[i]), int(w_off[i])
                dst = out[i, :, :, ::-1] if flips is not None and flips[i] else out[i]
                self._subtract(batch[i, :, h0:h0 + oh, w0:w0 + ow], h0, w0, dst)
        if self.scale != 1:
            out *= self.scale
        return out

    def _subtract(self, src: np.ndarray, h0: int, w0: int, dst: np.ndarray) -> None:
        """dst = src - mean in the output's float type. The mean image is cut at the source
        window (rows h0.., columns w0..), so each value loses the mean of where it came from;
        mean values broadcast over rows and columns."""
        if self.mean is not None:
            mean = self.mean[:, h0:h0 + src.shape[-2], w0:w0 + src.shape[-1]]
        elif self.mean_values is not None:
            mean = self.mean_values.reshape(-1, 1, 1)
        else:
            dst[...] = src
            return
        np.subtract(src, mean, out=dst, dtype=self.dtype)
