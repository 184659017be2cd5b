#!/usr/bin/env bash
# Fetch R-CNN's precomputed Selective Search proposals for PASCAL VOC into
# data/selective_search_data/ (voc_2007_trainval.mat, voc_2007_test.mat, ...).
# Only needed to train or test with `--imdb ... ` and the selective_search
# proposal method (cfg TRAIN.PROPOSAL_METHOD / TEST.PROPOSAL_METHOD); the
# Faster R-CNN path makes its own proposals with the RPN.
#
# Usage: data/scripts/fetch_selective_search_data.sh
#   FRCN_SELECTIVE_SEARCH_URL=<mirror>  download from a mirror instead
#   (see fetch_common.sh for FRCN_DATA_DIR, FRCN_SKIP_MD5, FRCN_KEEP_ARCHIVE)

source "$(dirname "${BASH_SOURCE[0]}")/fetch_common.sh"

FILE=selective_search_data.tgz
URL="${FRCN_SELECTIVE_SEARCH_URL:-http://www.cs.berkeley.edu/~rbg/r-cnn-release1-selective-search.tgz}"
MD5=6cf6df219c1e514f64482f11d00bd0b4

frcn_fetch "$FILE" "$URL" "$MD5" "precomputed Selective Search boxes (~1.8 GB)" FRCN_SELECTIVE_SEARCH_URL
frcn_extract "$FILE"
frcn_expect_files "$FRCN_DATA_DIR/selective_search_data" "voc_2007_*.mat"
frcn_info "Done: proposals are in $FRCN_DATA_DIR/selective_search_data"
