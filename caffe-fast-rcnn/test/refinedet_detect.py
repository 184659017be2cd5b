"""Single-scale detection with a RefineDet deploy net, shared by test/refinedet_test.py and
test/refinedet_demo.py (what RefineDet's test/lib/fast_rcnn/test.py did with im_detect and
single_scale_test_net, on Python 3).

An image is read as BGR, the mean pixel subtracted, warped to the net's input size with
bilinear interpolation and run through the net; DetectionOutput's rows (image, label,
score, xmin, ymin, xmax, ymax in [0, 1]) are scaled back to the image's pixels and clipped.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

#: RefineDet's test mean pixel (BGR), the mean_value of its training transformation.
DEFAULT_MEAN = (104.0, 117.0, 123.0)


def read_image(path: str) -> np.ndarray:
    """The image at `path` as a BGR uint8 array; a clear error when it cannot be read."""
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        raise IOError('{}: cannot read the image (missing, unreadable or not an image)'
                      .format(path))
    return im


def input_size(net: Any) -> Tuple[int, int]:
    """(height, width) of the deploy net's `data` input."""
    if 'data' not in net.blobs:
        raise KeyError('the net has no "data" input; give a RefineDet deploy.prototxt')
    shape = net.blobs['data'].shape
    return int(shape[2]), int(shape[3])


def detect(net: Any, im: np.ndarray, size: Union[int, Tuple[int, int]],
           mean: Sequence[float] = DEFAULT_MEAN) -> np.ndarray:
    """Detections (K, 6): x1, y1, x2, y2, score, label in the pixels of `im`.

    `size` is the net's input (an int for a square one, or (height, width))."""
    height, width = (size, size) if isinstance(size, int) else size
    h, w = im.shape[:2]
    blob = cv2.resize(im.astype(np.float32) - np.asarray(mean, np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR)
    net.blobs['data'].reshape(1, 3, height, width)
    net.blobs['data'].data[...] = blob.transpose(2, 0, 1)[None]
    out = net.forward()
    if 'detection_out' not in out:
        raise KeyError('the net has no detection_out output (outputs: {}); give a RefineDet '
                       'deploy.prototxt'.format(', '.join(out)))
    rows = np.asarray(out['detection_out'], dtype=np.float64).reshape(-1, 7)
    rows = rows[rows[:, 2] >= 0]          # an image without detections gives one -1 row
    x1 = np.clip(rows[:, 3] * w, 0, w - 1)
    y1 = np.clip(rows[:, 4] * h, 0, h - 1)
    x2 = np.clip(rows[:, 5] * w, 0, w - 1)
    y2 = np.clip(rows[:, 6] * h, 0, h - 1)
    return np.column_stack([x1, y1, x2, y2, rows[:, 2], rows[:, 1]])


def soft_nms(dets: np.ndarray, sigma: float = 0.5, nt: float = 0.3, threshold: float = 0.001,
             method: int = 1) -> np.ndarray:
    """Soft-NMS (Bodla et al. 2017) of (N, 5) detections x1, y1, x2, y2, score: repeatedly
    keep the best-scoring box and lower the others' scores by their overlap with it
    (method 1: x (1 - IoU) above nt; 2: x exp(-IoU^2 / sigma); other: 0 above nt, i.e.
    plain NMS), dropping boxes whose score falls below threshold. Returns the kept boxes,
    in the order kept, with their lowered scores. Pixel boxes (areas with the + 1)."""
    dets = np.asarray(dets, dtype=np.float64)
    if dets.shape[0] == 0:
        return dets.reshape(0, 5).astype(np.float32)
    x1, y1, x2, y2 = (dets[:, k] for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    scores = dets[:, 4].copy()
    alive = np.ones(len(dets), dtype=bool)
    keep: List[int] = []
    # One step per kept box (each step depends on the scores the previous ones left),
    # vectorised over the boxes still in play.
    while alive.any():
        live = np.flatnonzero(alive)
        best = live[np.argmax(scores[live])]
        keep.append(int(best))
        alive[best] = False
        rest = np.flatnonzero(alive)
        if rest.size == 0:
            break
        iw = np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1
        ih = np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        iou = inter / (areas[best] + areas[rest] - inter)
        if method == 1:
            weight = np.where(iou > nt, 1 - iou, 1.0)
        elif method == 2:
            weight = np.exp(-(iou * iou) / sigma)
        else:
            weight = np.where(iou > nt, 0.0, 1.0)
        scores[rest] *= weight
        alive[rest[scores[rest] < threshold]] = False
    out = dets[keep].copy()
    out[:, 4] = scores[keep]
    return out.astype(np.float32)


def detect_imdb(net: Any, imdb: Any, size: Optional[Tuple[int, int]] = None,
             mean: Sequence[float] = DEFAULT_MEAN, soft_nms_threshold: Optional[float] = None,
             log_every: int = 0) -> List[List[Any]]:
    """Detect every image of `imdb` once (single scale); returns all_boxes[class][image],
    (K, 5) float32 arrays x1, y1, x2, y2, score, as py-faster-rcnn's evaluation takes them.
    With soft_nms_threshold (RefineDet on COCO) each class's boxes go through linear
    Soft-NMS with that score threshold."""
    size = size or input_size(net)
    num_images = len(imdb.image_index)
    all_boxes: List[List[Any]] = [[np.zeros((0, 5), np.float32) for _ in range(num_images)]
                                  for _ in range(imdb.num_classes)]
    log_every = log_every or max(1, num_images // 20)
    start = time.time()
    for i in range(num_images):
        det = detect(net, read_image(imdb.image_path_at(i)), size, mean)
        labels = det[:, 5].astype(np.int64)
        bad = (labels < 1) | (labels >= imdb.num_classes)
        if bad.any():
            raise ValueError('the net detects label {} but the data set {} has classes '
                             '1..{}: the label map and the data set disagree'.format(
                                 int(labels[bad][0]), imdb.name, imdb.num_classes - 1))
        for j in np.unique(labels):
            cls_dets = det[labels == j, :5].astype(np.float32)
            if soft_nms_threshold is not None:
                cls_dets = soft_nms(cls_dets, sigma=0.5, nt=0.30, threshold=soft_nms_threshold,
                                    method=1)
            all_boxes[j][i] = cls_dets
        if (i + 1) % log_every == 0 or i + 1 == num_images:
            print('im_detect: {:d}/{:d} {:.3f}s'.format(i + 1, num_images,
                                                       (time.time() - start) / (i + 1)))
    return all_boxes
