#!/usr/bin/env python3
"""Draw a Caffe training log: loss curves and the learning rate, as a PNG.

    plot_training_log.py LOG [LOG ...] [-o training.png] [--title TEXT]

Top panel: the smoothed training loss (`Iteration N, loss = v`), each training output
whose name contains "loss", and the test outputs (`Test net output`), against iterations.
Bottom panel: the learning rate (`lr = v`) against iterations. Several logs (for
instance the stages of py-faster-rcnn's alternating optimisation) are drawn together,
one colour each. Uses matplotlib's Agg backend, so no display is needed.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parse_log  # noqa: E402

_LR = re.compile(r'Iteration (\d+), lr = ([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)')


def learning_rates(path: str):
    out = []
    with open(path) as f:
        for line in f:
            m = _LR.search(line)
            if m:
                out.append((int(m.group(1)), float(m.group(2))))
    return out


def plot(logs: List[str], output: str, title: Optional[str] = None) -> str:
    """Write the PNG for `logs` to `output`; returns `output`."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                         gridspec_kw={'height_ratios': [3, 1]})
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    drawn = False
    for k, path in enumerate(logs):
        c = colors[k % len(colors)]
        tag = os.path.basename(path) if len(logs) > 1 else ''
        smoothed = parse_log.parse_smoothed_loss(path)
        if smoothed:
            ax_loss.plot([i for i, _ in smoothed], [v for _, v in smoothed], color=c, lw=1.8,
                         label=('%s train loss (smoothed)' % tag).strip())
            drawn = True
        train, test = parse_log.parse_log(path)
        names = [n for n in (train[0].keys() if train else []) if 'loss' in n]
        styles = ['--', ':', '-.']
        for j, name in enumerate(names if len(names) > 1 else []):
            ax_loss.plot([r['NumIters'] for r in train], [r[name] for r in train], color=c,
                         ls=styles[j % 3], lw=1, alpha=0.8, label=('%s train %s' % (tag, name)).strip())
        for j, name in enumerate([n for n in (test[0].keys() if test else [])
                                  if n not in ('NumIters', 'Seconds', 'LearningRate')]):
            ax_loss.plot([r['NumIters'] for r in test], [r[name] for r in test], color=c,
                         marker='o', ms=4, ls=styles[j % 3], lw=1,
                         label=('%s test %s' % (tag, name)).strip())
            drawn = True
        lrs = learning_rates(path)
        last = max([i for i, _ in smoothed] + [int(r['NumIters']) for r in test] or [0])
        if lrs and last > lrs[-1][0]:
            lrs.append((last, lrs[-1][1]))   # the rate holds until the end of the run
        if lrs:
            ax_lr.step([i for i, _ in lrs], [v for _, v in lrs], where='post', color=c,
                       label=tag or 'learning rate')
    if not drawn:
        raise SystemExit('no training iterations found in %s' % ', '.join(logs))
    ax_loss.set_ylabel('loss / output')
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('iterations')
    ax_lr.grid(alpha=0.3)
    ax_loss.set_title(title or ', '.join(os.path.basename(p) for p in logs))
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('logs', nargs='+', help='Caffe training log file(s)')
    p.add_argument('-o', '--output', default='training.png', help='PNG to write')
    p.add_argument('--title', default=None)
    a = p.parse_args(argv)
    print(plot(a.logs, a.output, a.title))


if __name__ == '__main__':
    main()
