"""Reading a SolverParameter from a prototxt, a message or a path, upgraded to today's fields."""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

from .. import protoio, upgrade
from ..errors import CaffeError
from ..proto import caffe_pb2
from .errors import SolverError


def read_solver_param(path: Union[str, os.PathLike]) -> caffe_pb2.SolverParameter:
    """A solver prototxt as an upgraded SolverParameter (legacy `solver_type` -> `type`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SolverError('solver file not found: %s' % path)
    param = protoio.read_text(path, caffe_pb2.SolverParameter)
    try:
        return upgrade.upgrade_solver(param)
    except CaffeError as e:
        raise SolverError('%s: %s' % (path, e)) from None


def as_solver_param(spec) -> Tuple[caffe_pb2.SolverParameter, Optional[str]]:
    """(SolverParameter, source file or None) from a path, a SolverParameter or prototxt text.

    A given message is copied, so upgrading it never changes the caller's object.
    """
    if isinstance(spec, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(spec)
        return upgrade.upgrade_solver(param), None
    if isinstance(spec, (str, bytes, os.PathLike)):
        path = os.fsdecode(spec)
        return read_solver_param(path), path
    raise TypeError('a solver takes a solver prototxt path or a caffe_pb2.SolverParameter, '
                    'got %r' % type(spec).__name__)
