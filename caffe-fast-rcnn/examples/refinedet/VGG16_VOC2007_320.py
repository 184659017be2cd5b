"""RefineDet320 with VGG16 on PASCAL VOC: trained on VOC2007+2012 trainval, tested on VOC2007
test (RefineDet's examples/refinedet/VGG16_VOC2007_320.py).

Run from the Caffe root (caffe-fast-rcnn/), after data/VOC0712/create_list.sh and
create_data.sh:

    python examples/refinedet/VGG16_VOC2007_320.py [--no-run] [--gpus 0,1]

It writes the train/test/deploy/solver prototxts to
    models/VGGNet/VOC0712/refinedet_vgg16_320x320/
and the job script
    jobs/VGGNet/VOC0712/refinedet_vgg16_320x320/VOC0712_refinedet_vgg16_320x320.sh,
then runs it (run_soon). With resume_training the job resumes from the latest solverstate.
"""
import os
import sys

sys.path.append("./python")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caffe.model_libs import *  # noqa: E402,F401,F403  (caffe, L, P, caffe_pb2, the builders)
from caffe.model_libs import VGGNetBody, P  # noqa: E402
from refinedet_job import (add_vgg16_extra_layers, batch_samplers, command_line,  # noqa: E402
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

# LMDBs of AnnotatedDatum made by data/VOC0712/create_data.sh.
train_data = "examples/VOC0712/VOC0712_trainval_lmdb"
test_data = "examples/VOC0712/VOC0712_test_lmdb"

resize_width = 320
resize_height = 320
resize = "{}x{}".format(resize_width, resize_height)
batch_sampler = batch_samplers()
train_transform = train_transform_param(resize_width, resize_height)
test_transform = test_transform_param(resize_width, resize_height)

# BatchNorm in the new layers (only the version without it was tested by RefineDet).
use_batchnorm = False
lr_mult = 1
# The learning rate for one image on one GPU (scaled below for the batch and the loss).
base_lr = 0.0004 if use_batchnorm else 0.00004

job_name = "refinedet_vgg16_{}".format(resize)
model_name = "VOC0712_{}".format(job_name)
save_dir = "models/VGGNet/VOC0712/{}".format(job_name)
snapshot_dir = "models/VGGNet/VOC0712/{}".format(job_name)
job_dir = "jobs/VGGNet/VOC0712/{}".format(job_name)

# Test image names and sizes, made by data/VOC0712/create_list.sh.
name_size_file = "data/VOC0712/test_name_size.txt"
# The fully convolutional, reduced (atrous) VGG16.
pretrain_model = "models/VGGNet/VGG_ILSVRC_16_layers_fc_reduced.caffemodel"
label_map_file = "data/VOC0712/labelmap_voc.prototxt"

# MultiBoxLoss parameters.
num_classes = 21
train_on_diff_gt = True
normalization_mode = P.Loss.VALID
neg_pos_ratio = 3.
mbox_loss_param = multibox_loss_param(num_classes, train_on_diff_gt, neg_pos_ratio)
loss_param = {'normalization': normalization_mode}

# Anchors: conv4_3 40x40, conv5_3 20x20, fc7 10x10, conv6_2 5x5 (and P3..P6 of the same
# sizes); conv4_3 and conv5_3 are L2-normalised with scales 10 and 8.
arm_source_layers = ['conv4_3', 'conv5_3', 'fc7', 'conv6_2']
normalizations = [10, 8, -1, -1]
head_param = dict(
    from_layers2=odm_sources(len(arm_source_layers)), use_batchnorm=use_batchnorm,
    min_sizes=[32, 64, 128, 256], max_sizes=[[], [], [], []], steps=[8, 16, 32, 64],
    aspect_ratios=[[2], [2], [2], [2]], normalizations=[], share_location=True, flip=True,
    clip=False, prior_variance=[0.1, 0.1, 0.2, 0.2], kernel_size=3, pad=1, lr_mult=lr_mult)

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
num_test_image = 4952
test_batch_size = 1
test_iter = num_test_image // test_batch_size

solver_param = {
    'base_lr': base_lr,
    'weight_decay': 0.0005,
    'lr_policy': "multistep",
    'stepvalue': [80000, 100000, 120000],
    'gamma': 0.1,
    'momentum': 0.9,
    'iter_size': devices.iter_size,
    'max_iter': 120000,
    'snapshot': 5000,
    'display': 10,
    'average_loss': 10,
    'type': "SGD",
    'solver_mode': devices.solver_mode,
    'device_id': devices.device_id,
    'debug_info': False,
    'snapshot_after_train': True,
    # Test during training:
    # 'test_iter': [test_iter],
    # 'test_interval': 5000,
    # 'eval_type': "detection",
    # 'ap_version': "11point",
    # 'test_initialization': False,
}
det_out_param = detection_output_param(num_classes)
det_eval_param = detection_evaluate_param(num_classes, name_size_file)


def body(net):
    """VGG16 (fc6/fc7 as atrous convolutions), conv6 and the transfer connection blocks;
    returns the ARM's source layers."""
    VGGNetBody(net, from_layer='data', fully_conv=True, reduced=True, dilated=False,
               dropout=False)
    return add_vgg16_extra_layers(net, use_batchnorm, arm_source_layers, normalizations,
                                  lr_mult=lr_mult)


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
