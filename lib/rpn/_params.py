"""Reading the `param_str` of py-faster-rcnn's Python layers (a YAML mapping)."""
from __future__ import annotations

from typing import Any, Dict

import yaml


def layer_params(layer: Any) -> Dict[str, Any]:
    """The layer's param_str as a dict; a clear error if it is not a YAML mapping."""
    text = getattr(layer, 'param_str_', None) or getattr(layer, 'param_str', '') or ''
    try:
        value = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ValueError('%s: param_str %r is not valid YAML: %s' % (type(layer).__name__, text, e)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('%s: param_str must be a mapping like "\'feat_stride\': 16", got %r'
                         % (type(layer).__name__, text))
    return value
