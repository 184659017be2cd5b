"""Data-parallel training on torch.distributed (gloo ranks on the CPU).

The central check: 2 ranks with batch b each, 5 SGD-with-momentum steps, end on the weights
(and momentum) of 1 process with iter_size 2 over the same 2b records per step. Also: the
LMDB split between ranks, the BVLC python/train.py API, stop requests reaching every rank,
and faults (a rank killed, a rank hung) ending the job with an error naming the rank, after
which training resumes from the last snapshot with one rank.
"""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import parallel, protoio
from caffe.layers.db_data import ShardedRecords
from caffe.proto import caffe_pb2
from caffe.tool import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDIR = os.path.join(ROOT, 'caffe-fast-rcnn', 'python')

N_RECORDS = 24
BATCH = 3

NET = '''name: "dpnet"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "%(db)s" backend: LMDB batch_size: %(batch)d }
        transform_param { scale: 0.0078125 mean_value: 128 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''

SOLVER = '''net: "%(net)s"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.002
lr_policy: "step"
gamma: 0.5
stepsize: 3
max_iter: %(iters)d
iter_size: %(iter_size)d
display: 1
snapshot: %(snapshot)d
snapshot_prefix: "%(prefix)s"
random_seed: 5
'''


def write_db(path, n=N_RECORDS, seed=3):
    rng = np.random.RandomState(seed)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(n):
            img = rng.randint(0, 256, (2, 7, 7)).astype(np.uint8)
            datum = caffe.io.array_to_datum(img, int(rng.randint(0, 4)))
            txn.put(b'%08d' % i, datum.SerializeToString())
    env.close()
    return str(path)


def rank_env(**extra):
    env = dict(os.environ, GLOG_minloglevel='0', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([PYDIR, os.environ.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


def weights_of(path):
    m = protoio.read_binary(path, caffe_pb2.NetParameter)
    return {(layer.name, i): np.array(b.data, np.float64)
            for layer in m.layer for i, b in enumerate(layer.blobs)}


def history_of(path):
    s = protoio.read_binary(path, caffe_pb2.SolverState)
    return s.iter, [np.array(h.data, np.float64) for h in s.history]


def make_workdir(path):
    write_db(path / 'db')
    (path / 'net.prototxt').write_text(NET % {'db': path / 'db', 'batch': BATCH})
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_workdir(tmp_path)


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    """One reference run (1 process, iter_size 2) and one 2-rank run, shared by the tests
    that compare against them (each spawned job costs a few interpreter starts)."""
    import torch
    d = make_workdir(tmp_path_factory.mktemp('dp_shared'))
    ref = solver_file(d, 'ref', iter_size=2)
    old = torch.get_num_threads()
    torch.set_num_threads(1)   # the ranks' float summation order (OMP_NUM_THREADS=1)
    try:
        assert main(['train', '--solver=' + ref]) == 0
    finally:
        torch.set_num_threads(old)
    # The 2-rank run also tests every 2 iterations (rank 0 alone; forward only, so the
    # weights are unaffected) while rank 1 waits for it at the next all-reduce.
    status, log = run_caffe(['train', '--solver=' + solver_file(d, 'dp', extra='test_iter: 2\n'
                                                                'test_interval: 2\n'),
                             '--gpu', '0,1'])
    assert status == 0, log[-3000:]
    return d, log


@pytest.fixture
def one_thread():
    """The same float summation order in this process as in the OMP_NUM_THREADS=1 ranks."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def solver_file(workdir, name, iters=5, iter_size=1, snapshot=5, extra=''):
    path = workdir / ('%s.prototxt' % name)
    path.write_text(SOLVER % {'iters': iters, 'iter_size': iter_size, 'snapshot': snapshot,
                              'prefix': workdir / name / 's', 'net': workdir / 'net.prototxt'}
                    + extra)
    return str(path)


def run_caffe(args, timeout=120, **env):
    """`python -m caffe ARGS` in a subprocess; returns (status, log)."""
    proc = subprocess.run([sys.executable, '-m', 'caffe'] + args, env=rank_env(**env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout


def assert_same_training(a_prefix, b_prefix, it):
    wa, wb = weights_of('%s_iter_%d.caffemodel' % (a_prefix, it)), \
        weights_of('%s_iter_%d.caffemodel' % (b_prefix, it))
    assert wa.keys() == wb.keys() and len(wa) == 4
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=2e-5, atol=1e-6, err_msg=str(k))
    ia, ha = history_of('%s_iter_%d.solverstate' % (a_prefix, it))
    ib, hb = history_of('%s_iter_%d.solverstate' % (b_prefix, it))
    assert ia == ib == it
    for x, y in zip(ha, hb):
        np.testing.assert_allclose(y, x, rtol=2e-5, atol=1e-6)


# ---- the central equivalence -----------------------------------------------------------------

def test_two_ranks_equal_one_process_with_iter_size_2(shared):
    """2 gloo ranks x batch 3 (records i % 2 == rank) == 1 process, batch 3, iter_size 2."""
    d, log = shared
    assert_same_training(d / 'ref' / 's', d / 'dp' / 's', 5)
    # Only rank 0 logs INFO lines; the logged loss is the mean over the ranks, as one
    # process with iter_size 2 logs the mean of its passes.
    assert len(re.findall(r'\] Iteration 4, loss = ', log)) == 1
    assert 'CPU ranks' in log and '[rank 1]' not in log.split('Starting Optimization')[1]
    assert 'Optimization Done.' in log
    # Rank 0 tested at iterations 0, 2, 4 and after the last one.
    assert re.findall(r'Iteration (\d+), Testing net \(#0\)', log) == ['0', '2', '4']


def test_torchrun_ranks_join_its_group(shared):
    """Under torchrun, `caffe train` joins torchrun's processes instead of starting its own."""
    d, _ = shared
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    if not os.path.exists(torchrun):
        torchrun = None
    cmd = ([torchrun] if torchrun else [sys.executable, '-m', 'torch.distributed.run'])
    port = str(parallel.group.free_port())
    proc = subprocess.run(cmd + ['--nnodes', '1', '--nproc_per_node', '2', '--master_port', port,
                                 '-m', 'caffe', 'train', '--solver=' + solver_file(d, 'tr')],
                          env=rank_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'broadcast from rank 0 to 2 ranks' in proc.stdout
    assert_same_training(d / 'ref' / 's', d / 'tr' / 's', 5)


def test_layer_wise_and_whole_reduce_agree(shared):
    """layer_wise_reduce false (one reduction after backward), with tiny buckets: the same
    weights as the layer-wise default."""
    d, _ = shared
    whole = solver_file(d, 'whole')
    with open(whole, 'a') as f:
        f.write('layer_wise_reduce: false\n')
    status, log = run_caffe(['train', '--solver=' + whole, '--gpu', '0,1'],
                            CAFFE_DIST_BUCKET_MB='0.0001')
    assert status == 0, log[-3000:]
    assert 'gradients averaged after backward' in log
    assert_same_training(d / 'dp' / 's', d / 'whole' / 's', 5)


def test_bvlc_python_train_script(shared):
    """python/train.py (BVLC's multi-GPU example: NCCL, bcast, add_callback, after_backward)
    trains the same weights."""
    d, _ = shared
    bv = solver_file(d, 'bv')
    proc = subprocess.run([sys.executable, os.path.join(PYDIR, 'train.py'), '--solver', bv,
                           '--gpus', '0', '1', '--timing'], env=rank_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'allreduce:' in proc.stdout
    assert_same_training(d / 'ref' / 's', d / 'bv' / 's', 5)


# ---- the LMDB split ----------------------------------------------------------------------------

@pytest.mark.parametrize('n,world', [(24, 2), (10, 3), (7, 2)])
def test_lmdb_sharding_reads_each_record_once_per_epoch(tmp_path, n, world):
    """Over the records of each pass through the database, the ranks' shares are disjoint
    and cover it (BVLC: record index % solver_count == solver_rank)."""
    db = write_db(tmp_path / 'db', n=n)
    labels = []
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        for _, v in txn.cursor():
            labels.append(caffe_pb2.Datum.FromString(v).label)
    env.close()
    epochs = 3
    seen = []
    for rank in range(world):
        caffe.set_solver_count(world)
        caffe.set_solver_rank(rank)
        try:
            param = caffe_pb2.NetParameter()
            text_format.Parse('layer { name: "d" type: "Data" top: "data" top: "label" '
                              'data_param { source: "%s" backend: LMDB batch_size: 1 prefetch: 0 } }'
                              % db, param)
            net = caffe.Net(param, caffe.TRAIN)
            records = net.layers[0]._load.records
            mine = []
            while records.offset < epochs * n:
                offset = records.offset
                net.forward()
                assert net.blobs['label'].data[0] == labels[offset % n]
                mine.append(offset)
            seen.append(mine)
        finally:
            caffe.set_solver_count(1)
            caffe.set_solver_rank(0)
    for e in range(epochs):
        per_rank = [[o % n for o in s if e * n <= o < (e + 1) * n] for s in seen]
        flat = sorted(i for share in per_rank for i in share)
        assert flat == list(range(n)), (e, per_rank)       # none twice, none skipped
        for r, share in enumerate(per_rank):
            assert all((e * n + i) % world == r for i in share)


def test_sharded_cursor_rule():
    class Cursor:
        def __init__(self, n):
            self.n, self.i = n, 0

        def value(self):
            return self.i

        def next(self):
            self.i = (self.i + 1) % self.n
            return self.i == 0

    c = ShardedRecords(Cursor(5), rank=1, count=2)
    got = []
    for _ in range(5):
        got.append(c.value())
        c.next()
    assert got == [1, 3, 0, 2, 4]
    with pytest.raises(ValueError):
        ShardedRecords(Cursor(5), rank=2, count=2)


# ---- faults ------------------------------------------------------------------------------------

SLOW_NET = NET.replace('layer { name: "conv"', '''layer { name: "slow" type: "Python" bottom: "data" top: "data2"
        python_param { module: "dp_slow" layer: "Slow" } }
layer { name: "conv"''').replace('bottom: "data" top: "conv"', 'bottom: "data2" top: "conv"')

SLOW_LAYER = '''
import os, time
import caffe


class Slow(caffe.Layer):
    """Passes data through slowly; writes this rank's pid to pid_<rank>."""

    def setup(self, bottom, top):
        with open('pid_%d' % caffe.solver_rank(), 'w') as f:
            f.write(str(os.getpid()))

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        time.sleep(0.05)
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def _start_slow_job(workdir, iters, timeout_s=None):
    (workdir / 'dp_slow.py').write_text(SLOW_LAYER)
    (workdir / 'net.prototxt').write_text(SLOW_NET % {'db': workdir / 'db', 'batch': BATCH})
    solver = solver_file(workdir, 'job', iters=iters, snapshot=2)
    extra = {'PYTHONPATH': os.pathsep.join([PYDIR, str(workdir), os.environ.get('PYTHONPATH', '')])}
    if timeout_s:
        extra['CAFFE_DIST_TIMEOUT'] = str(timeout_s)
        extra['CAFFE_DIST_GRACE'] = '2'    # the hung rank cannot stop by itself
    return subprocess.Popen([sys.executable, '-m', 'caffe', 'train', '--solver=' + solver,
                             '--gpu', '0,1'], cwd=str(workdir), env=rank_env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path_glob, proc, limit=90):
    end = time.time() + limit
    while time.time() < end:
        if glob.glob(path_glob):
            return
        if proc.poll() is not None:
            raise AssertionError('job ended early:\n' + proc.stdout.read()[-3000:])
        time.sleep(0.1)
    proc.kill()
    raise AssertionError('%s never appeared' % path_glob)


def _last_state(prefix):
    states = glob.glob(prefix + '_iter_*.solverstate')
    assert states
    return max(states, key=lambda f: int(f.split('_iter_')[1].split('.')[0]))


def test_killed_rank_stops_the_job_and_training_resumes_on_one_rank(workdir, one_thread):
    proc = _start_slow_job(workdir, iters=400)
    try:
        _wait_for('job/s_iter_4.solverstate', proc)
        victim = int((workdir / 'pid_1').read_text())
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        elapsed = time.time() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < 60
    assert proc.returncode != 0
    assert re.search(r'rank 1 \(pid %d\) was killed by SIGKILL' % victim, out), out[-3000:]
    assert re.search(r'rank 0: gradient all-reduce of iteration \d+: rank 1 \(pid %d\) is gone'
                     % victim, out), out[-3000:]
    last = _last_state('job/s')
    it = int(last.split('_iter_')[1].split('.')[0])
    assert it >= 4
    # Resume on one rank (and another machine's worth of ranks would do as well).
    (workdir / 'net.prototxt').write_text(NET % {'db': workdir / 'db', 'batch': BATCH})
    solver_file(workdir, 'job', iters=it + 2, snapshot=2)
    assert main(['train', '--solver=job.prototxt', '--snapshot=' + last]) == 0
    done, _ = history_of('job/s_iter_%d.solverstate' % (it + 2))
    assert done == it + 2
    for v in weights_of('job/s_iter_%d.caffemodel' % (it + 2)).values():
        assert np.all(np.isfinite(v))


def test_hung_rank_is_named_after_the_timeout(workdir):
    proc = _start_slow_job(workdir, iters=400, timeout_s=5)
    try:
        _wait_for('job/s_iter_2.solverstate', proc)
        victim = int((workdir / 'pid_1').read_text())
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.time()
        out, _ = proc.communicate(timeout=60)
        elapsed = time.time() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
    assert elapsed < 30
    assert proc.returncode != 0
    assert re.search(r'rank 1 has made no progress for \d+ s', out), out[-3000:]
    assert re.search(r'rank 1 \(pid %d\) did not stop within 2 s; killing it' % victim, out)


def test_sigint_stops_every_rank_after_a_snapshot(workdir):
    proc = _start_slow_job(workdir, iters=400)
    try:
        _wait_for('job/s_iter_2.solverstate', proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert 'Optimization stopped early.' in out
    # Both ranks stopped at one iteration, and rank 0 snapshotted it (snapshot_after_train).
    stopped = int(re.findall(r'Snapshotting to binary proto file \S*job/s_iter_(\d+)', out)[-1])
    assert 2 < stopped < 400
    assert os.path.exists('job/s_iter_%d.solverstate' % stopped)


# ---- pieces ------------------------------------------------------------------------------------

def test_reduce_plan_follows_backward_and_shared_params():
    param = caffe_pb2.NetParameter()
    text_format.Parse('''
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "in2" type: "Input" top: "x2" input_param { shape { dim: 2 dim: 2 } } }
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
                param { name: "w" } param { name: "b" lr_mult: 0 }
                inner_product_param { num_output: 3 } }
        layer { name: "b" type: "InnerProduct" bottom: "a" top: "b"
                param { name: "w" } param { name: "b" lr_mult: 0 }
                inner_product_param { num_output: 3 } }
        layer { name: "c" type: "InnerProduct" bottom: "b" top: "c"
                inner_product_param { num_output: 2 } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "x2" top: "loss" }
        ''', param)
    net = caffe.Net(param, caffe.TRAIN)
    ready, order = parallel.reduce_plan(net)
    # learnable: 0 = shared w, 1 = shared b (lr 0: never computed), 2, 3 = c's w and b
    names = net._layer_names
    assert ready == {names.index('c'): [2, 3], names.index('a'): [0]}
    assert order == [2, 3, 0]


def test_gpu_list_parsing():
    assert parallel.parse_gpu_list('0,1') == [0, 1]
    assert parallel.parse_gpu_list('-1') == [-1]
    assert parallel.parse_gpu_list('') == []
    with pytest.raises(caffe.CaffeError, match='twice'):
        parallel.parse_gpu_list('0,0')
    with pytest.raises(caffe.CaffeError, match='commas'):
        parallel.parse_gpu_list('0;1')


def test_nccl_needs_a_group_or_a_uid(workdir):
    solver = caffe.get_solver(solver_file(workdir, 'x'))
    with pytest.raises(caffe.CaffeError, match='uid'):
        caffe.NCCL(solver, '')
    with pytest.raises(caffe.CaffeError, match='set_solver_count'):
        caffe.NCCL(solver, caffe.NCCL.new_uid())


def test_iter_size_reduces_once_per_iteration(workdir, one_thread):
    """In a 1-rank group (in this process): with iter_size 2 and layer-wise reduction the
    gradients are reduced once, after the last pass, and the weights are those of a plain
    solver."""
    group = parallel.join(caffe.NCCL.new_uid(), 0, 1)
    try:
        counts = {}
        for iter_size in (1, 2):
            solver = caffe.get_solver(solver_file(workdir, 'g%d' % iter_size, iter_size=iter_size))
            dp = parallel.DataParallel(solver, group).attach()
            dp.bcast()
            solver.step(3)
            assert dp.stats.iterations == 3
            counts[iter_size] = dp.stats.collectives
            plain = caffe.get_solver(solver_file(workdir, 'p%d' % iter_size, iter_size=iter_size))
            plain.step(3)
            for a, b in zip(solver.net._learnable_params, plain.net._learnable_params):
                np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-8)
        assert counts[1] == counts[2] > 0
    finally:
        parallel.leave()
    assert parallel.current() is None
