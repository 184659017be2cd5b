"""Helpers of the end-to-end tests: run the tools as a user would and read their logs.

The tools run as subprocesses of the venv's Python with the repository root as working
directory, on the CPU, with Caffe's INFO log on (GLOG_minloglevel=0) so that the
``Iteration N, loss = v`` and ``Train net output`` lines are there to parse. Torch gets
one thread per process: on a busy two-core machine more threads only fight each other,
and one thread also makes every run's numbers repeatable.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / 'output'
TOY_CLASSES_FILE = 'classes.txt'

#: Size of the session's toy set and of the end-to-end training run. 80 iterations
#: (5 epochs of 16 images) take ~10 s on one idle core and show a clear loss decrease.
TOY_SEED = 1
NUM_TRAINVAL = 16
NUM_TEST = 8
E2E_ITERS = 80

TOY_END2END_CFG = 'experiments/cfgs/toy_faster_rcnn_end2end.yml'
TOY_END2END_DIR = REPO / 'models' / 'toy' / 'ToyNet' / 'faster_rcnn_end2end'

#: Longest a single tool run may take before the test fails instead of hanging.
RUN_TIMEOUT = 1200


def tool_env(**extra: str) -> Dict[str, str]:
    """The environment of a tool run (see the module docstring for why each entry)."""
    env = dict(os.environ)
    env.update(GLOG_minloglevel='0', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONUNBUFFERED='1', MPLBACKEND='Agg')
    # The experiment scripts call ./tools/*.py, whose `#!/usr/bin/env python3` must find
    # this venv's python, as it does for a user with the venv activated.
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env.update(extra)
    return env


def run(cmd: Sequence[str], log_file: Path, env: Optional[Dict[str, str]] = None,
        timeout: float = RUN_TIMEOUT) -> str:
    """Run ``cmd`` in the repository root, stdout and stderr into ``log_file``; return the log.

    A ``.py`` first element runs with this interpreter. A non-zero exit status fails the
    test with the command and the end of its log.
    """
    cmd = [str(c) for c in cmd]
    if cmd[0].endswith('.py'):
        cmd = [sys.executable] + cmd
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, 'w') as f:
        try:
            proc = subprocess.run(cmd, cwd=str(REPO), env=env or tool_env(), stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            status = 'timeout after %ss' % timeout
    text = log_file.read_text(errors='replace')
    if status != 0:
        tail = '\n'.join(text.splitlines()[-60:])
        raise AssertionError('command failed (%s): %s\n--- last lines of %s ---\n%s'
                             % (status, ' '.join(cmd), log_file, tail))
    return text


def set_args(data_dir: Path, exp_dir: str, *more: str) -> List[str]:
    """``--set`` arguments pointing a tool at a data folder and an experiment folder."""
    return ['--set', 'DATA_DIR', str(data_dir), 'EXP_DIR', exp_dir] + list(more)


class ExpDirs:
    """Unique EXP_DIR names; their folders under output/ are removed by :meth:`cleanup`.

    Tools write to ``ROOT_DIR/output/EXP_DIR``; a per-run unique name keeps parallel test
    runs (and people's own experiments) apart, and cleanup leaves the tree as it was.
    """

    def __init__(self) -> None:
        self.names: List[str] = []
        self._output_existed = OUTPUT.exists()

    def new(self, label: str) -> str:
        name = 'e2e_test_%s_%s' % (label, uuid.uuid4().hex[:8])
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            shutil.rmtree(OUTPUT / name, ignore_errors=True)
        self.names.clear()
        if not self._output_existed:
            try:
                OUTPUT.rmdir()  # only if empty: someone else may have written there meanwhile
            except OSError:
                pass


def write_solver(src: Path, dst: Path, display: int = 1) -> Path:
    """Copy a solver prototxt, logging every ``display`` iterations, unsmoothed.

    Everything that shapes training (learning rate, momentum, clipping, the net) is kept;
    only ``display`` and ``average_loss`` change, so each iteration's own loss is logged.
    A relative ``train_net`` path is made absolute (it is relative to the repository root).
    """
    lines = []
    for line in Path(src).read_text().splitlines():
        key = line.split(':', 1)[0].strip()
        if key in ('display', 'average_loss'):
            continue
        m = re.match(r'\s*(train_net|net)\s*:\s*"(.*)"', line)
        if m and not os.path.isabs(m.group(2)):
            line = '%s: "%s"' % (m.group(1), REPO / m.group(2))
        lines.append(line)
    lines += ['display: %d' % display, 'average_loss: 1']
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text('\n'.join(lines) + '\n')
    return dst


_ITER_RE = re.compile(r'\] Iteration (\d+), loss = (\S+)')
_OUTPUT_RE = re.compile(r'\] +Train net output #\d+: (\S+) = (\S+)')


def iteration_losses(log: str) -> List[Tuple[int, float]]:
    """``(iteration, loss)`` of every ``Iteration N, loss = v`` line, in order."""
    return [(int(i), float(v)) for i, v in _ITER_RE.findall(log)]


def output_losses(log: str) -> Dict[str, List[float]]:
    """Each ``Train net output`` name with its values, in order."""
    out: Dict[str, List[float]] = {}
    for name, value in _OUTPUT_RE.findall(log):
        out.setdefault(name, []).append(float(value))
    return out


def window_means(values: Sequence[float], window: int) -> Tuple[float, float]:
    """Mean of the first and of the last ``window`` values."""
    assert len(values) >= 2 * window, 'need %d values, got %d' % (2 * window, len(values))
    return (sum(values[:window]) / window, sum(values[-window:]) / window)


def assert_finite(values: Sequence[float], what: str) -> None:
    bad = [v for v in values if not math.isfinite(v)]
    assert not bad, '%s: non-finite values %s' % (what, bad[:5])


def mean_ap(log: str) -> float:
    """The value of the last ``Mean AP = v`` line."""
    found = re.findall(r'^Mean AP = (\S+)$', log, re.M)
    assert found, 'no "Mean AP = " line in the log'
    return float(found[-1])


def class_aps(log: str) -> Dict[str, float]:
    """``AP for <class> = v`` lines as a dict (the last evaluation's)."""
    return {c: float(v) for c, v in re.findall(r'^AP for (\S+) = (\S+)$', log, re.M)}


def toy_classes(data_dir: Path) -> List[str]:
    return (Path(data_dir) / 'toy' / TOY_CLASSES_FILE).read_text().split()


def check_evaluation(log: str, data_dir: Path) -> float:
    """Every toy class has an AP in [0, 1] and Mean AP is their mean; return Mean AP."""
    aps = class_aps(log)
    assert sorted(aps) == sorted(toy_classes(data_dir)), aps
    for c, ap in aps.items():
        assert 0.0 <= ap <= 1.0, (c, ap)
    m = mean_ap(log)
    assert abs(m - sum(aps.values()) / len(aps)) < 1e-3, (m, aps)
    return m


def snapshot_path(log: str) -> Path:
    """The file of the last ``Wrote snapshot to: path`` line (it must exist)."""
    found = re.findall(r'^Wrote snapshot to: (.+)$', log, re.M)
    assert found, 'no snapshot was written'
    path = Path(found[-1].strip())
    assert path.is_file(), path
    return path


def split_images(data_dir: Path, split: str) -> List[Path]:
    """The toy set's image files of ``split``, in the order of its ImageSets list."""
    voc = Path(data_dir) / 'toy' / 'VOCdevkit2007' / 'VOC2007'
    ids = (voc / 'ImageSets' / 'Main' / (split + '.txt')).read_text().split()
    return [voc / 'JPEGImages' / (i + '.jpg') for i in ids]


def check_proposals(boxes: Sequence, images: Sequence[Path], min_boxes: int,
                    max_boxes: int) -> None:
    """One (N, 4) array of well-formed boxes inside its image (original pixels) per image."""
    import cv2
    import numpy as np
    assert len(boxes) == len(images)
    for image, b in zip(images, boxes):
        b = np.asarray(b)
        assert b.ndim == 2 and b.shape[1] == 4 and min_boxes <= len(b) <= max_boxes, b.shape
        h, w = cv2.imread(str(image)).shape[:2]
        assert b.min() >= 0 and b[:, 2].max() <= w - 1 and b[:, 3].max() <= h - 1, image
        assert np.all(b[:, 2] >= b[:, 0]) and np.all(b[:, 3] >= b[:, 1])
