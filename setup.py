"""Installs the `caffe` engine (caffe-fast-rcnn/python/caffe) and builds the detector's NMS kernel.

    pip install .        # or: pip install -e .   (what `make setup` does)

gives `import caffe` from anywhere and Caffe's command-line programs as console commands
(`caffe train|test|time|device_query`, compute_image_mean, convert_imageset,
convert_annoset, get_image_size, extract_features, upgrade_net_proto_text, ...).

The detector (lib/: fast_rcnn, rpn, datasets, utils, nms, ...) is not installed: its
generic module names would shadow other packages in site-packages. As in py-faster-rcnn,
tools/_init_paths.py puts lib/ (and caffe-fast-rcnn/python) on sys.path. Its compiled NMS
kernel, lib/nms/nms_kernel.c, a plain C library that lib/nms/compiled.py loads with ctypes,
is therefore built as a setuptools extension into lib/nms/ of this checkout, not into the
installed package.
"""
import os

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

ROOT = os.path.dirname(os.path.abspath(__file__))
ENGINE = 'caffe-fast-rcnn/python'
NMS = '_nms_kernel'
# IEEE arithmetic as written (no fused multiply-add, no fast-math): the kernel keeps
# py-faster-rcnn's exact IoU rounding.
NMS_FLAGS = ['-O3', '-ffp-contract=off', '-fno-fast-math', '-std=c99']


class BuildExt(build_ext):
    """build_ext that puts the NMS kernel in lib/nms/ of the checkout (see the docstring),
    tuned for this machine's vector units when the compiler allows it."""

    def get_ext_fullpath(self, ext_name):
        if ext_name == NMS:
            return os.path.join(ROOT, 'lib', 'nms', self.get_ext_filename(ext_name))
        return super().get_ext_fullpath(ext_name)

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

    def copy_extensions_to_source(self):
        """Editable installs copy built extensions into the source tree: the kernel is
        already there."""
        extensions = self.extensions
        self.extensions = [e for e in extensions if e.name != NMS]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = extensions

    def get_outputs(self):
        """The kernel lives in the checkout, not in the installed files."""
        return [p for p in super().get_outputs() if os.path.basename(p).split('.')[0] != NMS]

    def get_output_mapping(self):
        return {k: v for k, v in super().get_output_mapping().items()
                if os.path.basename(k).split('.')[0] != NMS}


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
    ext_modules=[Extension(NMS, sources=['lib/nms/nms_kernel.c'], extra_compile_args=NMS_FLAGS)],
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
