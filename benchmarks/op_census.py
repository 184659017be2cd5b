"""Count what a training step moves through memory, op by op: a load-independent profile.

Wall-clock time on a shared machine says little; what a step *does* does not depend on
the load. `census(step)` runs `step()` once under a TorchDispatchMode that sees every ATen
call (autograd's backward included) and sorts the ones that only move values:

* cast    - a copy into another float type (float32 <-> bf16), e.g. autocast's weight casts;
* layout  - a copy into another memory order (NCHW <-> channels-last);
* copy    - a copy in the same type and order (clone, copy_, cat);
* fill    - zero_/fill_ (fresh gradient buffers);
* eltwise - add/mul/where/... passes (accumulating gradients, masks, sums of diffs).

For each: the number of calls and the megabytes read plus written (elements times the
sizes of the types read and written). Compute ops (convolutions, matrix products, pooling,
...) are counted as calls only. The engine's per-layer `torch.autograd.grad` calls are
counted too (plain PyTorch makes one backward call per step).

    python benchmarks/bench_engine.py --ops [--bf16] [--nets vgg16]
"""
from __future__ import annotations

import collections
from typing import Callable, Dict, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_COPIES = {'_to_copy', 'copy_', 'clone', 'cat', 'contiguous', '_copy_from'}
_FILLS = {'zero_', 'fill_', 'zeros_like', 'zeros', 'new_zeros', 'full_like', 'ones_like'}
_ELTWISE = {'add', 'add_', 'mul', 'mul_', 'sub', 'sub_', 'div', 'div_', 'where', 'masked_fill',
            'masked_fill_', 'addcmul_', 'sum', 'threshold_backward', 'neg', 'sign', 'abs'}
_COMPUTE = {'convolution', 'convolution_backward', 'mm', 'addmm', 'bmm', 'linear',
            'max_pool2d_with_indices', 'max_pool2d_with_indices_backward', 'avg_pool2d',
            'avg_pool2d_backward', 'mkldnn_convolution', '_softmax', '_softmax_backward_data'}


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _first_tensor(args) -> torch.Tensor:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    return b
    return None


class _Census(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()
        self.mbytes = collections.Counter()
        self.compute = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        src = _first_tensor(args)
        dst = out if isinstance(out, torch.Tensor) else _first_tensor(out if isinstance(out, (list, tuple)) else ())
        if name in _COMPUTE:
            self.compute[name] += 1
            return out
        if src is None or dst is None:
            return out
        if name in _COPIES:
            if name == 'copy_' and len(args) > 1 and isinstance(args[1], torch.Tensor):
                src, dst = args[1], args[0]
            if src.dtype != dst.dtype:
                kind = 'cast'
            elif _channels_last(src) != _channels_last(dst) and src.dim() == 4 and src.numel() > 1:
                kind = 'layout'
            else:
                kind = 'copy'
            nbytes = dst.numel() * (src.element_size() + dst.element_size())
        elif name in _FILLS:
            kind, nbytes = 'fill', dst.numel() * dst.element_size()
        elif name in _ELTWISE:
            ins = [a for a in args if isinstance(a, torch.Tensor)]
            kind = 'eltwise'
            nbytes = sum(a.numel() * a.element_size() for a in ins) + dst.numel() * dst.element_size()
        else:
            return out
        self.calls[kind] += 1
        self.mbytes[kind] += nbytes / 1e6
        return out


def census(step: Callable[[], object]) -> Dict[str, object]:
    """Run `step()` once and return {'calls': {kind: n}, 'mb': {kind: MB}, 'compute':
    {op: n}, 'autograd_calls': n}."""
    grad, counter = torch.autograd.grad, [0]

    def counting_grad(*a, **k):
        counter[0] += 1
        return grad(*a, **k)

    torch.autograd.grad = counting_grad
    mode = _Census()
    try:
        with mode:
            step()
    finally:
        torch.autograd.grad = grad
    return {'calls': dict(mode.calls), 'mb': dict(mode.mbytes), 'compute': dict(mode.compute),
            'autograd_calls': counter[0]}


KINDS: Tuple[str, ...] = ('cast', 'layout', 'copy', 'fill', 'eltwise')


def format_rows(engine: Dict[str, object], plain: Dict[str, object]) -> str:
    """The two censuses side by side, one line per kind."""
    lines = ['    %-8s %18s %18s' % ('moved', 'engine calls / MB', 'plain calls / MB')]
    tot_e = tot_p = 0.0
    for k in KINDS:
        ce, cp = engine['calls'].get(k, 0), plain['calls'].get(k, 0)
        me, mp = engine['mb'].get(k, 0.0), plain['mb'].get(k, 0.0)
        tot_e += me
        tot_p += mp
        lines.append('    %-8s %7d / %8.0f %7d / %8.0f' % (k, ce, me, cp, mp))
    lines.append('    %-8s %7s   %8.0f %7s   %8.0f' % ('total', '', tot_e, '', tot_p))
    lines.append('    autograd.grad calls: engine %d, plain %s (one loss.backward())'
                 % (engine['autograd_calls'], 'n/a'))
    ce, cp = engine['compute'], plain['compute']
    lines.append('    compute ops: engine %s' % ', '.join('%s %d' % kv for kv in sorted(ce.items())))
    lines.append('                 plain  %s' % ', '.join('%s %d' % kv for kv in sorted(cp.items())))
    return '\n'.join(lines)
