"""RefineDet160 with a small conv body trained from scratch on the embedded toy data set, sized
for a CPU (`make demo MODEL=refinedet` runs it).

Run from the Caffe root (caffe-fast-rcnn/), after `python ../data/scripts/make_toy_dataset.py`,
data/toy/create_list.sh and data/toy/create_data.sh:

    python examples/refinedet/ToyNet_toy_160.py [--no-run] [--gpus 0]

It writes the train/test/deploy/solver prototxts to
    models/ToyNet/toy/refinedet_toynet_160x160/
and the job script
    jobs/ToyNet/toy/refinedet_toynet_160x160/toy_refinedet_toynet_160x160.sh,
then runs it on the CPU (gpus = ""). The solver tests the toy test set halfway and after
the last iteration (`Test net output #0: detection_eval = <mAP>`); test/refinedet_test.py
scores the final model with the VOC07 metric.

The net is RefineDet's at a smaller scale: a conv body of BatchNorm'd convolutions (a 4x4
stride-4 stem, then stride-2 3x3 convolutions) whose stride 8, 16 and 32 maps feed the ARM,
three transfer connection blocks (P3, P4, P5) feeding the ODM, anchors of 16, 32 and 64
pixels with aspect ratios 1, 2 and 1/2. What differs from RefineDet's recipe, to train from
scratch in minutes on a CPU: Adam instead of SGD, three of the seven batch samplers (the
whole image and crops keeping half or 70% of a box) and no zoom-out expansion, BatchNorm
statistics averaged over about the last 100 iterations (moving_average_fraction 0.99)
instead of the whole run, 1000 iterations of 8 images.
"""
import os
import sys

sys.path.append("./python")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caffe.model_libs import *  # noqa: E402,F401,F403  (caffe, L, P, caffe_pb2, the builders)
from caffe.model_libs import ConvBNLayer, P  # noqa: E402
from refinedet_job import (add_tcb, batch_samplers, command_line,  # noqa: E402
                           detection_evaluate_param, detection_output_param, label_map_size,
                           multibox_loss_param, odm_sources, run_job, split_batch,
                           test_transform_param, train_transform_param, write_job)

### Modify the following parameters accordingly ###
# The directory which contains the caffe code; run the script from there.
caffe_root = os.getcwd()

# Start training right after writing the files.
run_soon = True
# Resume from the most recent snapshot in snapshot_dir (else start from scratch).
resume_training = True
# Delete snapshots older than the most recent one.
remove_old_models = False

# LMDBs of AnnotatedDatum made by data/toy/create_data.sh.
train_data = "examples/toy/toy_trainval_lmdb"
test_data = "examples/toy/toy_test_lmdb"

resize_width = 160
resize_height = 160
resize = "{}x{}".format(resize_width, resize_height)
# The whole image, or a crop keeping at least half (or 70%) of some box; no zoom-out.
batch_sampler = batch_samplers(min_overlaps=(0.5, 0.7), any_crop=False)
train_transform = train_transform_param(resize_width, resize_height, expand_prob=0)
test_transform = test_transform_param(resize_width, resize_height)

# Widths of the conv body's stages (stride 4, 8, 16, 32) and of the transfer connection
# blocks; BatchNorm statistics averaged over about the last 1 / (1 - 0.99) iterations.
widths = [24, 48, 64, 96]
tcb_width = 48
bn_param = {'moving_average_fraction': 0.99}
# Adam's learning rate for the mini-batch below.
base_lr = 0.001

job_name = "refinedet_toynet_{}".format(resize)
model_name = "toy_{}".format(job_name)
save_dir = "models/ToyNet/toy/{}".format(job_name)
snapshot_dir = "models/ToyNet/toy/{}".format(job_name)
job_dir = "jobs/ToyNet/toy/{}".format(job_name)

# Test image names and sizes, made by data/toy/create_list.sh.
name_size_file = "data/toy/test_name_size.txt"
# Trained from scratch: no pretrained model.
pretrain_model = ""
# Background and the toy classes, made by data/toy/create_list.sh from the set's classes.txt.
label_map_file = "data/toy/labelmap_toy.prototxt"

# MultiBoxLoss parameters (the background and five shapes unless the set was made otherwise).
num_classes = label_map_size(label_map_file, default=6)
train_on_diff_gt = True
normalization_mode = P.Loss.VALID
neg_pos_ratio = 3.
mbox_loss_param = multibox_loss_param(num_classes, train_on_diff_gt, neg_pos_ratio)
loss_param = {'normalization': normalization_mode}

# Anchors: conv2_2 20x20, conv3_2 10x10, conv4 5x5 (and P3..P5 of the same sizes).
arm_source_layers = ['conv2_2', 'conv3_2', 'conv4']
head_param = dict(
    from_layers2=odm_sources(len(arm_source_layers)), use_batchnorm=False,
    min_sizes=[16, 32, 64], max_sizes=[[], [], []], steps=[8, 16, 32],
    aspect_ratios=[[2], [2], [2]], normalizations=[], share_location=True, flip=True,
    clip=False, prior_variance=[0.1, 0.1, 0.2, 0.2], kernel_size=3, pad=1, lr_mult=1)

# Devices: "" for the CPU, ids separated by commas for GPUs (several: data-parallel ranks).
gpus = ""
run_soon, gpus = command_line(run_soon, gpus)
batch_size = 8
accum_batch_size = 8
devices = split_batch(gpus, batch_size, accum_batch_size)

# The whole toy test set, halfway and after the last iteration.
num_test_image = 200
test_batch_size = 8
test_iter = -(-num_test_image // test_batch_size)
max_iter = 1000

solver_param = {
    'base_lr': base_lr,
    'weight_decay': 0.0005,
    'lr_policy': "multistep",
    'stepvalue': [650, 900],
    'gamma': 0.1,
    'momentum': 0.9,
    'momentum2': 0.999,
    'iter_size': devices.iter_size,
    'max_iter': max_iter,
    'snapshot': 250,
    'display': 20,
    'average_loss': 20,
    'type': "Adam",
    'solver_mode': devices.solver_mode,
    'device_id': devices.device_id,
    'debug_info': False,
    'snapshot_after_train': True,
    # Fixed, so that the demo repeats (weights, sampling and augmentation draw from it).
    'random_seed': 1,
    'test_iter': [test_iter],
    'test_interval': max_iter // 2,
    'eval_type': "detection",
    'ap_version': "11point",
    'test_initialization': False,
}
det_out_param = detection_output_param(num_classes, keep_top_k=100)
det_eval_param = detection_evaluate_param(num_classes, name_size_file)


def body(net):
    """The toy conv body, each convolution with BatchNorm, Scale and ReLU: conv1 4x4 stride
    4, then at strides 8, 16 and 32 a stride-2 3x3 convolution (conv2_1, conv3_1, conv4),
    the first two followed by a second 3x3 (conv2_2, conv3_2); then the transfer connection
    blocks. Returns the ARM's source layers."""
    w1, w2, w3, w4 = widths
    ConvBNLayer(net, 'data', 'conv1', True, True, w1, 4, 0, 4, **bn_param)
    ConvBNLayer(net, 'conv1', 'conv2_1', True, True, w2, 3, 1, 2, **bn_param)
    ConvBNLayer(net, 'conv2_1', 'conv2_2', True, True, w2, 3, 1, 1, **bn_param)
    ConvBNLayer(net, 'conv2_2', 'conv3_1', True, True, w3, 3, 1, 2, **bn_param)
    ConvBNLayer(net, 'conv3_1', 'conv3_2', True, True, w3, 3, 1, 1, **bn_param)
    ConvBNLayer(net, 'conv3_2', 'conv4', True, True, w4, 3, 1, 2, **bn_param)
    return add_tcb(net, arm_source_layers, use_batchnorm=True, num_output=tcb_width,
                   **bn_param)


### Hopefully you don't need to change the following ###
job = write_job(
    model_name=model_name, body=body, caffe_root=caffe_root, save_dir=save_dir,
    snapshot_dir=snapshot_dir, job_dir=job_dir, train_data=train_data, test_data=test_data,
    label_map_file=label_map_file, name_size_file=name_size_file,
    pretrain_model=pretrain_model, resize_width=resize_width, resize_height=resize_height,
    batch_sampler=batch_sampler, train_transform=train_transform,
    test_transform=test_transform, num_classes=num_classes, head_param=head_param,
    mbox_loss_param=mbox_loss_param, loss_param=loss_param, det_out_param=det_out_param,
    det_eval_param=det_eval_param, batch_size_per_device=devices.batch_size_per_device,
    test_batch_size=test_batch_size, solver_param=solver_param, gpulist=devices.gpulist,
    resume_training=resume_training, remove_old_models=remove_old_models,
    script_file=__file__)
if run_soon:
    sys.exit(run_job(job.job_file))
