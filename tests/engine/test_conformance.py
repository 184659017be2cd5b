"""The engine against fixtures made by a real Caffe (caffe-fast-rcnn built for the CPU).

One test per case folder of conformance_fixtures/ (a copy of shared/conformance), compared
exactly as shared/conformance/check_conformance.py compares them: the same public pycaffe
calls in the same order and the same tolerance (rtol 1e-3, atol 2e-4 times the scale of
the reference array). The checker script itself runs as a program; its comparison is
restated here so that pytest reports each case by name with the first array that differs.
"""
import json
import os
import sys

import numpy as np
import pytest

import caffe

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'conformance_fixtures')
SOLVERS = {'SGD': 'SGDSolver', 'Nesterov': 'NesterovSolver', 'AdaGrad': 'AdaGradSolver',
           'RMSProp': 'RMSPropSolver', 'AdaDelta': 'AdaDeltaSolver', 'Adam': 'AdamSolver'}


def _cases():
    out = []
    for name in sorted(os.listdir(FIXTURES)):
        meta_path = os.path.join(FIXTURES, name, 'case.json')
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                out.append(pytest.param(name, json.load(f)['kind'], id=name))
    return out


CASES = _cases()


def assert_close(got, want, what):
    """check_conformance.close(): same shape, allclose(rtol=1e-3, atol=2e-4 * scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, '%s: shape %s != %s' % (what, got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got - want).max()) if got.size else 0.0
    assert np.allclose(got, want, rtol=1e-3, atol=2e-4 * scale), \
        '%s: max abs err %.3g (scale %.3g)' % (what, err, scale)


@pytest.fixture
def in_case_dir(monkeypatch):
    """chdir into a case folder and put it on sys.path (for its Python layer modules)."""
    def enter(d):
        monkeypatch.chdir(d)
        monkeypatch.syspath_prepend(d)
    return enter


def check_layer(d, meta, arr):
    net = caffe.Net(os.path.join(d, 'net.prototxt'), os.path.join(d, 'weights.caffemodel'),
                    getattr(caffe, meta['phase']))
    for k in meta['inputs']:
        net.blobs[k].data[...] = arr['input/' + k]
    net.forward()
    for key in arr.files:
        kind, _, name = key.partition('/')
        if kind == 'data':
            assert_close(net.blobs[name].data, arr[key], 'forward ' + key)
        elif kind == 'param':
            lname, i = name.rsplit('/', 1)
            assert_close(net.params[lname][int(i)].data, arr[key], 'forward ' + key)
    if not meta['backward']:
        return
    for ps in net.params.values():
        for p in ps:
            p.diff[...] = 0
    diffs = {b: arr['top_diff/' + b] for b in meta['top_diff']}
    if diffs:
        net.backward(**diffs)
    else:
        net.backward()
    for key in arr.files:
        kind, _, name = key.partition('/')
        if kind == 'diff':
            assert_close(net.blobs[name].diff, arr[key], 'backward ' + key)
        elif kind == 'param_diff':
            lname, i = name.rsplit('/', 1)
            assert_close(net.params[lname][int(i)].diff, arr[key], 'backward ' + key)


def _check_steps(solver, arr, first, last):
    for it in range(first, last + 1):
        solver.step(1)
        assert_close(solver.net.blobs['loss'].data, arr['loss/%d' % it], 'loss after step %d' % it)
        for lname, ps in solver.net.params.items():
            for i, p in enumerate(ps):
                assert_close(p.data, arr['traj/%d/%s/%d' % (it, lname, i)],
                             'params %s/%d after step %d' % (lname, i, it))


def check_solver(d, meta, arr):
    kind = meta['solver'].split('type: "')[1].split('"')[0]
    solver = getattr(caffe, SOLVERS[kind])('solver.prototxt')
    solver.net.copy_from('init.caffemodel')
    solver.net.blobs['data'].data[...] = arr['input/data']
    solver.net.blobs['label'].data[...] = arr['input/label']
    _check_steps(solver, arr, 1, meta['iters'])


def check_restore(d, meta, arr):
    solver = caffe.SGDSolver('solver.prototxt')
    solver.restore(meta['state'])
    assert solver.iter == meta['first'] - 1, \
        'iter after restore is %s, not %d' % (solver.iter, meta['first'] - 1)
    solver.net.blobs['data'].data[...] = arr['input/data']
    solver.net.blobs['label'].data[...] = arr['input/label']
    _check_steps(solver, arr, meta['first'], meta['last'])


def test_fixtures_are_a_current_copy_of_shared():
    """The copy holds every case of shared/conformance byte for byte (when shared/ is there)."""
    assert len(CASES) >= 12
    shared = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(FIXTURES))), '..',
                          'shared', 'conformance')
    if not os.path.isdir(shared):
        return
    for root, _, files in os.walk(shared):
        for fname in files:
            src = os.path.join(root, fname)
            dst = os.path.join(FIXTURES, os.path.relpath(src, shared))
            assert os.path.isfile(dst), 'missing fixture %s: copy shared/conformance again' % dst
            with open(src, 'rb') as a, open(dst, 'rb') as b:
                assert a.read() == b.read(), '%s differs from shared/conformance' % dst


@pytest.mark.parametrize('name,kind', CASES)
def test_conformance_case(name, kind, in_case_dir):
    d = os.path.join(FIXTURES, name)
    with open(os.path.join(d, 'case.json')) as f:
        meta = json.load(f)
    in_case_dir(d)
    with np.load(os.path.join(d, 'arrays.npz')) as arr:
        {'solver': check_solver, 'restore': check_restore}.get(kind, check_layer)(d, meta, arr)
