"""Test a Fast R-CNN network on an imdb (image database).

:func:`im_detect` runs a net on one image and returns per-class scores and
boxes for every RoI (precomputed proposals, or the RPN's own with
cfg.TEST.HAS_RPN).  :func:`test_net` runs it over a whole imdb, keeps the
detections above a score threshold, applies per-class NMS and a per-image cap,
saves them (``detections.pkl``) and asks the imdb to evaluate them.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from caffe import atomic_files
from caffe.image_file import read_image
from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes
from fast_rcnn.config import cfg, get_output_dir
from fast_rcnn.net_classes import check_net_classes
from fast_rcnn.nms_wrapper import nms
from utils.blob import image_pyramid_blob
from utils.timer import Timer

__all__ = ['im_detect', 'vis_detections', 'apply_nms', 'test_net']


def _get_image_blob(im: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Converts an image into a network input.

    Arguments:
        im (ndarray): a color image in BGR order

    Returns:
        blob (ndarray): a data blob holding an image pyramid (one level per
            cfg.TEST.SCALES entry)
        im_scale_factors (ndarray): image scales (relative to im) used in
            the image pyramid
    """
    return image_pyramid_blob(im, cfg.PIXEL_MEANS, cfg.TEST.SCALES, cfg.TEST.MAX_SIZE,
                              'im_detect')


def _get_rois_blob(im_rois: np.ndarray, im_scale_factors: np.ndarray) -> np.ndarray:
    """Converts RoIs into network inputs.

    Arguments:
        im_rois (ndarray): R x 4 matrix of RoIs in original image coordinates
        im_scale_factors (list): scale factors as returned by _get_image_blob

    Returns:
        blob (ndarray): R x 5 matrix of RoIs in the image pyramid
    """
    rois, levels = _project_im_rois(im_rois, im_scale_factors)
    rois_blob = np.hstack((levels, rois))
    return rois_blob.astype(np.float32, copy=False)


def _project_im_rois(im_rois: np.ndarray, scales: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Project image RoIs into the image pyramid built by _get_image_blob.

    With several scales each RoI goes to the level where its area is closest
    to 224 x 224 pixels (the input size the classifier was pre-trained on).

    Arguments:
        im_rois (ndarray): R x 4 matrix of RoIs in original image coordinates
        scales (list): scale factors as returned by _get_image_blob

    Returns:
        rois (ndarray): R x 4 matrix of projected RoI coordinates
        levels (ndarray): R x 1 image pyramid level used by each projected RoI
    """
    im_rois = np.asarray(im_rois, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)

    if len(scales) > 1:
        widths = im_rois[:, 2] - im_rois[:, 0] + 1
        heights = im_rois[:, 3] - im_rois[:, 1] + 1
        areas = widths * heights
        scaled_areas = areas[:, np.newaxis] * (scales[np.newaxis, :] ** 2)
        diff_areas = np.abs(scaled_areas - 224 * 224)
        levels = diff_areas.argmin(axis=1)[:, np.newaxis]
    else:
        levels = np.zeros((im_rois.shape[0], 1), dtype=np.int64)

    rois = im_rois * scales[levels]
    return rois, levels


def _get_blobs(im: np.ndarray, rois: Optional[np.ndarray]) -> Tuple[Dict[str, Any], np.ndarray]:
    """Convert an image and RoIs within that image into network inputs."""
    blobs: Dict[str, Any] = {'data': None, 'rois': None}
    blobs['data'], im_scale_factors = _get_image_blob(im)
    if not cfg.TEST.HAS_RPN:
        blobs['rois'] = _get_rois_blob(rois, im_scale_factors)
    return blobs, im_scale_factors


def im_detect(net: Any, im: np.ndarray,
              boxes: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Detect object classes in an image given object proposals.

    Arguments:
        net (caffe.Net): Fast R-CNN network to use
        im (ndarray): color image to test (in BGR order)
        boxes (ndarray): R x 4 array of object proposals or None (for RPN)

    Returns:
        scores (ndarray): R x K array of object class scores (K includes
            background as object category 0)
        boxes (ndarray): R x (4*K) array of predicted bounding boxes, clipped
            to the image
    """
    if not cfg.TEST.HAS_RPN:
        if boxes is None:
            raise ValueError('im_detect: TEST.HAS_RPN is False, so proposals (boxes) are '
                             'required')
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
            raise ValueError('im_detect: boxes must be a non-empty R x 4 array, got shape {}'
                             .format(boxes.shape))
    blobs, im_scales = _get_blobs(im, boxes)

    # When mapping from image ROIs to feature map ROIs, there's some aliasing
    # (some distinct image ROIs get mapped to the same feature ROI).
    # Here, we identify duplicate feature ROIs, so we only compute features
    # on the unique subset.
    dedup = cfg.DEDUP_BOXES > 0 and not cfg.TEST.HAS_RPN
    if dedup:
        v = np.array([1, 1e3, 1e6, 1e9, 1e12])
        hashes = np.round(blobs['rois'] * cfg.DEDUP_BOXES).dot(v)
        _, index, inv_index = np.unique(hashes, return_index=True, return_inverse=True)
        inv_index = inv_index.reshape(-1)
        blobs['rois'] = blobs['rois'][index, :]
        boxes = boxes[index, :]

    if cfg.TEST.HAS_RPN:
        im_blob = blobs['data']
        blobs['im_info'] = np.array([[im_blob.shape[2], im_blob.shape[3], im_scales[0]]],
                                    dtype=np.float32)

    # reshape network inputs
    net.blobs['data'].reshape(*(blobs['data'].shape))
    if cfg.TEST.HAS_RPN:
        net.blobs['im_info'].reshape(*(blobs['im_info'].shape))
    else:
        net.blobs['rois'].reshape(*(blobs['rois'].shape))

    # do forward
    forward_kwargs = {'data': blobs['data'].astype(np.float32, copy=False)}
    if cfg.TEST.HAS_RPN:
        forward_kwargs['im_info'] = blobs['im_info'].astype(np.float32, copy=False)
    else:
        forward_kwargs['rois'] = blobs['rois'].astype(np.float32, copy=False)
    blobs_out = net.forward(**forward_kwargs)

    if cfg.TEST.HAS_RPN:
        if len(im_scales) != 1:
            raise ValueError('im_detect: with TEST.HAS_RPN only one test scale is supported, '
                             'TEST.SCALES is {}'.format(cfg.TEST.SCALES))
        rois = net.blobs['rois'].data.copy()
        # unscale back to raw image space
        boxes = rois[:, 1:5] / im_scales[0]

    if cfg.TEST.SVM:
        # use the raw scores before softmax under the assumption they
        # were trained as linear SVMs
        scores = net.blobs['cls_score'].data.copy()
    else:
        # use softmax estimated probabilities
        scores = np.array(blobs_out['cls_prob'], copy=True)
    scores = scores.reshape(scores.shape[0], -1)

    if cfg.TEST.BBOX_REG:
        # Apply bounding-box regression deltas
        box_deltas = np.asarray(blobs_out['bbox_pred'])
        box_deltas = box_deltas.reshape(box_deltas.shape[0], -1)
        pred_boxes = bbox_transform_inv(boxes, box_deltas)
        pred_boxes = clip_boxes(pred_boxes, im.shape)
    else:
        # Simply repeat the boxes, once for each class
        pred_boxes = np.tile(boxes, (1, scores.shape[1]))

    if dedup:
        # Map scores and predictions back to the original set of boxes
        scores = scores[inv_index, :]
        pred_boxes = pred_boxes[inv_index, :]

    return scores, pred_boxes


def vis_detections(im: np.ndarray, class_name: str, dets: np.ndarray, thresh: float = 0.3,
                   save_path: Optional[str] = None) -> Any:
    """Draw the (up to 10) detections scoring above ``thresh`` on the image.

    Rendered off-screen with matplotlib's Agg canvas (no display needed, the
    user's pyplot backend is left alone); returns the matplotlib Figure and,
    with ``save_path``, also writes it as an image file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(8, 8 * im.shape[0] / max(im.shape[1], 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(im[:, :, (2, 1, 0)])
    dets = np.asarray(dets).reshape(-1, 5) if np.size(dets) else np.zeros((0, 5))
    shown = []
    for i in range(min(10, dets.shape[0])):
        bbox = dets[i, :4]
        score = dets[i, -1]
        if score > thresh:
            ax.add_patch(Rectangle((bbox[0], bbox[1]), bbox[2] - bbox[0], bbox[3] - bbox[1],
                                   fill=False, edgecolor='g', linewidth=3))
            ax.text(bbox[0], bbox[1] - 2, '{:.3f}'.format(score), color='white', fontsize=10,
                    bbox=dict(facecolor='green', alpha=0.5))
            shown.append(score)
    ax.set_title('{}  ({} detections > {:.2f})'.format(class_name, len(shown), thresh))
    ax.axis('off')
    if save_path is not None:
        fig.savefig(save_path)
    return fig


def apply_nms(all_boxes: List[List[Any]], thresh: float) -> List[List[Any]]:
    """Apply non-maximum suppression to all predicted boxes output by test_net.

    ``all_boxes[cls][image]`` is ``[]`` or an (N, 5) array; the result has the
    same layout.
    """
    num_classes = len(all_boxes)
    num_images = len(all_boxes[0]) if num_classes else 0
    nms_boxes: List[List[Any]] = [[[] for _ in range(num_images)] for _ in range(num_classes)]
    for cls_ind in range(num_classes):
        for im_ind in range(num_images):
            dets = all_boxes[cls_ind][im_ind]
            if isinstance(dets, list) or len(dets) == 0:
                continue
            keep = nms(dets, thresh)
            if len(keep) == 0:
                continue
            nms_boxes[cls_ind][im_ind] = dets[keep, :].copy()
    return nms_boxes


def _read_image(path: str) -> np.ndarray:
    """The BGR image; an error naming the file if it is missing, truncated or not an image."""
    return read_image(path)


def _save_detections(all_boxes: List[List[Any]], det_file: str) -> None:
    """Write detections.pkl atomically (caffe.atomic_files: whole or not at all).

    Pickle is the format tools/reval.py and the original expect; it is safe
    here because the file holds only arrays this very run produced.
    """
    with atomic_files.atomic_open(det_file) as f:
        pickle.dump(all_boxes, f, pickle.HIGHEST_PROTOCOL)


def test_net(net: Any, imdb: Any, max_per_image: int = 100, thresh: float = 0.05,
             vis: bool = False) -> List[List[Any]]:
    """Test a Fast R-CNN network on an image database.

    For every image and foreground class the detections scoring above
    ``thresh`` go through NMS (cfg.TEST.NMS); then at most ``max_per_image``
    detections over all classes are kept.  ``all_boxes[cls][image]`` (an
    (N, 5) float32 array of x1, y1, x2, y2, score; class 0 stays ``[]``) is
    saved to ``<output_dir>/detections.pkl`` and passed to
    ``imdb.evaluate_detections``; it is also returned.  With ``vis`` the
    detections of each image and class are drawn to
    ``<output_dir>/vis/<image index>_<class>.png``.
    """
    check_net_classes(net, imdb.num_classes, 'imdb {}'.format(imdb.name), imdb.classes,
                      net_name=getattr(net, 'name', ''), bbox_reg=bool(cfg.TEST.BBOX_REG))
    num_images = len(imdb.image_index)
    # all detections are collected into:
    #    all_boxes[cls][image] = N x 5 array of detections in
    #    (x1, y1, x2, y2, score)
    all_boxes: List[List[Any]] = [[[] for _ in range(num_images)]
                                  for _ in range(imdb.num_classes)]

    output_dir = get_output_dir(imdb, net)
    vis_dir = os.path.join(output_dir, 'vis')
    if vis:
        os.makedirs(vis_dir, exist_ok=True)

    # timers
    _t = {'im_detect': Timer(), 'misc': Timer()}

    if not cfg.TEST.HAS_RPN:
        roidb = imdb.roidb

    empty = np.zeros((0, 5), dtype=np.float32)
    for i in range(num_images):
        # filter out any ground truth boxes
        if cfg.TEST.HAS_RPN:
            box_proposals = None
        else:
            # The roidb may contain ground-truth rois (for example, if the roidb
            # comes from the training or val split). We only want to evaluate
            # detection on the *non*-ground-truth rois. We select those the rois
            # that have the gt_classes field set to 0, which means there's no
            # ground truth.
            box_proposals = roidb[i]['boxes'][roidb[i]['gt_classes'] == 0]

        path = imdb.image_path_at(i)
        im = _read_image(path)
        if box_proposals is not None and len(box_proposals) == 0:
            print('im_detect: image {} ({}) has no proposals; no detections'.format(i, path))
            for j in range(1, imdb.num_classes):
                all_boxes[j][i] = empty.copy()
            continue

        _t['im_detect'].tic()
        scores, boxes = im_detect(net, im, box_proposals)
        _t['im_detect'].toc()

        _t['misc'].tic()
        # skip j = 0, because it's the background class
        for j in range(1, imdb.num_classes):
            inds = np.flatnonzero(scores[:, j] > thresh)
            cls_scores = scores[inds, j]
            cls_boxes = boxes[inds, j * 4:(j + 1) * 4]
            cls_dets = np.hstack((cls_boxes, cls_scores[:, np.newaxis])) \
                .astype(np.float32, copy=False)
            keep = nms(cls_dets, cfg.TEST.NMS)
            cls_dets = cls_dets[keep, :]
            if vis:
                vis_detections(im, imdb.classes[j], cls_dets,
                               save_path=os.path.join(vis_dir, '{}_{}.png'.format(
                                   i, imdb.classes[j])))
            all_boxes[j][i] = cls_dets

        # Limit to max_per_image detections *over all classes*
        if max_per_image > 0 and imdb.num_classes > 1:
            image_scores = np.hstack([all_boxes[j][i][:, -1]
                                      for j in range(1, imdb.num_classes)])
            if len(image_scores) > max_per_image:
                image_thresh = np.sort(image_scores)[-max_per_image]
                for j in range(1, imdb.num_classes):
                    keep = np.flatnonzero(all_boxes[j][i][:, -1] >= image_thresh)
                    all_boxes[j][i] = all_boxes[j][i][keep, :]
        _t['misc'].toc()

        print('im_detect: {:d}/{:d} {:.3f}s {:.3f}s'.format(
            i + 1, num_images, _t['im_detect'].average_time, _t['misc'].average_time))

    det_file = os.path.join(output_dir, 'detections.pkl')
    _save_detections(all_boxes, det_file)

    print('Evaluating detections')
    imdb.evaluate_detections(all_boxes, output_dir)
    return all_boxes
