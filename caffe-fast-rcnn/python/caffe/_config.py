"""Process-wide engine settings: device (Caffe's mode), float type, random seed.

Caffe keeps these in a singleton (`Caffe::Get()`); pycaffe exposes them as
`set_mode_cpu`, `set_mode_gpu`, `set_device` and `set_random_seed`. Everything that
allocates tensors asks here for the device and dtype, so a net built after
`set_mode_gpu()` lives on the GPU, and tests can build float64 nets for gradient checks.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

_state = {
    'gpu': False,
    'device_id': 0,
    'dtype': torch.float32,
    'seed': None,
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


def device() -> torch.device:
    """The torch device for new blobs."""
    if not _state['gpu']:
        return torch.device('cpu')
    if torch.cuda.is_available():
        return torch.device('cuda', _state['device_id'])
    return torch.device('mps')


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
