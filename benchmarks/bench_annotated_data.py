#!/usr/bin/env python3
"""Speed of the AnnotatedData layer with every augmentation of RefineDet's training script
(../shared/seeds/004: distortion, expansion up to 4x, the seven batch samplers, WARP resize
to 320 x 320 with the five interpolations, mirror, mean values), batch 8.

Prints batches per second of
  * `augment` - the layer's batch maker called directly: the work the prefetch thread does
    per batch (what an iteration would wait for without prefetching);
  * `forward` - the layer's forward with its prefetch thread, the main thread doing nothing
    else (the rate at which a net could consume batches);
  * `plain`   - the least any loader does for the same batch: decode, resize to 320 x 320,
    subtract the mean (cv2 + NumPy, no augmentation), as the reference of the same run;
for the toy data set's images (make_toy_dataset, shorter side 240 px) and VOC-sized ones
(500 x 375). Compare the `augment` time per batch with a RefineDet320 iteration at batch 8:
when it is smaller, prefetching hides the data layer.

    .venv/bin/python benchmarks/bench_annotated_data.py [--batches 20] [--images 48]
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ('caffe-fast-rcnn/python', 'lib'):
    sys.path.insert(0, os.path.join(ROOT, sub))
os.environ.setdefault('GLOG_minloglevel', '2')

import cv2  # noqa: E402
import lmdb  # noqa: E402
import numpy as np  # noqa: E402
from google.protobuf import text_format  # noqa: E402

import caffe  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from caffe.tools import convert_annoset  # noqa: E402
from datasets.toy_generator import make_toy_dataset  # noqa: E402

LABELMAP = os.path.join(ROOT, 'caffe-fast-rcnn', 'data', 'VOC0712', 'labelmap_voc.prototxt')

TRANSFORM = """
  mirror: true mean_value: 104 mean_value: 117 mean_value: 123 force_color: true
  resize_param { prob: 1 resize_mode: WARP height: 320 width: 320 interp_mode: LINEAR
    interp_mode: AREA interp_mode: NEAREST interp_mode: CUBIC interp_mode: LANCZOS4 }
  distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5
    contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5
    saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 0.0 }
  expand_param { prob: 0.5 max_expand_ratio: 4.0 }
  emit_constraint { emit_type: CENTER }"""
SAMPLERS = "batch_sampler { sampler { } max_trials: 1 max_sample: 1 }" + ''.join(
    " batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 "
    "max_aspect_ratio: 2.0 } sample_constraint { %s: %s } max_trials: 50 max_sample: 1 }"
    % (('min_jaccard_overlap', v) if v != 1.0 else ('max_jaccard_overlap', v))
    for v in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0))


def toy_lmdb(work, images, size, name):
    """A toy VOC devkit of `images` pictures (shorter side `size`) converted to an LMDB."""
    out = os.path.join(work, name)
    summary = make_toy_dataset(out, num_trainval=images, num_test=0, size=size)
    devkit = os.path.join(summary['devkit_dir'], '')
    ids = open(os.path.join(devkit, 'VOC2007', 'ImageSets', 'Main', 'trainval.txt')).read().split()
    lst = os.path.join(work, name + '.txt')
    with open(lst, 'w') as f:
        for i in ids:
            f.write('VOC2007/JPEGImages/%s.jpg VOC2007/Annotations/%s.xml\n' % (i, i))
    db = os.path.join(work, name + '_lmdb')
    # The toy classes are not VOC's: a label map of the toy data set's own names.
    labelmap = os.path.join(work, name + '_labelmap.prototxt')
    with open(labelmap, 'w') as f:
        f.write('item { name: "none_of_the_above" label: 0 display_name: "background" }\n')
        for k, c in enumerate(summary['classes'], 1):
            f.write('item { name: "%s" label: %d display_name: "%s" }\n' % (c, k, c))
    t = time.perf_counter()
    status = convert_annoset.main(['--anno_type=detection', '--label_map_file=' + labelmap,
                                   '--encode_type=jpg', '--encoded', devkit, lst, db])
    assert status == 0
    return db, time.perf_counter() - t


def net(db, batch_size, prefetch):
    text = ('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" '
            'data_param { source: "%s" batch_size: %d backend: LMDB prefetch: %d } '
            'transform_param { %s } annotated_data_param { %s } }'
            % (db, batch_size, prefetch, TRANSFORM, SAMPLERS))
    p = caffe_pb2.NetParameter()
    text_format.Parse(text, p)
    return caffe.Net(p, caffe.TRAIN)


def plain(db, batch_size, batches):
    """Decode, resize, subtract the mean: the minimum for the same batches."""
    env = lmdb.open(db, readonly=True, lock=False)
    mean = np.array([104, 117, 123], np.float32)
    with env.begin() as txn:
        values = [v for _, v in txn.cursor()]
    env.close()
    t = time.perf_counter()
    k = 0
    for _ in range(batches):
        imgs = []
        for _ in range(batch_size):
            ad = caffe_pb2.AnnotatedDatum.FromString(values[k % len(values)])
            k += 1
            img = cv2.imdecode(np.frombuffer(ad.datum.data, np.uint8), cv2.IMREAD_COLOR)
            img = cv2.resize(img, (320, 320))
            imgs.append((img.astype(np.float32) - mean).transpose(2, 0, 1))
        np.stack(imgs)
    return batches / (time.perf_counter() - t)


def rate(fn, batches):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(batches):
        fn()
    return batches / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batches', type=int, default=20)
    ap.add_argument('--images', type=int, default=48)
    ap.add_argument('--batch-size', type=int, default=8)
    args = ap.parse_args()
    caffe.set_random_seed(0)
    print('AnnotatedData, RefineDet seed augmentations, 320x320, batch %d, %d batches '
          '(%d cores)' % (args.batch_size, args.batches, os.cpu_count()))
    with tempfile.TemporaryDirectory() as work:
        for label, size in (('toy (shorter side 240)', 240), ('VOC-sized (shorter side 375)', 375)):
            db, secs = toy_lmdb(work, args.images, size, 'set%d' % size)
            print('%s: convert_annoset of %d images took %.2f s' % (label, args.images, secs))
            base = plain(db, args.batch_size, args.batches)  # before the layer opens the db
            inline = net(db, args.batch_size, 0)
            augment = rate(inline.layers[0]._load, args.batches)
            threaded = net(db, args.batch_size, 4)
            forward = rate(threaded.forward, args.batches)
            print('  augment %6.2f batches/s (%5.1f ms/batch)   forward (prefetch) %6.2f '
                  'batches/s   plain %6.2f batches/s   augment/plain time %.2fx'
                  % (augment, 1000 / augment, forward, base, base / augment))
            for n in (inline, threaded):
                n.layers[0].close()


if __name__ == '__main__':
    main()
