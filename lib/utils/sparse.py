"""A minimal compressed-sparse-row matrix for roidb ``gt_overlaps``.

py-faster-rcnn stored each image's (num_boxes x num_classes) overlap matrix as
a ``scipy.sparse.csr_matrix``: with ~2000 proposals per image and one non-zero
per row, a dense matrix would cost gigabytes over a data set.  SciPy is not a
dependency of this project, so this module provides the small part of that API
the detector uses -- construction from a dense array, ``toarray()``, ``shape``,
``nnz`` and :func:`vstack` -- with the same names, so code written against
SciPy (``entry['gt_overlaps'].toarray()``) keeps working.  Objects that do come
from SciPy are accepted wherever a matrix is taken.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import numpy as np


class csr_matrix(object):
    """Row-compressed sparse matrix (``data``, ``indices``, ``indptr``, ``shape``).

    ``csr_matrix(dense)`` keeps the non-zeros of a 2-D array;
    ``csr_matrix((data, indices, indptr), shape=(n, m))`` wraps CSR arrays as is.
    """

    __slots__ = ('data', 'indices', 'indptr', 'shape')

    def __init__(self, arg: Any, shape: Optional[Tuple[int, int]] = None,
                 dtype: Any = None) -> None:
        if isinstance(arg, csr_matrix):
            data, indices, indptr, shp = arg.data, arg.indices, arg.indptr, arg.shape
            self.data = np.array(data, dtype=dtype or data.dtype)
            self.indices = indices.copy()
            self.indptr = indptr.copy()
            self.shape = shp
            return
        if isinstance(arg, tuple) and len(arg) == 3:
            if shape is None:
                raise ValueError('csr_matrix((data, indices, indptr)) needs shape=')
            data, indices, indptr = (np.asarray(a) for a in arg)
            n, m = int(shape[0]), int(shape[1])
            if indptr.shape != (n + 1,) or data.shape != indices.shape or \
                    int(indptr[-1]) != data.shape[0]:
                raise ValueError('csr_matrix: inconsistent CSR arrays for shape {}: '
                                 'data {}, indices {}, indptr {}'.format(
                                     shape, data.shape, indices.shape, indptr.shape))
            if indices.size and (indices.min() < 0 or indices.max() >= m):
                raise ValueError('csr_matrix: column index out of range for shape {}'
                                 .format(shape))
            self.data = data.astype(dtype or data.dtype, copy=False)
            self.indices = indices.astype(np.int32, copy=False)
            self.indptr = indptr.astype(np.int64, copy=False)
            self.shape = (n, m)
            return
        dense = arg.toarray() if hasattr(arg, 'toarray') else np.asarray(arg)
        if dense.ndim != 2:
            raise ValueError('csr_matrix: expected a 2-D array, got shape {}'.format(
                dense.shape))
        if dtype is not None:
            dense = dense.astype(dtype, copy=False)
        rows, cols = np.nonzero(dense)
        self.data = dense[rows, cols]
        self.indices = cols.astype(np.int32)
        counts = np.bincount(rows, minlength=dense.shape[0])
        self.indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.shape = (int(dense.shape[0]), int(dense.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    @property
    def ndim(self) -> int:
        return 2

    def toarray(self) -> np.ndarray:
        """Return the matrix as a new dense ndarray."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out

    todense = toarray

    def copy(self) -> 'csr_matrix':
        return csr_matrix(self)

    def __repr__(self) -> str:
        return '<{}x{} csr_matrix of {} with {} stored elements>'.format(
            self.shape[0], self.shape[1], self.data.dtype, self.nnz)


def vstack(blocks: Iterable[Any]) -> csr_matrix:
    """Stack matrices (csr_matrix, SciPy sparse or dense) vertically into a csr_matrix."""
    mats = [b if isinstance(b, csr_matrix) else csr_matrix(b) for b in blocks]
    if not mats:
        raise ValueError('vstack: nothing to stack')
    ncols = {m.shape[1] for m in mats}
    if len(ncols) != 1:
        raise ValueError('vstack: blocks have different numbers of columns: {}'.format(
            sorted(ncols)))
    dtype = np.result_type(*[m.data.dtype for m in mats])
    data = np.concatenate([m.data.astype(dtype, copy=False) for m in mats])
    indices = np.concatenate([m.indices for m in mats])
    offsets = np.cumsum([0] + [m.nnz for m in mats[:-1]])
    indptr = np.concatenate([[0]] + [m.indptr[1:] + off for m, off in zip(mats, offsets)])
    nrows = sum(m.shape[0] for m in mats)
    return csr_matrix((data, indices, indptr), shape=(nrows, ncols.pop()))


def issparse(x: Any) -> bool:
    """True for this module's matrices and for anything else offering ``toarray()``."""
    return isinstance(x, csr_matrix) or hasattr(x, 'toarray')
