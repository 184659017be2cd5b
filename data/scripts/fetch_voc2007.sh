#!/usr/bin/env bash
# Fetch PASCAL VOC 2007 (trainval, test with annotations, devkit), extract it
# to <dir>/VOCdevkit and link data/VOCdevkit2007 to it, which is where
# lib/datasets/pascal_voc.py looks by default.
#
# Usage: data/scripts/fetch_voc2007.sh [DIR]
#   DIR  where to keep the archives and the extracted VOCdevkit (default:
#        data/, i.e. FRCN_DATA_DIR); put it on a big disk and it is linked.
#   FRCN_VOC2007_MIRROR=<base URL>  fetch the three tar files from a mirror
#        (a folder holding VOCtrainval_06-Nov-2007.tar and friends)
#   (see fetch_common.sh for FRCN_SKIP_MD5, FRCN_KEEP_ARCHIVE)

source "$(dirname "${BASH_SOURCE[0]}")/fetch_common.sh"

LINK_DIR="$FRCN_DATA_DIR"
if [ $# -ge 1 ]; then
  mkdir -p "$1"
  FRCN_DATA_DIR="$(cd "$1" && pwd)"
fi
BASE="${FRCN_VOC2007_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2007}"
BASE="${BASE%/}"

# file  md5 (the devkit's is not published; it is checked by content instead)
frcn_fetch VOCtrainval_06-Nov-2007.tar "$BASE/VOCtrainval_06-Nov-2007.tar" \
  c52e279531787c972589f7e41ab4ae64 "VOC 2007 trainval (~440 MB)" FRCN_VOC2007_MIRROR
frcn_fetch VOCtest_06-Nov-2007.tar "$BASE/VOCtest_06-Nov-2007.tar" \
  b6e924de25625d8de591ea690078ad9f "VOC 2007 test (~430 MB)" FRCN_VOC2007_MIRROR
frcn_fetch VOCdevkit_08-Jun-2007.tar "$BASE/VOCdevkit_08-Jun-2007.tar" \
  "" "VOC 2007 devkit" FRCN_VOC2007_MIRROR

for tarball in VOCtrainval_06-Nov-2007.tar VOCtest_06-Nov-2007.tar VOCdevkit_08-Jun-2007.tar; do
  frcn_extract "$tarball"
done

VOC="$FRCN_DATA_DIR/VOCdevkit/VOC2007"
n_jpg=$(find "$VOC/JPEGImages" -name '*.jpg' | wc -l | tr -d ' ')
n_xml=$(find "$VOC/Annotations" -name '*.xml' | wc -l | tr -d ' ')
[ "$n_jpg" = 9963 ] || frcn_die "expected 9963 images in $VOC/JPEGImages, found $n_jpg"
[ "$n_xml" = 9963 ] || frcn_die "expected 9963 annotations in $VOC/Annotations, found $n_xml"
for split in trainval test; do
  [ -s "$VOC/ImageSets/Main/$split.txt" ] || frcn_die "missing $VOC/ImageSets/Main/$split.txt"
done

LINK="$LINK_DIR/VOCdevkit2007"
if [ -L "$LINK" ] || [ ! -e "$LINK" ]; then
  ln -sfn "$FRCN_DATA_DIR/VOCdevkit" "$LINK"
  frcn_info "Linked $LINK -> $FRCN_DATA_DIR/VOCdevkit"
else
  frcn_info "$LINK exists and is not a symlink; leaving it alone."
fi
frcn_info "Done: VOC 2007 has $n_jpg images ($VOC)."
