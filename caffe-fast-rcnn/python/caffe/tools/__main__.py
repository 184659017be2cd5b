"""`python -m caffe.tools <tool> [args]`: run one of Caffe's tools (see __init__.py)."""
import sys

from . import TOOLS, tool_main


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        sys.stderr.write('usage: python -m caffe.tools <tool> [args]\ntools: %s\n'
                         % ', '.join(sorted(TOOLS)))
        return 1
    return tool_main(sys.argv[1])(sys.argv[2:])


if __name__ == '__main__':
    sys.exit(main())
