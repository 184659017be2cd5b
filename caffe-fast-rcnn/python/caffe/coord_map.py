"""caffe.coord_map: how spatial coordinates move through a NetSpec net (pycaffe's coord_map).

A coordinate map is (axis, a, b): a position x on the input's spatial axes (the axes
after `axis`, e.g. H and W after channels) lands at y = a * x + b on the output's.
Per layer:

    Convolution / Pooling / Im2col:  a = 1 / stride,  b = (pad - (k_eff - 1) / 2) / stride
    Deconvolution:                   a = stride,      b = (k_eff - 1) / 2 - pad
    pointwise layers (ReLU, ...):    (None, 1, 0)  -- any axis, identity
    Crop:                            a = 1,           b = -offset

with k_eff = (kernel - 1) * dilation + 1, per spatial axis (arrays for N-d nets). Maps
compose along a path and invert; `coord_map_from_to(top_from, top_to)` walks back from
both tops to a common ancestor and gives the map taking `top_from` coordinates to
`top_to` coordinates, and `crop(top_from, top_to)` uses it to net-spec the Crop layer
that aligns `top_from` with `top_to`, as FCN does for its score maps.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .net_spec import Function, Top, layers as L

__all__ = ['coord_map_from_to', 'crop', 'coord_map', 'compose', 'inverse', 'conv_params',
           'crop_params', 'UndefinedMapException', 'AxisMismatchException',
           'PASS_THROUGH_LAYERS']

# Layers that do not move coordinates (elementwise or per-pixel along channels).
PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Dropout', 'Eltwise', 'ELU',
                       'Log', 'LRN', 'Exp', 'MVN', 'Power', 'ReLU', 'PReLU', 'Scale',
                       'Sigmoid', 'Split', 'TanH', 'Threshold']

CoordMap = Tuple[Optional[int], Any, Any]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps to compose act on different axes."""


def conv_params(fn: Function) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, effective kernel size, pad) of a Convolution/Deconvolution/Pooling
    Function, read from `convolution_param` if given, else from its own keywords."""
    params = fn.params.get('convolution_param', fn.params)
    legacy = {'pad_h', 'pad_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w'}
    if legacy & set(fn.params) or (params is not fn.params and legacy & set(params)):
        raise AssertionError('cropping does not support legacy _h/_w params')
    if 'kernel_size' not in params:
        raise UndefinedMapException('%s layer has no kernel_size: cannot map coordinates'
                                    % fn.type_name)
    axis = params.get('axis', 1)
    ks = np.array(params['kernel_size'], ndmin=1)
    dilation = np.array(params.get('dilation', 1), ndmin=1)
    stride = np.array(params.get('stride', 1), ndmin=1)
    pad = np.array(params.get('pad', 0), ndmin=1)
    return axis, stride, (ks - 1) * dilation + 1, pad


def crop_params(fn: Function) -> Tuple[int, np.ndarray]:
    """(axis, offset) of a Crop Function; axis defaults to 2 (crop H and W of N x C x H x W)."""
    params = fn.params.get('crop_param', fn.params)
    axis = params.get('axis', 2)
    offset = np.array(params.get('offset', 0), ndmin=1)
    return axis, offset


def coord_map(fn: Function) -> CoordMap:
    """The (axis, scale, shift) map of one layer, input -> output coordinates."""
    if fn.type_name in ('Convolution', 'Pooling', 'Im2col'):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == 'Deconvolution':
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == 'Crop':
        axis, offset = crop_params(fn)
        # The map's axis is the last non-spatial one, as for convolution's axis=1.
        return axis - 1, 1, -offset
    raise UndefinedMapException('%s layers have no coordinate mapping' % fn.type_name)


def compose(base_map: CoordMap, next_map: CoordMap) -> CoordMap:
    """The map of `base_map` followed by `next_map`: scales multiply, and the second
    shift is scaled by the first scale. An axis of None takes the other's axis."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException('cannot compose coordinate maps on axis %s and axis %s'
                                    % (ax1, ax2))
    return ax, a1 * a2, a1 * b2 + b1


def inverse(cmap: CoordMap) -> CoordMap:
    """The map going the other way (output -> input coordinates)."""
    ax, a, b = cmap
    return ax, 1 / a, -b / a


def _mappable_bottoms(top: Top):
    """Bottoms whose coordinates map to `top`: all, except Crop's reference (2nd) bottom."""
    bottoms = top.fn.inputs
    if top.fn.type_name == 'Crop':
        bottoms = bottoms[:1]
    return bottoms


def coord_map_from_to(top_from: Top, top_to: Top) -> CoordMap:
    """The map from `top_from`'s coordinates to `top_to`'s, through a common ancestor.

    Raises RuntimeError when no chain of spatial layers connects the two tops.
    """
    # Every ancestor of top_from reachable through mappable layers, with the map from
    # top_from's coordinates back to it (as forward maps composed along the way).
    from_maps = {top_from: (None, 1, 0)}
    frontier = [top_from]
    while frontier:
        top = frontier.pop()
        try:
            layer_map = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            from_maps[bottom] = compose(from_maps[top], layer_map)
            frontier.append(bottom)

    # Walk back from top_to until a blob of top_from's ancestry is reached.
    to_maps = {top_to: (None, 1, 0)}
    frontier = [top_to]
    while frontier:
        top = frontier.pop()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            layer_map = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            to_maps[bottom] = compose(to_maps[top], layer_map)
            frontier.append(bottom)

    raise RuntimeError('Could not compute map between tops; are they connected by spatial '
                       'layers?')


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer (NetSpec Top) that crops `top_from` to align with `top_to`.

    Raises AssertionError, as pycaffe does, when the two are at different scales or the
    needed offset is negative or fractional.
    """
    ax, a, b = coord_map_from_to(top_from, top_to)
    a = np.asarray(a)
    b = np.asarray(b)
    if not (a == 1).all():
        raise AssertionError('scale mismatch on crop (a = {})'.format(a))
    if not (b <= 0).all():
        raise AssertionError('cannot crop negative offset (b = {})'.format(b))
    if not (np.round(b) == b).all():
        raise AssertionError('cannot crop noninteger offset (b = {})'.format(b))
    # The map's axis is the one before the first mapped one; Crop's axis is that one.
    # Pass-through layers only (axis None): nothing moves, crop the spatial axes by 0.
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=2 if ax is None else ax + 1,
                                  offset=[int(v) for v in (-np.round(b).astype(int)).ravel()]))
