"""Test-suite set-up: the engine and the detector library on sys.path, quiet logs, and the
fixtures every part of the suite uses."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ('caffe-fast-rcnn/python', 'lib'):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault('GLOG_minloglevel', '2')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long end-to-end runs (run by CI, skip with -m "not slow")')


@pytest.fixture(scope='module')
def one_torch_thread():
    """One PyTorch thread for a module (restored after it): tiny nets and tensors run faster
    without OpenMP hand-offs, which dominate on a busy machine, and the float sums come in
    the order of a child process run with OMP_NUM_THREADS=1."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
