"""Our training logs against a real Caffe's, and tools/extra/parse_log.py on both.

The reference logs (shared/conformance/logs) are what caffe-fast-rcnn printed for
`caffe train --solver=solver.prototxt`. We train the same files and compare every line
the solver and the tool print (file tag, line number, wording, iteration numbers); only
the values differ, since the random initial weights come from another generator.
"""
import os
import re
import runpy
import shutil
import sys

import pytest

from caffe.tool import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'conformance', 'logs')
EXTRA = os.path.join(ROOT, 'caffe-fast-rcnn', 'tools', 'extra')
sys.path.insert(0, EXTRA)
import parse_log  # noqa: E402

GLOG = re.compile(r'^([IWEF])(\d{4}|\d{8}) (\d\d:\d\d:\d\d\.\d{6}) +(\d+) ([\w.]+:\d+)\] (.*)$')
TAGS = ('solver.cpp', 'sgd_solver.cpp', 'caffe.cpp')

pytestmark = [pytest.mark.skipif(not os.path.isdir(SHARED), reason='shared conformance logs absent'),
              pytest.mark.usefixtures('one_torch_thread')]


def solver_lines(text):
    """(tag, message with values blanked) for solver/tool lines, plus the parameter block."""
    out = []
    block = False
    for line in text.splitlines():
        m = GLOG.match(line)
        if not m:
            if block:
                out.append(('param', line))
            continue
        tag, msg = m.group(5), m.group(6)
        block = msg.startswith('Initializing solver from parameters')
        if tag.split(':')[0] in TAGS:
            out.append((tag, re.sub(r'(= )[-+\d.e]+|nan|inf', r'\1#', msg)))
    return out


@pytest.fixture
def our_log(tmp_path, monkeypatch, capfd):
    for f in ('net.prototxt', 'solver.prototxt'):
        shutil.copy(os.path.join(SHARED, f), tmp_path / f)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('GLOG_minloglevel', '0')

    def run(env=None):
        if env:
            for k, v in env.items():
                monkeypatch.setenv(k, v)
        capfd.readouterr()
        assert main(['train', '--solver=solver.prototxt']) == 0
        path = tmp_path / 'ours.log'
        path.write_text(capfd.readouterr().err)
        return str(path)
    return run


def test_log_lines_match_caffe(our_log):
    ours = open(our_log()).read()
    ref = open(os.path.join(SHARED, 'caffe-fast-rcnn_train.log')).read()
    assert solver_lines(ours) == solver_lines(ref)
    for line in ours.splitlines():
        m = GLOG.match(line)
        if m:
            assert len(m.group(2)) == 4, line   # classic glog: month and day, no year
    assert 'Snapshotting to binary proto file snap/tiny_iter_5.caffemodel' in ours
    assert os.path.isfile('snap/tiny_iter_10.solverstate')


def test_parse_log_reads_our_logs_as_it_reads_caffes(our_log, tmp_path):
    ours = our_log()
    for ref_name in ('caffe-fast-rcnn_train.log', 'bvlc-style_train.log'):
        ref_train, ref_test = parse_log.parse_log(os.path.join(SHARED, ref_name))
        our_train, our_test = parse_log.parse_log(ours)
        for ref_rows, our_rows in ((ref_train, our_train), (ref_test, our_test)):
            assert [list(r.keys()) for r in our_rows] == [list(r.keys()) for r in ref_rows]
            for a, b in zip(our_rows, ref_rows):
                assert a['NumIters'] == b['NumIters']
                assert a['LearningRate'] == pytest.approx(b['LearningRate'])
                assert 0 <= a['Seconds'] < 60
    # The values Caffe's rules give for the reference log itself.
    train, test = parse_log.parse_log(os.path.join(SHARED, 'caffe-fast-rcnn_train.log'))
    assert [r['NumIters'] for r in train] == [0, 2, 4, 6, 8]
    assert [r['LearningRate'] for r in train] == [0.05, 0.05, 0.05, 0.025, 0.025]
    assert [r['loss'] for r in train] == [1.02673, 0.907117, 0.692634, 0.496515, 0.348525]
    assert [(r['NumIters'], r['LearningRate'], r['loss']) for r in test] == [
        (0, 0.025, 1.02673), (5, 0.025, 0.5888), (10, 0.0125, 0.249327)]


def test_parse_log_command_writes_caffes_csv_files(our_log, tmp_path):
    log = our_log()
    out = tmp_path / 'csv'
    out.mkdir()
    sys_argv = sys.argv
    sys.argv = ['parse_log.py', log, str(out)]
    try:
        runpy.run_path(os.path.join(EXTRA, 'parse_log.py'), run_name='__main__')
    finally:
        sys.argv = sys_argv
    train = (out / 'ours.log.train').read_text().splitlines()
    test = (out / 'ours.log.test').read_text().splitlines()
    assert train[0] == 'NumIters,Seconds,LearningRate,loss' and len(train) == 6
    assert test[0] == 'NumIters,Seconds,LearningRate,loss' and len(test) == 4
    assert [l.split(',')[0] for l in test[1:]] == ['0.0', '5.0', '10.0']


def test_bvlc_iteration_speed_style(our_log):
    text = open(our_log({'CAFFE_LOG_ITER_SPEED': '1'})).read()
    speed = re.findall(r'Iteration (\d+) \(([\d.e+-]+) iter/s, ([\d.e+-]+)s/2 iters\), loss = ', text)
    assert [int(s[0]) for s in speed] == [0, 2, 4, 6, 8]
    train, test = parse_log.parse_log(os.path.join(os.getcwd(), 'ours.log'))
    assert [r['NumIters'] for r in train] == [0, 2, 4, 6, 8]
    assert len(parse_log.parse_smoothed_loss('ours.log')) == 6


def test_plot_training_log_writes_a_png(our_log, tmp_path):
    log = our_log()
    plot = runpy.run_path(os.path.join(EXTRA, 'plot_training_log.py'))
    png = plot['plot']([log, os.path.join(SHARED, 'caffe-fast-rcnn_train.log')],
                       str(tmp_path / 'curves.png'))
    data = open(png, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10000
    assert plot['learning_rates'](log)[:3] == [(0, 0.05), (2, 0.05), (4, 0.025)]


def _table(path):
    lines = open(path).read().splitlines()
    return lines[0], [l.split() for l in lines[1:]]


def test_parse_log_sh_tables(our_log, tmp_path, monkeypatch):
    """tools/extra/parse_log.sh on Caffe's own log and on ours: the .train and .test tables
    hold what the log's lines say, row for row."""
    import subprocess
    ours = our_log()
    out = tmp_path / 'tables'
    out.mkdir()
    for log in (os.path.join(SHARED, 'caffe-fast-rcnn_train.log'), ours):
        env = dict(os.environ, CAFFE_PYTHON=sys.executable)
        subprocess.run([os.path.join(EXTRA, 'parse_log.sh'), log], cwd=str(out), env=env, check=True)
        text = open(log).read()
        losses = re.findall(r'Iteration (\d+), loss = (\S+)', text)
        rates = re.findall(r'Iteration \d+, lr = (\S+)', text)
        head, rows = _table(out / (os.path.basename(log) + '.train'))
        assert head == '#Iters Seconds TrainingLoss LearningRate'
        assert [(r[0], r[2]) for r in rows] == losses and len(losses) == 6
        assert [r[3] for r in rows[:len(rates)]] == rates
        seconds = [float(r[1]) for r in rows]
        assert seconds == sorted(seconds) and 0 <= seconds[0] < 60
        head, rows = _table(out / (os.path.basename(log) + '.test'))
        assert head == '#Iters Seconds TestAccuracy TestLoss'
        tests = re.findall(r'Iteration (\d+), Testing net', text)
        outputs = re.findall(r'Test net output #0: \S+ = (\S+)', text)
        assert [(r[0], r[2]) for r in rows] == list(zip(tests, outputs)) and len(tests) == 3
