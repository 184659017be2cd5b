"""Where Caffe loses work, we must not: atomic snapshots and stopping on a NaN loss.

* A snapshot is written to a temporary file and renamed, so a crash (or SIGKILL) while
  writing leaves the previous file whole and never a truncated one under the real name.
* A NaN or infinite loss stops training before the update that would spread it, names the
  iteration and the loss blob, and leaves the last good snapshot as it was.
"""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2
from caffe.solver import TrainingDivergedError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYER = '''
import json
import numpy as np
import caffe


class Feed(caffe.Layer):
    """One fixed random batch; NaN data from forward number `nan_at` on."""

    def setup(self, bottom, top):
        p = json.loads(self.param_str or '{}')
        rng = np.random.RandomState(0)
        self.shape = (4, p.get('dim', 8))
        self.x = rng.randn(*self.shape).astype(np.float32)
        self.y = rng.randint(0, 3, size=4).astype(np.float32)
        self.nan_at = p.get('nan_at', -1)
        self.count = 0

    def reshape(self, bottom, top):
        top[0].reshape(*self.shape)
        top[1].reshape(4)

    def forward(self, bottom, top):
        top[0].data[...] = np.nan if 0 <= self.nan_at <= self.count else self.x
        top[1].data[...] = self.y
        self.count += 1
'''

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def net(dim=8, hidden=5, nan_at=-1):
    return '''name: "safe"
    layer { name: "data" type: "Python" top: "data" top: "label"
            python_param { module: "safety_feed" layer: "Feed" param_str: '{"dim": %d, "nan_at": %d}' } }
    layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
            inner_product_param { num_output: %d weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
    ''' % (dim, nan_at, hidden)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / 'safety_feed.py').write_text(LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def solver(text, **kw):
    return caffe.get_solver_from_string('net_param { %s } %s' % (net(**kw), text))


def test_interrupted_write_keeps_the_previous_snapshot(workdir, monkeypatch):
    s = solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 snapshot_prefix: "snap/a"')
    s.snapshot()
    before = {f: open(f, 'rb').read() for f in glob.glob('snap/*')}
    assert sorted(before) == ['snap/a_iter_0.caffemodel', 'snap/a_iter_0.solverstate']
    s.step(1)
    s._iter = 0  # write over the same names with other weights

    def killed(src, dst):  # the process dies between writing the data and the rename
        raise KeyboardInterrupt('killed')
    with monkeypatch.context() as m:
        m.setattr(os, 'replace', killed)
        with pytest.raises(KeyboardInterrupt):
            s.snapshot()
    after = {f: open(f, 'rb').read() for f in glob.glob('snap/*')}
    assert after == before                       # whole old files, no temporary left behind
    assert not glob.glob('snap/.*')


def test_sigkill_during_snapshots_never_leaves_a_truncated_file(workdir):
    """Kill a trainer that snapshots 4 MB of weights every iteration at random moments;
    every snapshot file under its real name must parse completely."""
    (workdir / 'net.prototxt').write_text(net(dim=1000, hidden=1000))
    (workdir / 'solver.prototxt').write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 1000 '
        'snapshot: 1 snapshot_prefix: "snap/big" solver_mode: CPU random_seed: 1')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, 'caffe-fast-rcnn', 'python'), str(workdir)]),
        GLOG_minloglevel='0', OMP_NUM_THREADS='1')
    rng = np.random.RandomState(0)
    for attempt in range(2):
        proc = subprocess.Popen([sys.executable, '-m', 'caffe', 'train', '--solver=solver.prototxt'],
                                cwd=str(workdir), env=env, stderr=subprocess.PIPE, text=True)
        seen = 0
        for line in proc.stderr:
            if 'Snapshotting' in line:
                seen += 1
                if seen >= 3 + attempt:
                    time.sleep(rng.uniform(0, 0.05))
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        models = glob.glob('snap/big_iter_*.caffemodel')
        states = glob.glob('snap/big_iter_*.solverstate')
        assert models
        for f in models:
            m = protoio.read_binary(f, caffe_pb2.NetParameter)
            assert len(m.layer[1].blobs[0].data) == 1000 * 1000
        for f in states:
            st = protoio.read_binary(f, caffe_pb2.SolverState)
            assert len(st.history) == 4 and len(st.history[0].data) == 1000 * 1000
        for f in glob.glob('snap/.*'):
            os.remove(f)  # a kill mid-write may leave a hidden temporary file, never a real name


def test_nan_loss_stops_training_and_keeps_the_last_good_snapshot(workdir):
    s = solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 max_iter: 20 snapshot: 5 '
               'snapshot_prefix: "snap/n"', nan_at=7)
    with pytest.raises(TrainingDivergedError) as err:
        s.solve()
    e = err.value
    assert e.iteration == 7 and e.blob == 'loss'
    assert 'Iteration 7' in str(e) and "'loss'" in str(e) and 'snap/n_iter_5.caffemodel' in str(e)
    assert s.iter == 7
    for ps in s.net.params.values():
        for p in ps:
            assert np.all(np.isfinite(p.data))   # the NaN gradients were never applied
    assert sorted(glob.glob('snap/*')) == ['snap/n_iter_5.caffemodel', 'snap/n_iter_5.solverstate']
    m = protoio.read_binary('snap/n_iter_5.caffemodel', caffe_pb2.NetParameter)
    for layer in m.layer:
        for b in layer.blobs:
            assert np.all(np.isfinite(np.array(b.data)))


def test_a_nonfinite_loss_of_other_ranks_names_them(workdir):
    """In data-parallel training the ranks agree on whose loss went non-finite: the error
    names them, and the loss blob only when this rank's own blob is the bad one."""
    s = solver('base_lr: 0.1 lr_policy: "fixed"')
    s.net.forward()
    with pytest.raises(TrainingDivergedError) as err:
        s._diverged(float('nan'), [1, 3])
    assert 'Iteration 0: the loss of ranks 1, 3 is nan' in str(err.value)
    assert err.value.blob is None
    s.net.blobs['loss'].data[...] = np.inf
    with pytest.raises(TrainingDivergedError) as err:
        s._diverged(float('inf'), [0])
    assert "Iteration 0: loss blob 'loss' of rank 0 is inf" in str(err.value)
    assert err.value.blob == 'loss'


def test_nonfinite_weights_are_never_snapshotted(workdir):
    s = solver('base_lr: 0.1 lr_policy: "fixed" snapshot_prefix: "w"')
    s.snapshot()
    before = open('w_iter_0.caffemodel', 'rb').read()
    s.net.params['ip2'][0].data[0, 0] = np.inf
    with pytest.raises(TrainingDivergedError, match="'ip2' #0 is not finite"):
        s.snapshot()
    assert open('w_iter_0.caffemodel', 'rb').read() == before


def test_nan_loss_from_the_command_line(workdir):
    from caffe.tool import main
    (workdir / 'net.prototxt').write_text(net(nan_at=3))
    (workdir / 'solver.prototxt').write_text(
        'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 10 snapshot: 2 '
        'snapshot_prefix: "c" solver_mode: CPU')
    assert main(['train', '--solver=solver.prototxt']) == 1
    assert sorted(glob.glob('c_iter_*')) == ['c_iter_2.caffemodel', 'c_iter_2.solverstate']
