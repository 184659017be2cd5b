"""Caffe's solvers: SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam, as pycaffe offers them.

A solver owns a training net and its test nets (built from a SolverParameter exactly as
Caffe's Solver::Init builds them) and trains with Caffe's loop, update for update. The
package is laid out as Caffe's solver sources are:

    base.py       Solver: construction, step/solve, testing, display, NaN handling
    nets.py       the train and test nets a SolverParameter names
    lr_policy.py  learning-rate policies (fixed, step, exp, inv, multistep, poly, sigmoid)
    sgd.py        SGDSolver (the shared update: clip, normalise, regularise) and Nesterov
    adaptive.py   AdaGrad, RMSProp, AdaDelta, Adam
    fused.py      torch's one-pass SGD/Adam kernels and the check that they fit
    snapshot.py   .caffemodel/.solverstate files, binary or HDF5, written atomically
    registry.py   SolverParameter.type -> class; get_solver and friends
    params.py     reading solver prototxts

Snapshots are Caffe's files (`<prefix>_iter_N.caffemodel` + `.solverstate`, or the HDF5
pair), which a real Caffe reads and which are read from a real Caffe.
"""
from .errors import SolverError, TrainingDivergedError
from .params import read_solver_param
from .base import Solver, SolverAction
from .registry import (SOLVER_CLASSES, create_solver, get_solver, get_solver_from_file,
                       get_solver_from_string, register_solver)
from .sgd import SGDSolver, NesterovSolver
from .adaptive import AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver

__all__ = ['Solver', 'SGDSolver', 'NesterovSolver', 'AdaGradSolver', 'RMSPropSolver',
           'AdaDeltaSolver', 'AdamSolver', 'get_solver', 'get_solver_from_file',
           'get_solver_from_string', 'read_solver_param', 'SolverError', 'TrainingDivergedError',
           'SolverAction', 'SOLVER_CLASSES', 'register_solver', 'create_solver']
