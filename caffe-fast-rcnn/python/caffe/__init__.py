"""caffe: Caffe's Python interface (pycaffe), with PyTorch doing the computing.

`import caffe` gives what pycaffe gives: Net, the solvers, Layer for Python layers,
TRAIN/TEST, set_mode_cpu/gpu, set_device, set_random_seed, layer_type_list, the
multi-GPU API (NCCL, set_solver_count/rank, set_multiprocess: see caffe.parallel), Timer,
and the io, net_spec, draw and coord_map modules. The formats and the behaviour are Caffe's
(caffe-fast-rcnn and BVLC master), so existing prototxts, .caffemodel files and scripts
work unchanged.
"""
from ._config import set_mode_cpu, set_mode_gpu, set_device, set_random_seed, precision  # noqa: F401
from ._config import set_precision, get_precision, autocast, set_bf16_matmuls  # noqa: F401
from .phase import TRAIN, TEST, Phase  # noqa: F401
from .blob import Blob  # noqa: F401
from .layer import Layer  # noqa: F401
from .layers import layer_type_list  # noqa: F401
from .net import Net  # noqa: F401
from . import pycaffe as _pycaffe  # noqa: F401  (adds the pycaffe methods to Net)
from .errors import CaffeError, ParseError, NetError, ShapeError, LayerError  # noqa: F401
from .proto import caffe_pb2  # noqa: F401
from .solver import (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,  # noqa: F401
                     AdaDeltaSolver, AdamSolver, get_solver, get_solver_from_file,
                     get_solver_from_string)

from .parallel import (NCCL, set_solver_count, set_solver_rank, set_multiprocess,  # noqa: F401
                       solver_count, solver_rank)
from .timer import Timer, init_log, log  # noqa: F401

get_solver_count = solver_count   # the names some forks use
get_solver_rank = solver_rank


def has_nccl() -> bool:
    """Whether NCCL (GPU data-parallel training) is available to this PyTorch."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_nccl_available()


__version__ = '1.0.0'

# pycaffe's helper modules and its Classifier/Detector wrappers.
from . import io  # noqa: F401,E402
from .net_spec import layers, NetSpec, to_proto  # noqa: F401,E402
# `caffe.params` is a module whose attributes are net_spec's Parameters (P.Pooling.MAX), so
# that `from caffe import params as P`, `import caffe.params` and `from caffe.params
# import Resize` all work.
from . import params  # noqa: F401,E402
from .classifier import Classifier  # noqa: F401,E402
from .detector import Detector  # noqa: F401,E402
