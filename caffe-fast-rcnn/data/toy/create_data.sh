#!/bin/bash
# LMDBs of AnnotatedDatum for the toy data set, in the manner of data/VOC0712/create_data.sh:
# toy_trainval_lmdb and toy_test_lmdb (the JPEG files as they are, boxes and labels from the
# XML files, every class checked against labelmap_toy.prototxt) under the folder above the
# devkit (<repository>/data/toy/lmdb), linked from examples/toy/ under the Caffe root.
# Run data/toy/create_list.sh first. The devkit is TOY_ROOT_DIR when set (see create_list.sh).
cur_dir=$(cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )
root_dir=$(cd "$cur_dir/../.." && pwd)

cd "$root_dir" || exit 1

python=${CAFFE_PYTHON:-}
if [ -z "$python" ]
then
  if [ -x "$root_dir/../.venv/bin/python" ]; then python=$root_dir/../.venv/bin/python; else python=python3; fi
fi

data_root_dir=${TOY_ROOT_DIR:-$root_dir/../data/toy/VOCdevkit2007}
data_root_dir=$(cd "$data_root_dir" 2>/dev/null && pwd || echo "$data_root_dir")
lmdb_dir=${TOY_LMDB_DIR:-$(dirname "$data_root_dir")/lmdb}
dataset_name="toy"
mapfile="$root_dir/data/$dataset_name/labelmap_toy.prototxt"
anno_type="detection"
db="lmdb"

for subset in trainval test
do
  "$python" "$root_dir/scripts/create_annoset.py" --anno-type=$anno_type \
    --label-map-file="$mapfile" --min-dim=0 --max-dim=0 --resize-width=0 --resize-height=0 \
    --check-label --encode-type=jpg --encoded --redo "$data_root_dir" \
    "$root_dir/data/$dataset_name/$subset.txt" \
    "$lmdb_dir/${dataset_name}_${subset}_${db}" \
    "examples/$dataset_name" || exit 1
done
