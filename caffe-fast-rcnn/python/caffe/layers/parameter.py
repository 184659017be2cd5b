"""Parameter: a learnable blob offered to the net as a top.

Caffe's ParameterLayer has no bottoms and one learnable blob shaped by
`parameter_param.shape`; its top shares the blob's data (and, in Caffe, its diff), so a
consumer's gradient for the top is the parameter's gradient. It lets a net learn a tensor
that is not tied to a particular layer's weights (a learned bias image, an embedding
table fed to Python layers, ...).

Here the top shares the blob's storage, and backward adds the top's diff into the
parameter's diff: the engine's parameter diffs accumulate until the solver clears them,
which, with one clearing per iteration, is what Caffe's shared diff amounts to. The blob
starts at zero (Caffe has no filler for it either), unless the prototxt or a caffemodel
supplies its values.
"""
from __future__ import annotations

from ..blob import Blob
from ..errors import ShapeError
from ..layer import Layer
from ._shapes import shape_string
from . import register


@register('Parameter')
class Parameter(Layer):
    backward_uses_forward_state = False
    """top = the layer's one learnable blob; see the module docstring."""
    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        name = self.layer_param.name
        shape = tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise ShapeError('layer %r (Parameter): shape dimensions must be non-negative, got %s'
                             % (name, shape))
        if len(self.blobs):
            # Caffe: "Skipping parameter initialization" (the blob came with the net). Its
            # forward then shares the blob with a top of the declared shape, which needs the
            # same shape.
            if len(self.blobs) != 1 or tuple(self.blobs[0].shape) != shape:
                raise ShapeError('layer %r (Parameter): the net gives %d blob(s) of shape %s; '
                                 'parameter_param.shape is %s'
                                 % (name, len(self.blobs),
                                    ', '.join(shape_string(b.shape) for b in self.blobs),
                                    shape_string(shape)))
        else:
            self.blobs.append(Blob(shape))
        top[0].reshape(*shape)

    def forward(self, bottom, top):
        top[0].set_tensor(self.blobs[0].tensor)

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down and self.param_propagate_down[0]:
            self.blobs[0].accumulate_diff(top[0].diff_tensor)
