#!/bin/bash
# LMDBs of AnnotatedDatum for MS COCO (data/coco/create_data.sh): for minival, testdev, train
# and test, $data_root_dir/lmdb/coco_<subset>_lmdb (JPEG files as they are, boxes from the
# per-image JSON annotations), linked from examples/coco/ under the Caffe root, each run's log
# in data/coco/<subset>.log. Run data/coco/create_list.py first. The data set is
# $HOME/data/Object_Detection/coco, or COCO_ROOT_DIR when set; SUBSETS overrides the list.
cur_dir=$(cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )
root_dir=$cur_dir/../..

cd "$root_dir" || exit 1

python=${CAFFE_PYTHON:-}
if [ -z "$python" ]
then
  if [ -x "$root_dir/../.venv/bin/python" ]; then python=$root_dir/../.venv/bin/python; else python=python3; fi
fi

redo=${REDO:-false}
data_root_dir=${COCO_ROOT_DIR:-$HOME/data/Object_Detection/coco}
dataset_name="coco"
mapfile="$root_dir/data/$dataset_name/labelmap_coco.prototxt"
anno_type="detection"
label_type="json"
db="lmdb"
min_dim=0
max_dim=0
width=0
height=0

extra_cmd="--encode-type=jpg --encoded"
if $redo
then
  extra_cmd="$extra_cmd --redo"
fi
set -o pipefail
for subset in ${SUBSETS:-minival testdev train test}
do
  "$python" "$root_dir/scripts/create_annoset.py" --anno-type=$anno_type \
    --label-type=$label_type --label-map-file="$mapfile" --min-dim=$min_dim \
    --max-dim=$max_dim --resize-width=$width --resize-height=$height --check-label $extra_cmd \
    "$data_root_dir" "$root_dir/data/$dataset_name/$subset.txt" \
    "$data_root_dir/$db/${dataset_name}_${subset}_${db}" "examples/$dataset_name" 2>&1 \
    | tee "$root_dir/data/$dataset_name/$subset.log" || exit 1
done
