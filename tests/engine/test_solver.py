"""Solvers against Caffe's update rules, written out again here in plain NumPy (float64).

Every solver type, every lr policy, iter_size, clip_gradients, L1 regularisation, frozen
(lr_mult 0) and undecayed (decay_mult 0) parameters: the engine's fused-kernel solver must
follow the per-element formulas of Caffe's sgd/nesterov/adagrad/rmsprop/adadelta/adam
solvers step by step. Also pycaffe's own test_solver.py checks, restore/snapshot round trips
(binary and HDF5), and restoring a state file laid out as an old Caffe writes it.
"""
import math
import os

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from caffe.solver import SolverError

DATA_LAYER = '''
import json
import numpy as np
import caffe


class FixedBatches(caffe.Layer):
    """Deterministic batches (data, label) cycling through `batches` random ones."""

    def setup(self, bottom, top):
        p = json.loads(self.param_str or '{}')
        rng = np.random.RandomState(p.get('seed', 0))
        self.batch = p.get('batch', 4)
        self.shape = tuple(p.get('shape', [3, 5, 5]))
        n = p.get('batches', 1)
        self.data = (rng.randn(n, self.batch, *self.shape) * p.get('scale', 1.0)).astype(np.float32)
        self.labels = rng.randint(0, p.get('classes', 3), size=(n, self.batch)).astype(np.float32)
        self.nan_at = p.get('nan_at', -1)
        self.count = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, *self.shape)
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        k = self.count % len(self.data)
        top[0].data[...] = self.data[k]
        top[1].data[...] = self.labels[k]
        if 0 <= self.nan_at <= self.count:
            top[0].data[...] = np.nan
        self.count += 1
'''

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(autouse=True)
def data_layer_module(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.getbasetemp() / 'solver_layers'
    d.mkdir(exist_ok=True)
    (d / 'solver_test_data.py').write_text(DATA_LAYER)
    monkeypatch.syspath_prepend(str(d))


def net_text(batches=3, seed=1, frozen=True, extra=''):
    frozen_spec = 'param { lr_mult: 0 } param { lr_mult: 0 }' if frozen else ''
    return '''
    name: "tiny"
    layer { name: "data" type: "Python" top: "data" top: "label"
            python_param { module: "solver_test_data" layer: "FixedBatches"
                           param_str: '{"batches": %d, "seed": %d}' } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
            convolution_param { num_output: 4 kernel_size: 3
              weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } }
    layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    layer { name: "mid" type: "InnerProduct" bottom: "conv" top: "mid" %s
            inner_product_param { num_output: 6
              weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "mid" top: "ip"
            param { lr_mult: 1 decay_mult: 2 } param { lr_mult: 0.5 decay_mult: 0 }
            inner_product_param { num_output: 3
              weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    %s
    ''' % (batches, seed, frozen_spec, extra)


def make_solver(solver_text, net=None, **net_kw):
    text = 'net_param { %s } %s' % (net or net_text(**net_kw), solver_text)
    return caffe.get_solver_from_string(text)


# ---- Caffe's rules, written out plainly --------------------------------------------------------

def ref_lr(p, it, state):
    """GetLearningRate; `state['step']` is Caffe's current_step_."""
    pol = p['lr_policy']
    base = p['base_lr']
    if pol == 'fixed':
        return base
    if pol == 'step':
        state['step'] = it // p['stepsize']
        return base * p['gamma'] ** state['step']
    if pol == 'exp':
        return base * p['gamma'] ** it
    if pol == 'inv':
        return base * (1 + p['gamma'] * it) ** (-p['power'])
    if pol == 'multistep':
        if state['step'] < len(p['stepvalue']) and it >= p['stepvalue'][state['step']]:
            state['step'] += 1
        return base * p['gamma'] ** state['step']
    if pol == 'poly':
        return base * (1 - it / p['max_iter']) ** p['power']
    if pol == 'sigmoid':
        return base / (1 + math.exp(-p['gamma'] * (it - p['stepsize'])))
    raise ValueError(pol)


def ref_update(kind, p, W, G, H, it, rate, lr_mults, decay_mults):
    """One ApplyUpdate on float64 copies: clip, normalize, regularize, per-solver rule, w -= step."""
    n = len(W)
    G = [g.copy() for g in G]
    clip = p.get('clip_gradients', -1)
    if clip >= 0:
        norm = math.sqrt(sum(float((g * g).sum()) for g in G))
        if norm > clip:
            G = [g * (clip / norm) for g in G]
    m = p.get('momentum', 0.0)
    delta = p.get('delta', 1e-8)
    for i in range(n):
        g = G[i] / p.get('iter_size', 1)
        decay = p.get('weight_decay', 0.0) * decay_mults[i]
        if decay:
            g = g + decay * (np.sign(W[i]) if p.get('regularization_type') == 'L1' else W[i])
        lr = rate * lr_mults[i]
        if kind == 'SGD':
            H[i] = m * H[i] + lr * g
            step = H[i]
        elif kind == 'Nesterov':
            old = H[i].copy()
            H[i] = m * H[i] + lr * g
            step = (1 + m) * H[i] - m * old
        elif kind == 'AdaGrad':
            H[i] = H[i] + g * g
            step = lr * g / (np.sqrt(H[i]) + delta)
        elif kind == 'RMSProp':
            d = p.get('rms_decay', 0.99)
            H[i] = d * H[i] + (1 - d) * g * g
            step = lr * g / (np.sqrt(H[i]) + delta)
        elif kind == 'AdaDelta':
            H[i] = m * H[i] + (1 - m) * g * g
            s = g * np.sqrt((H[n + i] + delta) / (H[i] + delta))
            H[n + i] = m * H[n + i] + (1 - m) * s * s
            step = lr * s
        elif kind == 'Adam':
            b2 = p.get('momentum2', 0.999)
            t = it + 1
            H[i] = m * H[i] + (1 - m) * g
            H[n + i] = b2 * H[n + i] + (1 - b2) * g * g
            corr = math.sqrt(1 - b2 ** t) / (1 - m ** t)
            step = lr * corr * H[i] / (np.sqrt(H[n + i]) + delta)
        W[i] = W[i] - step


def solver_text_of(kind, p):
    lines = ['type: "%s"' % kind]
    for k, v in p.items():
        if k == 'stepvalue':
            lines += ['stepvalue: %d' % s for s in v]
        elif isinstance(v, str):
            lines.append('%s: "%s"' % (k, v))
        else:
            lines.append('%s: %r' % (k, v))
    return ' '.join(lines)


def check_against_reference(kind, p, iters=5, rtol=2e-4, fused=True, **net_kw):
    solver = make_solver(solver_text_of(kind, p), **net_kw)
    solver.use_fused_update = fused
    net_param = caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge(net_text(**net_kw), net_param)
    ref_net = caffe.Net(net_param, caffe.TRAIN)
    learn = solver.net._learnable_params
    lr_mults = list(solver.net._params_lr)
    decay_mults = list(solver.net._params_weight_decay)
    W = [b.data.astype(np.float64).copy() for b in learn]
    per = 2 if kind in ('AdaDelta', 'Adam') else 1
    H = [np.zeros_like(W[i % len(W)]) for i in range(per * len(W))]
    ref_learn = ref_net._learnable_params
    state = {'step': 0}
    for it in range(iters):
        for b, w in zip(ref_learn, W):
            b.data[...] = w
        ref_net.clear_param_diffs()
        for _ in range(p.get('iter_size', 1)):
            ref_net.forward_backward()
        G = [b.diff.astype(np.float64).copy() for b in ref_learn]
        rate = ref_lr(p, it, state)
        ref_update(kind, p, W, G, H, it, rate, lr_mults, decay_mults)
        solver.step(1)
        assert solver.iter == it + 1
        for j, (b, w) in enumerate(zip(learn, W)):
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(b.data, w, rtol=rtol, atol=rtol * scale,
                                       err_msg='%s param %d after step %d' % (kind, j, it + 1))
    return solver


BASE = {'base_lr': 0.05, 'lr_policy': 'fixed', 'weight_decay': 0.004}


@pytest.mark.parametrize('kind,extra', [
    ('SGD', {'momentum': 0.9}),
    ('SGD', {'momentum': 0.0}),
    ('Nesterov', {'momentum': 0.9}),
    ('AdaGrad', {}),
    ('RMSProp', {'rms_decay': 0.95}),
    ('AdaDelta', {'momentum': 0.95, 'delta': 1e-6, 'base_lr': 1.0}),
    ('Adam', {'momentum': 0.9, 'momentum2': 0.999, 'delta': 1e-8}),
    ('Adam', {'momentum': 0.8, 'momentum2': 0.99, 'delta': 1e-3, 'fused': False}),
])
def test_every_solver_type_follows_caffe(kind, extra):
    p = dict(BASE, **extra)
    fused = p.pop('fused', True)
    check_against_reference(kind, p, fused=fused)


@pytest.mark.parametrize('kind,fused', [('SGD', True), ('SGD', False), ('Adam', True),
                                        ('Adam', False)])
def test_iter_size_accumulates_and_normalises(kind, fused):
    p = dict(BASE, momentum=0.9, iter_size=3)
    check_against_reference(kind, p, batches=3, fused=fused)


def test_sgd_step_by_step_path_follows_caffe():
    p = dict(BASE, momentum=0.9, lr_policy='step', gamma=0.5, stepsize=2)
    check_against_reference('SGD', p, fused=False)


def test_sgd_paths_agree_and_diff_holds_the_update_as_in_caffe():
    text = 'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed"'
    fused, plain = make_solver(text), make_solver(text)
    plain.use_fused_update = False
    for a, b in zip(fused.net._learnable_params, plain.net._learnable_params):
        b.data[...] = a.data
    before = [b.data.copy() for b in plain.net._learnable_params]
    fused.step(3)
    plain.step(3)
    for a, b in zip(fused.net._learnable_params, plain.net._learnable_params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-7)
    for solver in (plain, fused):
        for h, b in zip(solver._history, solver.net._learnable_params):
            np.testing.assert_array_equal(b.diff, h.numpy())   # Caffe: diff = update after a step
    plain.step(1)
    for b, w0 in zip(plain.net._learnable_params, before):
        assert b.diff.shape == w0.shape


@pytest.mark.parametrize('text', [
    'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed"',
    'type: "Adam" base_lr: 0.05 momentum: 0.9 momentum2: 0.99 delta: 1e-3 weight_decay: 0.01 '
    'lr_policy: "fixed"'])
def test_fused_update_leaves_caffes_diff(text):
    """The fused kernels leave in the diffs what Caffe leaves there (the update step),
    computed when read; an apply_update without a new gradient consumes it as Caffe does."""
    fused, plain = make_solver(text), make_solver(text)
    plain.use_fused_update = False
    for a, b in zip(fused.net._learnable_params, plain.net._learnable_params):
        b.data[...] = a.data
    fused.step(2)
    plain.step(2)
    for a, b in zip(fused.net._learnable_params, plain.net._learnable_params):
        scale = max(1e-6, float(np.abs(b.diff).max()))
        np.testing.assert_allclose(a.diff, b.diff, rtol=1e-4, atol=1e-5 * scale)
    fused.step(1)
    plain.step(1)
    fused.apply_update()     # no clear, no backward: the left step is the gradient (Caffe)
    plain.apply_update()
    for a, b in zip(fused.net._learnable_params, plain.net._learnable_params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('clip,kind', [(0.05, 'SGD'), (1e6, 'SGD'), (0.05, 'Nesterov')])
def test_clip_gradients_by_global_norm(clip, kind):
    p = dict(BASE, momentum=0.9, clip_gradients=clip, iter_size=2)
    check_against_reference(kind, p)


def test_l1_regularisation():
    p = dict(BASE, momentum=0.9, regularization_type='L1', weight_decay=0.01)
    check_against_reference('SGD', p)


@pytest.mark.parametrize('policy', [
    {'lr_policy': 'step', 'gamma': 0.5, 'stepsize': 2},
    {'lr_policy': 'exp', 'gamma': 0.9},
    {'lr_policy': 'inv', 'gamma': 0.1, 'power': 0.75},
    {'lr_policy': 'multistep', 'gamma': 0.3, 'stepvalue': [1, 3, 4]},
    {'lr_policy': 'poly', 'power': 2.0, 'max_iter': 6},
    {'lr_policy': 'sigmoid', 'gamma': 0.8, 'stepsize': 2},
])
def test_lr_policies_drive_the_update(policy):
    p = dict(BASE, momentum=0.9, **policy)
    check_against_reference('SGD', p)


def test_lr_policy_values_and_multistep_state():
    s = make_solver('base_lr: 0.1 lr_policy: "multistep" gamma: 0.1 stepvalue: 2 stepvalue: 5 '
                    'stepvalue: 6 momentum: 0.9')
    rates = []
    for it in range(8):
        s._iter = it
        rates.append(s.get_learning_rate())
    # One step per call, as Caffe: iteration 6 reaches the third step value.
    expected = [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.0001, 0.0001]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert s._current_step == 3
    s = make_solver('base_lr: 0.2 lr_policy: "poly" power: 0.5 max_iter: 100')
    s._iter = 75
    assert s.get_learning_rate() == pytest.approx(0.2 * 0.25 ** 0.5, rel=1e-6)
    s = make_solver('base_lr: 0.2 lr_policy: "sigmoid" gamma: 0.1 stepsize: 10')
    s._iter = 30
    assert s.get_learning_rate() == pytest.approx(0.2 / (1 + math.exp(-2.0)), rel=1e-6)
    s = make_solver('base_lr: 0.2 lr_policy: "bogus"')
    with pytest.raises(SolverError, match='Unknown learning rate policy: bogus'):
        s.step(1)


def test_frozen_parameters_never_move():
    s = make_solver('type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.1 lr_policy: "fixed"')
    mid = [b.data.copy() for b in s.net.params['mid']]
    s.step(3)
    for b, before in zip(s.net.params['mid'], mid):
        np.testing.assert_array_equal(b.data, before)


# ---- pycaffe's test_solver.py, as our own checks ----------------------------------------------

SIMPLE_NET = '''name: 'testnet' force_backward: true
input: 'data' input_shape { dim: 5 dim: 2 dim: 3 dim: 4 }
input: 'label' input_shape { dim: 5 dim: 1 dim: 1 dim: 1 }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 11 kernel_size: 2 pad: 3
    weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 2 } }
  param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
  inner_product_param { num_output: 13
    weight_filler { type: 'gaussian' std: 2.5 } bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
'''


@pytest.fixture
def pycaffe_solver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'net.prototxt').write_text(SIMPLE_NET)
    (tmp_path / 'solver.prototxt').write_text(
        "net: 'net.prototxt' test_iter: 2 test_interval: 10 base_lr: 0.01 momentum: 0.9 "
        "weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75 display: 100 "
        "max_iter: 100 snapshot_after_train: false snapshot_prefix: 'model'")
    solver = caffe.SGDSolver('solver.prototxt')
    assert isinstance(caffe.get_solver('solver.prototxt'), caffe.SGDSolver)
    caffe.get_solver_from_file('solver.prototxt')
    caffe.set_mode_cpu()
    rng = np.random.RandomState(0)
    for net in [solver.net] + list(solver.test_nets):
        net.blobs['data'].data[...] = rng.randn(*net.blobs['data'].data.shape)
        net.blobs['label'].data[...] = rng.randint(13, size=net.blobs['label'].data.shape)
    return solver


def test_pycaffe_solve(pycaffe_solver):
    assert pycaffe_solver.iter == 0
    pycaffe_solver.solve(None)
    assert pycaffe_solver.iter == 100


def test_pycaffe_apply_update(pycaffe_solver):
    net = pycaffe_solver.net
    data = net.layers[1].blobs[0].data[...]
    data[...] = 0
    net.layers[1].blobs[0].diff[...] = 1
    pycaffe_solver.apply_update()
    assert np.abs(data - -0.01).max() < 1e-7


def test_pycaffe_net_memory(pycaffe_solver):
    nets = [pycaffe_solver.net] + list(pycaffe_solver.test_nets)
    assert len(nets) == 2
    del pycaffe_solver
    total = 0
    for net in nets:
        for ps in net.params.values():
            for p in ps:
                total += p.data.sum() + p.diff.sum()
        for bl in net.blobs.values():
            total += bl.data.sum() + bl.diff.sum()
    assert np.isfinite(total)


def test_pycaffe_snapshot(pycaffe_solver):
    pycaffe_solver.snapshot()
    for fn in ['model_iter_0.caffemodel', 'model_iter_0.solverstate']:
        assert os.path.isfile(fn)


def test_test_nets_share_the_trained_weights(pycaffe_solver):
    pycaffe_solver.step(3)
    test_net = pycaffe_solver.test_nets[0]
    pycaffe_solver.test(0)
    for name, ps in pycaffe_solver.net.params.items():
        for a, b in zip(ps, test_net.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_callbacks_run_around_each_iteration(pycaffe_solver):
    seen = []
    pycaffe_solver.add_callback(lambda: seen.append(('start', pycaffe_solver.iter)),
                                lambda: seen.append(('grads', pycaffe_solver.iter)))
    pycaffe_solver.step(2)
    assert seen == [('start', 0), ('grads', 0), ('start', 1), ('grads', 1)]


# ---- choosing the solver, legacy fields, errors -----------------------------------------------

@pytest.mark.parametrize('text,cls', [
    ('type: "Adam"', caffe.AdamSolver), ('type: "Nesterov"', caffe.NesterovSolver),
    ('solver_type: ADAGRAD', caffe.AdaGradSolver), ('solver_type: RMSPROP', caffe.RMSPropSolver),
    ('solver_type: ADADELTA', caffe.AdaDeltaSolver), ('', caffe.SGDSolver),
])
def test_get_solver_chooses_by_type(tmp_path, monkeypatch, text, cls):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'net.prototxt').write_text(SIMPLE_NET)
    (tmp_path / 's.prototxt').write_text('net: "net.prototxt" base_lr: 0.1 %s' % text)
    s = caffe.get_solver(str(tmp_path / 's.prototxt'))
    assert type(s) is cls


@pytest.mark.parametrize('text,msg', [
    ('type: "Sgd2"', 'Unknown solver type: Sgd2'),
    ('type: "AdaGrad" momentum: 0.9', 'Momentum cannot be used with AdaGrad'),
    ('type: "RMSProp" rms_decay: 1.5', 'rms_decay should lie between 0 and 1'),
    ('type: "SGD" test_iter: 3 test_interval: 0', 'test_interval'),
    ('type: "SGD" test_net: "net.prototxt"', 'test_iter must be specified for each test network'),
    ('type: "SGD" train_net: "net.prototxt"', 'must not contain more than one'),
    ('type: "SGD" average_loss: 0', 'average_loss'),
])
def test_bad_solver_parameters(tmp_path, monkeypatch, text, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'net.prototxt').write_text(SIMPLE_NET)
    (tmp_path / 's.prototxt').write_text('net: "net.prototxt" base_lr: 0.1 %s' % text)
    with pytest.raises(SolverError, match=msg):
        caffe.get_solver(str(tmp_path / 's.prototxt'))


def test_no_train_net_is_an_error():
    with pytest.raises(SolverError, match='must specify a train net'):
        caffe.get_solver_from_string('base_lr: 0.1')


def test_relative_net_path_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'net.prototxt').write_text(SIMPLE_NET)
    (tmp_path / 'a' / 's.prototxt').write_text('net: "a/net.prototxt" base_lr: 0.1')
    monkeypatch.chdir(tmp_path)
    s = caffe.get_solver('a/s.prototxt')
    assert s.net.name == 'testnet'


def test_train_and_test_states_select_layers():
    net = SIMPLE_NET + '''
    layer { name: "only_train_stage" type: "ReLU" bottom: "ip_blob" top: "r1"
            include { phase: TRAIN stage: "deep" } }
    layer { name: "only_test" type: "ReLU" bottom: "ip_blob" top: "r2" include { phase: TEST } }
    '''
    s = caffe.get_solver_from_string('net_param { %s } base_lr: 0.1 test_iter: 1 test_interval: 5 '
                                     'train_state { stage: "deep" }' % net)
    assert 'only_train_stage' in s.net.layer_dict and 'only_test' not in s.net.layer_dict
    assert 'only_test' in s.test_nets[0].layer_dict
    assert 'only_train_stage' not in s.test_nets[0].layer_dict


# ---- snapshot and restore ----------------------------------------------------------------------

@pytest.mark.parametrize('kind,fmt', [('SGD', 'BINARYPROTO'), ('Nesterov', 'BINARYPROTO'),
                                      ('AdaGrad', 'BINARYPROTO'), ('RMSProp', 'BINARYPROTO'),
                                      ('AdaDelta', 'BINARYPROTO'), ('Adam', 'BINARYPROTO'),
                                      ('SGD', 'HDF5'), ('Adam', 'HDF5')])
def test_restore_continues_exactly(tmp_path, monkeypatch, kind, fmt):
    monkeypatch.chdir(tmp_path)
    momentum = '' if kind in ('AdaGrad', 'RMSProp') else 'momentum: 0.9'
    text = ('type: "%s" base_lr: 0.05 %s weight_decay: 0.002 lr_policy: "multistep" gamma: 0.5 '
            'stepvalue: 2 stepvalue: 4 snapshot: 3 snapshot_prefix: "snaps/run" '
            'snapshot_format: %s' % (kind, momentum, fmt))
    a = make_solver(text, batches=1)
    init = [b.data.copy() for b in a.net._learnable_params]
    a.step(6)
    ext = '.solverstate.h5' if fmt == 'HDF5' else '.solverstate'
    state = os.path.join('snaps', 'run_iter_3' + ext)
    assert os.path.isfile(state)
    b = make_solver(text, batches=1)
    for blob, w in zip(b.net._learnable_params, init):
        blob.data[...] = w + 1.0  # the restore must overwrite these
    b.restore(state)
    assert b.iter == 3
    assert b._current_step == 1
    b.step(3)
    for x, y in zip(a.net._learnable_params, b.net._learnable_params):
        np.testing.assert_array_equal(x.data, y.data)


def test_restore_state_laid_out_by_old_caffe(tmp_path, monkeypatch):
    """History blobs with legacy num/channels/height/width, learned_net written relative to
    another working directory: the weights file is found beside the state."""
    monkeypatch.chdir(tmp_path)
    a = make_solver('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed"', batches=1)
    a.step(2)
    (tmp_path / 'elsewhere').mkdir()
    a.net.save(str(tmp_path / 'elsewhere' / 'old_iter_2.caffemodel'))
    state = caffe_pb2.SolverState(iter=2, learned_net='some/other/cwd/old_iter_2.caffemodel',
                                  current_step=0)
    for h in a._history:
        arr = h.numpy()
        shape = (1,) * (4 - arr.ndim) + arr.shape
        bp = state.history.add()
        bp.num, bp.channels, bp.height, bp.width = shape
        bp.data.extend(arr.reshape(-1).tolist())
    (tmp_path / 'elsewhere' / 'old_iter_2.solverstate').write_bytes(state.SerializeToString())
    b = make_solver('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed"', batches=1)
    b.restore(str(tmp_path / 'elsewhere' / 'old_iter_2.solverstate'))
    assert b.iter == 2
    a.step(2)
    b.step(2)
    for x, y in zip(a.net._learnable_params, b.net._learnable_params):
        np.testing.assert_array_equal(x.data, y.data)


def test_restore_rejects_a_state_of_another_solver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = make_solver('type: "Adam" base_lr: 0.01 snapshot_prefix: "x"', batches=1)
    a.snapshot()
    b = make_solver('type: "SGD" base_lr: 0.01', batches=1)
    with pytest.raises(SolverError, match='Incorrect length of history blobs'):
        b.restore('x_iter_0.solverstate')


def test_snapshot_files_are_caffe_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = make_solver('type: "SGD" base_lr: 0.05 momentum: 0.9 snapshot_prefix: "m" lr_policy: "fixed" '
                    'snapshot_diff: true', batches=1)
    s.step(1)
    s.snapshot()
    model = caffe_pb2.NetParameter.FromString(open('m_iter_1.caffemodel', 'rb').read())
    state = caffe_pb2.SolverState.FromString(open('m_iter_1.solverstate', 'rb').read())
    assert state.iter == 1 and state.learned_net == 'm_iter_1.caffemodel'
    assert len(state.history) == len(s.net._learnable_params)
    conv = [l for l in model.layer if l.name == 'conv'][0]
    assert list(conv.blobs[0].shape.dim) == [4, 3, 3, 3]
    np.testing.assert_array_equal(np.array(conv.blobs[0].diff, np.float32).reshape(4, 3, 3, 3),
                                  s.net.params['conv'][0].diff)


def test_requested_actions_snapshot_and_stop(tmp_path, monkeypatch):
    """What SIGHUP (snapshot) and SIGINT (stop) do in `caffe train`: the solver polls an
    action function once per iteration; a stop still snapshots, as Caffe's Solve does."""
    from caffe.solver import SolverAction
    monkeypatch.chdir(tmp_path)
    s = make_solver('type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" max_iter: 50 '
                    'snapshot_prefix: "act"', batches=1)
    script = {2: SolverAction.SNAPSHOT, 4: SolverAction.STOP}
    s.set_action_function(lambda: script.get(s.iter, SolverAction.NONE))
    s.solve()
    assert s.iter == 4
    assert sorted(os.listdir('.')) == ['act_iter_2.caffemodel', 'act_iter_2.solverstate',
                                       'act_iter_4.caffemodel', 'act_iter_4.solverstate']


def test_snapshot_prefix_defaults_follow_bvlc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'net.prototxt').write_text(SIMPLE_NET)
    (tmp_path / 'out').mkdir()
    (tmp_path / 'plain.prototxt').write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    (tmp_path / 'dir.prototxt').write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" '
                                           'snapshot_prefix: "out"')
    caffe.get_solver('plain.prototxt').snapshot()
    caffe.get_solver('dir.prototxt').snapshot()
    assert os.path.isfile('plain_iter_0.caffemodel')
    assert os.path.isfile(os.path.join('out', 'dir_iter_0.solverstate'))


def test_restore_keeps_the_diff_the_last_step_left(pycaffe_solver):
    """Caffe's restore replaces the history, not the diffs: the update step the last
    iteration left in them (computed lazily from the history here) must survive it."""
    s = pycaffe_solver
    s.step(2)
    s.snapshot()
    s.step(1)
    want = [h.copy() for h in s.history]
    s.restore('model_iter_2.solverstate')
    for b, h in zip(s.net._learnable_params, want):
        np.testing.assert_array_equal(b.diff, h)
    assert s.iter == 2
