"""The training net and the test nets a SolverParameter describes (Caffe's Solver::InitTrainNet
and InitTestNets): which field names the net, which NetState each net gets, and the checks
Caffe makes on test_iter, test_state and test_interval."""
from __future__ import annotations

import os
from typing import List, Optional

from .. import _log
from ..net import Net, read_net_param
from ..proto import caffe_pb2
from ._numbers import SOLVER_CPP
from .errors import SolverError


def resolve_net_file(path: str, solver_file: Optional[str]) -> str:
    """Caffe opens net files relative to the working directory; so do we. Where that
    file is missing but one sits beside the solver file, use it (Caffe would abort)."""
    if os.path.isfile(path) or os.path.isabs(path) or not solver_file:
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(solver_file)), path)
    if os.path.isfile(beside):
        _log.warning(SOLVER_CPP + ':88', 'Net file %s not found relative to the working directory; '
                     'using %s (beside the solver file)' % (path, beside))
        return beside
    return path


def _read_net(path: str, solver_file: Optional[str]) -> caffe_pb2.NetParameter:
    return read_net_param(resolve_net_file(path, solver_file))


def _copy(net_param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    q = caffe_pb2.NetParameter()
    q.CopyFrom(net_param)
    return q


def build_train_net(p: caffe_pb2.SolverParameter, solver_file: Optional[str]) -> Net:
    """The training net from exactly one of net, net_param, train_net, train_net_param."""
    fields = ('net', 'net_param', 'train_net', 'train_net_param')
    n = sum(p.HasField(f) for f in fields)
    if n < 1:
        raise SolverError('SolverParameter must specify a train net using one of these '
                          'fields: net, net_param, train_net, train_net_param')
    if n > 1:
        raise SolverError('SolverParameter must not contain more than one of these fields '
                          'specifying a train_net: net, net_param, train_net, train_net_param')
    where = SOLVER_CPP + ':91'
    if p.HasField('train_net_param'):
        _log.info(where, 'Creating training net specified in train_net_param.')
        net_param = _copy(p.train_net_param)
    elif p.HasField('train_net'):
        _log.info(where, 'Creating training net from train_net file: ' + p.train_net)
        net_param = _read_net(p.train_net, solver_file)
    elif p.HasField('net_param'):
        _log.info(where, 'Creating training net specified in net_param.')
        net_param = _copy(p.net_param)
    else:
        _log.info(where, 'Creating training net from net file: ' + p.net)
        net_param = _read_net(p.net, solver_file)
    # Solver defaults, then the net's own state, then train_state (highest precedence).
    state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
    state.MergeFrom(net_param.state)
    state.MergeFrom(p.train_state)
    net_param.state.CopyFrom(state)
    return Net(net_param, int(state.phase), level=state.level)


def build_test_nets(p: caffe_pb2.SolverParameter, solver_file: Optional[str]) -> List[Net]:
    """The test nets in Caffe's order: test_net_param, test_net files, then copies of the
    general net (net_param or net) for the remaining test_iter entries."""
    has_net_param, has_net_file = p.HasField('net_param'), p.HasField('net')
    if has_net_param and has_net_file:
        raise SolverError('Both net_param and net_file may not be specified.')
    num_test_nets = len(p.test_net_param) + len(p.test_net)
    if has_net_param or has_net_file:
        if len(p.test_iter) < num_test_nets:
            raise SolverError('test_iter must be specified for each test network.')
    elif len(p.test_iter) != num_test_nets:
        raise SolverError('test_iter must be specified for each test network.')
    instances = max(len(p.test_iter), num_test_nets)
    if len(p.test_state) and len(p.test_state) != instances:
        raise SolverError('test_state must be unspecified or specified once per test net.')
    if instances and p.test_interval <= 0:
        raise SolverError('test_interval must be positive when test nets are given '
                          '(test_iter has %d entries)' % len(p.test_iter))
    sources, params = [], []
    for tp in p.test_net_param:
        sources.append('test_net_param')
        params.append(_copy(tp))
    for f in p.test_net:
        sources.append('test_net file: ' + f)
        params.append(_read_net(f, solver_file))
    remaining = len(p.test_iter) - len(params)
    for _ in range(max(remaining, 0)):
        if has_net_param:
            sources.append('net_param')
            params.append(_copy(p.net_param))
        elif has_net_file:
            sources.append('net file: ' + p.net)
            params.append(_read_net(p.net, solver_file))
    nets = []
    for i, (src, q) in enumerate(zip(sources, params)):
        state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
        state.MergeFrom(q.state)
        if len(p.test_state):
            state.MergeFrom(p.test_state[i])
        q.state.CopyFrom(state)
        _log.info(SOLVER_CPP + ':181', 'Creating test net (#%d) specified by %s' % (i, src))
        nets.append(Net(q, int(state.phase), level=state.level))
    return nets
