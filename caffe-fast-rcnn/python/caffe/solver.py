"""pycaffe's `caffe.solver` names, kept importable; the solvers live in `caffe.solvers`."""
from .solvers import (Solver, SGDSolver, NesterovSolver, AdaGradSolver,  # noqa: F401
                      RMSPropSolver, AdaDeltaSolver, AdamSolver, get_solver,
                      get_solver_from_file, get_solver_from_string, read_solver_param,
                      SolverError, TrainingDivergedError, SolverAction, SOLVER_CLASSES)

__all__ = ['Solver', 'SGDSolver', 'NesterovSolver', 'AdaGradSolver', 'RMSPropSolver',
           'AdaDeltaSolver', 'AdamSolver', 'get_solver', 'get_solver_from_file',
           'get_solver_from_string', 'read_solver_param', 'SolverError', 'TrainingDivergedError',
           'SolverAction']
