"""caffe.layer_type_list(): the registered layer types, as BVLC's test_layer_type_list.py
checks (standard types present: 'Data', 'Convolution', 'InnerProduct', ...), plus the
registry's own promises.
"""
import pytest

import caffe
from caffe.layers import layer_class


@pytest.mark.parametrize('type_name', ['Data', 'Convolution', 'InnerProduct', 'Python',
                                       'DummyData', 'Input', 'HDF5Data', 'ImageData',
                                       'SoftmaxWithLoss', 'Split', 'Parameter', 'BatchReindex',
                                       'Filter', 'ContrastiveLoss', 'SPP', 'Im2col'])
def test_standard_types(type_name):
    assert type_name in caffe.layer_type_list(), '%s not in layer_type_list()' % type_name


def test_list_is_sorted_unique_and_resolvable():
    types = caffe.layer_type_list()
    assert types == sorted(set(types))
    for t in types:
        assert isinstance(t, str) and issubclass(layer_class(t), caffe.Layer)


def test_unknown_type_suggests_close_names():
    with pytest.raises(caffe.NetError, match="'Convolutoin'.*Did you mean 'Convolution'"):
        layer_class('Convolutoin', 'c1')
