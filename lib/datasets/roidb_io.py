"""Safe on-disk formats for roidb caches and proposal (box) lists.

py-faster-rcnn pickled its caches (``data/cache/*_roidb.pkl``) and RPN proposal
files.  Unpickling runs arbitrary code from the file, and Python 2 pickles do
not load cleanly under Python 3 anyway.  Here:

* roidb caches are ``.npz`` files read with ``allow_pickle=False``: all boxes of
  all images concatenated, per-image counts, the overlaps of all images as
  one CSR matrix, and a JSON ``meta`` record.  A cache whose ``meta`` does not
  match what the caller expects (other classes, other image list, older
  format, or annotation files edited since: see :func:`file_stamps`) is ignored
  and rebuilt instead of being trusted.  An empty roidb is never cached.
* proposal box lists are written as ``.npz`` (:func:`save_box_list`).
  :func:`load_box_list` reads those, ``np.savez(*list)`` files, and -- for
  proposal files written by py-faster-rcnn or by tools that still pickle --
  ``.pkl`` files through an unpickler that can only rebuild NumPy arrays and
  lists (anything else in the file is refused).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from caffe import atomic_files
from utils.sparse import csr_matrix, vstack as sparse_vstack

CACHE_FORMAT = 1
_ROIDB_KEYS = ('boxes', 'gt_classes', 'gt_overlaps', 'flipped', 'seg_areas')


def fingerprint(items: Sequence[str]) -> str:
    """Short stable hash of a list of strings (image index lists, paths)."""
    h = hashlib.sha1()
    for s in items:
        h.update(str(s).encode('utf-8'))
        h.update(b'\0')
    return h.hexdigest()


def file_stamps(paths: Sequence[str]) -> str:
    """Short hash of the size and modification time of each file (a missing one counts
    as missing): what a cache built from these files is keyed by, so that editing,
    adding or removing one of them makes the cache stale, as make decides."""
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            stamp = '{}:{}'.format(st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = 'missing'
        h.update('{}\0{}\0'.format(os.path.basename(str(p)), stamp).encode('utf-8'))
    return h.hexdigest()


def _atomic_savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write an .npz so a crash never leaves a truncated cache (or its temporary) behind."""
    with atomic_files.atomic_open(path, 'wb') as f:
        np.savez(f, **arrays)


def save_roidb(path: str, roidb: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    """Save a roidb (list of per-image dicts) and its ``meta`` record to ``path``."""
    n = len(roidb)
    if n == 0:
        # An empty roidb is always a mistake upstream (an empty image list, a wrong
        # folder); caching it would only make the mistake outlive its fix.
        raise ValueError('save_roidb({}): refusing to cache an empty roidb'.format(path))
    for i, e in enumerate(roidb):
        missing = [k for k in ('boxes', 'gt_classes', 'gt_overlaps', 'flipped') if k not in e]
        if missing:
            raise ValueError('save_roidb({}): entry {} lacks keys {}'.format(path, i, missing))
    counts = np.array([e['boxes'].shape[0] for e in roidb], dtype=np.int64)
    box_dtype = (np.result_type(*[e['boxes'].dtype for e in roidb]) if n else np.uint16)
    boxes = (np.concatenate([e['boxes'] for e in roidb]).astype(box_dtype, copy=False)
             if n else np.zeros((0, 4), box_dtype))
    gt_classes = (np.concatenate([np.asarray(e['gt_classes']) for e in roidb])
                  .astype(np.int32) if n else np.zeros((0,), np.int32))
    seg = [np.asarray(e.get('seg_areas', np.zeros(c, np.float32)), dtype=np.float32)
           for e, c in zip(roidb, counts)]
    seg_areas = np.concatenate(seg) if n else np.zeros((0,), np.float32)
    has_seg = np.array([('seg_areas' in e) for e in roidb], dtype=bool)
    flipped = np.array([bool(e['flipped']) for e in roidb], dtype=bool)
    ov = sparse_vstack([e['gt_overlaps'] for e in roidb]) if n else \
        csr_matrix(np.zeros((0, 1), np.float32))
    record = dict(meta)
    record['format'] = CACHE_FORMAT
    _atomic_savez(path, {
        'meta': np.array(json.dumps(record, sort_keys=True)),
        'counts': counts, 'boxes': boxes, 'gt_classes': gt_classes,
        'seg_areas': seg_areas, 'has_seg': has_seg, 'flipped': flipped,
        'ov_data': ov.data, 'ov_indices': ov.indices, 'ov_indptr': ov.indptr,
        'ov_shape': np.array(ov.shape, dtype=np.int64),
    })


def load_roidb(path: str, expect_meta: Optional[Dict[str, Any]] = None
               ) -> Optional[List[Dict[str, Any]]]:
    """Load a roidb saved by :func:`save_roidb`, or None if stale or unreadable.

    ``expect_meta``: every key given must equal the stored one (plus the file
    format version), otherwise None is returned so the caller rebuilds.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z['meta']))
            want = dict(expect_meta or {})
            want['format'] = CACHE_FORMAT
            changed = [k for k, v in want.items() if meta.get(k) != json.loads(json.dumps(v))]
            if changed:
                print('cache {} is stale ({} changed since it was written); rebuilding'
                      .format(path, ', '.join(sorted(changed))))
                return None
            counts = z['counts']
            boxes, gt_classes = z['boxes'], z['gt_classes']
            seg_areas, has_seg, flipped = z['seg_areas'], z['has_seg'], z['flipped']
            ov_data, ov_indices, ov_indptr = z['ov_data'], z['ov_indices'], z['ov_indptr']
            ncols = int(z['ov_shape'][1])
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None
    starts = np.concatenate(([0], np.cumsum(counts)))
    if starts[-1] != boxes.shape[0] or ov_indptr.shape[0] != boxes.shape[0] + 1:
        return None
    roidb = []
    for i in range(counts.shape[0]):
        s, e = int(starts[i]), int(starts[i + 1])
        ps, pe = int(ov_indptr[s]), int(ov_indptr[e])
        overlaps = csr_matrix((ov_data[ps:pe].copy(), ov_indices[ps:pe].copy(),
                               ov_indptr[s:e + 1] - ps), shape=(e - s, ncols))
        entry = {'boxes': boxes[s:e].copy(), 'gt_classes': gt_classes[s:e].copy(),
                 'gt_overlaps': overlaps, 'flipped': bool(flipped[i])}
        if has_seg[i]:
            entry['seg_areas'] = seg_areas[s:e].copy()
        roidb.append(entry)
    return roidb


def save_box_list(path: str, box_list: Sequence[np.ndarray]) -> None:
    """Save per-image (N_i, 4+) box arrays (e.g. RPN proposals) as an .npz file."""
    arrs = [np.asarray(b) for b in box_list]
    for i, b in enumerate(arrs):
        if b.ndim != 2 or b.shape[1] < 4:
            raise ValueError('save_box_list({}): entry {} has shape {}, expected (N, 4)'
                             .format(path, i, b.shape))
    ncols = {b.shape[1] for b in arrs}
    if len(ncols) > 1:
        raise ValueError('save_box_list({}): entries have different column counts {}'
                         .format(path, sorted(ncols)))
    dtype = np.result_type(*[b.dtype for b in arrs]) if arrs else np.float32
    boxes = (np.concatenate(arrs).astype(dtype, copy=False) if arrs
             else np.zeros((0, 4), dtype))
    counts = np.array([b.shape[0] for b in arrs], dtype=np.int64)
    _atomic_savez(path, {'boxes': boxes, 'counts': counts})


# Globals a pickled list of NumPy arrays needs, and nothing else.
_SAFE_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    # protocols 0-2 store byte strings as _codecs.encode(text, 'latin1') / bytes()
    ('_codecs', 'encode'), ('builtins', 'bytes'), ('__builtin__', 'bytes'),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler limited to lists/dicts/tuples of NumPy arrays and plain values."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                'refusing to load {}.{} from a pickle: only NumPy arrays are allowed '
                'in proposal files'.format(module, name))
        if module.startswith('numpy.core'):
            module = 'numpy._core' + module[len('numpy.core'):]
        elif module == '__builtin__':
            module = 'builtins'
        return getattr(importlib.import_module(module), name)


def load_box_list(path: str) -> List[np.ndarray]:
    """Load per-image box arrays from .npz (this project) or a pickled list (.pkl)."""
    if not os.path.isfile(path):
        raise FileNotFoundError('proposal file not found: {}'.format(path))
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic.startswith(b'PK'):  # zip -> npz
        with np.load(path, allow_pickle=False) as z:
            if 'boxes' in z.files and 'counts' in z.files:
                boxes, counts = z['boxes'], z['counts']
                return np.split(boxes, np.cumsum(counts)[:-1]) if counts.size else []
            keys = sorted((k for k in z.files if k.startswith('arr_')),
                          key=lambda k: int(k[4:]))
            if not keys:
                raise ValueError('{}: .npz holds neither boxes/counts nor arr_0.. arrays '
                                 '(found {})'.format(path, z.files))
            return [z[k] for k in keys]
    try:
        with open(path, 'rb') as f:
            obj = _ArrayUnpickler(f, encoding='latin1').load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError('{}: cannot read proposals: {}'.format(path, exc)) from None
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        obj = [obj]
    if not isinstance(obj, (list, tuple)) and not (isinstance(obj, np.ndarray)):
        raise ValueError('{}: expected a list of per-image box arrays, got {}'.format(
            path, type(obj).__name__))
    out = [np.asarray(b) for b in obj]
    for i, b in enumerate(out):
        if b.ndim != 2 or (b.shape[0] and b.shape[1] < 4):
            raise ValueError('{}: entry {} has shape {}, expected (N, 4)'.format(
                path, i, b.shape))
    return out
