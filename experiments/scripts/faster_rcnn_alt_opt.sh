#!/bin/bash
# Usage:
# ./experiments/scripts/faster_rcnn_alt_opt.sh GPU NET DATASET [options args to {train,test}_net.py]
# DATASET is pascal_voc, coco or toy; GPU -1 runs on the CPU; a list (0,1) trains on
# one process per GPU (data-parallel; CPU processes on a machine without GPUs).
#
# Example:
# ./experiments/scripts/faster_rcnn_alt_opt.sh 0 VGG_CNN_M_1024 pascal_voc \
#   --set EXP_DIR foobar RNG_SEED 42 TRAIN.SCALES "[400, 500, 600, 700]"
# ./experiments/scripts/faster_rcnn_alt_opt.sh -1 ToyNet toy

set -x
set -e
cd "$(dirname "$0")/../.."
EXP_SCHEME=${EXP_SCHEME:-faster_rcnn_alt_opt}   # faster_rcnn_alt_opt_ohem.sh sets EXP_SCHEME=faster_rcnn_alt_opt_ohem
source experiments/scripts/_common.sh ${EXP_SCHEME} "$@"
OHEM_FLAG=""
if [ "${EXP_SCHEME}" = "faster_rcnn_alt_opt_ohem" ]; then
  OHEM_FLAG="--ohem"
fi


# Stage iterations: the prototxts' defaults (80k/40k/80k/40k) unless STAGE_ITERS is set,
# e.g. STAGE_ITERS=1500,1000,1500,1000 (the toy data set's default).
STAGE_ARGS=""
if [ -n "${STAGE_ITERS}" ]; then
  STAGE_ARGS="--iters ${STAGE_ITERS}"
elif [ "$DATASET" = "toy" ]; then
  STAGE_ARGS="--iters 1500,1000,1500,1000"
fi

time ./tools/train_faster_rcnn_alt_opt.py --gpu ${GPU_ID} \
  --net_name ${NET} \
  ${WEIGHTS_ARGS} \
  --imdb ${TRAIN_IMDB} \
  --cfg experiments/cfgs/${CFG_PREFIX}${EXP_SCHEME}.yml \
  ${STAGE_ARGS} ${OHEM_FLAG} \
  ${EXTRA_ARGS}

set +x
NET_FINAL=`grep "Final model:" ${LOG} | awk '{print $3}'`
set -x

time ./tools/test_net.py --gpu ${TEST_GPU_ID} \
  --def models/${PT_DIR}/${NET}/faster_rcnn_alt_opt/faster_rcnn_test.pt \
  --net ${NET_FINAL} \
  --imdb ${TEST_IMDB} \
  --cfg experiments/cfgs/${CFG_PREFIX}${EXP_SCHEME}.yml \
  ${EXTRA_ARGS}
