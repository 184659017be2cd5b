"""Put pycaffe (the Caffe root's python/) and the project's detector library (lib/, for
its data sets and their evaluation) on sys.path.

RefineDet's test scripts carried their own copy of py-faster-rcnn's library in test/lib;
here they use the project's lib/, so VOC and COCO are scored by the same code as Faster
R-CNN's tools/test_net.py. Imported first by the scripts in this folder.
"""
import os.path as osp
import sys

_HERE = osp.dirname(osp.abspath(__file__))
CAFFE_ROOT = osp.dirname(_HERE)
REPO_ROOT = osp.dirname(CAFFE_ROOT)


def add_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)


add_path(osp.join(CAFFE_ROOT, 'python'))
add_path(osp.join(REPO_ROOT, 'lib'))
add_path(_HERE)
