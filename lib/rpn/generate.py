"""Generate object proposals with a trained RPN (used by alternating optimisation).

Stage 1 and 2 of ``tools/train_faster_rcnn_alt_opt.py`` train an RPN, run it
over the training images with :func:`imdb_proposals`, and save the boxes as
the proposals the following Fast R-CNN stage trains on.  The RPN test net
takes ``data`` and ``im_info`` and outputs ``rois`` (R, 5: batch index, x1,
y1, x2, y2 in the scaled image) and ``scores`` (R, 1).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from caffe.image_file import read_image
from fast_rcnn.config import cfg
from utils.blob import image_pyramid_blob
from utils.timer import Timer

__all__ = ['im_proposals', 'imdb_proposals']


def _vis_proposals(im: np.ndarray, dets: np.ndarray, thresh: float = 0.5,
                   save_path: Optional[str] = None) -> Any:
    """Draw the proposals scoring at least ``thresh`` (off-screen, matplotlib Agg).

    Returns the matplotlib Figure (None when nothing passes the threshold);
    with ``save_path`` the figure is also written to that file.
    """
    inds = np.flatnonzero(dets[:, -1] >= thresh)
    if len(inds) == 0:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    class_name = 'obj'
    fig = Figure(figsize=(12, 12))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(im[:, :, (2, 1, 0)], aspect='equal')
    for i in inds:
        bbox = dets[i, :4]
        score = dets[i, -1]
        ax.add_patch(Rectangle((bbox[0], bbox[1]), bbox[2] - bbox[0], bbox[3] - bbox[1],
                               fill=False, edgecolor='red', linewidth=3.5))
        ax.text(bbox[0], bbox[1] - 2, '{:s} {:.3f}'.format(class_name, score),
                bbox=dict(facecolor='blue', alpha=0.5), fontsize=14, color='white')
    ax.set_title('{} detections with p({} | box) >= {:.1f}'.format(class_name, class_name,
                                                                   thresh), fontsize=14)
    ax.axis('off')
    fig.tight_layout()
    if save_path is not None:
        fig.savefig(save_path)
    return fig


def _get_image_blob(im: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Converts an image into a network input.

    Arguments:
        im (ndarray): a color image in BGR order

    Returns:
        blob (ndarray): a data blob holding the image at cfg.TEST.SCALES[0]
        im_info (ndarray): [[height, width, scale]] of the scaled image
    """
    if len(cfg.TEST.SCALES) != 1:
        raise ValueError('RPN proposals are made at a single scale; TEST.SCALES is {}'
                         .format(cfg.TEST.SCALES))
    blob, scales = image_pyramid_blob(im, cfg.PIXEL_MEANS, cfg.TEST.SCALES[:1],
                                      cfg.TEST.MAX_SIZE, 'im_proposals')
    im_info = np.array([[blob.shape[2], blob.shape[3], scales[0]]])
    return blob, im_info


def im_proposals(net: Any, im: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Generate RPN proposals on a single image.

    Returns the (R, 4) boxes in original image coordinates and their (R, 1)
    objectness scores.
    """
    blobs = {}
    blobs['data'], blobs['im_info'] = _get_image_blob(im)
    net.blobs['data'].reshape(*(blobs['data'].shape))
    net.blobs['im_info'].reshape(*(blobs['im_info'].shape))
    blobs_out = net.forward(data=blobs['data'].astype(np.float32, copy=False),
                            im_info=blobs['im_info'].astype(np.float32, copy=False))

    scale = blobs['im_info'][0, 2]
    boxes = np.asarray(blobs_out['rois'])[:, 1:].copy() / scale
    scores = np.array(blobs_out['scores'], copy=True).reshape(boxes.shape[0], -1)
    return boxes, scores


def imdb_proposals(net: Any, imdb: Any, indices: Optional[Sequence[int]] = None
                   ) -> List[np.ndarray]:
    """Generate RPN proposals on all images in an imdb; one (R, 4) array per image.

    With `indices`, only those images get proposals (the others' entries stay empty lists):
    data-parallel ranks each take their share (caffe.parallel.shard) and gather them.
    """
    _t = Timer()
    imdb_boxes: List[Any] = [[] for _ in range(imdb.num_images)]
    for i in (range(imdb.num_images) if indices is None else indices):
        path = imdb.image_path_at(i)
        im = read_image(path)   # errors name the file (missing, truncated, not an image)
        _t.tic()
        imdb_boxes[i], _scores = im_proposals(net, im)
        _t.toc()
        print('im_proposals: {:d}/{:d} {:.3f}s'.format(i + 1, imdb.num_images,
                                                        _t.average_time))
    return imdb_boxes
