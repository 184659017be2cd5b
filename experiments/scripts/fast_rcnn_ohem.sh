#!/bin/bash
# Usage:
# ./experiments/scripts/fast_rcnn_ohem.sh GPU NET DATASET [options args to {train,test}_net.py]
# fast rcnn with online hard example mining: the same steps as fast_rcnn.sh, with the
# models/*/fast_rcnn_ohem nets and experiments/cfgs/*fast_rcnn_ohem.yml.
EXP_SCHEME=fast_rcnn_ohem exec "$(dirname "$0")/fast_rcnn.sh" "$@"
