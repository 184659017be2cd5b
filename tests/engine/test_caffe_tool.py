"""The `caffe` command line: train (fresh, finetune, resume after SIGKILL), test, time.

The central check: a `python -m caffe train` killed with SIGKILL after a snapshot and
resumed with `--snapshot` ends on exactly the weights of a run that was never interrupted.
"""
import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2
from caffe.tool import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYER = '''
import time
import numpy as np
import caffe


class Fixed(caffe.Layer):
    """The same batch every time (so a resumed run sees what an uninterrupted one sees)."""

    def setup(self, bottom, top):
        rng = np.random.RandomState(7)
        self.x = rng.randn(6, 2, 6, 6).astype(np.float32)
        self.y = rng.randint(0, 4, size=6).astype(np.float32)
        self.delay = float(self.param_str or 0)

    def reshape(self, bottom, top):
        top[0].reshape(*self.x.shape)
        top[1].reshape(6)

    def forward(self, bottom, top):
        top[0].data[...] = self.x
        top[1].data[...] = self.y
        if self.delay:
            time.sleep(self.delay)
'''

NET = '''name: "toolnet"
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "tool_feed" layer: "Fixed" param_str: "%s" } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
'''

SOLVER = ('net: "net.prototxt" base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "step" '
          'gamma: 0.7 stepsize: 7 max_iter: %d snapshot: 5 snapshot_prefix: "%s" display: 1 '
          'random_seed: 11 solver_mode: CPU')

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / 'tool_feed.py').write_text(LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def weights_of(path):
    m = protoio.read_binary(path, caffe_pb2.NetParameter)
    return {(l.name, i): np.array(b.data, np.float32) for l in m.layer for i, b in enumerate(l.blobs)}


def test_sigkill_and_resume_follow_the_uninterrupted_trajectory(workdir, one_torch_thread):
    # one_torch_thread: the same float summation order here as in the OMP_NUM_THREADS=1 child.
    max_iter = 30
    (workdir / 'net.prototxt').write_text(NET % '0.03')
    (workdir / 'full.prototxt').write_text(SOLVER % (max_iter, 'full/s'))
    (workdir / 'killed.prototxt').write_text(SOLVER % (max_iter, 'killed/s'))
    env = dict(os.environ, GLOG_minloglevel='0', OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, 'caffe-fast-rcnn', 'python'), str(workdir)]))
    proc = subprocess.Popen([sys.executable, '-m', 'caffe', 'train', '-solver', 'killed.prototxt'],
                            cwd=str(workdir), env=env, stderr=subprocess.PIPE, text=True)
    log = []
    for line in proc.stderr:
        log.append(line)
        if 'Snapshotting solver state' in line and '_iter_10.solverstate' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, ''.join(log[-20:])
    assert not os.path.exists('killed/s_iter_%d.caffemodel' % max_iter)
    states = sorted(glob.glob('killed/s_iter_*.solverstate'),
                    key=lambda f: int(f.split('_iter_')[1].split('.')[0]))
    assert states and states[-1] >= 'killed/s_iter_10.solverstate'
    last = states[-1]

    (workdir / 'net.prototxt').write_text(NET % '0')
    assert main(['train', '--solver=full.prototxt']) == 0
    assert main(['train', '--solver=killed.prototxt', '--snapshot=' + last]) == 0

    full = weights_of('full/s_iter_%d.caffemodel' % max_iter)
    resumed = weights_of('killed/s_iter_%d.caffemodel' % max_iter)
    assert full.keys() == resumed.keys() and full
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k], err_msg=str(k))
    # The killed process started from the same weights as the uninterrupted one.
    for k, v in weights_of('full/s_iter_5.caffemodel').items():
        np.testing.assert_array_equal(v, weights_of('killed/s_iter_5.caffemodel')[k])


def test_finetune_from_weights_and_test_command(workdir, capfd, monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    (workdir / 'net.prototxt').write_text(NET % '0')
    (workdir / 'solver.prototxt').write_text(SOLVER % (4, 'ft/a'))
    assert main(['train', '--solver=solver.prototxt']) == 0
    assert main(['-solver=solver.prototxt', 'train', '-weights', 'ft/a_iter_4.caffemodel']) == 0
    err = capfd.readouterr().err
    assert 'Finetuning from ft/a_iter_4.caffemodel' in err
    assert main(['test', '--model=net.prototxt', '--weights=ft/a_iter_4.caffemodel',
                 '--iterations=3']) == 0
    err = capfd.readouterr().err
    assert 'Running for 3 iterations.' in err
    assert err.count('Batch 2, ') == 2
    lines = [l.split('] ', 1)[1] for l in err.splitlines() if '] ' in l]
    acc = [l for l in lines if l.startswith('acc = ')]
    loss = [l for l in lines if l.startswith('loss = ')]
    assert len(acc) == 1 and len(loss) == 1
    assert loss[0].endswith(' loss)') and '(* 1 = ' in loss[0]
    net = caffe.Net('net.prototxt', 'ft/a_iter_4.caffemodel', caffe.TEST)
    net.forward()
    assert float(loss[0].split()[2]) == pytest.approx(float(net.blobs['loss'].data), rel=1e-4)


def test_time_command_prints_per_layer_times(workdir, capfd, monkeypatch):
    monkeypatch.setenv('GLOG_minloglevel', '0')
    (workdir / 'net.prototxt').write_text(NET % '0')
    assert main(['time', '--model=net.prototxt', '--iterations=2']) == 0
    lines = [l.split('] ', 1)[1] for l in capfd.readouterr().err.splitlines() if '] ' in l]
    assert 'Performing Forward' in lines and '*** Benchmark begins ***' in lines
    assert lines[-1] == '*** Benchmark ends ***'
    assert any(l.startswith('Iteration: 2 forward-backward time: ') and l.endswith(' ms.')
               for l in lines)
    for name in ('data', 'conv', 'relu', 'ip', 'loss'):
        assert any(l.startswith('%10s\tforward: ' % name) for l in lines), name
        assert any(l.startswith('%10s\tbackward: ' % name) for l in lines), name
    for what in ('Average Forward pass: ', 'Average Backward pass: ', 'Average Forward-Backward: ',
                 'Total Time: '):
        assert any(l.startswith(what) and l.endswith(' ms.') for l in lines), what


def test_usage_and_errors(workdir, capfd):
    assert main([]) == 1
    assert 'usage: caffe <command> <args>' in capfd.readouterr().err
    assert main(['frobnicate']) == 1
    err = capfd.readouterr().err
    assert 'Unknown action: frobnicate' in err and '\ttrain' in err
    assert main(['train']) == 1
    assert 'Need a solver definition to train.' in capfd.readouterr().err
    (workdir / 'net.prototxt').write_text(NET % '0')
    (workdir / 'solver.prototxt').write_text(SOLVER % (2, 'e/a'))
    assert main(['train', '--solver=solver.prototxt', '--weights=a', '--snapshot=b']) == 1
    assert 'but not both' in capfd.readouterr().err
    assert main(['train', '--solver=missing.prototxt']) == 1
    assert 'missing.prototxt' in capfd.readouterr().err


def test_console_script_runs_the_engine(workdir):
    script = os.path.join(ROOT, 'caffe-fast-rcnn', 'tools', 'caffe')
    assert os.access(script, os.X_OK)
    out = subprocess.run([script, 'device_query'], capture_output=True, text=True,
                         env=dict(os.environ, GLOG_minloglevel='0', OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr
    assert 'Querying GPUs' in out.stderr


def test_flags_are_caffes_gflags(workdir, capfd, monkeypatch):
    """The command parses its flags as Caffe's other tools do (caffe/cli.py): an unknown flag
    or a wrong argument count ends with gflags' message and status 1; -level reaches the
    solver's train_state only when given (the solver file's stays otherwise)."""
    assert main(['train', '--bogus=1']) == 1
    assert "ERROR: unknown command line flag 'bogus'" in capfd.readouterr().err
    assert main(['train', 'test']) == 1
    err = capfd.readouterr().err
    assert 'usage: caffe <command> <args>' in err and '-sighup_effect' in err
    assert main(['test', '-iterations=x']) == 1
    assert "illegal value 'x' specified for int32 flag 'iterations'" in capfd.readouterr().err

    from caffe import solvers
    from caffe.cli import Fatal
    levels = []

    def create_solver(param, path):
        levels.append(param.train_state.level)
        raise Fatal('stop here')
    monkeypatch.setattr(solvers, 'create_solver', create_solver)
    (workdir / 'net.prototxt').write_text(NET % '0')
    (workdir / 'solver.prototxt').write_text(SOLVER % (2, 'l/a') + ' train_state { level: 3 }')
    assert main(['train', '-solver', 'solver.prototxt']) == 1
    assert main(['train', '-solver', 'solver.prototxt', '-level', '-2']) == 1
    assert levels == [3, -2]
    assert 'stop here' in capfd.readouterr().err
