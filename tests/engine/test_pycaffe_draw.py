"""caffe.draw: nets as pydot graphs and DOT text.

BVLC's python/caffe/test/test_draw.py draws every net prototxt of the source tree; here
every prototxt under models/ (when present) and a few nets built for the purpose are
drawn to DOT text, which needs no Graphviz binary, and the labels, styles, edges and
phase filtering are checked. Rendering to png is checked up to the call into Graphviz,
which the test replaces, so the suite does not depend on `dot` being installed.
"""
import os
import shutil

import pydot
import pytest
from google.protobuf import text_format

import caffe
import caffe.draw
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NET = """
name: "drawme"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "x" batch_size: 64 } include { phase: TRAIN } }
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } }
        include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "up" top: "fc"
        param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"
        exclude { phase: TEST } }
"""


def _net():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def _node_names(graph):
    return {n.get_name() for n in graph.get_nodes()}


def test_graph_nodes_edges_and_labels():
    graph = caffe.draw.get_pydot_graph(_net(), 'LR')
    assert graph.get_name() == 'drawme' and graph.get_rankdir() == 'LR'
    names = _node_names(graph)
    assert '"conv1\\n(Convolution)\\nkernel size: 3\\nstride: 2\\npad: 1"' in names
    assert '"pool1\\n(Pooling AVE)\\nkernel size: 2\\nstride: 2\\npad: 0"' in names
    assert '"up\\n(Deconvolution)\\nkernel size: 4\\nstride: 2\\npad: 0"' in names
    assert '"fc\\n(InnerProduct)"' in names and '"relu1\\n(ReLU)"' in names
    for blob in ('data', 'label', 'conv1', 'pool1', 'up', 'fc', 'loss'):
        assert blob in names
    text = graph.to_string()
    # Edge labels: output counts and the Data layer's batch size.
    assert '"conv1\\n(Convolution)\\nkernel size: 3\\nstride: 2\\npad: 1" -> conv1 [label=16]' in text
    assert '"data\\n(Data)" -> data [label="Batch 64"]' in text
    assert '"fc\\n(InnerProduct)" -> fc [label=10]' in text
    assert 'conv1 -> "relu1\\n(ReLU)" [label=""]' in text
    # Styles: in-place layers green, conv red, pooling orange, ip purple, blobs octagons.
    style = {n.get_name(): n.get_attributes() for n in graph.get_nodes()}
    assert style['"relu1\\n(ReLU)"']['fillcolor'] == '#90EE90'
    assert style['"conv1\\n(Convolution)\\nkernel size: 3\\nstride: 2\\npad: 1"']['fillcolor'] == '#FF5050'
    assert style['"pool1\\n(Pooling AVE)\\nkernel size: 2\\nstride: 2\\npad: 0"']['fillcolor'] == '#FF9900'
    assert style['"fc\\n(InnerProduct)"']['fillcolor'] == '#CC33FF'
    assert style['"loss\\n(SoftmaxWithLoss)"']['fillcolor'] == '#6495ED'
    assert style['pool1']['shape'] == 'octagon'
    # The module-level style was not mutated by drawing.
    assert caffe.draw.LAYER_STYLE_DEFAULT['fillcolor'] == '#6495ED'


def test_vertical_layout_uses_spaces_and_edges_can_be_unlabelled():
    graph = caffe.draw.get_pydot_graph(_net(), 'TB', label_edges=False)
    assert '"conv1 (Convolution) kernel size: 3 stride: 2 pad: 1"' in _node_names(graph)
    assert 'label=16' not in graph.to_string()


def test_phase_filtering():
    all_layers = caffe.draw.get_pydot_graph(_net(), 'LR').to_string()
    train = caffe.draw.get_pydot_graph(_net(), 'LR', phase=caffe.TRAIN).to_string()
    test = caffe.draw.get_pydot_graph(_net(), 'LR', phase=caffe_pb2.TEST).to_string()
    assert '(Data)' in all_layers and '(Input)' in all_layers
    assert '(Data)' in train and '(Input)' not in train and '(SoftmaxWithLoss)' in train
    assert '(Data)' not in test and '(Input)' in test and '(SoftmaxWithLoss)' not in test
    bad = _net()
    bad.layer[2].include.add(phase=caffe_pb2.TRAIN)
    bad.layer[2].exclude.add(phase=caffe_pb2.TEST)
    with pytest.raises(ValueError, match='conv1 has both include and exclude'):
        caffe.draw.get_pydot_graph(bad, 'LR', phase=caffe.TRAIN)


def test_learning_rate_multipliers():
    net = _net()
    assert caffe.draw.get_layer_lr_mult(net.layer[2]) == (1, 2)
    assert caffe.draw.get_layer_lr_mult(net.layer[5]) == (1, 1)  # no param entries
    with pytest.raises(ValueError, match='ReLU layers do not have'):
        caffe.draw.get_layer_lr_mult(net.layer[3])
    label = caffe.draw.get_layer_label(net.layer[2], 'LR', display_lrm=True)
    assert label.endswith('\\nlr mult: 1.0, 2.0"')
    # All-zero multipliers are not shown.
    assert 'lr mult' not in caffe.draw.get_layer_label(net.layer[6], 'LR', display_lrm=True)


def test_draw_raw_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    raw = caffe.draw.draw_net(_net(), 'LR', ext='raw')
    assert raw.startswith(b'digraph drawme {')
    out = tmp_path / 'net.raw'
    caffe.draw.draw_net_to_file(_net(), str(out), 'TB', phase=caffe.TEST)
    text = out.read_text()
    assert 'rankdir=TB' in text and '(Data)' not in text


def test_image_formats_go_through_graphviz(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(pydot.Dot, 'create',
                        lambda self, prog=None, format='ps', encoding=None: calls.append(format) or b'IMG')
    caffe.draw.draw_net_to_file(_net(), str(tmp_path / 'net.png'))
    assert calls == ['png'] and (tmp_path / 'net.png').read_bytes() == b'IMG'
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(RuntimeError, match='Graphviz'):
        caffe.draw.draw_net(_net(), 'LR', ext='svg')


def test_netspec_nets_and_repository_prototxts_draw():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=[3, 5], stride=[1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2)
    text = caffe.draw.get_pydot_graph(n.to_proto(), 'LR').to_string()
    assert 'digraph Net {' in text  # unnamed nets are called Net
    assert '"conv\\n(Convolution)\\nkernel size: 3\\nstride: 1\\npad: 0"' in text
    drawn = 0
    models = os.path.join(ROOT, 'models')
    for cwd, _, files in os.walk(models):
        for f in files:
            if not f.endswith('.prototxt') or 'solver' in f:
                continue
            net = caffe_pb2.NetParameter()
            with open(os.path.join(cwd, f)) as fh:
                text_format.Merge(fh.read(), net)
            for phase in (None, caffe.TRAIN, caffe.TEST):
                graph = caffe.draw.get_pydot_graph(net, 'LR', phase=phase)
                layer_nodes = [n for n in graph.get_nodes() if '\\n(' in n.get_name()]
                assert len(layer_nodes) <= len(net.layer)
                assert phase is not None or len(layer_nodes) == len(net.layer)
            drawn += 1
    if os.path.isdir(models):
        assert drawn > 0
