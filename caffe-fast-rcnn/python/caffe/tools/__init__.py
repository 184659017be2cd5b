"""Caffe's command-line tools besides `caffe` itself (build/tools/* of a Caffe build).

Each tool is a module with `main(argv=None) -> int`; TOOLS maps the executable's name to
it. `python -m caffe.tools <name>` runs one; `caffe-fast-rcnn/build/tools/<name>` (a link to
the dispatcher caffe-fast-rcnn/tools/caffe) runs it through launch.py, and `pip install`
makes each a console command.

`import caffe` runs the package's __init__, which loads PyTorch: seconds of start-up that
the data and proto tools never use. NO_ENGINE lists the tools whose modules never import
PyTorch; launch.py starts them without running caffe/__init__.py.
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
    'convert_annoset': 'convert_annoset:main',      # SSD's
    'get_image_size': 'get_image_size:main',        # SSD's
}

# Tools that run without the engine's __init__ (and so without PyTorch); see launch.py.
NO_ENGINE = frozenset({'upgrade_net_proto_text', 'upgrade_net_proto_binary',
                       'upgrade_solver_proto_text', 'compute_image_mean', 'convert_imageset',
                       'convert_annoset', 'get_image_size'})


def tool_main(name: str) -> Callable[[Optional[Sequence[str]]], int]:
    """The entry function of the tool called `name`."""
    try:
        module, func = TOOLS[name].split(':')
    except KeyError:
        raise KeyError('no Caffe tool named %r (tools: %s)' % (name, ', '.join(sorted(TOOLS)))) from None
    return getattr(importlib.import_module('%s.%s' % (__name__, module)), func)
