"""Test-suite set-up: the engine and the detector library on sys.path, quiet logs."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ('caffe-fast-rcnn/python', 'lib'):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault('GLOG_minloglevel', '2')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long end-to-end runs (run by CI, skip with -m "not slow")')
