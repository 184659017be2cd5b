"""A tiny hand-made detection data set on disk, for the roi_data_layer / train / test tests.

Image 0 (50 x 80, landscape) holds two objects and eight proposals whose overlaps
were worked out by hand (see BOXES_0); image 1 (60 x 40, portrait) holds one.
Images are real PNG files, so the whole read / flip / resize path runs.
"""
import os

import cv2
import numpy as np

from utils.cython_bbox import bbox_overlaps
from utils.sparse import csr_matrix

CLASSES = ('__background__', 'square', 'bar')
NUM_CLASSES = len(CLASSES)

# (box, gt class or 0) -- IoU with the ground truth worked out by hand:
BOXES_0 = [
    ([10, 10, 29, 29], 1),  # gt0 (20 x 20)
    ([40, 10, 59, 29], 2),  # gt1 (20 x 20)
    ([12, 12, 31, 31], 0),  # p0: gt0, 18*18 / (800 - 324) = 0.681 -> fg 1, target (-.1, -.1, 0, 0)
    ([40, 10, 59, 39], 0),  # p1: gt1, 400 / 600 = 0.667 -> fg 2, target (0, -1/6, 0, log(2/3))
    ([0, 0, 19, 19], 0),    # p2: gt0, 100 / 700 = 0.143 -> bg
    ([20, 0, 39, 19], 0),   # p3: gt0, 100 / 700 = 0.143 -> bg
    ([60, 30, 79, 49], 0),  # p4: no overlap -> below BG_THRESH_LO
    ([15, 15, 34, 34], 0),  # p5: gt0, 225 / 575 = 0.391 -> bg
    ([50, 10, 69, 29], 0),  # p6: gt1, 200 / 600 = 0.333 -> bg
    ([25, 25, 44, 44], 0),  # p7: gt0 / gt1, 25 / 775 = 0.032 -> below BG_THRESH_LO
]
FG_0 = [0, 1, 2, 3]
BG_0 = [4, 5, 7, 8]          # overlap in [0.1, 0.5)
LOW_0 = [6, 9]               # overlap < 0.1

BOXES_1 = [
    ([5, 10, 24, 44], 1),   # gt (20 x 35)
    ([6, 12, 25, 44], 0),   # 627 / 733 = 0.855 -> fg
    ([0, 0, 19, 9], 0),     # 0 -> below BG_THRESH_LO
    ([5, 30, 24, 59], 0),   # 300 / 1000 = 0.3 -> bg
]


def make_entry(spec, num_classes=NUM_CLASSES):
    """A roidb entry (boxes uint16, gt_classes, sparse gt_overlaps) like pascal_voc makes."""
    boxes = np.array([b for b, _ in spec], dtype=np.uint16)
    gt_classes = np.array([c for _, c in spec], dtype=np.int32)
    gt = np.flatnonzero(gt_classes > 0)
    overlaps = np.zeros((len(spec), num_classes), dtype=np.float32)
    if gt.size:
        iou = bbox_overlaps(boxes.astype(np.float64), boxes[gt].astype(np.float64))
        best = iou.argmax(axis=1)
        rows = np.arange(len(spec))
        overlaps[rows, gt_classes[gt[best]]] = iou[rows, best]
    return {'boxes': boxes, 'gt_classes': gt_classes, 'gt_overlaps': csr_matrix(overlaps),
            'flipped': False, 'seg_areas': np.zeros(len(spec), np.float32)}


def write_image(path, height, width, seed):
    rng = np.random.RandomState(seed)
    im = rng.randint(0, 256, size=(height, width, 3)).astype(np.uint8)
    # a left/right asymmetric pattern so that flipping is visible
    im[:, : width // 4, 0] = 255
    cv2.imwrite(str(path), im)
    return im


class ToyImdb(object):
    """The parts of datasets.imdb that prepare_roidb / test_net use."""

    def __init__(self, root, specs=((BOXES_0, (50, 80)), (BOXES_1, (60, 40))), name='toy'):
        self.name = name
        self.classes = CLASSES
        self.num_classes = NUM_CLASSES
        self._paths = []
        self.roidb = []
        self.images = []
        for i, (spec, (h, w)) in enumerate(specs):
            path = os.path.join(str(root), 'im{}.png'.format(i))
            self.images.append(write_image(path, h, w, seed=i))
            self._paths.append(path)
            self.roidb.append(make_entry(spec))
        self.image_index = list(range(len(self._paths)))
        self.evaluated = None

    @property
    def num_images(self):
        return len(self.image_index)

    def image_path_at(self, i):
        return self._paths[i]

    def evaluate_detections(self, all_boxes, output_dir):
        self.evaluated = (all_boxes, output_dir)
