"""Where a detection net meets a data set: do they agree on the number of classes?

A Fast/Faster R-CNN net fixes its classes in its prototxt: `cls_score` has `num_output`
K (background included), `bbox_pred` 4K, and the training net's Python layers carry
`'num_classes': K` in their param_str. An imdb has its own K. When the two differ,
nothing fails loudly by itself: testing scores the net's classes 1..K-1 as if they were
the imdb's (a meaningless Mean AP), or dies with an IndexError deep in the test loop;
training writes targets for the wrong number of classes. So the tools check here, where
both are known, and name the net's layer, its width, the imdb and its count.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

__all__ = ['ClassCountError', 'net_class_counts', 'check_net_classes']


class ClassCountError(ValueError):
    """A net and a data set disagree on the number of classes."""


def _producer(net: Any, blob: str) -> Optional[str]:
    """The last layer writing `blob` (the Softmax for cls_prob, the InnerProduct for
    cls_score), or None."""
    last = None
    for layer, tops in net.top_names.items():
        if blob in tops:
            last = layer
    return last


def net_class_counts(net: Any, bbox_reg: bool = True) -> List[Tuple[str, int, int]]:
    """[(what, width, classes it implies)] for each place in `net` that fixes the class
    count: the blobs cls_score / cls_prob (width K), bbox_pred (width 4K, when
    `bbox_reg`), and layers declaring `num_classes` (RoIDataLayer, ProposalTargetLayer).
    An RPN-only net has none of them and gives []."""
    found: List[Tuple[str, int, int]] = []
    blobs = net.blobs
    for name in ('cls_score', 'cls_prob'):
        if name in blobs and len(blobs[name].shape) >= 2:
            width = int(blobs[name].shape[1])
            found.append(("blob '%s' (from layer '%s')" % (name, _producer(net, name)),
                          width, width))
    if bbox_reg and 'bbox_pred' in blobs and len(blobs['bbox_pred'].shape) >= 2:
        width = int(blobs['bbox_pred'].shape[1])
        found.append(("blob 'bbox_pred' (from layer '%s', 4 values per class)"
                      % _producer(net, 'bbox_pred'), width, width // 4 if width % 4 == 0 else -1))
    for lname, layer in zip(net._layer_names, net.layers):
        k = getattr(layer, 'num_classes', None)
        if isinstance(k, int) and not isinstance(k, bool):
            found.append(("layer '%s' (param_str num_classes)" % lname, k, k))
    return found


def check_net_classes(net: Any, num_classes: int, data_name: str,
                      class_names: Optional[Sequence[str]] = None, net_name: str = '',
                      bbox_reg: bool = True) -> None:
    """Raise ClassCountError unless every class-fixing place of `net` agrees with the
    data set's `num_classes` (background included). `data_name` names the imdb (or
    roidb) in the message, `net_name` the prototxt/weights."""
    bad = [(what, width, k) for what, width, k in net_class_counts(net, bbox_reg)
           if k != num_classes]
    if not bad:
        return
    names = ''
    if class_names is not None:
        shown = list(class_names)[:8]
        names = ' (%s%s)' % (', '.join(shown), ', ...' if len(class_names) > 8 else '')
    lines = ['  %s has width %d, i.e. %s' % (what, width, '%d classes' % k if k >= 0
                                                else 'not a multiple of 4')
             for what, width, k in bad]
    raise ClassCountError(
        '%sthe net does not fit %s, which has %d classes including the background%s:\n%s\n'
        'Set num_output of cls_score to %d and of bbox_pred to %d (and num_classes in the '
        'Python layers\' param_str to %d) in the prototxt, or use the data set the net was '
        'made for.' % ('%s: ' % net_name if net_name else '', data_name, num_classes, names,
                       '\n'.join(lines), num_classes, 4 * num_classes, num_classes))
