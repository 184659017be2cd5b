"""The solvers' own errors: a SolverParameter Caffe would refuse, and training that diverged."""
from __future__ import annotations

from typing import Optional

from ..errors import CaffeError


class SolverError(CaffeError):
    """A SolverParameter Caffe would reject (missing net, bad lr policy, bad state file...)."""


class TrainingDivergedError(CaffeError):
    """The loss (or the weights) became NaN or infinite; training stopped before using them."""

    def __init__(self, message: str, iteration: int, blob: Optional[str] = None):
        super().__init__(message)
        self.iteration = iteration
        self.blob = blob
