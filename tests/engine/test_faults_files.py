"""Files the engine writes: whole or absent, readable like Caffe's (mode from the umask), and
no temporaries left behind by a killed writer once training runs again.

The fault test kills `caffe train` with SIGKILL twice while it snapshots, at the worst
moments (a temporary written in full but not renamed; a temporary half written), resumes
each time from the last whole snapshot, and checks after the finished run that no
temporary is left and that every snapshot is complete and readable by other users.
(Kills at random moments are test_solver_safety's; the worst ones are chosen here so the
test is deterministic and needs two start-ups only.)
"""
import glob
import os
import signal
import subprocess
import sys

import pytest

import caffe
from caffe import atomic_files, protoio
from caffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FEED = '''
import os
import signal
import numpy as np
import caffe
from caffe import atomic_files

# KILL_ON="replace:.solverstate:2": SIGKILL this process instead of the 2nd rename of a
# temporary whose target contains ".solverstate" (the temporary is complete, not renamed).
# KILL_ON="write:.caffemodel:1": SIGKILL after the first chunk of the 1st .caffemodel
# written (a half-written temporary).
_spec = os.environ.get('KILL_ON', '')
if _spec:
    _how, _what, _nth = _spec.split(':')
    _seen = [0]

    def _due(name):
        if _what in os.path.basename(name):
            _seen[0] += 1
            return _seen[0] == int(_nth)
        return False

    if _how == 'replace':
        _replace = os.replace

        def _killing_replace(src, dst):
            if _due(dst):
                os.kill(os.getpid(), signal.SIGKILL)
            return _replace(src, dst)
        os.replace = _killing_replace
    else:
        _chunks = atomic_files.write_chunks

        def _killing_chunks(path, chunks):
            if not _due(path):
                return _chunks(path, chunks)
            with atomic_files.atomic_open(path) as f:
                for chunk in chunks:
                    f.write(chunk)
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        atomic_files.write_chunks = _killing_chunks


class Feed(caffe.Layer):
    def setup(self, bottom, top):
        rng = np.random.RandomState(0)
        self.x = rng.randn(4, 64).astype(np.float32)
        self.y = rng.randint(0, 3, size=4).astype(np.float32)

    def reshape(self, bottom, top):
        top[0].reshape(4, 64)
        top[1].reshape(4)

    def forward(self, bottom, top):
        top[0].data[...] = self.x
        top[1].data[...] = self.y
'''

NET = '''name: "faults"
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "fault_feed" layer: "Feed" } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 256 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / 'fault_feed.py').write_text(FEED)
    (tmp_path / 'net.prototxt').write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dead_pid() -> int:
    """The PID of a process that has exited (a killed writer)."""
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def stale_name(target: str, pid: int) -> str:
    return '.%s.%d-%s.abcd1234.tmp' % (target, pid, atomic_files._host_tag())


# ---- atomic_files ------------------------------------------------------------------------------

@pytest.mark.parametrize('mask,mode', [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_take_the_umask_mode_not_mkstemp_s(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_files.write_bytes(str(tmp_path / 'a.bin'), b'x')
        with atomic_files.atomic_open(str(tmp_path / 'b.txt'), 'w') as f:
            f.write('y')
        with atomic_files.atomic_path(str(tmp_path / 'c.h5')) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'z')
        atomic_files.copy_file(str(tmp_path / 'a.bin'), str(tmp_path / 'd.bin'))
    finally:
        os.umask(old)
    for name in ('a.bin', 'b.txt', 'c.h5', 'd.bin'):
        assert os.stat(str(tmp_path / name)).st_mode & 0o777 == mode, name
    assert sorted(os.listdir(str(tmp_path))) == ['a.bin', 'b.txt', 'c.h5', 'd.bin']


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    (tmp_path / 'keep.bin').write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_open(str(tmp_path / 'keep.bin')) as f:
            f.write(b'new, half')
            raise RuntimeError('disk gone')
    assert os.listdir(str(tmp_path)) == ['keep.bin'] and (tmp_path / 'keep.bin').read_bytes() == b'old'


def test_writing_a_file_again_removes_what_a_killed_write_of_it_left(tmp_path):
    stale = stale_name('cache.npz', dead_pid())
    (tmp_path / stale).write_bytes(b'half')
    atomic_files.write_bytes(str(tmp_path / 'cache.npz'), b'whole')
    assert os.listdir(str(tmp_path)) == ['cache.npz']


def test_only_our_own_stale_temporaries_are_removed(tmp_path):
    gone = dead_pid()
    stale = stale_name('run_iter_5.caffemodel', gone)
    live_other = stale_name('run_iter_6.caffemodel', os.getppid())        # a running writer
    other_host = '.run_iter_7.caffemodel.%d-%s.abcd1234.tmp' % (gone, '00000000' if
                                                               atomic_files._host_tag() != '00000000'
                                                               else '11111111')
    other_prefix = stale_name('other_iter_5.caffemodel', gone)
    not_ours = ['.run_iter_5.caffemodel.XYZ.tmp', 'run_iter_5.caffemodel.tmp', 'notes.tmp']
    for n in [stale, live_other, other_host, other_prefix] + not_ours:
        (tmp_path / n).write_bytes(b'x')
    with atomic_files.atomic_path(str(tmp_path / 'run_iter_8.caffemodel')) as mine:
        # a temporary this process is writing is never stale, whatever its PID says
        removed = atomic_files.remove_stale_temps(str(tmp_path), 'run_iter_')
        assert os.path.exists(mine)
    assert removed == [str(tmp_path / stale)]
    left = set(os.listdir(str(tmp_path)))
    assert left == {live_other, other_host, other_prefix, 'run_iter_8.caffemodel'} | set(not_ours)
    # a temporary of this PID that this process is not writing is debris (a reused PID)
    mine_old = stale_name('run_iter_9.caffemodel', os.getpid())
    (tmp_path / mine_old).write_bytes(b'x')
    assert atomic_files.remove_stale_temps(str(tmp_path), 'run_iter_') == [str(tmp_path / mine_old)]


# ---- solver snapshots ----------------------------------------------------------------------

def _solver(text):
    return caffe.get_solver_from_string('net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" '
                                        'momentum: 0.9 ' + text)


@pytest.mark.parametrize('fmt', ['BINARYPROTO', 'HDF5'])
def test_snapshots_are_readable_by_others_and_clean_up_killed_writes(workdir, umask022, fmt):
    os.makedirs('snap')
    gone = dead_pid()
    ext = '.caffemodel.h5' if fmt == 'HDF5' else '.caffemodel'
    early = stale_name('s_iter_3' + ext, gone)
    (workdir / 'snap' / early).write_bytes(b'half a model')
    s = _solver('snapshot: 2 snapshot_prefix: "snap/s" snapshot_format: %s' % fmt)
    assert not (workdir / 'snap' / early).exists()      # removed when the solver starts
    late = stale_name('s_iter_4.solverstate', gone)
    (workdir / 'snap' / late).write_bytes(b'half a state')
    s.step(2)                                            # snapshots at iteration 2
    assert not (workdir / 'snap' / late).exists()        # and before each snapshot
    files = sorted(os.listdir('snap'))
    state_ext = '.solverstate.h5' if fmt == 'HDF5' else '.solverstate'
    assert files == sorted(['s_iter_2' + ext, 's_iter_2' + state_ext])
    for f in files:
        assert os.stat(os.path.join('snap', f)).st_mode & 0o777 == 0o644, f
    s.net.save('model.caffemodel')
    assert os.stat('model.caffemodel').st_mode & 0o777 == 0o644


def test_a_killed_hdf5_model_write_leaves_no_temporary(workdir, monkeypatch):
    s = _solver('snapshot_prefix: "h" snapshot_format: HDF5')
    import h5py

    class Boom(Exception):
        pass

    def broken(*a, **k):
        raise Boom()
    monkeypatch.setattr(h5py.Group, 'create_dataset', broken)
    with pytest.raises(Boom):
        s.snapshot()
    assert [f for f in os.listdir('.') if f.startswith('.h')] == []


# ---- the fault test ----------------------------------------------------------------------------

SOLVER = ('net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 8 '
          'snapshot: 1 snapshot_prefix: "snap/s" solver_mode: CPU random_seed: 3 display: 1')


def _iter_of(path):
    return int(path.rsplit('_iter_', 1)[1].split('.')[0])


def _last_whole_state():
    """The newest solver state whose weights file exists too (what a user resumes from)."""
    states = [p for p in glob.glob('snap/s_iter_*.solverstate')
              if os.path.exists(p.replace('.solverstate', '.caffemodel'))]
    return max(states, key=_iter_of) if states else None


def _train(workdir, env, resume=None, kill_on=''):
    cmd = [sys.executable, '-m', 'caffe', 'train', '--solver=solver.prototxt']
    if resume:
        cmd.append('--snapshot=' + resume)
    proc = subprocess.run(cmd, cwd=str(workdir), env=dict(env, KILL_ON=kill_on),
                          stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(0o022))
    return proc.returncode, proc.stderr


def test_repeated_sigkills_while_snapshotting_leave_nothing_behind(workdir, umask022, capfd,
                                                                   monkeypatch):
    from caffe.tool import main
    (workdir / 'solver.prototxt').write_text(SOLVER)
    env = dict(os.environ, GLOG_minloglevel='0', OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, 'caffe-fast-rcnn', 'python'), str(workdir)]))
    temps = lambda: sorted(glob.glob('snap/.*'))  # noqa: E731

    # 1. killed with the iteration-2 state written in full but not yet renamed
    rc, log = _train(workdir, env, kill_on='replace:.solverstate:2')
    assert rc == -signal.SIGKILL, log[-2000:]
    first = temps()
    assert len(first) == 1 and '.s_iter_2.solverstate.' in first[0]
    assert _last_whole_state() == 'snap/s_iter_1.solverstate'

    # 2. resumed, killed half way through writing the next model
    rc, log = _train(workdir, env, resume=_last_whole_state(), kill_on='write:.caffemodel:1')
    assert rc == -signal.SIGKILL, log[-2000:]
    assert 'Removed the temporary file of an interrupted snapshot: ' in log
    second = temps()
    assert first[0] not in second and len(second) == 1 and '.s_iter_2.caffemodel.' in second[0]
    assert os.path.getsize(second[0]) > 0

    # 3. resumed and finished (in this process: it saves a start-up)
    monkeypatch.setenv('GLOG_minloglevel', '0')
    assert main(['train', '--solver=solver.prototxt', '--snapshot=' + _last_whole_state()]) == 0
    assert 'Optimization Done.' in capfd.readouterr().err

    assert temps() == []
    models = glob.glob('snap/s_iter_*.caffemodel')
    states = glob.glob('snap/s_iter_*.solverstate')
    assert sorted(map(_iter_of, models)) == sorted(map(_iter_of, states)) == list(range(1, 9))
    for path in models + states:
        assert os.stat(path).st_mode & 0o777 == 0o644, path     # readable by other users
    for path in models:
        m = protoio.read_binary(path, caffe_pb2.NetParameter)
        assert len(m.layer[1].blobs[0].data) == 256 * 64, path
    for path in states:
        st = protoio.read_binary(path, caffe_pb2.SolverState)
        assert st.iter == _iter_of(path) and len(st.history) == 4, path
