"""Blob: NumPy views shared with the engine's tensors, reshape, legacy 4-d accessors."""
import numpy as np

import caffe


def test_data_and_diff_are_writable_views():
    b = caffe.Blob((2, 3))
    b.data[...] = 5
    assert float(b.tensor.sum()) == 30
    b.diff[0, 1] = 2
    assert float(b.diff_tensor[0, 1]) == 2


def test_legacy_accessors_pad_missing_axes_at_the_end():
    b = caffe.Blob((9, 12))
    assert (b.num, b.channels, b.height, b.width) == (9, 12, 1, 1)
    b.reshape(2, 3, 4, 5)
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 5)
    assert b.count == 120


def test_reshape_keeps_values_when_count_is_unchanged():
    b = caffe.Blob((2, 6))
    b.data[...] = np.arange(12).reshape(2, 6)
    b.reshape(3, 4)
    np.testing.assert_array_equal(b.data.ravel(), np.arange(12))
    b.reshape(5)
    assert b.shape == (5,)


def test_reshape_to_a_new_count_reads_zeros_however_it_is_read():
    """The zeros of a new count are written lazily: Python's view, the engine's tensor and
    a later same-count reshape all see them; a layer's set_tensor replaces them unwritten."""
    import torch
    for read in ('data', 'tensor', 'reshape'):
        b = caffe.Blob((2, 3))
        b.data[...] = 7
        b.reshape(4, 5)
        if read == 'data':
            got = b.data
        elif read == 'tensor':
            got = b.tensor.numpy()
        else:
            b.reshape(5, 4)
            got = b.data
        assert got.shape in ((4, 5), (5, 4)) and not got.any(), read
    b = caffe.Blob((2, 3))
    b.reshape(3, 3)
    b.set_tensor(torch.full((3, 3), 2.0))
    np.testing.assert_array_equal(b.data, np.full((3, 3), 2.0))
