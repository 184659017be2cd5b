"""The `Python` layer type: a layer class written in Python, named by the prototxt.

`python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" param_str: "..." }`
imports `module` from sys.path (as Caffe does), instantiates `layer` (a subclass of
caffe.Layer) and gives it `param_str` (and caffe-fast-rcnn's `param_str_`) and `phase`
before calling its `setup`. Errors while importing name the layer and the module.
"""
from __future__ import annotations

import importlib

from ..errors import NetError
from ..layer import Layer
from . import register


@register('Python')
class PythonLayer(Layer):
    """Factory for user layers; instances are of the user's class, not of this one."""

    @staticmethod
    def create(lp):
        pp = lp.python_param
        if not pp.module or not pp.layer:
            raise NetError('Python layer %r needs python_param { module: ... layer: ... }' % lp.name)
        try:
            module = importlib.import_module(pp.module)
        except Exception as e:
            raise NetError('Python layer %r: cannot import module %r: %s: %s (is its folder on '
                           'sys.path / PYTHONPATH?)' % (lp.name, pp.module, type(e).__name__, e)) from e
        cls = getattr(module, pp.layer, None)
        if cls is None:
            raise NetError('Python layer %r: module %r has no class %r'
                           % (lp.name, pp.module, pp.layer))
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise NetError('Python layer %r: %s.%s is not a subclass of caffe.Layer'
                           % (lp.name, pp.module, pp.layer))
        obj = cls.__new__(cls)
        Layer.__init__(obj, lp)
        if cls.__init__ is not Layer.__init__:
            cls.__init__(obj, lp)
        obj.param_str = pp.param_str
        obj.backward_uses_forward_state = False  # the user's backward is the user's
        obj.param_str_ = pp.param_str
        return obj
