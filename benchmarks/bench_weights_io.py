"""How long a VGG16-sized .caffemodel (138M float parameters, 553 MB) takes to save and load.

    .venv/bin/python benchmarks/bench_weights_io.py [--baseline] [--keep DIR]

Builds a caffe.Net with VGG16's layers (13 convolutions, 3 inner products; weights filled
with a cheap constant), then times:
  save            Net.save -> current-format .caffemodel
  load            Net.copy_from of that file (read, upgrade, copy into the blobs)
  load_v1         copy_from of the same weights written as a legacy V1 file (`layers`,
                  4-d num/channels/height/width blob shapes)
  baseline_load   (--baseline) plain protobuf: ParseFromString + np.array(blob.data), what a
                  straightforward reader does
and checks that every loaded blob equals what was saved. Prints one line per step:
`<step> <seconds> s` and the file size.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'caffe-fast-rcnn', 'python'))
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402
from caffe import weights  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

CONVS = [('conv1_1', 64), ('conv1_2', 64), 'pool1', ('conv2_1', 128), ('conv2_2', 128), 'pool2',
         ('conv3_1', 256), ('conv3_2', 256), ('conv3_3', 256), 'pool3',
         ('conv4_1', 512), ('conv4_2', 512), ('conv4_3', 512), 'pool4',
         ('conv5_1', 512), ('conv5_2', 512), ('conv5_3', 512), 'pool5']


def vgg16_prototxt() -> str:
    parts = ['name: "VGG16_bench"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 224 dim: 224 }\n']
    bottom = 'data'
    for item in CONVS:
        if isinstance(item, str):
            parts.append('layer { name: "%s" type: "Pooling" bottom: "%s" top: "%s" '
                         'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n' % (item, bottom, item))
            bottom = item
            continue
        name, n = item
        parts.append('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s" '
                     'param { lr_mult: 1 } param { lr_mult: 2 } '
                     'convolution_param { num_output: %d pad: 1 kernel_size: 3 '
                     'weight_filler { type: "constant" value: 0.01 } } }\n' % (name, bottom, name, n))
        parts.append('layer { name: "relu%s" type: "ReLU" bottom: "%s" top: "%s" }\n'
                     % (name[4:], name, name))
        bottom = name
    for name, n in (('fc6', 4096), ('fc7', 4096), ('fc8', 1000)):
        parts.append('layer { name: "%s" type: "InnerProduct" bottom: "%s" top: "%s" '
                     'inner_product_param { num_output: %d '
                     'weight_filler { type: "constant" value: 0.001 } } }\n' % (name, bottom, name, n))
        bottom = name
    return ''.join(parts)


def write_v1(net, path):
    """The net's weights as a legacy V1 file: NetParameter.layers(2), blobs(6), 4-d shapes."""
    chunks = []
    for name, layer in zip(net._layer_names, net.layers):
        if not len(layer.blobs):
            continue
        head = caffe_pb2.V1LayerParameter(name=name)
        head.type = caffe_pb2.V1LayerParameter.CONVOLUTION if layer.type == 'Convolution' \
            else caffe_pb2.V1LayerParameter.INNER_PRODUCT
        body = [head.SerializeToString()]
        for b in layer.blobs:
            shape = (1,) * (4 - len(b.shape)) + tuple(b.shape)
            legacy = caffe_pb2.BlobProto(num=shape[0], channels=shape[1], height=shape[2],
                                         width=shape[3]).SerializeToString()
            flat = np.ascontiguousarray(b.data, dtype='<f4').reshape(-1)
            blob = [legacy, weights._varint((5 << 3) | 2) + weights._varint(flat.nbytes),
                    memoryview(flat).cast('B')]
            body += [weights._varint((6 << 3) | 2) + weights._varint(weights._chunks_len(blob))] + blob
        chunks += [weights._varint((2 << 3) | 2) + weights._varint(weights._chunks_len(body))] + body
    with open(path, 'wb') as f:
        for c in chunks:
            f.write(c)


def timed(label, fn):
    t0 = time.perf_counter()
    out = fn()
    print('%-14s %7.2f s' % (label, time.perf_counter() - t0), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--baseline', action='store_true', help='also time a plain protobuf reader')
    ap.add_argument('--keep', help='write the files into this folder and keep them')
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix='bench_weights_')
    os.makedirs(folder, exist_ok=True)
    try:
        proto = os.path.join(folder, 'vgg16.prototxt')
        with open(proto, 'w') as f:
            f.write(vgg16_prototxt())
        net = timed('build_net', lambda: caffe.Net(proto, caffe.TEST))
        rng = np.random.RandomState(0)
        for ps in net.params.values():  # distinct values so that a mix-up shows
            for p in ps:
                p.data.reshape(-1)[:1000] = rng.randn(min(1000, p.count))
        n_params = sum(p.count for ps in net.params.values() for p in ps)
        print('parameters     %d' % n_params)
        path = os.path.join(folder, 'vgg16.caffemodel')
        timed('save', lambda: net.save(path))
        print('file_size      %.1f MB' % (os.path.getsize(path) / 1e6))

        other = caffe.Net(proto, caffe.TEST)
        timed('load', lambda: other.copy_from(path))
        for name, ps in net.params.items():
            for a, b in zip(ps, other.params[name]):
                assert np.array_equal(a.data, b.data), name

        v1 = os.path.join(folder, 'vgg16_v1.caffemodel')
        write_v1(net, v1)
        third = caffe.Net(proto, caffe.TEST)
        timed('load_v1', lambda: third.copy_from(v1))
        for name, ps in net.params.items():
            for a, b in zip(ps, third.params[name]):
                assert np.array_equal(a.data, b.data), name

        if args.baseline:
            def plain():
                msg = caffe_pb2.NetParameter()
                with open(path, 'rb') as f:
                    msg.ParseFromString(f.read())
                return [np.array(bp.data, dtype=np.float32) for l in msg.layer for bp in l.blobs]
            timed('baseline_load', plain)
        print('ok: loaded weights equal the saved ones')
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    main()
