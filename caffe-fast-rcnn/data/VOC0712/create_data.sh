#!/bin/bash
# LMDBs of AnnotatedDatum for PASCAL VOC (data/VOC0712/create_data.sh): for trainval and test,
# $data_root_dir/VOC0712/lmdb/VOC0712_<subset>_lmdb holding the JPEG files as they are, linked
# from examples/VOC0712/ under the Caffe root. Run data/VOC0712/create_list.sh first.
# The devkit is $HOME/data/VOCdevkit, or VOC_ROOT_DIR when set.
cur_dir=$(cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )
root_dir=$cur_dir/../..

cd "$root_dir" || exit 1

python=${CAFFE_PYTHON:-}
if [ -z "$python" ]
then
  if [ -x "$root_dir/../.venv/bin/python" ]; then python=$root_dir/../.venv/bin/python; else python=python3; fi
fi

redo=1
data_root_dir=${VOC_ROOT_DIR:-$HOME/data/VOCdevkit}
dataset_name="VOC0712"
mapfile="$root_dir/data/$dataset_name/labelmap_voc.prototxt"
anno_type="detection"
db="lmdb"
min_dim=0
max_dim=0
width=0
height=0

extra_cmd="--encode-type=jpg --encoded"
if [ $redo ]
then
  extra_cmd="$extra_cmd --redo"
fi
for subset in trainval test
do
  "$python" "$root_dir/scripts/create_annoset.py" --anno-type=$anno_type \
    --label-map-file="$mapfile" --min-dim=$min_dim --max-dim=$max_dim --resize-width=$width \
    --resize-height=$height --check-label $extra_cmd "$data_root_dir" \
    "$root_dir/data/$dataset_name/$subset.txt" \
    "$data_root_dir/$dataset_name/$db/${dataset_name}_${subset}_${db}" \
    "examples/$dataset_name" || exit 1
done
