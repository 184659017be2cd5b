"""Reading the `param_str` of py-faster-rcnn's Python layers (a YAML mapping)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

import yaml


class _Loader(yaml.SafeLoader):
    """safe_load plus `!!python/tuple`, which py-faster-rcnn's COCO prototxts use
    ("'scales': !!python/tuple [4, 8, 16, 32]"); it builds a tuple, nothing else."""


_Loader.add_constructor('tag:yaml.org,2002:python/tuple',
                        lambda loader, node: tuple(loader.construct_sequence(node)))


def layer_label(layer: Any) -> str:
    """"ProposalLayer 'proposal'": the class and, when the net gave it one, the layer name."""
    lp = getattr(layer, 'layer_param', None)
    name = getattr(lp, 'name', '') if lp is not None else ''
    return "%s '%s'" % (type(layer).__name__, name) if name else type(layer).__name__


def layer_params(layer: Any, allowed: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """The layer's param_str as a dict; a clear error naming the layer if it is not a YAML
    mapping or, given `allowed`, if it has a key the layer does not read (a misspelt
    'scale' would otherwise silently leave the default anchors)."""
    text = getattr(layer, 'param_str_', None) or getattr(layer, 'param_str', '') or ''
    try:
        value = yaml.load(text, Loader=_Loader) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ValueError('%s: param_str %r is not valid YAML: %s' % (layer_label(layer), text, e)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('%s: param_str must be a mapping like "\'feat_stride\': 16", got %r'
                         % (layer_label(layer), text))
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in set(allowed))
        if unknown:
            raise ValueError('%s: param_str has unknown key(s) %s; the layer reads %s'
                             % (layer_label(layer), ', '.join(repr(k) for k in unknown),
                                ', '.join(repr(k) for k in sorted(allowed))))
    return value


def anchor_params(layer: Any, extra: Iterable[str] = ()):
    """(feat_stride, base anchors) from an RPN layer's param_str: 'feat_stride' (required),
    'scales' (default 8, 16, 32) and 'ratios' (default 0.5, 1, 2), plus the layer's `extra`
    keys."""
    import numpy as np
    from rpn.generate_anchors import generate_anchors
    params = layer_params(layer, ('feat_stride', 'scales', 'ratios') + tuple(extra))
    if 'feat_stride' not in params:
        raise ValueError("%s: param_str needs 'feat_stride'" % layer_label(layer))
    try:
        feat_stride = int(params['feat_stride'])
        scales = np.asarray(params.get('scales', (8, 16, 32)), dtype=np.float64).reshape(-1)
        ratios = np.asarray(params.get('ratios', (0.5, 1, 2)), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError("%s: param_str needs a number for 'feat_stride' and lists of numbers "
                         "for 'scales' and 'ratios', got %r" % (layer_label(layer), params)) from None
    if feat_stride < 1 or not scales.size or not ratios.size or (scales <= 0).any() \
            or (ratios <= 0).any():
        raise ValueError("%s: 'feat_stride' must be >= 1 and 'scales', 'ratios' non-empty and "
                         "positive, got %r" % (layer_label(layer), params))
    return feat_stride, generate_anchors(scales=scales, ratios=ratios), params
