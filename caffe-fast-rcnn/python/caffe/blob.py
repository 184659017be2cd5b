"""Blob: Caffe's n-d array with a value (`data`) and a gradient (`diff`).

Python code (data layers, py-faster-rcnn's layers, users' scripts) reads and writes
`blob.data` and `blob.diff` as NumPy arrays, in place; the engine's layers compute on
torch tensors. On the CPU both are one memory (`Tensor.numpy()` shares it). On a GPU the
blob keeps a host mirror and, like Caffe's SyncedMemory, remembers which side is newest:
touching `.data` from Python brings the host copy up to date and marks it as the head,
and the next layer that asks for the tensor uploads it again.

Parameter gradients accumulate (Caffe's semantics) through `accumulate_diff_mm`, a GEMM
with beta = 1 straight into the diff, or `accumulate_diff`: on the CPU a fresh weight-sized
buffer per iteration costs a page fault per 4 KB, as slow as the arithmetic on it (unless
freed memory is reused, see _config.reuse_freed_memory), so a fresh gradient replaces a
cleared diff only where no NumPy view of the old buffer was handed out.

Clearing a gradient (`clear_diff`, what the solver does before every iteration) is lazy:
the buffer is only marked as zero, and the first gradient written after that overwrites
it (a GEMM with beta = 0, a copy) instead of adding into zeros written just before. For
VGG16 that saves a 540 MB memset per iteration, a third of the solver's own time. Anyone
who looks at the gradient first (Python's `.diff`, a layer's `diff_tensor`) gets the zeros
written then, so the marking is invisible. `defer_diff` generalises it: a fused solver
update leaves in the diff what Caffe leaves there (the update step), computed only if
somebody reads it before the next gradient replaces it.

Under `caffe.set_precision('bf16')` a blob may hold a bfloat16 tensor (a layer's output
computed in bf16, or its gradient); Python still sees float32 through a host mirror, as for
a GPU blob.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import _config

_HOST, _DEVICE, _SYNCED = 'host', 'device', 'synced'


_LOW_PRECISION = (torch.bfloat16, torch.float16)


class _Synced:
    """One array (value or gradient) with a device tensor and, off the CPU or in bf16, a host
    mirror (NumPy has no bfloat16: Python sees a float32 copy)."""

    __slots__ = ('tensor', 'host', 'head', 'pending', 'shared')

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.host: Optional[torch.Tensor] = None
        self.head = _DEVICE
        # Whether Python was handed a NumPy array sharing this tensor's memory: then the
        # tensor must stay the one it holds (values are copied in, never swapped).
        self.shared = False
        # What the values are meant to be but not written yet: a function that writes
        # them into the tensor (see Blob.clear_diff and Blob.defer_diff).
        self.pending: Optional[Callable[[torch.Tensor], object]] = None

    def defer(self, fill: Callable[[torch.Tensor], object]) -> None:
        self.pending = fill
        self.head = _DEVICE

    def drop_pending(self) -> bool:
        """Whether values were pending; the caller now overwrites all of them."""
        pending, self.pending = self.pending, None
        return pending is not None

    def device_tensor(self) -> torch.Tensor:
        if self.pending is not None:
            fill, self.pending = self.pending, None
            fill(self.tensor)
        if self.head == _HOST:
            self.tensor.copy_(self.host.view(self.tensor.shape))
            self.head = _SYNCED
        return self.tensor

    def numpy(self) -> np.ndarray:
        t = self.device_tensor() if self.pending is not None else self.tensor
        low = t.dtype in _LOW_PRECISION
        if t.device.type == 'cpu' and not low:
            self.shared = True
            return t.numpy()
        if self.host is None or self.host.shape != t.shape:
            self.host = torch.empty(t.shape, dtype=torch.float32 if low else t.dtype)
            self.head = _DEVICE if self.head != _HOST else self.head
        if self.head == _DEVICE:
            self.host.copy_(t)
        self.head = _HOST  # Python may write into it: the host copy is now the truth
        return self.host.numpy()

    def set(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.head = _DEVICE
        self.pending = None
        self.shared = False


def _as_shape(args: Sequence) -> tuple:
    if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
        args = tuple(args[0])
    shape = tuple(int(a) for a in args)
    if any(d < 0 for d in shape):
        raise ValueError('blob dimensions must be non-negative, got %s' % (shape,))
    return shape


class Blob:
    """A named array of the net with its gradient; see the module docstring."""

    def __init__(self, shape: Sequence[int] = (), dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device] = None):
        self._dtype = dtype or _config.dtype()
        self._device = device or _config.device()
        self._data = _Synced(torch.zeros(tuple(shape), dtype=self._dtype, device=self._device))
        self._diff: Optional[_Synced] = None
        # Bumped whenever Python is handed the value array (it may write into it): the net
        # compares it with what a layer's forward saw to know whether backward can reuse
        # that forward's state (see Net._stale).
        self.data_version = 0

    # ---- shape -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self._data.tensor.shape)

    def reshape(self, *shape) -> None:
        """Give the blob a new shape; keeps the values when the element count is unchanged.

        A new element count gives zeros, as Caffe's fresh memory reads, written lazily:
        most blobs are reshaped by the layer about to overwrite them (a top whose input
        size changed, every iteration with py-faster-rcnn's varying image sizes), and
        writing zeros there first would be a wasted pass over every such blob."""
        shape = _as_shape(shape)
        if shape == self.shape:
            return
        if self._data.tensor.numel() == int(np.prod(shape, dtype=np.int64)):
            self._data.set(self._data.device_tensor().reshape(shape))
        else:
            self._data.set(torch.empty(shape, dtype=self._dtype, device=self._device))
            self._data.defer(torch.Tensor.zero_)
        self._diff = None

    def reshape_like(self, other: 'Blob') -> None:
        self.reshape(*other.shape)

    @property
    def count(self) -> int:
        return int(self._data.tensor.numel())

    def _legacy(self, axis: int) -> int:
        """Caffe's LegacyShape: axes a blob lacks count as 1 at the end ((9, 12) is 9x12x1x1)."""
        shape = self.shape
        if len(shape) > 4:
            raise ValueError('num/channels/height/width need a blob of at most 4 axes, '
                             'this one has shape %s' % (shape,))
        return shape[axis] if axis < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    # ---- NumPy views for Python code ----------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        self.data_version += 1
        return self._data.numpy()

    @data.setter
    def data(self, value) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._diff_synced().numpy()

    @diff.setter
    def diff(self, value) -> None:
        self.diff[...] = value

    # ---- tensors for the engine ---------------------------------------------------------
    @property
    def tensor(self) -> torch.Tensor:
        """The value as a device tensor (synchronised from the host if Python wrote it)."""
        return self._data.device_tensor()

    def _keep_dtype(self, t: torch.Tensor) -> bool:
        """A bf16 result stays bf16 while nets compute in bf16 (float32 blobs only)."""
        return (t.dtype in _LOW_PRECISION and self._dtype == torch.float32
                and _config.low_precision() is not None)

    def set_tensor(self, t: torch.Tensor) -> None:
        """Make `t` the blob's value (a layer's output); its shape becomes the blob's."""
        if t.dtype != self._dtype and not self._keep_dtype(t):
            t = t.to(self._dtype)
        old = self._data.tensor
        self._data.set(t)
        if self._diff is not None and self._diff.tensor.shape != t.shape:
            self._diff = None
        del old

    def _diff_synced(self) -> _Synced:
        d = self._diff
        if d is None or d.tensor.shape != self._data.tensor.shape:
            d = self._diff = _Synced(torch.zeros(self._data.tensor.shape, dtype=self._dtype,
                                                 device=self._device))
        return d

    @property
    def diff_tensor(self) -> torch.Tensor:
        """The gradient as a device tensor, allocated (zero) on first use as in Caffe."""
        return self._diff_synced().device_tensor()

    def set_diff_tensor(self, t: torch.Tensor) -> None:
        """Make `t` the gradient (a layer's bottom diff: Caffe's backward overwrites it)."""
        if t.dtype != self._dtype and not self._keep_dtype(t):
            t = t.to(self._dtype)
        if tuple(t.shape) != self.shape:
            t = t.reshape(self.shape)
        if self._diff is None:
            self._diff = _Synced(t)
        else:
            self._diff.set(t)

    # ---- parameter gradients: Caffe accumulates them until the solver clears them ----------
    def _has_diff(self) -> bool:
        d = self._diff
        return d is not None and d.tensor.shape == self._data.tensor.shape

    def clear_diff(self) -> None:
        """diff = 0, written lazily: see the module docstring."""
        if self._has_diff():
            self._diff.defer(torch.Tensor.zero_)

    def defer_diff(self, fill: Callable[[torch.Tensor], object]) -> None:
        """Let `fill(tensor)` write the diff if anybody reads it before the next gradient
        (or clear) replaces it; the inputs `fill` reads must stay unchanged until then."""
        self._diff_synced().defer(fill)

    def _pending_diff(self) -> Optional[torch.Tensor]:
        """The gradient buffer if its values are pending, for a caller that overwrites
        them all (a cleared gradient's zeros need not be written first)."""
        d = self._diff
        if self._has_diff() and d.pending is torch.Tensor.zero_ and d.drop_pending():
            return d.tensor
        return None

    def accumulate_diff(self, g: torch.Tensor, take: bool = False) -> None:
        """diff += g. When `take` says g is a fresh tensor nobody else holds, a blob whose
        gradient was never made, or was cleared and never handed to Python as a NumPy view,
        takes g itself (no zero buffer to allocate and add into, no copy into the old one:
        one weight-sized pass less per parameter and step); otherwise g is copied into a
        cleared buffer (NumPy views of `.diff` stay valid) or added."""
        if tuple(g.shape) != self.shape:
            g = g.reshape(self.shape)
        if take and g.dtype == self._dtype and g.device == self._device and g.is_contiguous():
            d = self._diff
            if not self._has_diff() or (d.pending is torch.Tensor.zero_ and not d.shared):
                self.set_diff_tensor(g)
                return
        t = self._pending_diff()
        if t is not None:
            t.copy_(g)
        else:
            self.diff_tensor.add_(g)

    def accumulate_diff_mm(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """diff += a @ b, accumulated by the GEMM itself (beta = 1, as Caffe's gemm into the
        weight diff; beta = 0 into a cleared one): no weight-sized temporary is made, and
        none of its page faults paid."""
        m, n = a.shape[0], b.shape[1]
        if not self._has_diff():
            t = torch.empty(self._data.tensor.shape, dtype=self._dtype, device=self._device)
            if t.dtype == a.dtype == b.dtype and t.numel() == m * n:
                torch.mm(a, b, out=t.view(m, n))
                self.set_diff_tensor(t)
                return
        t = self._diff_synced().tensor
        if not (t.dtype == a.dtype == b.dtype and t.is_contiguous() and t.numel() == m * n):
            # Another float type (a bf16 product into a float32 gradient): one contiguous
            # product, then a cast into the gradient.
            self.accumulate_diff(a @ b)
        elif self._pending_diff() is not None:
            torch.mm(a, b, out=t.view(m, n))
        else:
            self.diff_tensor.view(m, n).addmm_(a, b)

    def share_data(self, other: 'Blob') -> None:
        """Use `other`'s value storage (Caffe's ShareData)."""
        self._data = other._data

    def share_diff(self, other: 'Blob') -> None:
        other._diff_synced()
        self._diff = other._diff

    def to(self, device: torch.device) -> None:
        """Move value and gradient to another device (set_mode_gpu after construction)."""
        self._device = device
        self._data.set(self._data.device_tensor().to(device))
        self._data.host = None
        if self._diff is not None:
            self._diff.set(self._diff.device_tensor().to(device))
            self._diff.host = None

    def __repr__(self) -> str:
        return 'Blob(shape=%s)' % (self.shape,)
