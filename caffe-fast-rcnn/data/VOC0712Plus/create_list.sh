#!/bin/bash
# Lists for RefineDet's VOC2012 models (data/VOC0712Plus/create_list.sh): trainval.txt holds
# VOC2007 trainval and test and VOC2012 trainval (shuffled), test.txt VOC2012 test, and
# test_name_size.txt the name, height and width of each VOC2012 test image; all written beside
# this script, in the format of data/VOC0712/create_list.sh. The devkit is
# $HOME/data/VOCdevkit, or VOC_ROOT_DIR when set.
root_dir=${VOC_ROOT_DIR:-$HOME/data/VOCdevkit}
bash_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sub_dir=ImageSets/Main

# "<year>/JPEGImages/<id>.jpg <year>/Annotations/<id>.xml" for each id of an image set.
list_set() {
  local year=$1 set=$2
  local ids=$root_dir/$year/$sub_dir/$set.txt
  if [ ! -f "$ids" ]
  then
    echo "$ids does not exist" >&2
    return 1
  fi
  echo "Create list for $year $set..." >&2
  awk -v y="$year" 'NF { print y "/JPEGImages/" $1 ".jpg " y "/Annotations/" $1 ".xml" }' "$ids"
}

{ list_set VOC2007 trainval && list_set VOC2007 test && list_set VOC2012 trainval; } \
  > "$bash_dir/trainval.txt.tmp" || { rm -f "$bash_dir/trainval.txt.tmp"; exit 1; }
if command -v shuf > /dev/null
then
  shuf "$bash_dir/trainval.txt.tmp" > "$bash_dir/trainval.txt"
else
  perl -MList::Util=shuffle -e 'print shuffle(<STDIN>);' < "$bash_dir/trainval.txt.tmp" \
    > "$bash_dir/trainval.txt"
fi
rm -f "$bash_dir/trainval.txt.tmp"

list_set VOC2012 test > "$bash_dir/test.txt" || exit 1
"$bash_dir/../../build/tools/get_image_size" "$root_dir/" "$bash_dir/test.txt" \
  "$bash_dir/test_name_size.txt" || exit 1
