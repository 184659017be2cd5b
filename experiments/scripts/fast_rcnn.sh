#!/bin/bash
# Usage:
# ./experiments/scripts/fast_rcnn.sh GPU NET DATASET [options args to {train,test}_net.py]
# DATASET is pascal_voc, coco or toy; GPU -1 runs on the CPU; a list (0,1) trains on
# one process per GPU (data-parallel; CPU processes on a machine without GPUs).
#
# Example:
# ./experiments/scripts/fast_rcnn.sh 0 VGG_CNN_M_1024 pascal_voc \
#   --set EXP_DIR foobar RNG_SEED 42 TRAIN.SCALES "[400, 500, 600, 700]"
# ./experiments/scripts/fast_rcnn.sh -1 ToyNet toy

set -x
set -e
cd "$(dirname "$0")/../.."
EXP_SCHEME=${EXP_SCHEME:-fast_rcnn}   # fast_rcnn_ohem.sh runs this script with EXP_SCHEME=fast_rcnn_ohem
source experiments/scripts/_common.sh ${EXP_SCHEME} "$@"

case $DATASET in
  pascal_voc) ITERS=40000 ;;
  coco) ITERS=280000 ;;
  toy) ITERS=${TOY_ITERS:-2000} ;;
esac

# Fast R-CNN trains on precomputed proposals (selective search by default; pass
# --set TRAIN.PROPOSAL_METHOD rpn with an rpn_file for RPN proposals).
time ./tools/train_net.py --gpu ${GPU_ID} \
  --solver models/${PT_DIR}/${NET}/${EXP_SCHEME}/solver.prototxt \
  ${WEIGHTS_ARGS} \
  --imdb ${TRAIN_IMDB} \
  --iters ${ITERS} \
  --cfg experiments/cfgs/${EXP_SCHEME}.yml \
  ${EXTRA_ARGS}

set +x
NET_FINAL=`grep -B 1 "done solving" ${LOG} | grep "Wrote snapshot" | awk '{print $4}'`
set -x

time ./tools/test_net.py --gpu ${TEST_GPU_ID} \
  --def models/${PT_DIR}/${NET}/${EXP_SCHEME}/test.prototxt \
  --net ${NET_FINAL} \
  --imdb ${TEST_IMDB} \
  --cfg experiments/cfgs/${EXP_SCHEME}.yml \
  ${EXTRA_ARGS}
