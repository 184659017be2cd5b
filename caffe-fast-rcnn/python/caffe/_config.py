"""Process-wide engine settings: device (Caffe's mode), float type, random seed.

Caffe keeps these in a singleton (`Caffe::Get()`); pycaffe exposes them as
`set_mode_cpu`, `set_mode_gpu`, `set_device` and `set_random_seed`. Everything that
allocates tensors asks here for the device and dtype, so a net built after
`set_mode_gpu()` lives on the GPU, and tests can build float64 nets for gradient checks.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator, Optional

import torch

_state = {
    'gpu': False,
    'device_id': 0,
    'dtype': torch.float32,
    'seed': None,
    'lowp': None,  # compute precision of the heavy ops: see set_precision
    'memory_reuse': False,
}
_generators: dict = {}


def set_mode_cpu() -> None:
    """Run every net built from now on on the CPU."""
    _state['gpu'] = False


def set_mode_gpu() -> None:
    """Run nets on the accelerator PyTorch offers (CUDA, ROCm, or Apple's MPS)."""
    if not (torch.cuda.is_available() or _mps_available()):
        raise RuntimeError('set_mode_gpu: PyTorch sees no GPU on this machine; use set_mode_cpu()')
    _state['gpu'] = True


def set_device(device_id: int) -> None:
    """Choose which GPU `set_mode_gpu` uses (Caffe's device_id)."""
    _state['device_id'] = int(device_id)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())


_devices: dict = {}


def device() -> torch.device:
    """The torch device for new blobs (asked per layer and step: cached per mode and id)."""
    key = (_state['gpu'], _state['device_id'])
    dev = _devices.get(key)
    if dev is None:
        if not _state['gpu']:
            dev = torch.device('cpu')
        elif torch.cuda.is_available():
            dev = torch.device('cuda', _state['device_id'])
        else:
            dev = torch.device('mps')
        _devices[key] = dev
    return dev


def mode_name() -> str:
    return 'GPU' if _state['gpu'] else 'CPU'


def dtype() -> torch.dtype:
    """The float type of blobs: float32 as in Caffe, float64 for gradient checks."""
    return _state['dtype']


def set_dtype(dt: torch.dtype) -> None:
    _state['dtype'] = dt


@contextlib.contextmanager
def precision(dt: torch.dtype) -> Iterator[None]:
    """Build and run nets in another float type inside a `with` block (tests use float64)."""
    old = _state['dtype']
    _state['dtype'] = dt
    try:
        yield
    finally:
        _state['dtype'] = old


_PRECISIONS = {'fp32': None, 'float32': None, 'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16}


def _env_precision() -> Optional[torch.dtype]:
    """bf16 when the environment says CAFFE_BF16=1 (any value but empty, 0, false, no)."""
    v = os.environ.get('CAFFE_BF16', '').strip().lower()
    return torch.bfloat16 if v not in ('', '0', 'false', 'no', 'off') else None


_state['lowp'] = _env_precision()


def set_precision(name: str) -> None:
    """Choose the compute precision of nets: 'fp32' (Caffe's) or 'bf16'.

    In 'bf16', convolutions compute in bfloat16 on channels-last activations, and inner
    products too where bf16 matrix products are the fast ones (see bf16_matmuls), while
    parameters, their gradients, the losses and every `.data`/`.diff` seen from Python stay
    float32. Loss layers and Python layers get float32 inputs. The environment variable
    CAFFE_BF16=1 makes 'bf16' the starting value.
    """
    key = str(name).lower()
    if key not in _PRECISIONS:
        raise ValueError("set_precision: expected 'fp32' or 'bf16', got %r" % (name,))
    _state['lowp'] = _PRECISIONS[key]


def get_precision() -> str:
    """'bf16' or 'fp32': the compute precision set by set_precision / autocast."""
    return 'bf16' if _state['lowp'] is not None else 'fp32'


def low_precision() -> Optional[torch.dtype]:
    """The autocast dtype layers run under (bfloat16), or None for plain float32."""
    if _state['lowp'] is not None and _state['dtype'] != torch.float32:
        return None  # float64 nets (gradient checks) never compute in low precision
    return _state['lowp']


# ---- bf16 matrix products: a capability, or forced either way -----------------------------------

_GEMM_MODES = {'auto': None, '': None, '1': True, 'on': True, 'yes': True, 'true': True,
               'bf16': True, '0': False, 'off': False, 'no': False, 'false': False,
               'fp32': False}


def _gemm_mode(value) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in _GEMM_MODES:
        raise ValueError("bf16 matrix products: expected 'auto', 'on' or 'off', got %r" % (value,))
    return _GEMM_MODES[key]


_state['bf16_gemm'] = _gemm_mode(os.environ.get('CAFFE_BF16_GEMM', 'auto'))


def set_bf16_matmuls(mode) -> None:
    """Whether inner products compute in bf16 under set_precision('bf16').

    'auto' (or None, the default; CAFFE_BF16_GEMM=auto) decides by the hardware, see
    cpu_bf16_support; 'on'/True and 'off'/False force either path whatever the CPU (tests
    use this to run the AMX path on any machine). The environment variable CAFFE_BF16_GEMM
    sets the starting value.
    """
    _state['bf16_gemm'] = _gemm_mode(mode)


def cpu_bf16_support() -> Optional[str]:
    """The CPU's native bf16 dot-product instructions: 'amx' (AMX-BF16 tiles, Sapphire
    Rapids and later), 'avx512_bf16' (Cooper Lake, AMD Zen 4 and later), or None."""
    key = 'cpu_bf16'
    if key not in _state:
        kind = None
        for name, probe in (('amx', '_is_amx_tile_supported'),
                            ('avx512_bf16', '_is_avx512_bf16_supported')):
            fn = getattr(torch.cpu, probe, None)
            try:
                if fn is not None and fn():
                    kind = name
                    break
            except RuntimeError:
                pass
        _state[key] = kind
    return _state[key]


def low_precision_matmuls_pay(dev: torch.device) -> bool:
    """Whether inner products run in bf16 on `dev` under set_precision('bf16').

    Unless forced (set_bf16_matmuls), yes on GPUs (tensor cores) and on CPUs with native
    bf16 dot products (AMX or AVX512-BF16: oneDNN's bf16 GEMMs there are 3-5x faster than
    float32 ones for the fc6/fc7 shapes of the Fast R-CNN heads, measured on an AMD EPYC
    with AVX512-BF16); no on other CPUs, where oneDNN emulates bf16 arithmetic and the
    float32 GEMM is the faster one.
    """
    forced = _state['bf16_gemm']
    if forced is not None:
        return forced
    if dev.type != 'cpu':
        return True
    return cpu_bf16_support() is not None


@contextlib.contextmanager
def autocast(enabled: bool = True) -> Iterator[None]:
    """`with caffe.autocast():` runs nets in bf16 inside the block (set_precision('bf16'))."""
    old = _state['lowp']
    _state['lowp'] = torch.bfloat16 if enabled else None
    try:
        yield
    finally:
        _state['lowp'] = old


def set_random_seed(seed: int) -> None:
    """Seed the random streams of fillers and dropout, as Caffe::set_random_seed does."""
    _state['seed'] = int(seed)
    _generators.clear()
    torch.manual_seed(int(seed))


def generator(dev: Optional[torch.device] = None) -> torch.Generator:
    """A torch.Generator for `dev`, seeded from the last set_random_seed (or at random)."""
    dev = dev or device()
    key = str(dev)
    gen = _generators.get(key)
    if gen is None:
        gen = torch.Generator(device=dev)
        if _state['seed'] is None:
            gen.seed()
        else:
            gen.manual_seed(_state['seed'])
        _generators[key] = gen
    return gen


# ---- host memory ------------------------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def reuse_freed_memory() -> bool:
    """Make the C allocator keep freed memory for reuse (glibc only); True if in effect.

    Caffe allocates each blob once and reuses it every iteration. PyTorch allocates fresh
    tensors instead, and glibc serves every block above 32 MB (a VGG16 or ZF feature map, a
    layer's weight gradient) with a new mmap that the kernel must fault in page by page and
    unmaps again on free: on a CPU that costs about as much as the arithmetic on the block.
    With mmap off and the heap never trimmed, a freed block is simply reused, as Caffe's
    blobs are. Freed memory then stays with the process (its footprint is its peak).
    `import caffe` calls this unless the environment says CAFFE_MALLOC_REUSE=0.
    """
    if _state['memory_reuse']:
        return True
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, 'gnu_get_libc_version') or not hasattr(libc, 'mallopt'):
            return False
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False
    _state['memory_reuse'] = ok
    return ok


def memory_reuse_enabled() -> bool:
    return _state['memory_reuse']


if os.environ.get('CAFFE_MALLOC_REUSE', '').strip().lower() not in ('0', 'false', 'no', 'off'):
    reuse_freed_memory()
