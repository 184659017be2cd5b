#!/usr/bin/env python3
"""`make demo MODEL=refinedet`: RefineDet on the embedded toy data set, end to end, on the CPU.

    python tools/run_refinedet_demo.py [--images 4] [--resume]

Does what a RefineDet user does, from the Caffe root (caffe-fast-rcnn/): makes the toy
LMDBs with data/toy/create_list.sh and create_data.sh, writes the nets with
examples/refinedet/ToyNet_toy_160.py and trains with the job script it writes (the solver
tests the model once at the end: `Test net output #0: detection_eval = <mAP>`), scores the
final model with test/refinedet_test.py (the VOC07 metric, `Mean AP = ...`), draws
detections on a few test images with test/refinedet_demo.py and the training curves with
tools/extra/plot_training_log.py, all into output/demo/refinedet/. Prints both mAPs, the
time taken and where the pictures are. The toy data set must exist (make toy-data).
Training starts from scratch unless --resume (then the job resumes from the latest snapshot).
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CAFFE_ROOT = os.path.join(ROOT, 'caffe-fast-rcnn')
SCRIPT = 'examples/refinedet/ToyNet_toy_160.py'
MODEL_DIR = 'models/ToyNet/toy/refinedet_toynet_160x160'
JOB_LOG = 'jobs/ToyNet/toy/refinedet_toynet_160x160/toy_refinedet_toynet_160x160.log'
MODEL_NAME = 'toy_refinedet_toynet_160x160'
DEVKIT = os.path.join(ROOT, 'data', 'toy', 'VOCdevkit2007')


def step(what, argv, env, **kwargs):
    """Run one stage in the Caffe root; stop the demo naming the stage when it fails."""
    print('==> %s: %s' % (what, ' '.join(argv)), flush=True)
    proc = subprocess.run(argv, cwd=CAFFE_ROOT, env=env, **kwargs)
    if proc.returncode != 0:
        sys.exit('run_refinedet_demo: %s failed (exit status %d)' % (what, proc.returncode))
    return proc


def clear_snapshots():
    """Remove the toy model's earlier snapshots so that training starts from scratch."""
    for path in glob.glob(os.path.join(CAFFE_ROOT, MODEL_DIR, MODEL_NAME + '_iter_*')):
        os.remove(path)


def final_model():
    """The snapshot of the highest iteration."""
    found = {}
    for path in glob.glob(os.path.join(CAFFE_ROOT, MODEL_DIR, MODEL_NAME + '_iter_*.caffemodel')):
        m = re.search(r'_iter_(\d+)\.caffemodel$', path)
        if m:
            found[int(m.group(1))] = path
    if not found:
        sys.exit('run_refinedet_demo: training wrote no snapshot in %s' % MODEL_DIR)
    return found[max(found)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--images', type=int, default=4, help='test images to draw')
    ap.add_argument('--resume', action='store_true',
                    help='resume from the latest snapshot instead of training from scratch')
    args = ap.parse_args(argv)
    start = time.time()
    if not os.path.isdir(os.path.join(DEVKIT, 'VOC2007')):
        sys.exit('run_refinedet_demo: the toy data set is missing; run `make toy-data` first')
    env = dict(os.environ)
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env.setdefault('CAFFE_PYTHON', sys.executable)
    env.setdefault('GLOG_minloglevel', '0')
    # One compute thread: the toy net's layers are small, the data layer's prefetch thread
    # gets the other core, and a single thread is not slowed down by busy neighbours.
    env.setdefault('OMP_NUM_THREADS', '1')
    py = sys.executable
    step('toy lists', ['bash', 'data/toy/create_list.sh'], env)
    step('toy LMDBs', ['bash', 'data/toy/create_data.sh'], env)
    if not args.resume:
        clear_snapshots()
    step('nets and training', [py, SCRIPT], env)
    log = os.path.join(CAFFE_ROOT, JOB_LOG)
    with open(log) as f:
        solver_maps = re.findall(r'Test net output #\d+: detection_eval = ([0-9.]+)', f.read())
    model = final_model()
    out_dir = os.path.join(ROOT, 'output', 'demo', 'refinedet')
    os.makedirs(out_dir, exist_ok=True)
    test = step('refinedet_test.py', [py, 'test/refinedet_test.py', '--gpu', '-1', '--imdb',
                                      'toy_2007_test', '--path', MODEL_DIR, '--net', model],
                env, stdout=subprocess.PIPE, universal_newlines=True)
    sys.stdout.write(test.stdout)
    maps = re.findall(r'Mean AP = ([0-9.]+)', test.stdout)
    test_list = os.path.join(DEVKIT, 'VOC2007', 'ImageSets', 'Main', 'test.txt')
    with open(test_list) as f:
        ids = [line.strip() for line in f if line.strip()][:args.images]
    images = [os.path.join(DEVKIT, 'VOC2007', 'JPEGImages', i + '.jpg') for i in ids]
    step('refinedet_demo.py', [py, 'test/refinedet_demo.py', '--gpu_id', '-1', '--save_fig',
                               '--labelmap', 'data/toy/labelmap_toy.prototxt',
                               '--def', os.path.join(MODEL_DIR, 'deploy.prototxt'), '--net', model,
                               '--out', out_dir] + images, env)
    curve = os.path.join(out_dir, 'training_curves.png')
    step('training curves', [py, 'tools/extra/plot_training_log.py', log, '-o', curve,
                             '--title', 'RefineDet (ToyNet, 160x160) on the toy data set'], env)
    elapsed = time.time() - start
    print('=' * 70)
    print('Demo (RefineDet, ToyNet 160x160, on the toy data set) finished in %.1f min'
          % (elapsed / 60))
    print('Training log:   %s' % os.path.relpath(log, ROOT))
    print('Final model:    %s' % os.path.relpath(model, ROOT))
    print('Solver test (detection_eval, 11-point mAP) = %s'
          % (solver_maps[-1] if solver_maps else 'n/a'))
    print('refinedet_test.py Mean AP (VOC07 11-point) = %s' % (maps[-1] if maps else 'n/a'))
    print('Pictures:       %s' % os.path.relpath(out_dir, ROOT))
    for p in sorted(glob.glob(os.path.join(out_dir, '*.png')) +
                    glob.glob(os.path.join(out_dir, '*.jpg'))):
        print('  ' + os.path.relpath(p, ROOT))
    print('=' * 70)
    return float(maps[-1]) if maps else None


if __name__ == '__main__':
    main()
