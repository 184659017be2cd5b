"""Put the engine (caffe-fast-rcnn/python) and the detector library (lib) on sys.path.

Every script in tools/ imports this first, as in py-faster-rcnn, so that `import caffe`
and `from fast_rcnn.config import cfg` work from a plain checkout.
"""
import os.path as osp
import sys


def add_path(path):
    if path not in sys.path:
        sys.path.insert(0, path)


this_dir = osp.dirname(osp.abspath(__file__))
add_path(osp.join(this_dir, '..', 'caffe-fast-rcnn', 'python'))
add_path(osp.join(this_dir, '..', 'lib'))
