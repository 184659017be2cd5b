"""Configuration of the detector: one EasyDict, ``cfg``, shared by every module.

The defaults below are the ones py-faster-rcnn (with the OHEM fork's extra keys)
shipped, so an existing ``experiments/cfgs/*.yml`` or ``--set KEY VALUE`` list
means the same thing here.  Do not edit the defaults to run an experiment:
write a YAML file and load it with :func:`cfg_from_file`, or pass pairs to
:func:`cfg_from_list` (``tools/*.py --cfg FILE --set KEY VALUE ...``).

Import it as the tools always have::

    from fast_rcnn.config import cfg, cfg_from_file, cfg_from_list, get_output_dir

Differences from the Python 2 original, all about robustness:

* YAML is read with a *safe* loader.  The original's YAML files tag tuples as
  ``!!python/tuple [...]``; that one tag is understood (it only builds a tuple),
  every other ``!!python/...`` tag is refused.
* Merging checks types and names the full dotted key at fault
  (``TRAIN.SCALES``), instead of asserting.  Harmless conversions are done
  rather than refused: a YAML list for a tuple default, an ``int`` for a
  ``float`` default, a list for an ``ndarray`` default.
"""

from __future__ import annotations

import ast
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np
import yaml
from easydict import EasyDict as edict

__C = edict()
# Consumers get the config with:  from fast_rcnn.config import cfg
cfg = __C

#
# Training options
#

__C.TRAIN = edict()

# Scales to use during training (can list multiple scales).
# Each scale is the pixel size of an image's shortest side.
__C.TRAIN.SCALES = (600,)

# Max pixel size of the longest side of a scaled input image
__C.TRAIN.MAX_SIZE = 1000

# Images to use per minibatch
__C.TRAIN.IMS_PER_BATCH = 2

# Minibatch size (number of regions of interest [RoIs])
__C.TRAIN.BATCH_SIZE = 128

# Fraction of minibatch that is labeled foreground (i.e. class > 0)
__C.TRAIN.FG_FRACTION = 0.25

# Overlap threshold for a RoI to be considered foreground (if >= FG_THRESH)
__C.TRAIN.FG_THRESH = 0.5

# Overlap threshold for a RoI to be considered background (class = 0 if
# overlap in [LO, HI))
__C.TRAIN.BG_THRESH_HI = 0.5
__C.TRAIN.BG_THRESH_LO = 0.1

# Use horizontally-flipped images during training?
__C.TRAIN.USE_FLIPPED = True

# Train bounding-box regressors
__C.TRAIN.BBOX_REG = True

# Overlap required between a RoI and a ground-truth box for the RoI to be used
# as a bounding-box regression training example
__C.TRAIN.BBOX_THRESH = 0.5

# Iterations between snapshots
__C.TRAIN.SNAPSHOT_ITERS = 10000

# solver.prototxt gives the snapshot path prefix; this adds an optional infix:
# <prefix>[_<infix>]_iters_XYZ.caffemodel
__C.TRAIN.SNAPSHOT_INFIX = ''

# Use a prefetch thread in roi_data_layer.layer
__C.TRAIN.USE_PREFETCH = False

# Normalize the targets (subtract empirical mean, divide by empirical stddev)
__C.TRAIN.BBOX_NORMALIZE_TARGETS = True
# Deprecated (inside weights)
__C.TRAIN.BBOX_INSIDE_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Normalize the targets using "precomputed" (or made up) means and stdevs
# (BBOX_NORMALIZE_TARGETS must also be True)
__C.TRAIN.BBOX_NORMALIZE_TARGETS_PRECOMPUTED = False
__C.TRAIN.BBOX_NORMALIZE_MEANS = (0.0, 0.0, 0.0, 0.0)
__C.TRAIN.BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)

# Train using these proposals
__C.TRAIN.PROPOSAL_METHOD = 'selective_search'

# Group images of similar aspect ratio (both wide or both tall) into the same
# minibatch, so less of the blob is zero padding.
__C.TRAIN.ASPECT_GROUPING = True

# Use RPN to detect objects
__C.TRAIN.HAS_RPN = False
# IOU >= thresh: positive example
__C.TRAIN.RPN_POSITIVE_OVERLAP = 0.7
# IOU < thresh: negative example
__C.TRAIN.RPN_NEGATIVE_OVERLAP = 0.3
# If an anchor satisfies both the positive and negative conditions, make it negative
__C.TRAIN.RPN_CLOBBER_POSITIVES = False
# Max fraction of foreground examples
__C.TRAIN.RPN_FG_FRACTION = 0.5
# Total number of examples
__C.TRAIN.RPN_BATCHSIZE = 256
# NMS threshold used on RPN proposals
__C.TRAIN.RPN_NMS_THRESH = 0.7
# Number of top scoring boxes to keep before applying NMS to RPN proposals
__C.TRAIN.RPN_PRE_NMS_TOP_N = 12000
# Number of top scoring boxes to keep after applying NMS to RPN proposals
__C.TRAIN.RPN_POST_NMS_TOP_N = 2000
# Proposal height and width both need to be greater than RPN_MIN_SIZE
# (at the original image scale)
__C.TRAIN.RPN_MIN_SIZE = 16
# Deprecated (outside weights)
__C.TRAIN.RPN_BBOX_INSIDE_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Give the positive RPN examples weight of p * 1 / {num positives}
# and give negatives a weight of (1 - p).
# Set to -1.0 to use uniform example weighting.
__C.TRAIN.RPN_POSITIVE_WEIGHT = -1.0

# Online Hard Example Mining (OHEM): rank every RoI of an image by its loss
# and train on the hardest TRAIN.BATCH_SIZE of them.
__C.TRAIN.USE_OHEM = False
# Run NMS over the RoIs (scored by loss) before picking the hardest ones, for
# diversity and de-duplication.  The OHEM fork defaults this to True.
__C.TRAIN.OHEM_USE_NMS = True
__C.TRAIN.OHEM_NMS_THRESH = 0.7

#
# Testing options
#

__C.TEST = edict()

# Scales to use during testing (can list multiple scales).
# Each scale is the pixel size of an image's shortest side.
__C.TEST.SCALES = (600,)

# Max pixel size of the longest side of a scaled input image
__C.TEST.MAX_SIZE = 1000

# Overlap threshold used for non-maximum suppression (suppress boxes with
# IoU > this threshold)
__C.TEST.NMS = 0.3

# Experimental: treat the (K+1) units in the cls_score layer as linear
# predictors (trained, e.g., with one-vs-rest SVMs).
__C.TEST.SVM = False

# Test using bounding-box regressors
__C.TEST.BBOX_REG = True

# Propose boxes
__C.TEST.HAS_RPN = False

# Test using these proposals
__C.TEST.PROPOSAL_METHOD = 'selective_search'

# NMS threshold used on RPN proposals
__C.TEST.RPN_NMS_THRESH = 0.7
# Number of top scoring boxes to keep before applying NMS to RPN proposals
__C.TEST.RPN_PRE_NMS_TOP_N = 6000
# Number of top scoring boxes to keep after applying NMS to RPN proposals
__C.TEST.RPN_POST_NMS_TOP_N = 300
# Proposal height and width both need to be greater than RPN_MIN_SIZE
# (at the original image scale)
__C.TEST.RPN_MIN_SIZE = 16

#
# MISC
#

# Boxes distinct in image space may become identical once mapped onto the
# feature map.  If DEDUP_BOXES > 0, it is the scale factor used to find such
# duplicates (1/16 is right for {Alex,Caffe}Net, VGG_CNN_M_1024 and VGG16).
__C.DEDUP_BOXES = 1. / 16.

# Pixel mean values (BGR order) as a (1, 1, 3) array.  The same mean is used
# for all networks even though it is not exactly what each was trained with.
__C.PIXEL_MEANS = np.array([[[102.9801, 115.9465, 122.7717]]])

# For reproducibility
__C.RNG_SEED = 3

# A small number that's used many times
__C.EPS = 1e-14

# Root directory of the project (the folder holding lib/, tools/, data/ ...)
__C.ROOT_DIR = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))

# Data directory
__C.DATA_DIR = osp.abspath(osp.join(__C.ROOT_DIR, 'data'))

# Model directory (prototxt folders <net>/<method>/ live below it)
__C.MODELS_DIR = osp.abspath(osp.join(__C.ROOT_DIR, 'models', 'pascal_voc'))

# Name (or path to) the matlab executable
__C.MATLAB = 'matlab'

# Place outputs under an experiments directory
__C.EXP_DIR = 'default'

# Run non-maximum suppression on the GPU (CUDA device GPU_ID) when one is
# available.  Without CUDA the same code runs on the CPU, with identical results.
__C.USE_GPU_NMS = True

# Default GPU device id
__C.GPU_ID = 0

# New in this rebuild: the PyTorch device NMS runs on, e.g. 'cpu', 'cuda:1',
# 'mps'.  Empty means "decide from USE_GPU_NMS and GPU_ID" as above.
__C.NMS_DEVICE = ''


def get_output_dir(imdb: Any, net: Any = None) -> str:
    """Return (and create) the folder where a run's artifacts go.

    The path is ``ROOT_DIR/output/EXP_DIR/<imdb.name>[/<net.name>]``; keeping it
    canonical is what lets ``tools/test_net.py`` and ``tools/reval.py`` find
    what training and testing wrote.  ``net`` may be a ``caffe.Net``, any object
    with a ``name``, a plain string, or None.
    """
    name = getattr(imdb, 'name', imdb)
    if not isinstance(name, str) or not name:
        raise TypeError('get_output_dir: expected an imdb with a non-empty '
                        '.name (or a name string), got {!r}'.format(imdb))
    outdir = osp.abspath(osp.join(__C.ROOT_DIR, 'output', __C.EXP_DIR, name))
    if net is not None:
        net_name = net if isinstance(net, str) else getattr(net, 'name', None)
        if not net_name:
            raise TypeError('get_output_dir: the net {!r} has no name; pass '
                            'net=None or a name string'.format(net))
        outdir = osp.join(outdir, net_name)
    os.makedirs(outdir, exist_ok=True)
    return outdir


class ConfigError(ValueError):
    """A config file or --set list names an unknown key or gives a bad value."""


def _coerce_value(key: str, value: Any, default: Any) -> Any:
    """Return ``value`` converted to the type of ``default``, or raise.

    The type of every default is the contract of its key: code reading
    ``cfg.TRAIN.SCALES`` relies on a tuple, ``cfg.PIXEL_MEANS`` on an array.
    Only conversions that cannot change meaning are made.
    """
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, np.ndarray):
        try:
            return np.array(value, dtype=default.dtype)
        except (TypeError, ValueError) as exc:
            raise ConfigError('config key {}: cannot convert {!r} to an array '
                              'of {} ({})'.format(key, value, default.dtype, exc)) from None
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, list) and isinstance(value, tuple):
        return list(value)
    if (isinstance(default, float) and isinstance(value, int)
            and not isinstance(value, bool)):
        return float(value)
    if isinstance(default, Mapping) and isinstance(value, Mapping):
        return value
    raise ConfigError('config key {}: type mismatch, expected {} (default {!r}) '
                      'but got {} ({!r})'.format(key, type(default).__name__, default,
                                                type(value).__name__, value))


def _merge_a_into_b(a: Mapping, b: edict, _prefix: str = '') -> None:
    """Merge config dictionary ``a`` into ``b``, overwriting ``b``'s values.

    Every key of ``a`` must already exist in ``b`` (a typo in a YAML file must
    not silently create a new, unused option) and its value must have the
    default's type, up to the conversions of :func:`_coerce_value`.  Nested
    dictionaries are merged key by key.  Errors name the full dotted key.
    """
    if a is None:
        return
    if not isinstance(a, Mapping):
        raise ConfigError('config section {}: expected a mapping of keys to '
                          'values, got {}'.format(_prefix or '<top level>',
                                                  type(a).__name__))
    for k, v in a.items():
        full = _prefix + str(k)
        if k not in b:
            raise KeyError('{} is not a valid config key'.format(full))
        if isinstance(b[k], Mapping):
            if not isinstance(v, Mapping):
                raise ConfigError('config key {}: is a section, expected a '
                                  'mapping but got {!r}'.format(full, v))
            _merge_a_into_b(v, b[k], full + '.')
        else:
            b[k] = _coerce_value(full, v, b[k])


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also accepts the ``!!python/tuple`` tag.

    py-faster-rcnn's own YAML files write tuples that way; building a tuple from
    a sequence runs no code, so it is as safe as a plain list.
    """


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))


_ConfigLoader.add_constructor('tag:yaml.org,2002:python/tuple', _construct_tuple)


def cfg_from_file(filename: str) -> None:
    """Load a YAML config file and merge it into the default options."""
    try:
        with open(filename, 'r', encoding='utf-8') as f:
            yaml_cfg = yaml.load(f, Loader=_ConfigLoader)  # safe: SafeLoader subclass
    except OSError as exc:
        raise ConfigError('cannot read config file {}: {}'.format(filename, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError('config file {} is not valid YAML (only plain values and '
                          '!!python/tuple are allowed): {}'.format(filename, exc)) from None
    try:
        _merge_a_into_b(yaml_cfg, __C)
    except (KeyError, ConfigError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise type(exc)('{} (in config file {})'.format(msg, filename)) from None


def cfg_from_list(cfg_list: Iterable[str]) -> None:
    """Set config keys from a flat ``[KEY, VALUE, KEY, VALUE, ...]`` list.

    This is what ``tools/*.py --set EXP_DIR foo TRAIN.SCALES "[400,500]"``
    passes.  Values are parsed as Python literals when they are one, and kept
    as the raw string otherwise (and whenever the key's default is a string, so
    ``--set EXP_DIR 2007`` stays the string '2007').
    """
    items = list(cfg_list)
    if len(items) % 2 != 0:
        raise ConfigError('cfg_from_list: expected KEY VALUE pairs, got an odd '
                          'number of items: {}'.format(items))
    for key, raw in zip(items[0::2], items[1::2]):
        parts = str(key).split('.')
        d = __C
        for depth, sub in enumerate(parts[:-1]):
            if sub not in d or not isinstance(d[sub], Mapping):
                raise KeyError('{} is not a valid config key (no section {})'.format(
                    key, '.'.join(parts[:depth + 1])))
            d = d[sub]
        leaf = parts[-1]
        if leaf not in d:
            raise KeyError('{} is not a valid config key'.format(key))
        if isinstance(d[leaf], Mapping):
            raise ConfigError('config key {} is a section; set its keys one by '
                              'one (e.g. {}.<KEY>)'.format(key, key))
        value: Any = raw
        if isinstance(raw, str) and not isinstance(d[leaf], str):
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        d[leaf] = _coerce_value(key, value, d[leaf])


def cfg_snapshot() -> dict:
    """Return a deep copy of the current config as plain dicts (for tests/logging)."""
    def _copy(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: _copy(v) for k, v in x.items()}
        if isinstance(x, np.ndarray):
            return x.copy()
        return x
    return _copy(__C)


def cfg_restore(snapshot: Mapping) -> None:
    """Put back a config saved by :func:`cfg_snapshot` (tests use this to isolate)."""
    def _restore(dst: edict, src: Mapping) -> None:
        for k in list(dst.keys()):
            if k not in src:
                dst.pop(k)
        for k, v in src.items():
            if isinstance(v, Mapping):
                if k not in dst or not isinstance(dst[k], Mapping):
                    dst[k] = edict()
                _restore(dst[k], v)
            else:
                dst[k] = v.copy() if isinstance(v, np.ndarray) else v
    _restore(__C, snapshot)


__all__ = ['cfg', 'get_output_dir', 'cfg_from_file', 'cfg_from_list',
           'ConfigError', 'cfg_snapshot', 'cfg_restore']
