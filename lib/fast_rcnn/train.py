"""Train a Fast R-CNN (or Faster R-CNN) network.

:class:`SolverWrapper` drives ``caffe.SGDSolver`` one iteration at a time so
that it can take the snapshots itself: the net learns box regression deltas
*normalised* by per-class means and standard deviations (see
:func:`roi_data_layer.roidb.add_bbox_regression_targets`), and each snapshot
folds that normalisation back into the ``bbox_pred`` weights, so a saved
model predicts raw deltas and test code never needs the statistics.

Typical use (``tools/train_net.py``)::

    roidb = get_training_roidb(imdb)
    model_paths = train_net(solver_prototxt, roidb, output_dir,
                            pretrained_model=weights, max_iters=40000)

In data-parallel training (a process group joined, see utils.data_parallel) every rank
makes the same wrapper: rank 0 loads the pretrained weights and gives them to the others,
the gradients are averaged across ranks before each update, and only rank 0 writes the
snapshots (every rank returns their names).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

import caffe
from caffe import atomic_files
from caffe import parallel
from caffe.proto import caffe_pb2
from caffe.solver import read_solver_param
from fast_rcnn.config import cfg
from fast_rcnn.net_classes import check_net_classes
import roi_data_layer.roidb as rdl_roidb
from utils.timer import Timer

__all__ = ['SolverWrapper', 'get_training_roidb', 'filter_roidb', 'train_net']


def _read_solver_param(path: str) -> caffe_pb2.SolverParameter:
    """The solver prototxt as a SolverParameter (for snapshot_prefix and display).

    Read with the engine's parser, so errors name the file, line and column
    and legacy solver files are upgraded as the solver itself reads them.
    """
    return read_solver_param(path)


class SolverWrapper(object):
    """A simple wrapper around Caffe's solver.

    This wrapper gives us control over the snapshotting process, which we use
    to unnormalize the learned bounding-box regression weights.
    """

    def __init__(self, solver_prototxt: str, roidb: List[Dict[str, Any]], output_dir: str,
                 pretrained_model: Optional[str] = None) -> None:
        """Make the solver, load the initial weights and give the data layer the roidb."""
        self.output_dir = output_dir

        if cfg.TRAIN.HAS_RPN and cfg.TRAIN.BBOX_REG and cfg.TRAIN.BBOX_NORMALIZE_TARGETS \
                and not cfg.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED:
            # RPN can only use precomputed normalization because there are no
            # fixed statistics to compute a priori
            raise ValueError('TRAIN.HAS_RPN with TRAIN.BBOX_REG and TRAIN.BBOX_NORMALIZE_TARGETS '
                             'needs TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED: True (the RoIs are '
                             'made during training, so their target statistics are unknown '
                             'beforehand)')

        self.bbox_means: Optional[np.ndarray] = None
        self.bbox_stds: Optional[np.ndarray] = None
        if cfg.TRAIN.BBOX_REG:
            if cfg.TRAIN.HAS_RPN:
                # targets are made in the net (ProposalTargetLayer) and
                # normalised there with the fixed statistics
                num_classes = int(roidb[0]['gt_overlaps'].shape[1])
                means, stds = rdl_roidb._precomputed_means_stds(num_classes)
                self.bbox_means, self.bbox_stds = means.ravel(), stds.ravel()
            else:
                print('Computing bounding-box regression targets...')
                self.bbox_means, self.bbox_stds = \
                    rdl_roidb.add_bbox_regression_targets(roidb)
                print('done')

        self.solver = caffe.SGDSolver(solver_prototxt)
        self.data_parallel = None
        if pretrained_model is not None and parallel.root_solver():
            print('Loading pretrained model weights from {:s}'.format(pretrained_model))
            self.solver.net.copy_from(pretrained_model)

        self.solver_param = _read_solver_param(solver_prototxt)

        if roidb and 'gt_overlaps' in roidb[0]:
            # Where the net meets the data: every class-fixing layer must agree with it.
            check_net_classes(self.solver.net, int(roidb[0]['gt_overlaps'].shape[1]),
                              'the training roidb', net_name=solver_prototxt,
                              bbox_reg=bool(cfg.TRAIN.BBOX_REG))
        self._remove_stale_temps()

        data_layer = self.solver.net.layers[0] if len(self.solver.net.layers) else None
        if not hasattr(data_layer, 'set_roidb'):
            raise ValueError('the first layer of the train net of {} must be the RoIDataLayer '
                             '(a Python layer with set_roidb), found {}'.format(
                                 solver_prototxt, getattr(data_layer, 'type', None)))
        data_layer.set_roidb(roidb)
        if parallel.current() is not None and parallel.solver_count() > 1:
            self.data_parallel = parallel.DataParallel(self.solver).attach()
            self.data_parallel.bcast()

    def _remove_stale_temps(self) -> None:
        """Remove the temporaries of snapshots a killed run was writing: files named
        `.<snapshot_prefix>[_<SNAPSHOT_INFIX>]_iter_*.tmp` of writers no longer running."""
        stem = self._snapshot_stem()
        for path in atomic_files.remove_stale_temps(os.path.dirname(stem),
                                                    os.path.basename(stem)):
            print('Removed the temporary file of an interrupted snapshot: {}'.format(path))

    def snapshot(self) -> str:
        """Save the net with un-normalised ``bbox_pred`` weights; return the file name.

        The weights become ``W * stds[:, None]`` and ``b * stds + means`` for
        the save only and are put back afterwards (also if saving fails), so
        training continues on the normalised ones.  The file is
        ``output_dir/<snapshot_prefix>[_<SNAPSHOT_INFIX>]_iter_<N>.caffemodel``,
        written atomically by ``net.save``.
        """
        net = self.solver.net
        if not parallel.root_solver():
            return self._snapshot_filename()

        scale_bbox_params = (cfg.TRAIN.BBOX_REG and cfg.TRAIN.BBOX_NORMALIZE_TARGETS
                             and 'bbox_pred' in net.params and self.bbox_stds is not None)
        if scale_bbox_params:
            weights = net.params['bbox_pred'][0]
            biases = net.params['bbox_pred'][1]
            if weights.data.shape[0] != self.bbox_stds.shape[0] or \
                    biases.data.shape[0] != self.bbox_stds.shape[0]:
                raise ValueError('bbox_pred has {} outputs but the regression statistics are for '
                                 '{} (= 4 x {} classes); does num_output of bbox_pred match the '
                                 'data set?'.format(weights.data.shape[0], self.bbox_stds.shape[0],
                                                    self.bbox_stds.shape[0] // 4))
            # save original values
            orig_0 = weights.data.copy()
            orig_1 = biases.data.copy()
            # scale and shift with bbox reg unnormalization; then save snapshot
            stds = self.bbox_stds.reshape((-1,) + (1,) * (weights.data.ndim - 1))
            weights.data[...] = orig_0 * stds
            biases.data[...] = orig_1 * self.bbox_stds + self.bbox_means

        try:
            os.makedirs(self.output_dir, exist_ok=True)
            self._remove_stale_temps()
            filename = self._snapshot_filename()
            net.save(str(filename))
            print('Wrote snapshot to: {:s}'.format(filename))
        finally:
            if scale_bbox_params:
                # restore net to original state
                weights.data[...] = orig_0
                biases.data[...] = orig_1
        return filename

    def _snapshot_stem(self) -> str:
        """`<output_dir>/<snapshot_prefix>[_<SNAPSHOT_INFIX>]_iter_`: what snapshot names
        (and their temporaries' targets) start with."""
        infix = ('_' + cfg.TRAIN.SNAPSHOT_INFIX if cfg.TRAIN.SNAPSHOT_INFIX != '' else '')
        return os.path.join(self.output_dir, self.solver_param.snapshot_prefix + infix + '_iter_')

    def _snapshot_filename(self) -> str:
        return '{}{:d}.caffemodel'.format(self._snapshot_stem(), self.solver.iter)

    def train_model(self, max_iters: int) -> List[str]:
        """Step the solver up to ``max_iters``; return the snapshot paths, in order.

        Snapshots are taken every cfg.TRAIN.SNAPSHOT_ITERS iterations and at
        the end.  Every 10 * ``display`` iterations the average time of one
        iteration is printed (``speed: 0.123s / iter``).
        """
        last_snapshot_iter = -1
        timer = Timer()
        model_paths = []
        display = int(self.solver_param.display)
        while self.solver.iter < max_iters:
            # Make one SGD update
            timer.tic()
            self.solver.step(1)
            timer.toc()
            if display > 0 and self.solver.iter % (10 * display) == 0:
                print('speed: {:.3f}s / iter'.format(timer.average_time))

            if cfg.TRAIN.SNAPSHOT_ITERS > 0 and \
                    self.solver.iter % cfg.TRAIN.SNAPSHOT_ITERS == 0:
                last_snapshot_iter = self.solver.iter
                model_paths.append(self.snapshot())

        if last_snapshot_iter != self.solver.iter:
            model_paths.append(self.snapshot())
        return model_paths


def get_training_roidb(imdb: Any) -> List[Dict[str, Any]]:
    """Returns a roidb (Region of Interest database) for use in training."""
    if cfg.TRAIN.USE_FLIPPED:
        print('Appending horizontally-flipped training examples...')
        imdb.append_flipped_images()
        print('done')

    print('Preparing training data...')
    rdl_roidb.prepare_roidb(imdb)
    print('done')

    return imdb.roidb


def filter_roidb(roidb: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Remove roidb entries that have no usable RoIs.

    An image is usable when it has at least one foreground RoI (overlap >=
    FG_THRESH) or one background RoI (overlap in [BG_THRESH_LO,
    BG_THRESH_HI)); others would give an empty minibatch.  Prints
    ``Filtered N roidb entries: A -> B``.
    """
    # OHEM with precomputed proposals takes every RoI below BG_THRESH_HI as
    # background (see roi_data_layer.minibatch.get_allrois_minibatch)
    bg_lo = 0.0 if (cfg.TRAIN.USE_OHEM and not cfg.TRAIN.HAS_RPN) else cfg.TRAIN.BG_THRESH_LO

    def is_valid(entry: Dict[str, Any]) -> bool:
        overlaps = np.asarray(entry['max_overlaps'])
        fg = overlaps >= cfg.TRAIN.FG_THRESH
        bg = (overlaps < cfg.TRAIN.BG_THRESH_HI) & (overlaps >= bg_lo)
        return bool(np.any(fg | bg))

    num = len(roidb)
    filtered_roidb = [entry for entry in roidb if is_valid(entry)]
    num_after = len(filtered_roidb)
    print('Filtered {} roidb entries: {} -> {}'.format(num - num_after, num, num_after))
    return filtered_roidb


def train_net(solver_prototxt: str, roidb: List[Dict[str, Any]], output_dir: str,
              pretrained_model: Optional[str] = None, max_iters: int = 40000) -> List[str]:
    """Train a Fast R-CNN network; return the paths of the snapshots written."""
    if not roidb:
        raise ValueError('train_net: the training roidb is empty (no images)')
    num_images = len(roidb)
    num_boxes = sum(int(np.count_nonzero(np.asarray(r['gt_classes']) > 0)) for r in roidb)
    roidb = filter_roidb(roidb)
    if not roidb:
        if num_boxes == 0:
            raise ValueError('train_net: none of the {} training images has a ground-truth '
                             'box (are all objects marked difficult, or are the annotations '
                             'empty?)'.format(num_images))
        raise ValueError('no roidb entry has a usable RoI (check TRAIN.FG_THRESH and '
                         'TRAIN.BG_THRESH_LO/HI against the proposals)')
    sw = SolverWrapper(solver_prototxt, roidb, output_dir,
                       pretrained_model=pretrained_model)

    print('Solving...')
    model_paths = sw.train_model(max_iters)
    print('done solving')
    return model_paths
