"""Caffe's InsertSplits: give every consumer of a blob its own copy through a Split layer.

In Caffe each layer overwrites its bottoms' diffs during backward. A blob read by several
layers would lose all but one gradient, so Caffe rewrites the net: a Split layer after the
producer copies the blob into `<blob>_<producer>_<top index>_split_<k>` blobs, one per
consumer, and sums their diffs on the way back. The names are visible to users (they are
in `net.blobs` and in the fixtures a real Caffe writes), so they follow Caffe exactly; a
net-level input counts as produced by a layer named "input". A top used as a loss (a
non-zero loss_weight) counts as one more consumer.
"""
from __future__ import annotations

from .proto import caffe_pb2


def split_layer_name(layer_name: str, blob_name: str, blob_idx: int) -> str:
    return '%s_%s_%d_split' % (blob_name, layer_name, blob_idx)


def split_blob_name(layer_name: str, blob_name: str, blob_idx: int, split_idx: int) -> str:
    return '%s_%s_%d_split_%d' % (blob_name, layer_name, blob_idx, split_idx)


def _split_layer(layer_name, blob_name, blob_idx, count, loss_weight):
    p = caffe_pb2.LayerParameter()
    p.name = split_layer_name(layer_name, blob_name, blob_idx)
    p.type = 'Split'
    p.bottom.append(blob_name)
    for k in range(count):
        p.top.append(split_blob_name(layer_name, blob_name, blob_idx, k))
        if loss_weight:
            p.loss_weight.append(loss_weight if k == 0 else 0.0)
    return p


def insert_splits(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of `net` with Split layers where a blob has more than one consumer."""
    last_top = {}          # blob name -> (layer index or -1 for net inputs, top index)
    source_of = {}         # (layer index, bottom index) -> (producer layer, top index)
    uses = {}              # (producer layer, top index) -> number of consumers
    loss_weights = {}      # (producer layer, top index) -> loss weight
    for i, name in enumerate(net.input):
        last_top[name] = (-1, i)
    for li, layer in enumerate(net.layer):
        for bi, name in enumerate(layer.bottom):
            if name not in last_top:
                continue  # the net reports the missing bottom with the layer's name
            src = last_top[name]
            source_of[(li, bi)] = src
            uses[src] = uses.get(src, 0) + 1
        for ti, name in enumerate(layer.top):
            last_top[name] = (li, ti)
        for ti in range(min(len(layer.loss_weight), len(layer.top))):
            src = last_top[layer.top[ti]]
            loss_weights[src] = layer.loss_weight[ti]
            if layer.loss_weight[ti]:
                uses[src] = uses.get(src, 0) + 1

    def producer_name(li):
        return 'input' if li == -1 else net.layer[li].name

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    next_split = {}
    for i, name in enumerate(net.input):
        n = uses.get((-1, i), 0)
        if n > 1:
            out.layer.add().CopyFrom(_split_layer('input', name, i, n, 0.0))
    for li, layer in enumerate(net.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for bi, name in enumerate(layer.bottom):
            src = source_of.get((li, bi))
            if src is not None and uses.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                new.bottom[bi] = split_blob_name(producer_name(src[0]), name, src[1], k)
        for ti, name in enumerate(layer.top):
            n = uses.get((li, ti), 0)
            if n > 1:
                weight = loss_weights.get((li, ti), 0.0)
                out.layer.add().CopyFrom(_split_layer(layer.name, name, ti, n, weight))
                if weight:
                    # The split's first top now carries the loss; consumers start at _1.
                    new.ClearField('loss_weight')
                    next_split[(li, ti)] = next_split.get((li, ti), 0) + 1
    return out
