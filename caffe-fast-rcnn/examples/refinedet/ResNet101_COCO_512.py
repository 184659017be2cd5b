"""RefineDet512 with ResNet-101 on MS COCO: trained on trainval35k, tested on minival
(RefineDet's examples/refinedet/ResNet101_COCO_512.py).

Run from the Caffe root (caffe-fast-rcnn/), after data/coco/create_list.py and
create_data.sh:

    python examples/refinedet/ResNet101_COCO_512.py [--no-run] [--gpus 0,1]

It writes the train/test/deploy/solver prototxts to
    models/ResNet/coco/refinedet_resnet101_512x512/
and the job script
    jobs/ResNet/coco/refinedet_resnet101_512x512/coco_refinedet_resnet101_512x512.sh,
then runs it (run_soon). With resume_training the job resumes from the latest solverstate.
"""
import os
import sys

sys.path.append("./python")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caffe.model_libs import *  # noqa: E402,F401,F403  (caffe, L, P, caffe_pb2, the builders)
from caffe.model_libs import ResNet101Body, P  # noqa: E402
from refinedet_job import (add_resnet_extra_layers, batch_samplers, command_line,  # noqa: E402
                           detection_evaluate_param, detection_output_param,
                           multibox_loss_param, odm_sources, run_job, scale_base_lr,
                           split_batch, test_transform_param, train_transform_param, write_job)

### Modify the following parameters accordingly ###
# The directory which contains the caffe code; run the script from there.
caffe_root = os.getcwd()

# Start training right after writing the files.
run_soon = True
# Resume from the most recent snapshot in snapshot_dir (else start from pretrain_model).
resume_training = True
# Delete snapshots older than the most recent one.
remove_old_models = False

# LMDBs of AnnotatedDatum made by data/coco/create_data.sh.
train_data = "examples/coco/coco_train_lmdb"
test_data = "examples/coco/coco_minival_lmdb"

resize_width = 512
resize_height = 512
resize = "{}x{}".format(resize_width, resize_height)
batch_sampler = batch_samplers()
train_transform = train_transform_param(resize_width, resize_height, force_color=True)
test_transform = test_transform_param(resize_width, resize_height, force_color=True)

# The learning rate for one image on one GPU (scaled below for the batch and the loss).
base_lr = 0.00004

job_name = "refinedet_resnet101_{}".format(resize)
model_name = "coco_{}".format(job_name)
save_dir = "models/ResNet/coco/{}".format(job_name)
snapshot_dir = "models/ResNet/coco/{}".format(job_name)
job_dir = "jobs/ResNet/coco/{}".format(job_name)

# Test image names and sizes, made by data/coco/create_list.py.
name_size_file = "data/coco/minival2014_name_size.txt"
# ResNet-101 from https://github.com/KaimingHe/deep-residual-networks.
pretrain_model = "models/ResNet/ResNet-101-model.caffemodel"
label_map_file = "data/coco/labelmap_coco.prototxt"

# MultiBoxLoss parameters.
num_classes = 81
train_on_diff_gt = False
normalization_mode = P.Loss.VALID
neg_pos_ratio = 3.
mbox_loss_param = multibox_loss_param(num_classes, train_on_diff_gt, neg_pos_ratio)
loss_param = {'normalization': normalization_mode}

# Anchors: res3b3_relu 64x64, res4b22_relu 32x32, res5c_relu 16x16, res6_relu 8x8 (and
# P3..P6 of the same sizes); each head reads its map through a residual block
# (inter_layer_depth).
arm_source_layers = ['res3b3_relu', 'res4b22_relu', 'res5c_relu', 'res6_relu']
head_param = dict(
    from_layers2=odm_sources(len(arm_source_layers)), use_batchnorm=False,
    min_sizes=[32, 64, 128, 256], max_sizes=[[], [], [], []], steps=[8, 16, 32, 64],
    aspect_ratios=[[2], [2], [2], [2]], normalizations=[], share_location=True, flip=True,
    clip=False, prior_variance=[0.1, 0.1, 0.2, 0.2], kernel_size=3, pad=1, lr_mult=1,
    inter_layer_depth=[1, 1, 1, 1])

# Devices: ids separated by commas (several: data-parallel ranks), "" for the CPU.
gpus = "0,1,2,3"
run_soon, gpus = command_line(run_soon, gpus)
# The mini-batch, divided among the devices.
batch_size = 32
accum_batch_size = 32
devices = split_batch(gpus, batch_size, accum_batch_size)
base_lr = scale_base_lr(base_lr, normalization_mode, neg_pos_ratio,
                        devices.batch_size_per_device)

# The whole test set (not evaluated during training unless the test settings are enabled).
num_test_image = 5000
test_batch_size = 1
test_iter = num_test_image // test_batch_size

solver_param = {
    'base_lr': base_lr,
    'weight_decay': 0.0005,
    'lr_policy': "multistep",
    'stepvalue': [280000, 360000, 400000],
    'gamma': 0.1,
    'momentum': 0.9,
    'iter_size': devices.iter_size,
    'max_iter': 400000,
    'snapshot': 10000,
    'display': 10,
    'average_loss': 10,
    'type': "SGD",
    'solver_mode': devices.solver_mode,
    'device_id': devices.device_id,
    'debug_info': False,
    'snapshot_after_train': True,
    # Test during training:
    # 'test_iter': [test_iter],
    # 'test_interval': 10000,
    # 'eval_type': "detection",
    # 'ap_version': "11point",
    # 'test_initialization': False,
}
det_out_param = detection_output_param(num_classes)
det_eval_param = detection_evaluate_param(num_classes, name_size_file)


def body(net):
    """ResNet-101 (no pool5), res6 and the transfer connection blocks (with BatchNorm);
    returns the ARM's source layers."""
    ResNet101Body(net, from_layer='data', use_pool5=False, use_dilation_conv5=False)
    return add_resnet_extra_layers(net, arm_source_layers, use_batchnorm=True)


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
