#!/bin/bash
# Usage:
# ./experiments/scripts/faster_rcnn_end2end_ohem.sh GPU NET DATASET [options args to {train,test}_net.py]
# faster rcnn end2end with online hard example mining: the same steps as faster_rcnn_end2end.sh, with the
# models/*/faster_rcnn_end2end_ohem nets and experiments/cfgs/*faster_rcnn_end2end_ohem.yml.
EXP_SCHEME=faster_rcnn_end2end_ohem exec "$(dirname "$0")/faster_rcnn_end2end.sh" "$@"
