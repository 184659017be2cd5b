"""The layer catalogue: Caffe type string -> layer class.

Each module of this package holds one family of layers and registers each class with
`@register("TypeName")`. Every module is imported here, so adding a layer is adding a
file (or a class to a family's file); nothing else lists the types.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Dict, List, Type

from ..errors import NetError

_REGISTRY: Dict[str, type] = {}


def register(*type_names: str):
    """Class decorator: make the class the implementation of these Caffe layer types."""
    def deco(cls):
        for name in type_names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError('layer type %r registered twice (%s and %s)'
                                   % (name, _REGISTRY[name].__name__, cls.__name__))
            _REGISTRY[name] = cls
        return cls
    return deco


def layer_class(type_name: str, layer_name: str = '') -> type:
    """The class registered for `type_name`; an unknown type names close matches."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        close = difflib.get_close_matches(type_name, list(_REGISTRY), n=3, cutoff=0.5)
        lowered = [t for t in _REGISTRY if t.lower() == type_name.lower()]
        hints = lowered + [c for c in close if c not in lowered]
        hint = (' Did you mean %s?' % ' or '.join(repr(h) for h in hints)) if hints else ''
        raise NetError('Unknown layer type %r (layer %r).%s Known types: %s'
                       % (type_name, layer_name, hint, ', '.join(sorted(_REGISTRY)))) from None


def layer_type_list() -> List[str]:
    """All registered type strings, sorted (pycaffe's caffe.layer_type_list())."""
    return sorted(_REGISTRY)


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith('_'):
            importlib.import_module('%s.%s' % (__name__, mod.name))


_import_all()
