"""Which layers a net keeps for a given phase, level and stages (Caffe's FilterNet).

A layer's `include` rules keep it only if one of them matches the net's state; its
`exclude` rules drop it if one matches; a layer may have either, not both. A rule matches
when its phase (if set) equals the state's, the level lies within [min_level, max_level],
every `stage` is among the state's stages and no `not_stage` is.
"""
from __future__ import annotations

from .errors import NetError
from .proto import caffe_pb2


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    if rule.HasField('phase') and rule.phase != state.phase:
        return False
    if rule.HasField('min_level') and state.level < rule.min_level:
        return False
    if rule.HasField('max_level') and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(net: caffe_pb2.NetParameter, state: caffe_pb2.NetState) -> caffe_pb2.NetParameter:
    """A copy of `net` holding only the layers that `state` selects."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError('layer %r specifies both include and exclude rules; use one'
                           % layer.name)
        if len(layer.include):
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out
