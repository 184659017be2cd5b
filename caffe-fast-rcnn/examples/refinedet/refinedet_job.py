"""What every RefineDet example script does once its settings are chosen.

The scripts beside this module (VGG16_VOC2007_320.py, ResNet101_COCO_320.py, ...) keep
RefineDet's shape: a block of settings a user edits (data, input size, priors, GPUs, batch
size, solver), a function adding the backbone's extra layers and the transfer connection
blocks (TCB), and then the part one "hopefully doesn't need to change": build the train,
test and deploy nets, write them with the solver under models/, find the latest snapshot
to resume from, write the job script under jobs/ and run it. That last part is the same in
every script, so it lives here once and the scripts agree with each other.

Run the scripts from the Caffe root (caffe-fast-rcnn/), as RefineDet's README says: every
path they write is relative to it, and the job script starts with `cd` to it.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from caffe import protoio
from caffe.model_libs import (CreateAnnotatedDataLayer, CreateRefineDetHead, ConvBNLayer,
                              DeconvBNLayer, EltwiseLayer, ResBody, L, P, caffe, caffe_pb2)

Body = Callable[[Any], List[str]]


# ---- the settings every script shares ---------------------------------------------------------

def batch_samplers(min_scale: float = 0.3, max_trials: int = 50,
                   min_overlaps: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                   any_crop: bool = True) -> List[Dict[str, Any]]:
    """SSD's batch samplers: the whole image, then one random crop (scale min_scale..1,
    aspect 0.5..2) per constraint: Jaccard overlap with some ground-truth box at least
    each of min_overlaps (0.1, 0.3, 0.5, 0.7, 0.9), and (any_crop) at most 1, any crop."""
    crop = {'min_scale': min_scale, 'max_scale': 1.0,
            'min_aspect_ratio': 0.5, 'max_aspect_ratio': 2.0}
    samplers: List[Dict[str, Any]] = [{'sampler': {}, 'max_trials': 1, 'max_sample': 1}]
    constraints = [{'min_jaccard_overlap': v} for v in min_overlaps]
    if any_crop:
        constraints.append({'max_jaccard_overlap': 1.0})
    for constraint in constraints:
        samplers.append({'sampler': dict(crop), 'sample_constraint': constraint,
                         'max_trials': max_trials, 'max_sample': 1})
    return samplers


def train_transform_param(width: int, height: int, force_color: bool = False,
                          max_expand_ratio: float = 4.0,
                          expand_prob: float = 0.5) -> Dict[str, Any]:
    """The training transformation: mirror, mean (104, 117, 123), warp to width x height
    with a random interpolation, photometric distortions, zoom-out expansion (none when
    expand_prob is 0) and the centre emit constraint."""
    param: Dict[str, Any] = {
        'mirror': True,
        'mean_value': [104, 117, 123],
        'resize_param': {
            'prob': 1, 'resize_mode': P.Resize.WARP, 'height': height, 'width': width,
            'interp_mode': [P.Resize.LINEAR, P.Resize.AREA, P.Resize.NEAREST, P.Resize.CUBIC,
                            P.Resize.LANCZOS4]},
        'distort_param': {
            'brightness_prob': 0.5, 'brightness_delta': 32,
            'contrast_prob': 0.5, 'contrast_lower': 0.5, 'contrast_upper': 1.5,
            'hue_prob': 0.5, 'hue_delta': 18,
            'saturation_prob': 0.5, 'saturation_lower': 0.5, 'saturation_upper': 1.5,
            'random_order_prob': 0.0},
        'emit_constraint': {'emit_type': caffe_pb2.EmitConstraint.CENTER},
    }
    if expand_prob > 0:
        param['expand_param'] = {'prob': expand_prob, 'max_expand_ratio': max_expand_ratio}
    if force_color:
        param['force_color'] = True
    return param


def test_transform_param(width: int, height: int, force_color: bool = False) -> Dict[str, Any]:
    """The test transformation: mean (104, 117, 123) and a bilinear warp."""
    param: Dict[str, Any] = {
        'mean_value': [104, 117, 123],
        'resize_param': {'prob': 1, 'resize_mode': P.Resize.WARP, 'height': height,
                         'width': width, 'interp_mode': [P.Resize.LINEAR]},
    }
    if force_color:
        param['force_color'] = True
    return param


def multibox_loss_param(num_classes: int, train_on_diff_gt: bool,
                        neg_pos_ratio: float = 3.) -> Dict[str, Any]:
    """MultiBoxLoss settings of the ODM (the ARM's are the same with num_classes 2):
    smooth-L1 boxes, softmax classes, per-prediction matching at IoU 0.5, hard negatives
    by max negative at 3:1, anchors the ARM is sure of (objectness <= 0.01) skipped."""
    return {
        'loc_loss_type': P.MultiBoxLoss.SMOOTH_L1,
        'conf_loss_type': P.MultiBoxLoss.SOFTMAX,
        'loc_weight': loc_weight(neg_pos_ratio),
        'num_classes': num_classes,
        'share_location': True,
        'match_type': P.MultiBoxLoss.PER_PREDICTION,
        'overlap_threshold': 0.5,
        'use_prior_for_matching': True,
        'background_label_id': 0,
        'use_difficult_gt': train_on_diff_gt,
        'mining_type': P.MultiBoxLoss.MAX_NEGATIVE,
        'neg_pos_ratio': neg_pos_ratio,
        'neg_overlap': 0.5,
        'code_type': P.PriorBox.CENTER_SIZE,
        'ignore_cross_boundary_bbox': False,
        'objectness_score': 0.01,
    }


def loc_weight(neg_pos_ratio: float = 3.) -> float:
    """The localisation loss weight RefineDet uses: (neg_pos_ratio + 1) / 4."""
    return (neg_pos_ratio + 1.) / 4.


def detection_output_param(num_classes: int, keep_top_k: int = 500,
                           confidence_threshold: float = 0.01) -> Dict[str, Any]:
    """DetectionOutput: per-class NMS at 0.45 over the top 1000, keep_top_k per image."""
    return {
        'num_classes': num_classes,
        'share_location': True,
        'background_label_id': 0,
        'nms_param': {'nms_threshold': 0.45, 'top_k': 1000},
        'keep_top_k': keep_top_k,
        'confidence_threshold': confidence_threshold,
        'code_type': P.PriorBox.CENTER_SIZE,
        'objectness_score': 0.01,
    }


def detection_evaluate_param(num_classes: int, name_size_file: str) -> Dict[str, Any]:
    """DetectionEvaluate: matches at IoU 0.5, difficult boxes ignored, boxes scaled back
    to each image's size from name_size_file."""
    return {
        'num_classes': num_classes,
        'background_label_id': 0,
        'overlap_threshold': 0.5,
        'evaluate_difficult_gt': False,
        'name_size_file': name_size_file,
    }


def label_map_size(label_map_file: str, default: int) -> int:
    """The number of classes (background included) a label map lists: its largest label
    plus one; `default` while the file is not written yet."""
    if not os.path.exists(label_map_file):
        return default
    label_map = protoio.read_text(label_map_file, caffe_pb2.LabelMap)
    if not label_map.item:
        raise ValueError('{}: the label map lists no classes'.format(label_map_file))
    return max(item.label for item in label_map.item) + 1


class Devices(NamedTuple):
    """How a script's `gpus` string splits its mini-batch (see split_batch)."""
    gpulist: List[str]
    batch_size_per_device: int
    iter_size: int
    solver_mode: int
    device_id: int


def split_batch(gpus: str, batch_size: int, accum_batch_size: int) -> Devices:
    """RefineDet's division of the mini-batch: with N device ids each rank takes
    ceil(batch_size / N) images and gradients are accumulated over
    ceil(accum_batch_size / (per-rank batch * N)) passes; without ids (`gpus = ""`) one
    CPU process takes batch_size images and accumulates accum_batch_size // batch_size."""
    gpulist = [g.strip() for g in gpus.split(',') if g.strip()]
    if not gpulist:
        return Devices([], batch_size, max(1, accum_batch_size // batch_size),
                       P.Solver.CPU, 0)
    per_device = int(math.ceil(float(batch_size) / len(gpulist)))
    iter_size = int(math.ceil(float(accum_batch_size) / (per_device * len(gpulist))))
    return Devices(gpulist, per_device, iter_size, P.Solver.GPU, int(gpulist[0]))


def scale_base_lr(base_lr: float, normalization_mode: int, neg_pos_ratio: float,
                  batch_size_per_device: int) -> float:
    """The scripts' base_lr is for one image on one GPU; scale it for the loss
    normalisation as SSD does (VALID: x 25 / loc_weight; NONE: / per-rank batch;
    FULL: x 2000, about the number of priors per image)."""
    if normalization_mode == P.Loss.NONE:
        return base_lr / batch_size_per_device
    if normalization_mode == P.Loss.VALID:
        return base_lr * 25. / loc_weight(neg_pos_ratio)
    if normalization_mode == P.Loss.FULL:
        return base_lr * 2000.
    return base_lr


# ---- extra layers: RefineDet's transfer connection blocks ----------------------------------

def add_tcb(net: Any, arm_sources: Sequence[str], use_batchnorm: bool, lr_mult: float = 1,
            num_output: int = 256, normalizations: Sequence[float] = (),
            **bn_params: Any) -> List[str]:
    """The transfer connection blocks over the ARM sources (shallow to deep), made deepest
    first as RefineDet's AddExtraLayers does; returns the ARM sources to use (an
    L2-normalised source `<name>_norm` where normalizations gives a scale other than -1).

    With n sources the levels are numbered 3 .. n+2 (P3 .. P6 for four). The deepest
    level k: TLk_1, TLk_2 and Pk, three 3x3 convolutions with ReLU. Each other level k:
    TLk_1 (3x3, ReLU), TLk_2 (3x3, no ReLU), P(k+1)-up (P(k+1) upsampled by a 2x2 stride-2
    deconvolution), Eltk = TLk_2 + P(k+1)-up, its ReLU, and Pk (3x3, ReLU). The ODM reads
    P3 .. P(n+2). `bn_params` (eps, moving_average_fraction, use_global_stats) go to the
    BatchNorm layers when use_batchnorm."""
    sources = list(arm_sources)
    if normalizations and len(normalizations) != len(sources):
        raise ValueError('add_tcb: %d normalizations for %d ARM sources'
                         % (len(normalizations), len(sources)))
    top = len(sources) + 2
    for index in reversed(range(len(sources))):
        level = index + 3
        from_layer = sources[index]
        if normalizations and normalizations[index] != -1:
            norm_name = '{}_norm'.format(from_layer)
            net[norm_name] = L.Normalize(
                net[from_layer], scale_filler=dict(type='constant', value=normalizations[index]),
                across_spatial=False, channel_shared=False)
            from_layer = sources[index] = norm_name
        tl1, tl2, p = 'TL{}_1'.format(level), 'TL{}_2'.format(level), 'P{}'.format(level)
        ConvBNLayer(net, from_layer, tl1, use_batchnorm, True, num_output, 3, 1, 1,
                    lr_mult=lr_mult, **bn_params)
        if level == top:
            ConvBNLayer(net, tl1, tl2, use_batchnorm, True, num_output, 3, 1, 1,
                        lr_mult=lr_mult, **bn_params)
            ConvBNLayer(net, tl2, p, use_batchnorm, True, num_output, 3, 1, 1, lr_mult=lr_mult,
                        **bn_params)
            continue
        ConvBNLayer(net, tl1, tl2, use_batchnorm, False, num_output, 3, 1, 1, lr_mult=lr_mult,
                    **bn_params)
        upper = 'P{}'.format(level + 1)
        DeconvBNLayer(net, upper, upper + '-up', use_batchnorm, False, num_output, 2, 0, 2,
                      lr_mult=lr_mult, **bn_params)
        elt = 'Elt{}'.format(level)
        EltwiseLayer(net, [tl2, upper + '-up'], elt)
        net[elt + '_relu'] = L.ReLU(net[elt], in_place=True)
        ConvBNLayer(net, elt + '_relu', p, use_batchnorm, True, num_output, 3, 1, 1,
                    lr_mult=lr_mult, **bn_params)
    return sources


def odm_sources(num_levels: int) -> List[str]:
    """The TCB outputs the ODM reads for `num_levels` ARM sources: P3, P4, ..."""
    return ['P{}'.format(level) for level in range(3, num_levels + 3)]


def add_vgg16_extra_layers(net: Any, use_batchnorm: bool, arm_source_layers: Sequence[str],
                           normalizations: Sequence[float], lr_mult: float = 1) -> List[str]:
    """RefineDet's VGG16 extra layers: conv6_1 (1x1, 256) and conv6_2 (3x3 stride 2, 512)
    on fc7, giving the stride-64 map, then the TCBs (conv4_3 and conv5_3 L2-normalised).
    Returns the ARM sources."""
    from_layer = net.keys()[-1]
    ConvBNLayer(net, from_layer, 'conv6_1', use_batchnorm, True, 256, 1, 0, 1, lr_mult=lr_mult)
    ConvBNLayer(net, 'conv6_1', 'conv6_2', use_batchnorm, True, 512, 3, 1, 2, lr_mult=lr_mult)
    return add_tcb(net, arm_source_layers, use_batchnorm, lr_mult=lr_mult,
                   normalizations=normalizations)


def add_resnet_extra_layers(net: Any, arm_source_layers: Sequence[str],
                            use_batchnorm: bool = True) -> List[str]:
    """RefineDet's ResNet extra layers: res6, a stride-2 bottleneck (128-128-512 with a
    projection) after res5c, then the TCBs with BatchNorm. Returns the ARM sources."""
    ResBody(net, net.keys()[-1], '6', out2a=128, out2b=128, out2c=512, stride=2,
            use_branch1=True)
    return add_tcb(net, arm_source_layers, use_batchnorm)


# ---- the nets ---------------------------------------------------------------------------------

def _softmax_flatten(net: Any, conf_name: str, num_classes: int) -> Any:
    """`<conf>_reshape` (N, priors, classes), `<conf>_softmax` over classes, `<conf>_flatten`."""
    reshape, softmax, flatten = (conf_name + s for s in ('_reshape', '_softmax', '_flatten'))
    net[reshape] = L.Reshape(net[conf_name], shape=dict(dim=[0, -1, num_classes]))
    net[softmax] = L.Softmax(net[reshape], axis=2)
    net[flatten] = L.Flatten(net[softmax], axis=1)
    return net[flatten]


def _head(net: Any, body: Body, num_classes: int, head_param: Dict[str, Any]) -> List[Any]:
    arm_sources = body(net)
    return CreateRefineDetHead(net, data_layer='data', from_layers=arm_sources,
                               num_classes=num_classes, **head_param)


def refinedet_train_net(body: Body, source: str, batch_size: int, label_map_file: str,
              transform_param: Dict[str, Any], batch_sampler: List[Dict[str, Any]],
              num_classes: int, head_param: Dict[str, Any], loss_param_odm: Dict[str, Any],
              loss_param: Dict[str, Any]) -> Any:
    """The training net: AnnotatedData, the body, the RefineDet head, arm_loss (objectness:
    the ODM's settings with 2 classes) and odm_loss (its anchors refined by arm_loc, its
    negatives filtered by the ARM's softmaxed objectness arm_conf_flatten)."""
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(
        source, batch_size=batch_size, train=True, output_label=True,
        label_map_file=label_map_file, transform_param=transform_param,
        batch_sampler=batch_sampler)
    arm_loc, arm_conf, arm_priorbox, odm_loc, odm_conf = _head(net, body, num_classes,
                                                               head_param)
    train_only = dict(phase=caffe_pb2.Phase.Value('TRAIN'))
    net.arm_loss = L.MultiBoxLoss(arm_loc, arm_conf, arm_priorbox, net.label,
                                  multibox_loss_param=dict(loss_param_odm, num_classes=2),
                                  loss_param=loss_param, include=train_only,
                                  propagate_down=[True, True, False, False])
    arm_conf_flatten = _softmax_flatten(net, 'arm_conf', 2)
    net.odm_loss = L.MultiBoxLoss(odm_loc, odm_conf, arm_priorbox, net.label, arm_conf_flatten,
                                  arm_loc, multibox_loss_param=loss_param_odm,
                                  loss_param=loss_param, include=train_only,
                                  propagate_down=[True, True, False, False, False, False])
    return net


def refinedet_test_net(body: Body, source: str, batch_size: int, label_map_file: str,
             transform_param: Dict[str, Any], num_classes: int, head_param: Dict[str, Any],
             det_out_param: Dict[str, Any], det_eval_param: Dict[str, Any]) -> Any:
    """The test net: AnnotatedData, the body, the head, DetectionOutput on (odm_loc,
    odm_conf_flatten, arm_priorbox, arm_conf_flatten, arm_loc) and DetectionEvaluate."""
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(
        source, batch_size=batch_size, train=False, output_label=True,
        label_map_file=label_map_file, transform_param=transform_param)
    arm_loc, _, arm_priorbox, odm_loc, _ = _head(net, body, num_classes, head_param)
    arm_conf_flatten = _softmax_flatten(net, 'arm_conf', 2)
    odm_conf_flatten = _softmax_flatten(net, 'odm_conf', num_classes)
    test_only = dict(phase=caffe_pb2.Phase.Value('TEST'))
    net.detection_out = L.DetectionOutput(odm_loc, odm_conf_flatten, arm_priorbox,
                                          arm_conf_flatten, arm_loc,
                                          detection_output_param=det_out_param,
                                          include=test_only)
    net.detection_eval = L.DetectionEvaluate(net.detection_out, net.label,
                                             detection_evaluate_param=det_eval_param,
                                             include=test_only)
    return net


def refinedet_deploy_net(test: Any, name: str, height: int, width: int) -> Any:
    """The test net without its first (AnnotatedData) and last (DetectionEvaluate) layers,
    reading a 1 x 3 x height x width `data` input instead."""
    net_param = test.to_proto()
    del net_param.layer[0]
    del net_param.layer[-1]
    net_param.name = name
    net_param.input.extend(['data'])
    net_param.input_shape.extend([caffe_pb2.BlobShape(dim=[1, 3, height, width])])
    return net_param


def _write_text(path: str, text: str) -> None:
    """Write a file whole (a temporary file renamed into place)."""
    tmp = '{}.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_net(path: str, net_param: Any, name: Optional[str] = None) -> None:
    """A net as prototxt, its name first (`name: "<model>_train"`) as the scripts print it."""
    text = str(net_param)
    if name is not None:
        text = 'name: "{}"\n{}'.format(name, text)
    _write_text(path, text if text.endswith('\n') else text + '\n')


# ---- snapshots and the job script -------------------------------------------------------------

def _snapshot_iters(snapshot_dir: str, model_name: str, ext: str) -> Dict[int, str]:
    """{iteration: file name} of `<model_name>_iter_<N><ext>` files in snapshot_dir
    (other files are left alone)."""
    pattern = re.compile(r'^{}_iter_(\d+){}$'.format(re.escape(model_name), re.escape(ext)))
    found: Dict[int, str] = {}
    if os.path.isdir(snapshot_dir):
        for name in os.listdir(snapshot_dir):
            m = pattern.match(name)
            if m:
                found[int(m.group(1))] = name
    return found


def latest_snapshot_iter(snapshot_dir: str, model_name: str) -> int:
    """The iteration of the most recent `<model_name>_iter_<N>.solverstate`, 0 if none."""
    return max(_snapshot_iters(snapshot_dir, model_name, '.solverstate'), default=0)


def remove_old_snapshots(snapshot_dir: str, model_name: str, max_iter: int) -> List[str]:
    """Delete solverstates and caffemodels of iterations before max_iter; returns them."""
    removed = []
    for ext in ('.solverstate', '.caffemodel'):
        for it, name in sorted(_snapshot_iters(snapshot_dir, model_name, ext).items()):
            if it < max_iter:
                os.remove(os.path.join(snapshot_dir, name))
                removed.append(name)
    return removed


def train_source_flag(snapshot_prefix: str, pretrain_model: str, resume_iter: int) -> str:
    """`--snapshot=` the solverstate to resume from, else `--weights=` the pretrained model
    (nothing for a model trained from scratch)."""
    if resume_iter > 0:
        return '--snapshot="{}_iter_{}.solverstate"'.format(snapshot_prefix, resume_iter)
    if pretrain_model:
        return '--weights="{}"'.format(pretrain_model)
    return ''


def job_script(caffe_root: str, solver_file: str, source_flag: str, gpulist: Sequence[str],
               log_file: str) -> str:
    """The job script: cd to the Caffe root and `./build/tools/caffe train`, on the GPUs
    listed (data-parallel ranks when several) or on the CPU, logging through tee. The
    exit status is caffe's (pipefail), so a failed training fails the job."""
    lines = ['#!/bin/bash', 'set -o pipefail', 'cd {}'.format(caffe_root),
             './build/tools/caffe train \\', '--solver="{}" \\'.format(solver_file)]
    if source_flag:
        lines.append(source_flag + ' \\')
    tail = '2>&1 | tee {}'.format(log_file)
    lines.append('--gpu {} {}'.format(','.join(gpulist), tail) if gpulist else tail)
    return '\n'.join(lines) + '\n'


class Job(NamedTuple):
    """The files a script wrote."""
    train_net_file: str
    test_net_file: str
    deploy_net_file: str
    solver_file: str
    job_file: str
    log_file: str
    resume_iter: int


def check_inputs(paths: Dict[str, str]) -> None:
    """Warn (as RefineDet's check_if_exist only looked) about inputs not there yet; the
    job itself stops with an error naming the missing file."""
    for what, path in paths.items():
        if path and not os.path.exists(path):
            print('Warning: {} {} does not exist (yet)'.format(what, path), file=sys.stderr)


def write_job(*, model_name: str, body: Body, caffe_root: str, save_dir: str,
              snapshot_dir: str, job_dir: str, train_data: str, test_data: str,
              label_map_file: str, name_size_file: str, pretrain_model: str,
              resize_width: int, resize_height: int, batch_sampler: List[Dict[str, Any]],
              train_transform: Dict[str, Any], test_transform: Dict[str, Any],
              num_classes: int, head_param: Dict[str, Any], mbox_loss_param: Dict[str, Any],
              loss_param: Dict[str, Any], det_out_param: Dict[str, Any],
              det_eval_param: Dict[str, Any], batch_size_per_device: int, test_batch_size: int,
              solver_param: Dict[str, Any], gpulist: Sequence[str], resume_training: bool,
              remove_old_models: bool, script_file: Optional[str] = None) -> Job:
    """Write everything a RefineDet example script writes and return the paths: train,
    test and deploy nets and the solver under save_dir (copied to job_dir with the script
    itself), and the job script `<job_dir>/<model_name>.sh`, which resumes from the latest
    solverstate in snapshot_dir when resume_training is set. The solver gets the test net
    when solver_param has test settings (test_iter)."""
    check_inputs({'training data': train_data, 'test data': test_data,
                  'label map': label_map_file, 'name-size file': name_size_file,
                  'pretrained model': pretrain_model})
    for d in (save_dir, job_dir, snapshot_dir):
        os.makedirs(d, exist_ok=True)
    train_net_file = os.path.join(save_dir, 'train.prototxt')
    test_net_file = os.path.join(save_dir, 'test.prototxt')
    deploy_net_file = os.path.join(save_dir, 'deploy.prototxt')
    solver_file = os.path.join(save_dir, 'solver.prototxt')
    snapshot_prefix = os.path.join(snapshot_dir, model_name)
    job_file = os.path.join(job_dir, '{}.sh'.format(model_name))
    log_file = os.path.join(job_dir, '{}.log'.format(model_name))

    train = refinedet_train_net(body, train_data, batch_size_per_device, label_map_file,
                                train_transform, batch_sampler, num_classes, head_param,
                                mbox_loss_param, loss_param)
    write_net(train_net_file, train.to_proto(), '{}_train'.format(model_name))
    test = refinedet_test_net(body, test_data, test_batch_size, label_map_file, test_transform,
                              num_classes, head_param, det_out_param, det_eval_param)
    write_net(test_net_file, test.to_proto(), '{}_test'.format(model_name))
    write_net(deploy_net_file, refinedet_deploy_net(test, '{}_deploy'.format(model_name),
                                                    resize_height, resize_width))
    solver_kwargs = dict(solver_param)
    if solver_kwargs.get('test_iter'):
        solver_kwargs['test_net'] = [test_net_file]
    solver = caffe_pb2.SolverParameter(train_net=train_net_file,
                                       snapshot_prefix=snapshot_prefix, **solver_kwargs)
    _write_text(solver_file, str(solver))
    if os.path.realpath(job_dir) != os.path.realpath(save_dir):
        for path in (train_net_file, test_net_file, deploy_net_file, solver_file):
            shutil.copy(path, job_dir)

    max_iter = latest_snapshot_iter(snapshot_dir, model_name)
    resume_iter = max_iter if resume_training else 0
    if remove_old_models:
        remove_old_snapshots(snapshot_dir, model_name, max_iter)
    flag = train_source_flag(snapshot_prefix, pretrain_model, resume_iter)
    _write_text(job_file, job_script(caffe_root, solver_file, flag, gpulist, log_file))
    os.chmod(job_file, stat.S_IRWXU)
    if script_file and os.path.dirname(os.path.realpath(script_file)) != os.path.realpath(job_dir):
        shutil.copy(os.path.abspath(script_file), job_dir)
    return Job(train_net_file, test_net_file, deploy_net_file, solver_file, job_file, log_file,
               resume_iter)


def run_job(job_file: str) -> int:
    """Run the job script (the training); returns its exit status."""
    return subprocess.call([os.path.abspath(job_file)])


def command_line(run_soon: bool, gpus: str,
                 argv: Optional[Sequence[str]] = None) -> Tuple[bool, str]:
    """Optional flags over a script's own settings (RefineDet's scripts had none; their
    settings stay the defaults): `--no-run` writes the files without starting the
    training, `--gpus IDS` replaces the script's `gpus` ("" or -1 for the CPU)."""
    parser = argparse.ArgumentParser(
        description='Write the nets, solver and job script of this RefineDet model under '
                    'models/ and jobs/ (run from the Caffe root), then train unless --no-run.')
    parser.add_argument('--no-run', action='store_true',
                        help='write the files only (run_soon = False)')
    parser.add_argument('--gpus', default=None,
                        help='device ids separated by commas; "" or -1 for the CPU '
                             '(default: the script\'s gpus = "%s")' % gpus)
    args = parser.parse_args(argv)
    if args.gpus is not None:
        gpus = '' if args.gpus.strip() in ('', '-1') else args.gpus
    return run_soon and not args.no_run, gpus
