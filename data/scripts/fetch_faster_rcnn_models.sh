#!/usr/bin/env bash
# Fetch the trained Faster R-CNN VOC 2007 models used by tools/demo.py
# (VGG16_faster_rcnn_final.caffemodel, ZF_faster_rcnn_final.caffemodel) into
# data/faster_rcnn_models/.
#
# Usage: data/scripts/fetch_faster_rcnn_models.sh
#   FRCN_FASTER_RCNN_MODELS_URL=<mirror>  download from a mirror instead
#   (see fetch_common.sh for FRCN_DATA_DIR, FRCN_SKIP_MD5, FRCN_KEEP_ARCHIVE)

source "$(dirname "${BASH_SOURCE[0]}")/fetch_common.sh"

FILE=faster_rcnn_models.tgz
URL="${FRCN_FASTER_RCNN_MODELS_URL:-http://www.cs.berkeley.edu/~rbg/faster-rcnn-data/$FILE}"
MD5=ac116844f66aefe29587214272054668

frcn_fetch "$FILE" "$URL" "$MD5" "Faster R-CNN demo models (~700 MB)" FRCN_FASTER_RCNN_MODELS_URL
frcn_extract "$FILE"
frcn_expect_files "$FRCN_DATA_DIR/faster_rcnn_models" "*_faster_rcnn_final.caffemodel"
frcn_info "Done: models are in $FRCN_DATA_DIR/faster_rcnn_models"
