"""Tiny Fast R-CNN nets (prototxt text) over roi_fixtures' toy data set, shared by the
train/test tests and the fault tests of the detector.

Their InnerProduct heads read the RoIs directly (no convolution body), so a forward pass or
a training iteration takes milliseconds while every detector step around it runs for real.
"""
from roi_fixtures import NUM_CLASSES

IP = ("layer {{ name: '{name}' type: 'InnerProduct' bottom: '{bottom}' top: '{name}'\n"
      "  inner_product_param {{ num_output: {n} weight_filler {{ type: 'gaussian' std: {std} }} }} }}\n")


def ip(name, bottom, n, std=0.01):
    """An InnerProduct layer `name` of n outputs on `bottom` (gaussian weights)."""
    return IP.format(name=name, bottom=bottom, n=n, std=std)


def write_text(tmp_path, name, text):
    """Write `text` to tmp_path/name; its path as a string."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def rois_head_net(k=NUM_CLASSES, name='rois_head'):
    """A test net: inputs data (1x3x8x8, unused) and rois; cls_score (k), bbox_pred (4k)
    and cls_prob straight from the RoIs."""
    return ("name: '%s'\n" % name
            + "input: 'data' input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n"
              "input: 'rois' input_shape { dim: 1 dim: 5 }\n"
              "layer { name: 'silence' type: 'Silence' bottom: 'data' }\n"
            + ip('cls_score', 'rois', k) + ip('bbox_pred', 'rois', 4 * k)
            + "layer { name: 'cls_prob' type: 'Softmax' bottom: 'cls_score' top: 'cls_prob' }\n")


def fast_rcnn_train_net(k_score=NUM_CLASSES, k_data=NUM_CLASSES, k_bbox=None, std=0.01):
    """A training net: RoIDataLayer (num_classes k_data), cls_score (k_score) and bbox_pred
    (4 k_bbox, default 4 k_score) on the RoIs, SoftmaxWithLoss and SmoothL1Loss."""
    k_bbox = k_score if k_bbox is None else k_bbox
    return ("name: 'tiny_fast_rcnn'\n"
            "layer { name: 'input-data' type: 'Python' top: 'data' top: 'rois' top: 'labels'\n"
            "  top: 'bbox_targets' top: 'bbox_inside_weights' top: 'bbox_outside_weights'\n"
            "  python_param { module: 'roi_data_layer.layer' layer: 'RoIDataLayer'\n"
            "                 param_str: \"'num_classes': %d\" } }\n" % k_data
            + "layer { name: 'silence' type: 'Silence' bottom: 'data' }\n"
            + ip('cls_score', 'rois', k_score, std) + ip('bbox_pred', 'rois', 4 * k_bbox, std)
            + "layer { name: 'loss_cls' type: 'SoftmaxWithLoss' bottom: 'cls_score' "
              "bottom: 'labels' top: 'loss_cls' }\n"
              "layer { name: 'loss_bbox' type: 'SmoothL1Loss' bottom: 'bbox_pred' "
              "bottom: 'bbox_targets' bottom: 'bbox_inside_weights' "
              "bottom: 'bbox_outside_weights' top: 'loss_bbox' }\n")
