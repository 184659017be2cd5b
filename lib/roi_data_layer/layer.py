"""RoIDataLayer: the Caffe Python layer that feeds training minibatches to the net.

Plugged into a train prototxt exactly as in py-faster-rcnn::

    layer { name: 'input-data' type: 'Python' top: 'data' top: 'im_info' top: 'gt_boxes'
            python_param { module: 'roi_data_layer.layer' layer: 'RoIDataLayer'
                           param_str: "'num_classes': 21" } }

Its tops depend on the config at set-up time:

* cfg.TRAIN.HAS_RPN: ``data``, ``im_info``, ``gt_boxes``;
* otherwise: ``data``, ``rois``, ``labels`` and, with cfg.TRAIN.BBOX_REG,
  ``bbox_targets``, ``bbox_inside_weights``, ``bbox_outside_weights``.

The training code hands it the roidb with :meth:`RoIDataLayer.set_roidb`.  Each
forward takes the next cfg.TRAIN.IMS_PER_BATCH images of a random permutation
(with cfg.TRAIN.ASPECT_GROUPING, images of one minibatch are all landscape or
all portrait, so little of the blob is padding) and builds their blobs with
:func:`roi_data_layer.minibatch.get_minibatch` (or, for OHEM with precomputed
proposals, :func:`~roi_data_layer.minibatch.get_allrois_minibatch`).

With cfg.TRAIN.USE_PREFETCH a :class:`BlobFetcher` process builds minibatches
ahead of time (reading and resizing images overlaps with the net's compute).
It draws from its own NumPy generator seeded with cfg.RNG_SEED, reports its
errors to the trainer instead of dying silently, and is terminated when the
roidb is replaced, when :meth:`RoIDataLayer.stop_prefetch` is called and at
interpreter exit.

``OHEMDataLayer`` is importable from here too (it lives in
:mod:`roi_data_layer.ohem`), because the OHEM prototxts name this module.

Data-parallel training (``caffe.solver_count()`` ranks): every rank draws the same
permutations, from a generator of its own seeded with cfg.RNG_SEED (the shared seed), and
walks them in strides: global minibatch k is the k-th run of solver_count x IMS_PER_BATCH
entries, and rank r takes the r-th IMS_PER_BATCH of it. So each epoch is split into
disjoint shares, and N ranks see what one process with iter_size N sees. The images' own
random choices (scales, RoI sampling) use NumPy's global generator, which each rank seeds
with cfg.RNG_SEED + rank.
"""

from __future__ import annotations

import atexit
import multiprocessing
import queue as _queue
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import numpy.random as npr
import yaml

import caffe
from caffe.errors import NetError
from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot
from roi_data_layer.minibatch import get_allrois_minibatch, get_minibatch

__all__ = ['RoIDataLayer', 'BlobFetcher', 'OHEMDataLayer']

# How long the trainer waits on the prefetch queue before checking that the
# fetcher is still alive (seconds); only matters if the fetcher was killed.
_POLL_SECONDS = 1.0


def _minibatch_fn() -> Callable[[Sequence[Dict[str, Any]], int], Dict[str, np.ndarray]]:
    """OHEM with precomputed proposals takes every RoI; everything else samples."""
    if cfg.TRAIN.USE_OHEM and not cfg.TRAIN.HAS_RPN:
        return get_allrois_minibatch
    return get_minibatch


def _shuffled_inds(roidb: Sequence[Dict[str, Any]], rng: Any = npr) -> np.ndarray:
    """A random order of the roidb, grouped by aspect when cfg.TRAIN.ASPECT_GROUPING.

    Grouping: landscape (width >= height) and portrait images are permuted
    separately and cut into consecutive groups of IMS_PER_BATCH, and the groups
    are then permuted, so a minibatch mixes orientations only at the seam
    between the two lists.  For IMS_PER_BATCH = 2 and an even roidb this draws
    exactly the numbers the original draws (it hard-coded groups of 2).
    """
    n = len(roidb)
    if not cfg.TRAIN.ASPECT_GROUPING:
        return rng.permutation(np.arange(n))
    try:
        widths = np.array([r['width'] for r in roidb])
        heights = np.array([r['height'] for r in roidb])
    except KeyError:
        raise KeyError('TRAIN.ASPECT_GROUPING needs the width and height of every roidb '
                       'entry; prepare the roidb with roi_data_layer.roidb.prepare_roidb') \
            from None
    horz = widths >= heights
    inds = np.hstack((rng.permutation(np.flatnonzero(horz)),
                      rng.permutation(np.flatnonzero(~horz)))).astype(np.int64)
    k = max(1, int(cfg.TRAIN.IMS_PER_BATCH))
    n_full = (n // k) * k
    groups = inds[:n_full].reshape(-1, k)
    row_perm = rng.permutation(np.arange(groups.shape[0]))
    return np.concatenate((groups[row_perm, :].reshape(-1), inds[n_full:]))


class _Cursor:
    """The walk through successive permutations of the roidb.

    A new permutation is drawn when the next minibatch would run past the end
    (the original reshuffled one minibatch early, so the last minibatch of
    every permutation was never used; with a toy roidb that skipped a large
    share of the images). With several ranks the walk takes strides of
    ranks x IMS_PER_BATCH, of which this rank uses its own part (see the
    module docstring).
    """

    _rank = 0
    _count = 1
    _perm_rng: Any = None     # None: NumPy's global generator (one process)

    def _set_ranks(self, rank: int, count: int, seed: int) -> None:
        self._rank, self._count = int(rank), int(count)
        self._perm_rng = np.random.RandomState(seed) if count > 1 else None

    def _shuffle_roidb_inds(self) -> None:
        """Randomly permute the training roidb."""
        self._perm = _shuffled_inds(self._roidb, self._perm_rng or npr)
        self._cur = 0

    def _get_next_minibatch_inds(self) -> np.ndarray:
        """Return the roidb indices for the next minibatch."""
        ims = int(cfg.TRAIN.IMS_PER_BATCH)
        stride = ims * self._count
        if stride > len(self._roidb):
            raise ValueError('the roidb has {} images, fewer than TRAIN.IMS_PER_BATCH ({}) x {} '
                             'ranks take in one iteration'.format(len(self._roidb), ims,
                                                                  self._count))
        if self._cur + stride > len(self._roidb):
            self._shuffle_roidb_inds()
        start = self._cur + self._rank * ims
        db_inds = self._perm[start:start + ims]
        self._cur += stride
        return db_inds


class _FetchError:
    """What a failed BlobFetcher puts on the queue: the error and its traceback."""

    def __init__(self, message: str) -> None:
        self.message = message


class BlobFetcher(_Cursor, multiprocessing.Process):
    """Process that builds minibatch blobs ahead of the trainer (cfg.TRAIN.USE_PREFETCH).

    It walks its own permutations of the roidb with NumPy's generator seeded
    with ``seed`` (cfg.RNG_SEED by default), so a run is reproducible, and puts
    each minibatch's blob dict on ``queue``.  The config is captured when the
    fetcher is made and restored in the child, so it behaves the same under
    the 'fork', 'spawn' and 'forkserver' start methods.  If building a
    minibatch fails, the error (e.g. an unreadable image, named) is put on
    the queue for the trainer to raise, and the fetcher stops.
    """

    def __init__(self, queue: Any, roidb: Sequence[Dict[str, Any]], num_classes: int,
                 seed: Optional[int] = None, rank: int = 0, count: int = 1) -> None:
        multiprocessing.Process.__init__(self, name='BlobFetcher', daemon=True)
        self._queue = queue
        self._roidb = roidb
        self._num_classes = num_classes
        self._seed = int(cfg.RNG_SEED if seed is None else seed)
        self._config = cfg_snapshot()
        self._perm = None
        self._cur = 0
        self._ranks = (int(rank), int(count))

    def run(self) -> None:
        cfg_restore(self._config)
        # fix the random seed for reproducibility
        np.random.seed(self._seed)
        self._set_ranks(self._ranks[0], self._ranks[1], int(cfg.RNG_SEED))
        # Do not reconfigure OpenCV's thread pool here (cv2.setNumThreads): in
        # a forked child that destroys condition variables the parent's pool
        # threads were waiting on, and blocks forever.
        self._shuffle_roidb_inds()
        print('BlobFetcher started')
        make = _minibatch_fn()
        while True:
            try:
                db_inds = self._get_next_minibatch_inds()
                minibatch_db = [self._roidb[i] for i in db_inds]
                blobs = make(minibatch_db, self._num_classes)
            except Exception as exc:
                self._queue.put(_FetchError('{}: {}\n{}'.format(
                    type(exc).__name__, exc, traceback.format_exc())))
                return
            self._queue.put(blobs)


def _terminate(process: Optional[multiprocessing.Process]) -> None:
    """Stop a BlobFetcher (idempotent; used at exit and when the roidb changes)."""
    if process is None:
        return
    if process.is_alive():
        print('Terminating BlobFetcher')
        process.terminate()
    process.join(timeout=5)


class RoIDataLayer(_Cursor, caffe.Layer):
    """Fast R-CNN data layer used for training (see the module docstring)."""

    exact_num_bottom = 0

    # ---- roidb walk -----------------------------------------------------------------
    def _get_next_minibatch(self) -> Dict[str, np.ndarray]:
        """Return the blobs to be used for the next minibatch.

        With cfg.TRAIN.USE_PREFETCH they come from the BlobFetcher's queue.
        """
        if getattr(self, '_roidb', None) is None:
            raise NetError("RoIDataLayer '{}': no roidb; call net.layers[0].set_roidb(roidb) "
                           '(fast_rcnn.train.SolverWrapper does) before running the net'
                           .format(self.layer_param.name))
        if self._prefetch_process is not None:
            return self._next_prefetched()
        db_inds = self._get_next_minibatch_inds()
        minibatch_db = [self._roidb[i] for i in db_inds]
        return _minibatch_fn()(minibatch_db, self._num_classes)

    def _next_prefetched(self) -> Dict[str, np.ndarray]:
        """Take the next blobs from the fetcher; raise its error if it failed or died."""
        while True:
            try:
                item = self._blob_queue.get(timeout=_POLL_SECONDS)
            except _queue.Empty:
                if not self._prefetch_process.is_alive():
                    code = self._prefetch_process.exitcode
                    self._prefetch_process = None
                    raise RuntimeError("RoIDataLayer '{}': the BlobFetcher process exited "
                                       '(exit code {}) without a minibatch'
                                       .format(self.layer_param.name, code)) from None
                continue
            if isinstance(item, _FetchError):
                self.stop_prefetch()
                raise RuntimeError("RoIDataLayer '{}': the BlobFetcher failed: {}"
                                   .format(self.layer_param.name, item.message))
            return item

    @property
    def num_classes(self) -> int:
        """The class count of the param_str (background included)."""
        return self._num_classes

    def set_roidb(self, roidb: List[Dict[str, Any]]) -> None:
        """Set the roidb to be used by this layer during training."""
        if len(roidb) == 0:
            raise ValueError("RoIDataLayer '{}': the roidb is empty (did filter_roidb drop "
                             'every image?)'.format(self.layer_param.name))
        widths = {int(r['gt_overlaps'].shape[1]) for r in roidb if 'gt_overlaps' in r}
        if widths - {self._num_classes}:
            raise ValueError("RoIDataLayer '{}': param_str says num_classes {} but the roidb "
                             'has {} classes (including the background); set num_classes '
                             '(and num_output of cls_score, 4x of bbox_pred) to the data '
                             "set's count".format(self.layer_param.name, self._num_classes,
                                                  ' and '.join(map(str, sorted(widths)))))
        self.stop_prefetch()
        self._roidb = roidb
        rank, count = caffe.solver_rank(), caffe.solver_count()
        self._set_ranks(rank, count, int(cfg.RNG_SEED))
        self._shuffle_roidb_inds()
        if cfg.TRAIN.USE_PREFETCH:
            self._blob_queue = multiprocessing.Queue(10)
            self._prefetch_process = BlobFetcher(self._blob_queue, self._roidb,
                                                 self._num_classes, seed=cfg.RNG_SEED + rank,
                                                 rank=rank, count=count)
            self._prefetch_process.start()
            # Terminate the child process when the parent exits
            atexit.register(_terminate, self._prefetch_process)

    def stop_prefetch(self) -> None:
        """Terminate the BlobFetcher, if one runs (safe to call any time)."""
        process = getattr(self, '_prefetch_process', None)
        self._prefetch_process = None
        _terminate(process)
        q = getattr(self, '_blob_queue', None)
        self._blob_queue = None
        if q is not None:
            q.close()
            q.cancel_join_thread()

    # ---- caffe.Layer contract ---------------------------------------------------------
    def _top_names(self) -> List[str]:
        names = ['data']
        if cfg.TRAIN.HAS_RPN:
            names += ['im_info', 'gt_boxes']
        else:
            names += ['rois', 'labels']
            if cfg.TRAIN.BBOX_REG:
                names += ['bbox_targets', 'bbox_inside_weights', 'bbox_outside_weights']
        return names

    def _parse_params(self) -> Dict[str, Any]:
        text = getattr(self, 'param_str_', None) or getattr(self, 'param_str', '') or ''
        name = self.layer_param.name
        try:
            params = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise NetError("RoIDataLayer '{}': param_str {!r} is not valid YAML: {}"
                           .format(name, text, exc)) from None
        if not isinstance(params, dict) or 'num_classes' not in params:
            raise NetError("RoIDataLayer '{}': param_str must give num_classes, e.g. "
                           "\"'num_classes': 21\"; got {!r}".format(name, text))
        unknown = sorted(str(k) for k in params if k != 'num_classes')
        if unknown:
            raise NetError("RoIDataLayer '{}': param_str has unknown key(s) {}; the layer reads "
                           "only 'num_classes'".format(name, ', '.join(map(repr, unknown))))
        num_classes = params['num_classes']
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NetError("RoIDataLayer '{}': num_classes must be a positive integer, got {!r}"
                           .format(name, num_classes))
        return params

    def setup(self, bottom, top) -> None:
        """Parse param_str and give every top a placeholder shape."""
        self._roidb = None
        self._prefetch_process = None
        self._blob_queue = None
        self._num_classes = int(self._parse_params()['num_classes'])

        names = self._top_names()
        if len(top) != len(names):
            raise NetError("RoIDataLayer '{}': with TRAIN.HAS_RPN={} and TRAIN.BBOX_REG={} it "
                           'has {} tops ({}), the prototxt gives {}'
                           .format(self.layer_param.name, cfg.TRAIN.HAS_RPN, cfg.TRAIN.BBOX_REG,
                                   len(names), ', '.join(names), len(top)))
        self._name_to_top_map = {name: i for i, name in enumerate(names)}
        k4 = self._num_classes * 4
        shapes = {
            # a batch of images, 3 channels; the size is the largest possible
            'data': (cfg.TRAIN.IMS_PER_BATCH, 3, max(cfg.TRAIN.SCALES), cfg.TRAIN.MAX_SIZE),
            # [[height, width, scale]] of the (single) scaled image
            'im_info': (1, 3),
            # ground-truth boxes (x1, y1, x2, y2, class) in the scaled image
            'gt_boxes': (1, 4),
            # (batch index, x1, y1, x2, y2) of each RoI
            'rois': (1, 5),
            # class of each RoI in [0, K)
            'labels': (1,),
            # 4 regression targets per class, only the RoI's class non-zero
            'bbox_targets': (1, k4),
            # which of those targets count, and with what weight
            'bbox_inside_weights': (1, k4),
            'bbox_outside_weights': (1, k4),
        }
        for name, i in self._name_to_top_map.items():
            top[i].reshape(*shapes[name])

    def forward(self, bottom, top) -> None:
        """Get blobs and copy them into this layer's top blobs."""
        blobs = self._get_next_minibatch()
        for blob_name, blob in blobs.items():
            top_ind = self._name_to_top_map.get(blob_name)
            if top_ind is None:
                raise NetError("RoIDataLayer '{}': the minibatch has a blob {!r} but the layer "
                               'has no such top ({}); was the config changed after the net '
                               'was made?'.format(self.layer_param.name, blob_name,
                                                  ', '.join(self._name_to_top_map)))
            # Reshape net's input blobs, then copy the data in
            top[top_ind].reshape(*blob.shape)
            top[top_ind].data[...] = blob

    def backward(self, top, propagate_down, bottom) -> None:
        """This layer does not propagate gradients."""

    def reshape(self, bottom, top) -> None:
        """Reshaping happens during the call to forward."""


def __getattr__(name: str) -> Any:
    """``roi_data_layer.layer.OHEMDataLayer``, as the OHEM prototxts spell it."""
    if name == 'OHEMDataLayer':
        from roi_data_layer.ohem import OHEMDataLayer
        return OHEMDataLayer
    raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))
