"""Running a training tool on several devices: one process per device, as ranks of a
torch.distributed group (the engine's caffe.parallel does the work).

`tools/train_net.py --gpu 0,1` calls `start_ranks` after reading its config: the first
process runs the same command line once per device (each started process is a rank, with
the environment torchrun gives) and waits for them; each rank gets its device, joins the
group, seeds NumPy and caffe with cfg.RNG_SEED + rank, and trains its share of the data.
Only rank 0 prints (other ranks' stdout goes nowhere unless CAFFE_LOG_ALL_RANKS=1; their
errors still reach stderr) and writes snapshots. Under torchrun the tool joins that group
instead of starting processes. `--gpu -1` (or a single id) trains in this process as before.
"""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

import caffe
from caffe import parallel
from utils.device import gpu_available, setup_caffe_device


def parse_gpus(text, force_cpu: bool = False) -> List[int]:
    """The --gpu value as a list of ids: '0,1' -> [0, 1]; '-1' or --cpu -> [-1]."""
    if force_cpu:
        return [-1]
    try:
        ids = parallel.parse_gpu_list(text)
    except caffe.CaffeError as e:
        sys.exit(str(e))
    return ids or [0]


def start_ranks(gpus: Sequence[int], script: str, argv: Optional[Sequence[str]],
                force_cpu: bool = False) -> int:
    """Become a rank (or launch them); returns this process's rank, 0 when alone.

    In the launching process of a run on several devices this does not return: it runs
    `script` with `argv` once per device and exits with the ranks' status.
    """
    gpus = list(gpus)
    if parallel.env_has_group():
        parallel.die_with_parent()
        local, _ = parallel.env_local_rank()
        ids = [g for g in gpus if g >= 0]
        if force_cpu or not ids or not gpu_available():
            if ids and not force_cpu and local == 0:
                sys.stderr.write('Warning: PyTorch sees no GPU here: --gpu %s runs %d CPU ranks\n'
                                 % (','.join(map(str, ids)), len(ids)))
            setup_caffe_device(-1, True)
        else:
            setup_caffe_device(ids[local % len(ids)])
        group = parallel.join_from_env()
        if group.rank and os.environ.get('CAFFE_LOG_ALL_RANKS', '') in ('', '0'):
            sys.stdout = open(os.devnull, 'w')
        return group.rank
    if len(gpus) > 1:
        argv = list(sys.argv[1:] if argv is None else argv)
        status = parallel.spawn_command([sys.executable, os.path.abspath(script)] + argv,
                                        len(gpus))
        sys.exit(status)
    setup_caffe_device(gpus[0] if gpus else 0, force_cpu)
    return 0


def finish_ranks() -> None:
    """Leave the process group after a successful run (no-op when alone)."""
    parallel.leave()


def rank_main(main: Callable) -> Callable:
    """Wrap a tool's main so that a rank that fails exits at once with status 1: tearing
    down its process group at interpreter exit would wait for ranks that are dead or hung."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (Exception, KeyboardInterrupt):
            if parallel.current() is None:
                raise
            traceback.print_exc()
            parallel.exit_failed_rank(1)
    return run
