#!/bin/bash
# Lists of PASCAL VOC images and annotations for SSD/RefineDet (data/VOC0712/create_list.sh):
# trainval.txt (VOC2007 + VOC2012 trainval, shuffled), test.txt (VOC2007 test) and
# test_name_size.txt (name height width of each test image), written beside this script.
# The devkit is $HOME/data/VOCdevkit, or VOC_ROOT_DIR when set; a year whose image set is
# missing is skipped (a toy devkit may hold VOC2007 only).
root_dir=${VOC_ROOT_DIR:-$HOME/data/VOCdevkit}/
sub_dir=ImageSets/Main
bash_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for dataset in trainval test
do
  dst_file=$bash_dir/$dataset.txt
  rm -f "$dst_file"
  for name in VOC2007 VOC2012
  do
    if [[ $dataset == "test" && $name == "VOC2012" ]]
    then
      continue
    fi
    dataset_file=$root_dir/$name/$sub_dir/$dataset.txt
    if [ ! -f "$dataset_file" ]
    then
      echo "Skip $name $dataset: $dataset_file does not exist"
      continue
    fi
    echo "Create list for $name $dataset..."
    # "<year>/JPEGImages/<id>.jpg <year>/Annotations/<id>.xml", one line per image id.
    awk -v y="$name" 'NF { print y "/JPEGImages/" $1 ".jpg " y "/Annotations/" $1 ".xml" }' \
      "$dataset_file" >> "$dst_file"
  done
  if [ ! -f "$dst_file" ]
  then
    echo "No image set found for $dataset under $root_dir" >&2
    exit 1
  fi

  # Generate image name and size information.
  if [ $dataset == "test" ]
  then
    "$bash_dir/../../build/tools/get_image_size" "$root_dir" "$dst_file" \
      "$bash_dir/${dataset}_name_size.txt" || exit 1
  fi

  # Shuffle trainval file.
  if [ $dataset == "trainval" ]
  then
    rand_file=$dst_file.random
    if command -v shuf > /dev/null
    then
      shuf "$dst_file" > "$rand_file"
    else
      perl -MList::Util=shuffle -e 'print shuffle(<STDIN>);' < "$dst_file" > "$rand_file"
    fi
    mv "$rand_file" "$dst_file"
  fi
done
