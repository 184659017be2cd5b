#!/usr/bin/env python3
"""`make demo`: train and evaluate a detector on the embedded toy data set, end to end.

    python tools/run_demo.py [--scheme end2end|alt_opt] [--ohem 0|1]

Runs the experiment script a user would run (experiments/scripts/faster_rcnn_end2end.sh
-1 ToyNet toy, or the alt-opt / OHEM variants) on the CPU, then draws detections on a few
test images with tools/demo.py and the training curves with
caffe-fast-rcnn/tools/extra/plot_training_log.py. Prints the Mean AP, the time taken and
where the pictures are. The toy data set must exist (make toy-data).
"""
import _init_paths  # noqa: F401
import argparse
import glob
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def run_script(script, env):
    """Run an experiment script; return (log path, its text)."""
    proc = subprocess.run(['bash', script, '-1', 'ToyNet', 'toy'], cwd=ROOT, env=env)
    logs = sorted(glob.glob(os.path.join(ROOT, 'experiments', 'logs', os.path.basename(script)[:-3] + '_ToyNet_*')),
                  key=os.path.getmtime)
    if proc.returncode != 0 or not logs:
        sys.exit('run_demo: %s failed (exit code %d); see its log in experiments/logs/' % (script, proc.returncode))
    with open(logs[-1]) as f:
        return logs[-1], f.read()


def final_model(log_text):
    m = re.findall(r'Final model: (\S+)', log_text)
    if m:
        return m[-1]
    snaps = re.findall(r'Wrote snapshot to: (\S+)', log_text)
    return snaps[-1] if snaps else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--scheme', choices=['end2end', 'alt_opt'], default='end2end')
    ap.add_argument('--ohem', type=int, default=0)
    ap.add_argument('--images', type=int, default=4, help='test images to draw')
    args = ap.parse_args(argv)
    start = time.time()
    name = 'faster_rcnn_' + args.scheme + ('_ohem' if args.ohem else '')
    script = os.path.join(ROOT, 'experiments', 'scripts', name + '.sh')
    env = dict(os.environ)
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env.setdefault('GLOG_minloglevel', '0')
    # ToyNet's layers are too small to gain from a second thread (0.078 s/iter either way
    # on 2 idle cores), and one thread cannot be slowed down by a busy neighbour.
    env.setdefault('OMP_NUM_THREADS', '1')
    if not os.path.isdir(os.path.join(ROOT, 'data', 'toy', 'VOCdevkit2007')):
        sys.exit('run_demo: the toy data set is missing; run `make toy-data` first')
    log, text = run_script(script, env)
    maps = re.findall(r'Mean AP = ([0-9.]+)', text)
    model = final_model(text)
    out_dir = os.path.join(ROOT, 'output', 'demo', name)
    os.makedirs(out_dir, exist_ok=True)
    test_list = os.path.join(ROOT, 'data', 'toy', 'VOCdevkit2007', 'VOC2007', 'ImageSets', 'Main', 'test.txt')
    with open(test_list) as f:
        ids = [l.strip() for l in f if l.strip()][:args.images]
    images = [os.path.join(ROOT, 'data', 'toy', 'VOCdevkit2007', 'VOC2007', 'JPEGImages', i + '.jpg') for i in ids]
    scheme_dir = 'faster_rcnn_alt_opt' if args.scheme == 'alt_opt' else name
    test_def = os.path.join(ROOT, 'models', 'toy', 'ToyNet', scheme_dir,
                            'faster_rcnn_test.pt' if args.scheme == 'alt_opt' else 'test.prototxt')
    cfg_file = os.path.join(ROOT, 'experiments', 'cfgs', 'toy_' + name + '.yml')
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'demo.py'), '--cpu', '--def', test_def,
                    '--caffemodel', model, '--imdb', 'toy_2007_test', '--cfg', cfg_file, '--conf', '0.6',
                    '--out', out_dir, '--images'] + images, cwd=ROOT, env=env, check=True)
    curve = os.path.join(out_dir, 'training_curves.png')
    subprocess.run([sys.executable, os.path.join(ROOT, 'caffe-fast-rcnn', 'tools', 'extra', 'plot_training_log.py'),
                    log, '-o', curve, '--title', name + ' on the toy data set'], cwd=ROOT, env=env, check=True)
    elapsed = time.time() - start
    print('=' * 70)
    print('Demo (%s on the toy data set) finished in %.1f min' % (name, elapsed / 60))
    print('Training log:   %s' % os.path.relpath(log, ROOT))
    print('Final model:    %s' % os.path.relpath(model, ROOT))
    print('Mean AP (VOC07 11-point) = %s' % (maps[-1] if maps else 'n/a'))
    print('Pictures:       %s' % os.path.relpath(out_dir, ROOT))
    for p in sorted(glob.glob(os.path.join(out_dir, '*.png'))):
        print('  ' + os.path.relpath(p, ROOT))
    print('=' * 70)
    return float(maps[-1]) if maps else None


if __name__ == '__main__':
    main()
