"""caffe.io: getting arrays, images and protos in and out of the shapes a Net wants.

pycaffe's helpers, with the same names, arguments and results:

- BlobProto / BlobProtoVector / Datum <-> NumPy (`array_to_blobproto`,
  `blobproto_to_array`, `array_to_datum`, `datum_to_array`, ...), e.g. to read a
  `mean.binaryproto` or to write an LMDB of Datums;
- `Transformer`: turns an H x W x K image (float, [0, 1], RGB) into the K x H x W blob a
  net was trained on (transpose, channel swap, raw scale, mean, input scale) and back;
- `load_image`, `resize_image`, `oversample` for the classic classification demos.

pycaffe used scikit-image and SciPy for the image functions; this project does not ship
them, so images are read with OpenCV (Pillow as a fall-back for formats OpenCV lacks)
and resized with OpenCV, keeping pycaffe's conventions: float32 results, images in
[0, 1] RGB, interpolation chosen by spline order, values kept inside the input's range.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ImageError
from .proto import caffe_pb2
from .weights import blob_to_proto

__all__ = [
    'blobproto_to_array', 'array_to_blobproto', 'arraylist_to_blobprotovector_str',
    'arraylist_to_blobprotovecor_str', 'blobprotovector_str_to_arraylist', 'array_to_datum',
    'datum_to_array', 'Transformer', 'load_image', 'resize_image', 'oversample',
]


# ---- proto / datum / ndarray conversion ------------------------------------------------------

def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or, with `return_diff`, its diff) as an array of the blob's shape.

    As in pycaffe, a blob that sets any of the legacy num/channels/height/width fields is
    4-d; otherwise `shape.dim` gives the shape (no dims: a scalar). Values keep the
    precision they were stored in: float32 from `data`/`diff`, float64 from
    `double_data`/`double_diff`.
    """
    if return_diff:
        doubles, floats = blob.double_diff, blob.diff
    else:
        doubles, floats = blob.double_data, blob.data
    if len(doubles):
        values = np.array(doubles, dtype=np.float64)
    else:
        values = np.array(floats, dtype=np.float32)
    legacy = any(blob.HasField(f) for f in ('num', 'channels', 'height', 'width'))
    if legacy:
        shape: Tuple[int, ...] = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(int(d) for d in blob.shape.dim)
    needed = int(np.prod(shape, dtype=np.int64))
    if values.size != needed:
        raise ValueError('BlobProto holds %d %s values but its %s shape %s needs %d'
                         % (values.size, 'diff' if return_diff else 'data',
                            'legacy (num, channels, height, width)' if legacy else '',
                            shape, needed))
    return values.reshape(shape)


def array_to_blobproto(arr: np.ndarray, diff: Optional[np.ndarray] = None) -> caffe_pb2.BlobProto:
    """A BlobProto (with `shape`, float `data` and optionally `diff`) holding the array.

    Like pycaffe, values are stored in the single-precision fields whatever the input
    type; `diff` must have as many elements as `arr`.
    """
    arr = np.asarray(arr)
    if diff is not None:
        diff = np.asarray(diff)
        if diff.size != arr.size:
            raise ValueError('array_to_blobproto: diff has %d elements, the array %d'
                             % (diff.size, arr.size))
        diff = diff.astype(np.float32)
    return blob_to_proto(arr.astype(np.float32), diff)


def arraylist_to_blobprotovector_str(arraylist: Iterable[np.ndarray]) -> bytes:
    """A serialised BlobProtoVector of the arrays (for nets that take one as input)."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


# pycaffe's spelling of the same function; kept so existing scripts keep working.
arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str


def blobprotovector_str_to_arraylist(data: bytes) -> List[np.ndarray]:
    """The arrays of a serialised BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: Optional[int] = None) -> caffe_pb2.Datum:
    """A Datum of a C x H x W array: uint8 arrays go to the `data` bytes, others to
    `float_data`. The label is only set when given (an unset label serialises smaller)."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError('Incorrect array shape.')
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A Datum's pixels as a C x H x W array (uint8 from `data`, float from `float_data`).

    The label is not returned (it is `datum.label`). An `encoded` Datum (JPEG/PNG bytes,
    as convert_imageset --encoded writes) is decoded the way Caffe's DecodeDatum does:
    BGR channel order, C x H x W.
    """
    if datum.encoded:
        import cv2
        from .image_file import decode_image
        flag = cv2.IMREAD_COLOR if datum.channels != 1 else cv2.IMREAD_GRAYSCALE
        img = decode_image(np.frombuffer(datum.data, dtype=np.uint8), flag,
                           'in an encoded Datum (datum_to_array)')
        if img.ndim == 2:
            img = img[:, :, np.newaxis]
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        arr = np.array(datum.float_data, dtype=np.float64)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError('Datum holds %d values but channels x height x width = %s needs %d'
                         % (arr.size, shape, int(np.prod(shape, dtype=np.int64))))
    return arr.reshape(shape).copy()


# ---- pre-processing ------------------------------------------------------------------------

class Transformer:
    """Prepare images for a net's inputs and undo it (pycaffe's caffe.io.Transformer).

    `inputs` maps each input blob name to its shape (N x K x H x W), e.g.
    `{'data': net.blobs['data'].data.shape}`. For each input, `preprocess` applies, in
    this order: convert to float32, resize to H x W, transpose (to K x H x W), channel
    swap (RGB -> BGR), raw scale (e.g. [0, 1] -> [0, 255]), mean subtraction, input
    scale. `deprocess` inverts the steps in reverse order.
    """

    def __init__(self, inputs: Dict[str, Sequence[int]]):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: Dict[str, Tuple[int, ...]] = {}
        self.channel_swap: Dict[str, Tuple[int, ...]] = {}
        self.raw_scale: Dict[str, float] = {}
        self.mean: Dict[str, np.ndarray] = {}
        self.input_scale: Dict[str, float] = {}

    def __check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise Exception('{} is not one of the net inputs: {}'.format(in_, self.inputs))

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """An H' x W' x K image as the K x H x W array input `in_` expects."""
        self.__check_input(in_)
        # A private float32 copy: the steps below work in place and must not touch `data`.
        caffe_in = np.array(data, dtype=np.float32)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Invert `preprocess` (except the resize): a K x H x W blob back to H x W x K."""
        self.__check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        if not np.issubdtype(decaf_in.dtype, np.floating):
            decaf_in = decaf_in.astype(np.float32)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order taking the image (H x W x K) to the blob's K x H x W, e.g. (2, 0, 1)."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception('Transpose order needs to have the same number of '
                            'dimensions as the input.')
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception('Channel swap needs to have the same number of '
                            'dimensions as the input channels.')
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply the raw image by `scale` (255 for models trained on [0, 255] pixels)."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean to subtract: per channel (K,) or per pixel (K x H x W, or H x W)."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError('Mean channels incompatible with input.')
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError('Mean shape invalid')
            if ms != self.inputs[in_][1:]:
                raise ValueError('Mean shape incompatible with input shape.')
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply the blob by `scale` after mean subtraction (raw_scale acts before)."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


# ---- image I/O -------------------------------------------------------------------------------

def _input_transformer(net, mean=None, input_scale=None, raw_scale=None,
                       channel_swap=None) -> 'Transformer':
    """The Transformer of a net's first input configured as pycaffe's Classifier and
    Detector configure theirs: HxWxK -> KxHxW, then the optional settings."""
    in_ = net.inputs[0]
    t = Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


def _to_float01(img: np.ndarray) -> np.ndarray:
    """scikit-image's img_as_float: integers scaled by their type's maximum, floats kept."""
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.unsignedinteger):
        return img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max)
    if np.issubdtype(img.dtype, np.signedinteger):
        # Signed images map [0, max] to [0, 1] (negative values go below 0), as skimage.
        return img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max)
    return img.astype(np.float32)


def _read_rgb(filename: str) -> np.ndarray:
    """The file's pixels as stored: H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)."""
    import cv2
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha and ignores EXIF orientation, as
    # scikit-image's reader does.
    from .image_file import truncation
    data = np.fromfile(str(filename), dtype=np.uint8)
    why = truncation(data)
    if why is not None:   # imread would hand back grey rows in place of the missing data
        raise ImageError('load_image: cannot use image %r: %s' % (str(filename), why))
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is not None:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.ndim == 3 and img.shape[2] == 3:
            img = img[:, :, ::-1]
        elif img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, [2, 1, 0, 3]]
        return np.ascontiguousarray(img)
    try:  # formats OpenCV does not read (GIF, ...)
        from PIL import Image
        with Image.open(filename) as pil:
            if pil.mode not in ('L', 'RGB', 'RGBA', 'I;16', 'I', 'F'):
                pil = pil.convert('RGBA' if 'A' in pil.getbands() else 'RGB')
            return np.asarray(pil)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise IOError('load_image: cannot read image %r (%s)' % (str(filename), e)) from None


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """Load an image as float32 in [0, 1]: H x W x 3 RGB if `color`, else H x W x 1.

    Grey images are tiled to three channels when `color` is asked for; colour images
    are converted to intensity (ITU-R 709 luma, as scikit-image's rgb2gray) when it is
    not; an alpha channel is dropped.
    """
    import os
    if not os.path.isfile(str(filename)):
        raise FileNotFoundError('load_image: no such file: %r' % str(filename))
    img = _to_float01(_read_rgb(filename))
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if not color and img.ndim == 3:
        weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        img = img[:, :, :3] @ weights
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return np.ascontiguousarray(img, dtype=np.float32)


_INTERP = {0: 'INTER_NEAREST', 1: 'INTER_LINEAR', 2: 'INTER_CUBIC', 3: 'INTER_CUBIC',
           4: 'INTER_LANCZOS4', 5: 'INTER_LANCZOS4'}


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an H x W x K array to new_dims = (height, width), keeping K; float32 result.

    `interp_order` is the spline order pycaffe passes to scikit-image: 0 nearest,
    1 bilinear (default), 2-3 bicubic, 4-5 Lanczos. As in pycaffe the result stays
    inside the input's value range (higher orders would overshoot at edges), and a
    constant image comes back as that constant.
    """
    import cv2
    im = np.asarray(im)
    if im.ndim != 3:
        raise ValueError('resize_image expects an H x W x K array, got shape %s' % (im.shape,))
    if interp_order not in _INTERP:
        raise ValueError('resize_image: interp_order must be 0..5, got %r' % (interp_order,))
    new_h, new_w = (int(d) for d in new_dims)
    if new_h <= 0 or new_w <= 0:
        raise ValueError('resize_image: new dimensions must be positive, got %s' % (tuple(new_dims),))
    k = im.shape[2]
    src = im.astype(np.float32)
    im_min, im_max = (float(src.min()), float(src.max())) if src.size else (0.0, 0.0)
    if im_max == im_min:
        return np.full((new_h, new_w, k), im_min, dtype=np.float32)
    flag = getattr(cv2, _INTERP[interp_order])
    # OpenCV handles at most 512 channels per call; wider arrays go in slices.
    parts = []
    for c0 in range(0, k, 512):
        part = cv2.resize(np.ascontiguousarray(src[:, :, c0:c0 + 512]), (new_w, new_h),
                          interpolation=flag)
        if part.ndim == 2:
            part = part[:, :, np.newaxis]
        parts.append(part)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    if interp_order > 1:
        np.clip(out, im_min, im_max, out=out)
    return out.astype(np.float32, copy=False)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """Ten crops per image: four corners and centre, then the same five mirrored.

    images: H x W x K arrays of one size; crop_dims: (height, width).
    Returns a (10 * N) x height x width x K float32 array, crops of image i at
    10*i .. 10*i+9 (corners in the order top-left, top-right, bottom-left,
    bottom-right, then the centre; the last five flipped left-right).
    """
    if len(images) == 0:
        raise ValueError('oversample: no images given')
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims, dtype=int)
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    if ch > im_shape[0] or cw > im_shape[1]:
        raise ValueError('oversample: crop %dx%d is larger than the images (%dx%d)'
                         % (ch, cw, im_shape[0], im_shape[1]))
    tops = (0, int(im_shape[0]) - ch)
    lefts = (0, int(im_shape[1]) - cw)
    boxes = [(t, l) for t in tops for l in lefts]
    # Centre crop: the box of crop size around the image centre (pycaffe's rounding:
    # truncation of centre - crop/2).
    center = im_shape[:2] / 2.0
    boxes.append((int(center[0] - ch / 2.0), int(center[1] - cw / 2.0)))
    crops = np.empty((10 * len(images), ch, cw, int(im_shape[-1])), dtype=np.float32)
    for i, im in enumerate(images):
        if tuple(im.shape) != tuple(im_shape):
            raise ValueError('oversample: image %d has shape %s, image 0 %s'
                             % (i, im.shape, tuple(im_shape)))
        base = 10 * i
        for j, (t, l) in enumerate(boxes):
            crops[base + j] = im[t:t + ch, l:l + cw, :]
        crops[base + 5:base + 10] = crops[base:base + 5, :, ::-1, :]
    return crops
