"""Session fixtures of the end-to-end tests: a tiny toy data set and one trained toy model.

The data set (16 trainval + 8 test images of the toy shapes set) lives in a temporary
DATA_DIR; every tool run gets ``--set DATA_DIR <it> EXP_DIR <unique name>`` and the
folders it writes under output/ are removed at the end of the session.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from e2e_helpers import (E2E_ITERS, NUM_TEST, NUM_TRAINVAL, REPO, TOY_END2END_CFG,
                         TOY_END2END_DIR, TOY_SEED, ExpDirs, run, set_args, snapshot_path,
                         write_solver)


@pytest.fixture(scope='session')
def toy_data(tmp_path_factory) -> Path:
    """DATA_DIR holding toy/VOCdevkit2007 (the layout lib/datasets/factory.py expects)."""
    from datasets.toy_generator import make_toy_dataset
    data_dir = tmp_path_factory.mktemp('e2e_data')
    make_toy_dataset(data_dir / 'toy', seed=TOY_SEED, num_trainval=NUM_TRAINVAL,
                     num_test=NUM_TEST)
    return data_dir


@pytest.fixture(scope='session')
def logs(tmp_path_factory) -> Path:
    """Where the tools' logs go (kept by pytest's tmp retention for post-mortems)."""
    return tmp_path_factory.mktemp('e2e_logs')


@pytest.fixture(scope='session')
def session_exps():
    dirs = ExpDirs()
    yield dirs
    dirs.cleanup()


@pytest.fixture
def exps():
    """EXP_DIR names whose output folders go away when the test ends."""
    dirs = ExpDirs()
    yield dirs
    dirs.cleanup()


@pytest.fixture(scope='session')
def end2end_run(toy_data, session_exps, logs) -> SimpleNamespace:
    """ToyNet trained end to end for E2E_ITERS iterations (each iteration's loss logged)."""
    exp = session_exps.new('end2end')
    solver = write_solver(TOY_END2END_DIR / 'solver.prototxt', logs / 'end2end_solver.prototxt')
    log = run(['tools/train_net.py', '--gpu', '-1', '--solver', solver,
               '--imdb', 'toy_2007_trainval', '--iters', E2E_ITERS, '--cfg', TOY_END2END_CFG]
              + set_args(toy_data, exp), logs / 'end2end_train.log')
    return SimpleNamespace(log=log, model=snapshot_path(log), exp=exp, iters=E2E_ITERS,
                           data=toy_data)


@pytest.fixture(scope='session')
def end2end_eval(end2end_run, logs) -> SimpleNamespace:
    """test_net.py of the end2end model on the toy test split."""
    r = end2end_run
    log = run(['tools/test_net.py', '--gpu', '-1', '--def', TOY_END2END_DIR / 'test.prototxt',
               '--net', r.model, '--imdb', 'toy_2007_test', '--cfg', TOY_END2END_CFG,
               '--wait', '0'] + set_args(r.data, r.exp), logs / 'end2end_test.log')
    det_dir = REPO / 'output' / r.exp / 'toy_2007_test' / r.model.stem
    return SimpleNamespace(log=log, det_dir=det_dir)
