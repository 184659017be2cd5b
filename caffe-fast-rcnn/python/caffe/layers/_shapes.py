"""Blob-shape arithmetic and text shared by the layer families, as Caffe's Blob has them."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def blob_count(shape: Sequence[int], start: int = 0, end: Optional[int] = None) -> int:
    """Caffe's Blob::count(start, end): the product of shape[start:end]."""
    return int(np.prod(shape[start:end], dtype=np.int64))


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's shape_string: '2 3 4 (24)'."""
    return '%s (%d)' % (' '.join(str(d) for d in shape), blob_count(shape))
