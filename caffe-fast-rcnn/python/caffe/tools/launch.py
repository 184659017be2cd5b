"""Start one of Caffe's tools by name, loading PyTorch only for the tools that need it.

    python caffe-fast-rcnn/python/caffe/tools/launch.py TOOL [ARGS...]

caffe-fast-rcnn/tools/caffe runs this file by path for every tool but `caffe` itself (the
build/tools/* links are named after the tools). It must run before anything imports the
`caffe` package: it registers the package from its spec without executing its __init__
(which imports PyTorch, seconds of start-up), so that the tools listed in
caffe.tools.NO_ENGINE import only their own modules; for any other tool it then executes
the package's __init__ on that same module, as a plain `import caffe` would have.
"""
import importlib.util
import os
import sys


def _register_package(package_dir: str):
    """The `caffe` package in sys.modules, its __init__ not run yet; and its spec."""
    spec = importlib.util.spec_from_file_location(
        'caffe', os.path.join(package_dir, '__init__.py'),
        submodule_search_locations=[package_dir])
    package = importlib.util.module_from_spec(spec)
    sys.modules['caffe'] = package
    return package, spec


def main() -> int:
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Run by path, Python put this folder first on sys.path: the engine's root instead.
    sys.path[0] = os.path.dirname(package_dir)
    package, spec = _register_package(package_dir)
    from caffe.tools import NO_ENGINE, TOOLS, tool_main
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        sys.stderr.write('usage: %s <tool> [args]\ntools: %s\n'
                         % (os.path.basename(sys.argv[0]), ', '.join(sorted(TOOLS))))
        return 1
    name = sys.argv[1]
    if name not in NO_ENGINE:
        spec.loader.exec_module(package)
    return tool_main(name)(sys.argv[2:])


if __name__ == '__main__':
    sys.exit(main())
