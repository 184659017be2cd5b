"""caffe.draw: a picture of a net (pycaffe's draw.py, used by tools/draw_net.py).

A NetParameter becomes a pydot graph: one box per layer (labelled with its name, type
and, for Convolution/Deconvolution/Pooling, kernel size, stride and pad; coloured by
type; in-place layers green), one octagon per blob, edges bottom -> layer -> top, the
layer -> top edges labelled with the output count (Convolution, InnerProduct) or the
batch size (Data). `phase` keeps only the layers of that phase.

Rendering to an image (png, svg, pdf, ...) needs Graphviz's `dot` program, which is not
a Python package: install it with the system's package manager (e.g.
`apt-get install graphviz`). Without it, `get_pydot_graph(...).to_string()` and
`draw_net_to_file(net, 'net.raw')` (or ext='raw') still give the graph in the DOT
language, to render elsewhere.
"""
from __future__ import annotations

import shutil
from typing import Dict, Optional, Tuple

import pydot

from . import atomic_files
from .proto import caffe_pb2

__all__ = ['get_pydot_graph', 'draw_net', 'draw_net_to_file', 'get_layer_label',
           'get_edge_label', 'get_layer_lr_mult', 'choose_color_by_layertype',
           'get_pooling_types_dict']

# Node styles (Graphviz attributes), as pycaffe draws them.
LAYER_STYLE_DEFAULT = {'shape': 'record', 'fillcolor': '#6495ED', 'style': 'filled'}
NEURON_LAYER_STYLE = {'shape': 'record', 'fillcolor': '#90EE90', 'style': 'filled'}
BLOB_STYLE = {'shape': 'octagon', 'fillcolor': '#E0E0E0', 'style': 'filled'}

_LEARNING_TYPES = ('Convolution', 'Deconvolution', 'InnerProduct')


def get_pooling_types_dict() -> Dict[int, str]:
    """PoolingParameter.PoolMethod number -> name (0 -> 'MAX', ...), from the .proto."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: name for name, v in desc.values_by_name.items()}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """Label of the layer -> top edges: output count, batch size, or empty."""
    if layer.type == 'Data':
        return 'Batch ' + str(layer.data_param.batch_size)
    if layer.type in ('Convolution', 'Deconvolution'):
        return str(layer.convolution_param.num_output)
    if layer.type == 'InnerProduct':
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> Tuple[float, float]:
    """lr_mult of the weights and of the bias of a Convolution/Deconvolution/InnerProduct."""
    if layer.type not in _LEARNING_TYPES:
        raise ValueError('%s layers do not have a learning rate multiplier' % layer.type)
    specs = list(layer.param)
    if len(specs) > 2:
        raise ValueError('Could not parse the learning rate multiplier of layer %r: it has '
                         '%d param entries' % (layer.name, len(specs)))
    mults = [s.lr_mult for s in specs] + [1.0] * (2 - len(specs))
    return mults[0], mults[1]


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str,
                    display_lrm: bool = False) -> str:
    """The layer's node label: name, (type), spatial parameters, optionally lr_mult.

    Parts are separated by spaces in vertical layouts (TB, BT), where width is free,
    and by line breaks otherwise. The label is quoted so colons survive DOT parsing.
    """
    separator = ' ' if rankdir in ('TB', 'BT') else r'\n'
    parts = [layer.name]
    if layer.type == 'Pooling':
        parts.append('(%s %s)' % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        parts.append('(%s)' % layer.type)
    if layer.type in ('Convolution', 'Deconvolution', 'Pooling'):
        if layer.type == 'Pooling':
            pp = layer.pooling_param
            kernel, stride, pad = pp.kernel_size, pp.stride, pp.pad
        else:
            cp = layer.convolution_param
            kernel = cp.kernel_size[0] if len(cp.kernel_size) else 1
            stride = cp.stride[0] if len(cp.stride) else 1
            pad = cp.pad[0] if len(cp.pad) else 0
        parts.append(separator.join(['kernel size: %d' % kernel, 'stride: %d' % stride,
                                     'pad: %d' % pad]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if lrm0 or lrm1:
            parts.append('lr mult: %.1f, %.1f' % (lrm0, lrm1))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype: str) -> str:
    """Fill colour of a layer box."""
    if layertype in ('Convolution', 'Deconvolution'):
        return '#FF5050'
    if layertype == 'Pooling':
        return '#FF9900'
    if layertype == 'InnerProduct':
        return '#CC33FF'
    return '#6495ED'


def _in_phase(layer: caffe_pb2.LayerParameter, phase: int) -> bool:
    """Whether the layer's include/exclude rules keep it in `phase` (phase only).

    A rule that names no phase applies to every phase, as in Caffe's NetStateRule.
    """
    if len(layer.include) and len(layer.exclude):
        raise ValueError('layer ' + layer.name + ' has both include and exclude specified.')
    if len(layer.include):
        return any(not r.HasField('phase') or r.phase == phase for r in layer.include)
    return not any(r.HasField('phase') and r.phase == phase for r in layer.exclude)


def get_pydot_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
                    phase: Optional[int] = None, display_lrm: bool = False) -> pydot.Dot:
    """The net as a pydot digraph (see the module docstring).

    rankdir: Graphviz layout direction ('LR', 'TB', 'BT', 'RL'); phase: caffe.TRAIN or
    caffe.TEST to draw only that phase's layers, None for all.
    """
    graph = pydot.Dot(caffe_net.name if caffe_net.name else 'Net', graph_type='digraph',
                      rankdir=rankdir)
    nodes: Dict[str, pydot.Node] = {}
    edges = []
    if phase is not None:
        phase = int(phase)
    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        key = '%s_%s' % (layer.name, layer.type)
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1
                    and layer.bottom[0] == layer.top[0])
        if in_place:
            nodes[key] = pydot.Node(label, **NEURON_LAYER_STYLE)
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
            nodes[key] = pydot.Node(label, **style)
        for bottom in layer.bottom:
            nodes[bottom + '_blob'] = pydot.Node('%s' % bottom, **BLOB_STYLE)
            edges.append((bottom + '_blob', key, '""'))
        for top in layer.top:
            nodes[top + '_blob'] = pydot.Node('%s' % top)
            edges.append((key, top + '_blob', get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net: caffe_pb2.NetParameter, rankdir: str, ext: str = 'png',
             phase: Optional[int] = None, display_lrm: bool = False) -> bytes:
    """The net drawn in format `ext` (png, svg, pdf, ... via Graphviz; 'raw' is the DOT
    text itself and needs no Graphviz)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext == 'raw':
        return graph.to_string().encode('utf-8')
    if shutil.which('dot') is None:
        raise RuntimeError("drawing a net as '%s' needs Graphviz's `dot` program, which is not "
                           "installed (e.g. apt-get install graphviz); use the 'raw' format "
                           "for the DOT text without it" % ext)
    return graph.create(format=ext)


def draw_net_to_file(caffe_net: caffe_pb2.NetParameter, filename: str, rankdir: str = 'LR',
                     phase: Optional[int] = None, display_lrm: bool = False) -> None:
    """Draw the net into `filename`, in the format its extension names ('.raw': DOT text)."""
    filename = str(filename)
    ext = filename[filename.rfind('.') + 1:]
    image = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    atomic_files.write_bytes(filename, image)
