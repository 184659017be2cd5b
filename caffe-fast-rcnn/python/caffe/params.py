"""`caffe.params`: the enum constants of caffe.proto's `<Type>Parameter` messages.

SSD's and RefineDet's scripts write `from caffe import params as P` (through
`from caffe.model_libs import *`) and then `P.Resize.WARP`, `P.MultiBoxLoss.SMOOTH_L1`,
`P.PriorBox.CENTER_SIZE`, `P.Loss.VALID`, `P.Pooling.MAX`. In pycaffe that name is an
attribute of the package (net_spec's Parameters object); here it is also a module, so that
`import caffe.params` and `from caffe.params import Resize` work as well. Each attribute
is looked up in caffe_pb2 when asked for, so every message the proto gains is covered.
"""
from __future__ import annotations

from typing import List

from .net_spec import params as _params
from .proto import caffe_pb2 as _caffe_pb2


def __getattr__(name: str):
    """`Resize` -> the constants of ResizeParameter (P.Resize.WARP, ...)."""
    if name.startswith('__'):
        raise AttributeError(name)
    if getattr(_caffe_pb2, name + 'Parameter', None) is None:
        raise AttributeError('module caffe.params: caffe.proto has no message %sParameter'
                             % name)
    return getattr(_params, name)


def __dir__() -> List[str]:
    return sorted(n[:-len('Parameter')] for n in dir(_caffe_pb2)
                  if n.endswith('Parameter') and n != 'Parameter')
