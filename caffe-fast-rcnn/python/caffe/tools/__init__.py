"""Caffe's command-line tools besides `caffe` itself (build/tools/* of a Caffe build).

Each tool is a module with `main(argv=None) -> int`; TOOLS maps the executable's name to
it. `caffe-fast-rcnn/build/tools/<name>` runs `python -m caffe.tools <name>`, and
`pip install` makes each a console command.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Sequence

# executable name -> module:function
TOOLS: Dict[str, str] = {
    'upgrade_net_proto_text': 'upgrade_proto:upgrade_net_proto_text',
    'upgrade_net_proto_binary': 'upgrade_proto:upgrade_net_proto_binary',
    'upgrade_solver_proto_text': 'upgrade_proto:upgrade_solver_proto_text',
    'compute_image_mean': 'compute_image_mean:main',
    'convert_imageset': 'convert_imageset:main',
    'extract_features': 'extract_features:main',
}


def tool_main(name: str) -> Callable[[Optional[Sequence[str]]], int]:
    """The entry function of the tool called `name`."""
    try:
        module, func = TOOLS[name].split(':')
    except KeyError:
        raise KeyError('no Caffe tool named %r (tools: %s)' % (name, ', '.join(sorted(TOOLS)))) from None
    return getattr(importlib.import_module('%s.%s' % (__name__, module)), func)
