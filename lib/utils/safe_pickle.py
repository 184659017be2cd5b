"""Reading the project's own pickles (detections, proposals) without running arbitrary code.

py-faster-rcnn stores detections and proposals as pickles of lists of NumPy arrays.
Loading a pickle can execute code, so these files are read with an unpickler that only
rebuilds NumPy arrays, dtypes and plain containers; anything else is refused with an
error naming the file.
"""
from __future__ import annotations

import pickle
from typing import Any

_ALLOWED = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
    ('builtins', 'list'), ('builtins', 'dict'), ('builtins', 'tuple'), ('collections', 'OrderedDict'),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))


def load_arrays(path: str) -> Any:
    """Load a pickle holding only NumPy arrays and lists/dicts/tuples of them."""
    try:
        with open(path, 'rb') as f:
            return _ArraysOnly(f, encoding='latin1').load()
    except pickle.UnpicklingError as e:
        raise ValueError('%s: not a pickle of NumPy arrays (%s)' % (path, e)) from None
    except (EOFError, OSError) as e:
        raise ValueError('%s: cannot read: %s' % (path, e)) from None
