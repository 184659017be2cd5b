#!/bin/bash
# Usage:
# ./experiments/scripts/faster_rcnn_alt_opt_ohem.sh GPU NET DATASET [options args to {train,test}_net.py]
# Alternating optimisation whose Fast R-CNN stages train with online hard example mining
# (train_faster_rcnn_alt_opt.py --ohem): the same steps as faster_rcnn_alt_opt.sh.
EXP_SCHEME=faster_rcnn_alt_opt_ohem exec "$(dirname "$0")/faster_rcnn_alt_opt.sh" "$@"
