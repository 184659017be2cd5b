"""Installs the `caffe` engine (caffe-fast-rcnn/python/caffe), with its compiled NMS kernel.

    pip install .        # or: pip install -e .   (what `make setup` does)

gives `import caffe` from anywhere and Caffe's command-line programs as console commands
(`caffe train|test|time|device_query`, compute_image_mean, convert_imageset,
convert_annoset, get_image_size, extract_features, upgrade_net_proto_text, ...).

The detector (lib/: fast_rcnn, rpn, datasets, utils, nms, ...) is not installed: its
generic module names would shadow other packages in site-packages. As in py-faster-rcnn,
tools/_init_paths.py puts lib/ (and caffe-fast-rcnn/python) on sys.path.

The one compiled piece is the engine's greedy NMS kernel,
caffe-fast-rcnn/python/caffe/bbox_util/nms_kernel.c: a plain C library (no Python API)
that caffe/bbox_util/nms_kernel.py loads with ctypes, used by SSD/RefineDet's NMS and by
lib/nms. It is an extension of the `caffe.bbox_util` package: an editable install (or
`setup.py build_ext --inplace`) puts it next to its source, `pip install .` installs it
with the package.
"""
import os

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

ROOT = os.path.dirname(os.path.abspath(__file__))
ENGINE = 'caffe-fast-rcnn/python'
NMS = 'caffe.bbox_util._nms_kernel'
NMS_SOURCE = ENGINE + '/caffe/bbox_util/nms_kernel.c'
# IEEE arithmetic as written (no fused multiply-add, no fast-math): the kernel keeps the
# NumPy references' exact IoU rounding (py_cpu_nms; Caffe's JaccardOverlap).
NMS_FLAGS = ['-O3', '-ffp-contract=off', '-fno-fast-math', '-std=c99']


class BuildExt(build_ext):
    """build_ext that tunes the NMS kernel for this machine's vector units when the
    compiler allows it, and builds it portably otherwise."""

    def build_extension(self, ext):
        if ext.name != NMS:
            return super().build_extension(ext)
        portable = list(ext.extra_compile_args)
        try:
            ext.extra_compile_args = portable + ['-march=native']
            super().build_extension(ext)
        except (CCompilerError, CompileError, LinkError):
            ext.extra_compile_args = portable
            super().build_extension(ext)
        finally:
            ext.extra_compile_args = portable


setup(
    name='py-faster-rcnn',
    version='1.0.0',
    description="py-faster-rcnn (with OHEM) and its Caffe on Python 3 and PyTorch: the `caffe` "
                "engine with pycaffe's API and Caffe's tools",
    long_description=open(os.path.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    package_dir={'': ENGINE},
    packages=find_packages(ENGINE, include=['caffe', 'caffe.*']),
    package_data={'caffe.proto': ['caffe.proto']},
    install_requires=['numpy', 'torch', 'torchvision', 'protobuf', 'PyYAML', 'opencv-python-headless',
                      'lmdb', 'h5py', 'pydot', 'matplotlib'],
    ext_modules=[Extension(NMS, sources=[NMS_SOURCE], extra_compile_args=NMS_FLAGS)],
    cmdclass={'build_ext': BuildExt},
    entry_points={'console_scripts': [
        'caffe = caffe.tool:main',
        'upgrade_net_proto_text = caffe.tools.upgrade_proto:upgrade_net_proto_text',
        'upgrade_net_proto_binary = caffe.tools.upgrade_proto:upgrade_net_proto_binary',
        'upgrade_solver_proto_text = caffe.tools.upgrade_proto:upgrade_solver_proto_text',
        'compute_image_mean = caffe.tools.compute_image_mean:main',
        'convert_imageset = caffe.tools.convert_imageset:main',
        'extract_features = caffe.tools.extract_features:main',
        'convert_annoset = caffe.tools.convert_annoset:main',
        'get_image_size = caffe.tools.get_image_size:main',
    ]},
    zip_safe=False,
)
