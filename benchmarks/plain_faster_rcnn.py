"""A Faster R-CNN written in plain PyTorch, for the benchmarks to time the engine against.

`PlainFasterRCNN` is an `nn.Module` with one torch op per layer of a py-faster-rcnn
prototxt (the same file the engine runs): `nn.Conv2d`, in-place `relu`, `max_pool2d(ceil_mode)`,
LRN from torch ops, `torchvision.ops.roi_pool`, `nn.Linear`, dropout, `softmax`,
`cross_entropy` with `ignore_index` and Caffe's weighted smooth-L1, computed as a person
would write them: one autograd graph per step, `loss.backward()`, `torch.optim.SGD`.

What it shares with the engine's run, so that only the engine differs:
* the py-faster-rcnn Python layers themselves (RoIDataLayer, AnchorTargetLayer,
  ProposalLayer with its NMS, ProposalTargetLayer), called with NumPy stand-ins for blobs
  (`NpBlob`) exactly as the engine calls them: the same NumPy code on the same arrays;
* the engine's initial weights (copied in) and `lr_mult`/`decay_mult` (frozen parameters
  get `requires_grad=False`, the others SGD parameter groups with Caffe's rates);
* at test time, im_detect's image preparation and box decoding (`fast_rcnn.test`).

Under bf16 the model runs in `torch.autocast('cpu', bfloat16)` with channels-last weights
and image, what PyTorch's documentation recommends for CPU training.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _sub in ('caffe-fast-rcnn/python', 'lib'):
    if os.path.join(ROOT, _sub) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, _sub))

import caffe  # noqa: E402
from caffe.layers.python_layer import PythonLayer  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

LRN = caffe_pb2.LRNParameter
POOL = caffe_pb2.PoolingParameter


class NpBlob:
    """What py-faster-rcnn's Python layers use of a blob: `.data` (a NumPy array), `.diff`,
    `.reshape(*shape)`, `.shape`."""

    def __init__(self, data: Optional[np.ndarray] = None):
        self.data = np.zeros((1,), np.float32) if data is None else data
        self.diff = None

    def reshape(self, *shape) -> None:
        shape = tuple(int(s) for s in shape)
        if tuple(self.data.shape) != shape:
            self.data = np.zeros(shape, np.float32)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def count(self) -> int:
        return int(self.data.size)


def lrn(x: torch.Tensor, p) -> torch.Tensor:
    """Caffe's LRN: across channels as torch's local_response_norm, within a channel by
    average pooling of squares over the local_size x local_size window."""
    if p.norm_region == LRN.ACROSS_CHANNELS:
        return F.local_response_norm(x, p.local_size, p.alpha, p.beta, p.k)
    pad = (p.local_size - 1) // 2
    s = F.avg_pool2d(x * x, p.local_size, 1, pad, count_include_pad=True)
    return x * (1 + p.alpha * s).pow(-p.beta)


def _caffe_reshape(x: torch.Tensor, rp) -> torch.Tensor:
    dims = [int(d) for d in rp.shape.dim]
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(shape)


def _smooth_l1(x, target, inside, outside, sigma: float) -> torch.Tensor:
    """Caffe-fast-rcnn's SmoothL1Loss: sum(out * f(in * (x - t))) / num (first axis)."""
    sigma2 = sigma * sigma
    d = x.float() - target.reshape(x.shape)
    if inside is not None:
        d = d * inside.reshape(x.shape)
    per = F.smooth_l1_loss(d, torch.zeros_like(d), reduction="none", beta=1.0 / sigma2)
    if outside is not None:
        per = per * outside.reshape(x.shape)
    return per.sum() / x.shape[0]


class PlainFasterRCNN(nn.Module):
    """See the module docstring. Built from the engine's net (its filtered layers, blob
    shapes, weights and learning-rate multipliers); Split layers become shared tensors."""

    def __init__(self, engine: caffe.Net, train: bool):
        super().__init__()
        self.ops: List[caffe_pb2.LayerParameter] = []
        self.mods = nn.ModuleDict()
        self.py: Dict[str, object] = {}
        self.alias: Dict[str, str] = {}
        self.loss_weights = {n: w for n, w in engine.blob_loss_weights.items() if w}
        self.groups: List[dict] = []
        for lp, layer in zip(engine._param.layer, engine.layers):
            if lp.type == 'Split':
                for t in lp.top:
                    self.alias[t] = lp.bottom[0]
                continue
            self.ops.append(lp)
            if lp.type in ('Convolution', 'InnerProduct'):
                self._add_module(lp, layer, engine)
            elif lp.type == 'Python':
                obj = PythonLayer.create(lp)
                bottoms = [NpBlob(engine.blobs[self._name(b)].data.copy()) for b in lp.bottom]
                tops = [NpBlob() for _ in lp.top]
                obj.setup(bottoms, tops)
                self.py[lp.name] = obj
        self.train(train)

    def _add_module(self, lp, layer, engine) -> None:
        blobs = layer.blobs
        w = blobs[0].data
        if lp.type == 'Convolution':
            cp = lp.convolution_param
            mod = nn.Conv2d(w.shape[1] * cp.group, w.shape[0], tuple(w.shape[2:]),
                            cp.stride[0] if cp.stride else 1, cp.pad[0] if cp.pad else 0,
                            groups=cp.group, bias=cp.bias_term)
        else:
            mod = nn.Linear(w.shape[1], w.shape[0], bias=lp.inner_product_param.bias_term)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(w.copy()).reshape(mod.weight.shape))
            if mod.bias is not None:
                mod.bias.copy_(torch.from_numpy(blobs[1].data.copy()))
        for i, p in enumerate([mod.weight, mod.bias][:len(blobs)]):
            spec = lp.param[i] if i < len(lp.param) else caffe_pb2.ParamSpec()
            if spec.lr_mult == 0:
                p.requires_grad_(False)
            else:
                self.groups.append({'params': [p], 'lr_mult': spec.lr_mult,
                                    'decay_mult': spec.decay_mult})
        self.mods[lp.name] = mod

    def optimizer(self, base_lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
        """SGD with Caffe's per-parameter learning rate and decay multipliers; torch's fused
        kernel (one pass per tensor, as the engine's solver) where this torch has it."""
        groups = [{'params': g['params'], 'lr': base_lr * g['lr_mult'],
                   'weight_decay': weight_decay * g['decay_mult']} for g in self.groups]
        try:
            return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)

    def _name(self, blob: str) -> str:
        """The blob a Split top stands for."""
        while blob in self.alias:
            blob = self.alias[blob]
        return blob

    def _python(self, lp, b: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        bottoms = [NpBlob(b[self._name(n)].detach().float().cpu().numpy()) for n in lp.bottom]
        tops = [NpBlob() for _ in lp.top]
        self.py[lp.name].forward(bottoms, tops)
        return [torch.from_numpy(t.data) for t in tops]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Every blob by name; the weighted losses under 'loss' (training)."""
        b = dict(inputs)
        losses = []
        for lp in self.ops:
            kind = lp.type
            xs = [b[self._name(n)] for n in lp.bottom]
            x = xs[0] if xs else None
            if kind == 'Convolution':
                ys = [self.mods[lp.name](x)]
            elif kind == 'ReLU':
                slope = lp.relu_param.negative_slope
                inplace = lp.top[0] == lp.bottom[0]
                ys = [F.leaky_relu(x, slope, inplace=inplace) if slope else F.relu(x, inplace=inplace)]
            elif kind == 'LRN':
                ys = [lrn(x, lp.lrn_param)]
            elif kind == 'Pooling':
                pp = lp.pooling_param
                pool = F.max_pool2d if pp.pool == POOL.MAX else F.avg_pool2d
                ys = [pool(x, pp.kernel_size, pp.stride, pp.pad, ceil_mode=True)]
            elif kind == 'ROIPooling':
                rp = lp.roi_pooling_param
                # torchvision's CPU roi_pool has no bf16 kernel: pool the map in float32.
                ys = [torchvision.ops.roi_pool(x.float(), xs[1], (rp.pooled_h, rp.pooled_w),
                                               rp.spatial_scale)]
            elif kind == 'InnerProduct':
                ys = [self.mods[lp.name](x.flatten(1))]
            elif kind == 'Dropout':
                ys = [F.dropout(x, lp.dropout_param.dropout_ratio, training=self.training)]
            elif kind == 'Reshape':
                ys = [_caffe_reshape(x, lp.reshape_param)]
            elif kind == 'Softmax':
                ys = [F.softmax(x, dim=1)]
            elif kind == 'SoftmaxWithLoss':
                labels = xs[1].reshape(x.shape[0], *x.shape[2:]).long()
                ignore = lp.loss_param.ignore_label if lp.loss_param.HasField('ignore_label') else -100
                ys = [F.cross_entropy(x.float(), labels, ignore_index=ignore)]
            elif kind == 'SmoothL1Loss':
                sigma = lp.smooth_l1_loss_param.sigma
                ins = xs[2] if len(xs) > 2 else None
                outs = xs[3] if len(xs) > 3 else None
                ys = [_smooth_l1(x, xs[1], ins, outs, sigma)]
            elif kind == 'Python':
                ys = self._python(lp, b)
            elif kind == 'Silence':
                ys = []
            else:
                raise SystemExit('plain Faster R-CNN: no op for layer type %s (%s)' % (kind, lp.name))
            for name, y in zip(lp.top, ys):
                b[name] = y
                if name in self.loss_weights:
                    losses.append(self.loss_weights[name] * y)
        if losses:
            total = losses[0]
            for t in losses[1:]:
                total = total + t
            b['loss'] = total
        return b


def randomize_weights(net: caffe.Net, rng: np.random.RandomState, data_std: float = 50.0) -> None:
    """He-scaled random weights (std sqrt(2 / fan_in); the first layer's divided by the
    image's std, the heads' by 10) so that scores vary and proposals rank as they would
    with trained weights; test prototxts carry no fillers (all zeros otherwise)."""
    names = list(net.params)
    for n, ps in net.params.items():
        w = ps[0].data
        std = np.sqrt(2.0 / np.prod(w.shape[1:]))
        if n == names[0]:
            std /= data_std
        if n in ('cls_score', 'bbox_pred', 'rpn_cls_score', 'rpn_bbox_pred'):
            std *= 0.1
        w[...] = rng.randn(*w.shape) * std
        if len(ps) > 1:
            ps[1].data[...] = 0


def to_channels_last(model: nn.Module, inputs: Dict[str, torch.Tensor]) -> None:
    """bf16 on CPUs: convolution weights and the image in channels-last order."""
    model.to(memory_format=torch.channels_last)
    if 'data' in inputs:
        inputs['data'] = inputs['data'].contiguous(memory_format=torch.channels_last)


def autocast_if(bf16: bool):
    import contextlib
    return torch.autocast('cpu', dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


__all__ = ['NpBlob', 'PlainFasterRCNN', 'randomize_weights', 'to_channels_last', 'autocast_if',
           'lrn']


def shapes_of(engine: caffe.Net) -> Dict[str, Sequence[int]]:
    return {n: tuple(b.shape) for n, b in engine.blobs.items()}
