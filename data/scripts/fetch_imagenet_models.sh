#!/usr/bin/env bash
# Fetch the ImageNet-pretrained Caffe models (ZF, VGG_CNN_M_1024, VGG16) that
# the Faster R-CNN training scripts start from, into data/imagenet_models/.
#
# Usage: data/scripts/fetch_imagenet_models.sh
#   FRCN_IMAGENET_MODELS_URL=<mirror>  download from a mirror instead
#   (see fetch_common.sh for FRCN_DATA_DIR, FRCN_SKIP_MD5, FRCN_KEEP_ARCHIVE)
#
# The toy data set does not need these: its small net trains from scratch.

source "$(dirname "${BASH_SOURCE[0]}")/fetch_common.sh"

FILE=imagenet_models.tgz
URL="${FRCN_IMAGENET_MODELS_URL:-http://www.cs.berkeley.edu/~rbg/faster-rcnn-data/$FILE}"
MD5=ed34ca912d6782edfb673a8c3a0bda6d

frcn_fetch "$FILE" "$URL" "$MD5" "pretrained ImageNet models (~1 GB)" FRCN_IMAGENET_MODELS_URL
frcn_extract "$FILE"
frcn_expect_files "$FRCN_DATA_DIR/imagenet_models" "*.caffemodel"
frcn_info "Done: $(ls "$FRCN_DATA_DIR"/imagenet_models/*.caffemodel | xargs -n1 basename | tr '\n' ' ')"
