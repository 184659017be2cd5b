#!/bin/bash
# Lists of the embedded toy data set for RefineDet/SSD, in the manner of data/VOC0712/create_list.sh:
# trainval.txt (shuffled with a fixed seed, so runs repeat), test.txt, test_name_size.txt (name
# height width of each test image) and labelmap_toy.prototxt (background, then the classes of
# the devkit's classes.txt in label order), all written beside this script.
# The devkit is <repository>/data/toy/VOCdevkit2007 (`python data/scripts/make_toy_dataset.py`),
# or TOY_ROOT_DIR when set; its classes.txt is the folder above it (TOY_CLASSES_FILE overrides).
bash_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root_dir=${TOY_ROOT_DIR:-$bash_dir/../../../data/toy/VOCdevkit2007}
root_dir=$(cd "$root_dir" 2>/dev/null && pwd || echo "$root_dir")
classes_file=${TOY_CLASSES_FILE:-$root_dir/../classes.txt}
sub_dir=ImageSets/Main
name=VOC2007

if [ ! -d "$root_dir/$name" ]
then
  echo "No toy devkit at $root_dir (expected $root_dir/$name); make it with" \
       "python data/scripts/make_toy_dataset.py" >&2
  exit 1
fi
if [ ! -s "$classes_file" ]
then
  echo "$classes_file: missing or empty (one class name per line, in label order)" >&2
  exit 1
fi

# The label map: label 0 is the background, then one item per line of classes.txt.
map_file=$bash_dir/labelmap_toy.prototxt
awk -v f="$classes_file" '
  BEGIN { print "item {\n  name: \"none_of_the_above\"\n  label: 0\n  display_name: \"background\"\n}" }
  NF {
    if (NF != 1) { printf "%s:%d: a class name has no spaces, got \"%s\"\n", f, FNR, $0 > "/dev/stderr"; exit 1 }
    if ($1 in seen) { printf "%s:%d: class %s listed twice\n", f, FNR, $1 > "/dev/stderr"; exit 1 }
    seen[$1] = 1; n++
    printf "item {\n  name: \"%s\"\n  label: %d\n  display_name: \"%s\"\n}\n", $1, n, $1
  }' "$classes_file" > "$map_file.tmp" || { rm -f "$map_file.tmp"; exit 1; }
mv "$map_file.tmp" "$map_file"

for dataset in trainval test
do
  dataset_file=$root_dir/$name/$sub_dir/$dataset.txt
  dst_file=$bash_dir/$dataset.txt
  if [ ! -f "$dataset_file" ]
  then
    echo "$dataset_file does not exist" >&2
    exit 1
  fi
  echo "Create list for toy $dataset..."
  # "VOC2007/JPEGImages/<id>.jpg VOC2007/Annotations/<id>.xml", one line per image id.
  awk -v y="$name" 'NF { print y "/JPEGImages/" $1 ".jpg " y "/Annotations/" $1 ".xml" }' \
    "$dataset_file" > "$dst_file.tmp" || exit 1
  if [ $dataset == "trainval" ]
  then
    # Shuffle with a fixed seed: a random key per line, sorted, dropped.
    awk 'BEGIN { srand(1701) } { printf "%.9f\t%s\n", rand(), $0 }' "$dst_file.tmp" \
      | sort -k1,1 | cut -f2- > "$dst_file" || exit 1
    rm -f "$dst_file.tmp"
  else
    mv "$dst_file.tmp" "$dst_file"
    "$bash_dir/../../build/tools/get_image_size" "$root_dir" "$dst_file" \
      "$bash_dir/${dataset}_name_size.txt" || exit 1
  fi
done
