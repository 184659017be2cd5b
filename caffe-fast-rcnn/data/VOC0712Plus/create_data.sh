#!/bin/bash
# The training LMDB of RefineDet's VOC2012 models (data/VOC0712Plus/create_data.sh):
# $data_root_dir/VOC0712Plus/lmdb/VOC0712Plus_trainval_lmdb, linked from examples/VOC0712Plus/
# under the Caffe root, from the list data/VOC0712Plus/create_list.sh writes. VOC2012 test's
# annotations are not public (its results go to the evaluation server through
# test/refinedet_test.py --imdb voc_2012_test), so there is a test LMDB only when they are
# there. The devkit is $HOME/data/VOCdevkit, or VOC_ROOT_DIR when set.
cur_dir=$(cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )
root_dir=$(cd "$cur_dir/../.." && pwd)
cd "$root_dir" || exit 1

python=${CAFFE_PYTHON:-}
if [ -z "$python" ]
then
  if [ -x "$root_dir/../.venv/bin/python" ]; then python=$root_dir/../.venv/bin/python; else python=python3; fi
fi

data_root_dir=${VOC_ROOT_DIR:-$HOME/data/VOCdevkit}
dataset_name="VOC0712Plus"
mapfile="$root_dir/data/$dataset_name/labelmap_voc.prototxt"

subsets="trainval"
first_test_annotation=$(awk 'NF { print $2; exit }' "$root_dir/data/$dataset_name/test.txt" 2>/dev/null)
if [ -n "$first_test_annotation" ] && [ -f "$data_root_dir/$first_test_annotation" ]
then
  subsets="trainval test"
fi
for subset in $subsets
do
  "$python" "$root_dir/scripts/create_annoset.py" --anno-type=detection \
    --label-map-file="$mapfile" --min-dim=0 --max-dim=0 --resize-width=0 --resize-height=0 \
    --check-label --encode-type=jpg --encoded --redo "$data_root_dir" \
    "$root_dir/data/$dataset_name/$subset.txt" \
    "$data_root_dir/$dataset_name/lmdb/${dataset_name}_${subset}_lmdb" \
    "examples/$dataset_name" || exit 1
done
