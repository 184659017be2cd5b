"""The solver catalogue: SolverParameter.type ("SGD", "Adam", ...) -> solver class.

Each update-rule module registers its classes with `@register_solver("Type")`, so choosing
the class for a solver file is one dictionary lookup, and a new rule is a new class.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

from .. import protoio, upgrade
from ..proto import caffe_pb2
from .base import Solver
from .errors import SolverError
from .params import as_solver_param

SOLVER_CLASSES: Dict[str, Type[Solver]] = {}


def register_solver(type_name: str):
    """Class decorator: the class builds solvers of this SolverParameter.type (its `type`)."""
    def deco(cls: Type[Solver]) -> Type[Solver]:
        if type_name in SOLVER_CLASSES and SOLVER_CLASSES[type_name] is not cls:
            raise RuntimeError('solver type %r registered twice (%s and %s)'
                               % (type_name, SOLVER_CLASSES[type_name].__name__, cls.__name__))
        cls.type = type_name
        SOLVER_CLASSES[type_name] = cls
        return cls
    return deco


def create_solver(param: caffe_pb2.SolverParameter, source: Optional[str]) -> Solver:
    """A solver of the class `param.type` names, from an upgraded SolverParameter.

    `source` is the solver file (or None): relative net files and the default snapshot
    prefix are taken from it.
    """
    cls = SOLVER_CLASSES.get(param.type)
    if cls is None:
        raise SolverError('Unknown solver type: %s (known types: %s)'
                          % (param.type, ', '.join(sorted(SOLVER_CLASSES))))
    solver = cls.__new__(cls)
    solver._source = source
    solver._init(param)
    return solver


def get_solver(spec) -> Solver:
    """A solver of the class the file's `type` (or legacy `solver_type`) names."""
    param, source = as_solver_param(spec)
    return create_solver(param, source)


def get_solver_from_file(path: str) -> Solver:
    return get_solver(path)


def get_solver_from_string(text: str) -> Solver:
    """A solver from prototxt text (relative net paths are taken from the working directory)."""
    param = protoio.parse_text(text, caffe_pb2.SolverParameter(), '<solver string>')
    return create_solver(upgrade.upgrade_solver(param), None)
