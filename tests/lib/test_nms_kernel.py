"""The compiled NMS kernel against NumPy's py_cpu_nms, and its early stop."""
import numpy as np
import pytest

from nms import compiled
from nms.py_cpu_nms import py_cpu_nms
from nms.torch_nms import torch_nms


def _dets(rng, n, dtype, spread=300):
    x1 = np.round(rng.uniform(0, spread, n), 1)
    y1 = np.round(rng.uniform(0, spread, n), 1)
    return np.stack([x1, y1, x1 + rng.uniform(5, 120, n), y1 + rng.uniform(5, 120, n),
                     rng.rand(n)], 1).astype(dtype)


def test_kernel_is_built():
    assert compiled.available(), 'build it with `pip install -e .` (make setup)'


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('thresh', [0.3, 0.7])
def test_same_kept_boxes_as_numpy(dtype, thresh):
    rng = np.random.RandomState(int(thresh * 10))
    dets = _dets(rng, 2500, dtype)
    ref = np.asarray(py_cpu_nms(dets, thresh))
    got = torch_nms(dets, thresh)
    np.testing.assert_array_equal(got, ref)


def test_max_keep_is_a_prefix_of_the_full_answer():
    rng = np.random.RandomState(3)
    dets = _dets(rng, 4000, np.float32, spread=100)
    full = torch_nms(dets, 0.7)
    for k in (1, 10, 300, len(full), len(full) + 5):
        np.testing.assert_array_equal(torch_nms(dets, 0.7, max_keep=k), full[:k])
