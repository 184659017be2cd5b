"""Data-parallel training: one process per rank on torch.distributed (gloo on CPUs, NCCL on
GPUs), Python layers included, from one machine to several.

    group.py   solver_count / solver_rank (Caffe's), joining the process group (under
               torchrun, or from a uid), and noticing dead or hung ranks
    sync.py    DataParallel: gradients averaged layer by layer as backward completes them,
               agreement on loss / stop / snapshot; `NCCL`, pycaffe's name for it
    launch.py  starting one process per rank on this machine and supervising them
    devices.py which device each rank computes on

How a training entry point uses it (`caffe train`, tools/train_net.py):

    if parallel.env_has_group():          # a rank (started by us or by torchrun)
        parallel.use_rank_device(gpus); parallel.join_from_env()
    elif len(gpus) > 1:                   # the launcher: run this command once per rank
        sys.exit(parallel.spawn_command(argv, len(gpus)))
    solver = ...                          # Data layers read solver_rank()/solver_count()
    parallel.DataParallel(solver).attach().bcast()
"""
from .group import (Group, RankFailure, current, env_has_group, env_local_rank, join,  # noqa: F401
                    join_from_env, leave, multiprocess, new_uid, root_solver, set_multiprocess,
                    set_solver_count, set_solver_rank, solver_count, solver_rank, timeout_seconds)
from .sync import NCCL, Agreement, DataParallel, ReduceStats, reduce_plan  # noqa: F401
from .launch import die_with_parent, exit_failed_rank, spawn_command, spawn_functions  # noqa: F401
from .devices import gpu_count, parse_gpu_list, use_rank_device  # noqa: F401


def shard(count: int) -> range:
    """The indices of `count` items this rank takes when work is split across ranks
    (i % solver_count == solver_rank), e.g. images to run an RPN on."""
    return range(solver_rank(), int(count), solver_count())
