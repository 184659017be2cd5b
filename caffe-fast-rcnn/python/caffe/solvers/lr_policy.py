"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), one function per `lr_policy`.

Each policy maps (SolverParameter, iteration, current step) to (rate, current step); the
step counter is the only state a policy keeps ("step" recomputes it, "multistep" advances
it past each stepvalue) and it is saved in .solverstate files as Caffe's current_step.
The rate is rounded to float32 at the end, as Caffe computes it in Dtype.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

from .. import _log
from ..proto import caffe_pb2
from ._numbers import SGD_CPP, f32
from .errors import SolverError

Policy = Callable[[caffe_pb2.SolverParameter, int, int], Tuple[float, int]]

LR_POLICIES: Dict[str, Policy] = {}


def _policy(name: str):
    def deco(fn: Policy) -> Policy:
        LR_POLICIES[name] = fn
        return fn
    return deco


def _need_gamma(p: caffe_pb2.SolverParameter, name: str) -> None:
    if p.gamma < 0:
        raise SolverError('lr_policy "%s" needs gamma >= 0' % name)


@_policy('fixed')
def _fixed(p, it, step):
    """base_lr."""
    return p.base_lr, step


@_policy('step')
def _step(p, it, step):
    """base_lr * gamma ^ floor(iter / stepsize)."""
    if p.stepsize <= 0:
        raise SolverError('lr_policy "step" needs stepsize > 0 (got %d)' % p.stepsize)
    step = it // p.stepsize
    _need_gamma(p, 'step')
    return p.base_lr * math.pow(p.gamma, step), step


@_policy('exp')
def _exp(p, it, step):
    """base_lr * gamma ^ iter."""
    _need_gamma(p, 'exp')
    return p.base_lr * math.pow(p.gamma, it), step


@_policy('inv')
def _inv(p, it, step):
    """base_lr * (1 + gamma * iter) ^ (-power)."""
    _need_gamma(p, 'inv')
    return p.base_lr * math.pow(1.0 + f32(p.gamma * it), -p.power), step


@_policy('multistep')
def _multistep(p, it, step):
    """base_lr * gamma ^ (number of stepvalues passed); steps one stepvalue per call."""
    if step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
        _log.info(SGD_CPP + ':46', 'MultiStep Status: Iteration %d, step = %d' % (it, step))
    _need_gamma(p, 'multistep')
    return p.base_lr * math.pow(p.gamma, step), step


@_policy('poly')
def _poly(p, it, step):
    """base_lr * (1 - iter / max_iter) ^ power."""
    if p.max_iter <= 0:
        raise SolverError('lr_policy "poly" needs max_iter > 0')
    return p.base_lr * math.pow(1.0 - f32(float(it) / p.max_iter), p.power), step


@_policy('sigmoid')
def _sigmoid(p, it, step):
    """base_lr / (1 + exp(-gamma * (iter - stepsize)))."""
    _need_gamma(p, 'sigmoid')
    if p.stepsize <= 0:
        raise SolverError('lr_policy "sigmoid" needs stepsize > 0')
    return p.base_lr * (1.0 / (1.0 + math.exp(-p.gamma * (float(it) - float(p.stepsize))))), step


def learning_rate(p: caffe_pb2.SolverParameter, it: int, current_step: int) -> Tuple[float, int]:
    """(rate at iteration `it` rounded to float32, the updated step counter)."""
    policy = LR_POLICIES.get(p.lr_policy)
    if policy is None:
        raise SolverError('Unknown learning rate policy: %s' % p.lr_policy)
    rate, step = policy(p, it, current_step)
    return f32(rate), step
