"""`caffe.Layer`: the contract every layer keeps, built in or written in Python.

A layer is set up once (`setup`, where it reads its parameters and creates its learnable
blobs), shapes its tops from its bottoms (`reshape`), computes its tops (`forward`) and,
given its tops' diffs, its bottoms' diffs and its parameters' diffs (`backward`). Like
Caffe, backward overwrites bottom diffs (the net inserts Split layers so each bottom has
one consumer) and adds into parameter diffs (they accumulate until the solver clears
them). Users subclass this for Python layers exactly as in pycaffe.

Backward works whatever ran before it, as in Caffe: when the bottoms are not the ones the
layer's last forward saw (no forward yet, a reshaped or rewritten blob), the net first asks
the layer to rebuild its forward state from them (`refresh_for_backward`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from .blob import Blob
from .phase import Phase
from .proto import caffe_pb2


class BlobVec(list):
    """A layer's learnable blobs; Python layers may add their own with `add_blob`."""

    def add_blob(self, *shape) -> None:
        self.append(Blob(shape))


class Layer:
    """Base class of all layers; see the module docstring."""

    # Blob count constraints, checked when the net sets the layer up (None: no limit).
    exact_num_bottom: Optional[int] = None
    min_bottom: Optional[int] = None
    max_bottom: Optional[int] = None
    exact_num_top: Optional[int] = None
    min_top: Optional[int] = None
    max_top: Optional[int] = None
    # Loss layers weigh their first top 1 unless the prototxt says otherwise.
    is_loss = False
    # Whether the layer may be used in place (a top named like the bottom at its index).
    # True: Caffe computes it correctly in place (element-wise layers: ReLU, Dropout,
    # BatchNorm, Scale, ...). False: it cannot (Convolution, InnerProduct, Pooling, ...;
    # Caffe would overwrite its input while reading it, or refuses, as for AbsVal); the net
    # refuses such a prototxt, naming the layer and the blob. None (Python layers, layers
    # not classified): allowed as long as the top keeps the bottom's shape, which the net
    # checks for every in-place use once the layer is set up.
    allow_in_place: Optional[bool] = None

    # Whether backward reads state that forward left (saved inputs, masks, probabilities).
    # Layers whose backward needs only the tops' diffs and the bottoms' shapes say False,
    # and so do Python layers: their backward is theirs.
    backward_uses_forward_state = True

    def __init__(self, param: Optional[caffe_pb2.LayerParameter] = None, *args, **kwargs):
        self.layer_param = param if param is not None else caffe_pb2.LayerParameter()
        self.phase = Phase(self.layer_param.phase)
        self.blobs = BlobVec()
        self.param_propagate_down: List[bool] = []

    # ---- what pycaffe exposes -----------------------------------------------------------
    @property
    def type(self) -> str:
        return self.layer_param.type

    # ---- the contract --------------------------------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Read parameters, create learnable blobs. Called once."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Shape the tops for the bottoms' current shapes."""

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError('layer %r (%s) has no forward' % (self.layer_param.name, self.type))

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        """Default: nothing to propagate (data layers, metrics)."""

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Whether `force_backward` may make this bottom receive a gradient."""
        return True

    # ---- engine hooks (overridden by the torch-backed base) -------------------------------
    def run_forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """One forward step as Caffe's Layer::Forward: reshape, then forward."""
        self.reshape(bottom, top)
        self.forward(bottom, top)

    def run_backward(self, top, propagate_down, bottom) -> None:
        self.backward(top, propagate_down, bottom)

    def refresh_for_backward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Rebuild the state backward reads from the bottoms' current data.

        Caffe's backward reads the blobs as they are now, whatever ran before (no forward
        at all, or one on other data). The net calls this when the bottoms are not what
        this layer's last forward saw. The default reruns forward into scratch tops, so the
        net's tops keep their data; layers whose forward has side effects override it.
        """
        if not self.backward_uses_forward_state or type(self).backward is Layer.backward:
            return
        scratch = [Blob(t.shape) for t in top]
        self.reshape(bottom, scratch)
        self.forward(bottom, scratch)
