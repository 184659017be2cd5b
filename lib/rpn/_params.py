"""Reading the `param_str` of py-faster-rcnn's Python layers (a YAML mapping)."""
from __future__ import annotations

from typing import Any, Dict

import yaml


class _Loader(yaml.SafeLoader):
    """safe_load plus `!!python/tuple`, which py-faster-rcnn's COCO prototxts use
    ("'scales': !!python/tuple [4, 8, 16, 32]"); it builds a tuple, nothing else."""


_Loader.add_constructor('tag:yaml.org,2002:python/tuple',
                        lambda loader, node: tuple(loader.construct_sequence(node)))


def layer_params(layer: Any) -> Dict[str, Any]:
    """The layer's param_str as a dict; a clear error if it is not a YAML mapping."""
    text = getattr(layer, 'param_str_', None) or getattr(layer, 'param_str', '') or ''
    try:
        value = yaml.load(text, Loader=_Loader) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ValueError('%s: param_str %r is not valid YAML: %s' % (type(layer).__name__, text, e)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('%s: param_str must be a mapping like "\'feat_stride\': 16", got %r'
                         % (type(layer).__name__, text))
    return value


def anchor_params(layer: Any):
    """(feat_stride, base anchors) from an RPN layer's param_str: 'feat_stride' (required),
    'scales' (default 8, 16, 32) and 'ratios' (default 0.5, 1, 2)."""
    import numpy as np
    from rpn.generate_anchors import generate_anchors
    params = layer_params(layer)
    if 'feat_stride' not in params:
        raise ValueError("%s: param_str needs 'feat_stride'" % type(layer).__name__)
    scales = np.asarray(params.get('scales', (8, 16, 32)), dtype=np.float64)
    ratios = np.asarray(params.get('ratios', (0.5, 1, 2)), dtype=np.float64)
    return int(params['feat_stride']), generate_anchors(scales=scales, ratios=ratios), params
