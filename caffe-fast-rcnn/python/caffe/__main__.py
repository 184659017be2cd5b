"""`python -m caffe <command> <args>`: Caffe's command line (see caffe/tool.py)."""
import sys

from .tool import main

if __name__ == '__main__':
    sys.exit(main())
