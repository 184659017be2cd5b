"""What MultiBoxLoss, DetectionOutput and DetectionEvaluate share: Caffe's legacy axis
sizes, uint32 fields read as C++ ints, and the checks and reading of the prediction
bottoms of an SSD / RefineDet head (loc, conf, priors, and RefineDet's arm_conf, arm_loc).
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch

from ..errors import LayerError


def legacy_dim(shape: Sequence[int], i: int) -> int:
    """Caffe's num()/channels()/height()/width(): axis i, or 1 past the last axis."""
    return int(shape[i]) if i < len(shape) else 1


def signed32(v: int) -> int:
    """A uint32 field read as C++ reads it into an int (4294967295 is -1)."""
    v = int(v)
    return v - (1 << 32) if v >= (1 << 31) else v


def check_predictions(bottom, loc_classes: int, num_classes: int, share_location: bool,
                      arm_conf: int, fail: Callable[[str], LayerError]) -> Tuple[int, int]:
    """(images N, priors P) of the head's bottoms, after checking that they agree: loc
    (N, P * loc_classes * 4), conf (N, P * num_classes), priors (1, 2, P * 4) at index 2,
    and, when present, arm_conf (N, P * 2) at index `arm_conf` and arm_loc (N, P * 4) right
    after it. `fail(message)` makes the layer's error."""
    n = legacy_dim(bottom[0].shape, 0)
    if n != legacy_dim(bottom[1].shape, 0):
        raise fail('loc and conf should have the same number of images (%d vs %d)'
                   % (n, legacy_dim(bottom[1].shape, 0)))
    p = legacy_dim(bottom[2].shape, 2) // 4
    loc_per = bottom[0].count // max(n, 1)
    if p * loc_classes * 4 != loc_per:
        raise fail('Number of priors must match number of location predictions: %d priors '
                   'x %d x 4 = %d, but loc %s holds %d per image'
                   % (p, loc_classes, p * loc_classes * 4, tuple(bottom[0].shape), loc_per))
    conf_per = bottom[1].count // max(n, 1)
    if p * num_classes != conf_per:
        raise fail('Number of priors must match number of confidence predictions: %d priors '
                   'x num_classes %d = %d, but conf %s holds %d per image'
                   % (p, num_classes, p * num_classes, tuple(bottom[1].shape), conf_per))
    if len(bottom) > arm_conf and bottom[arm_conf].count != n * p * 2:
        raise fail('arm_conf %s should hold %d x %d priors x 2 objectness scores'
                   % (tuple(bottom[arm_conf].shape), n, p))
    if len(bottom) > arm_conf + 1:
        if not share_location:
            raise fail('refined priors (arm_loc) need share_location: true')
        if bottom[arm_conf + 1].count != n * p * 4:
            raise fail('arm_loc %s should hold %d x %d priors x 4'
                       % (tuple(bottom[arm_conf + 1].shape), n, p))
    return n, p


def priors_and_variances(priors: torch.Tensor, num_priors: int
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The prior boxes (P, 4) and their variances (P, 4) of a PriorBox top (1, 2, P * 4)."""
    pri = priors.reshape(-1)[:2 * num_priors * 4].reshape(2, num_priors, 4)
    return pri[0], pri[1]
