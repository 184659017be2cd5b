"""How the solvers round and print numbers, so logs and rates match Caffe's to the digit."""
from __future__ import annotations

import numpy as np

# The glog source tags of Caffe's two solver files, which log parsers key on.
SOLVER_CPP = 'solver.cpp'
SGD_CPP = 'sgd_solver.cpp'


def g(x: float) -> str:
    """A number as C++'s ostream prints a float by default (6 significant digits)."""
    return '%g' % x


def f32(x: float) -> float:
    """Round to float32, as Caffe keeps rates and scalars in Dtype."""
    return float(np.float32(x))
