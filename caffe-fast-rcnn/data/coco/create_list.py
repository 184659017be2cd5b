#!/usr/bin/env python3
"""Lists of MS COCO images and their per-image JSON annotations for SSD/RefineDet
(data/coco/create_list.py, on Python 3): train.txt (train2014 + valminusminival2014, Ross
Girshick's split, shuffled), minival.txt, testdev.txt and test.txt beside this script, with
lines `images/<subset>/<name>.jpg Annotations/<subset>/<name>.json`.

The data set is $HOME/data/Object_Detection/coco, or COCO_ROOT_DIR when set; it holds
ImageSets/<set>.txt (image names), images/ and the Annotations/ that SSD's
batch_split_annotation.py writes. A list whose image set file is missing is skipped.
"""
import os
import random
import sys

HOMEDIR = os.path.expanduser('~')
CURDIR = os.path.dirname(os.path.realpath(__file__))

# If true, re-create all list files.
redo = True
# The root directory which holds all information of the dataset.
data_dir = os.environ.get('COCO_ROOT_DIR', '{}/data/Object_Detection/coco'.format(HOMEDIR))
# The directory name which holds the image sets.
imgset_dir = 'ImageSets'
# The directory which contains the images.
img_dir = 'images'
img_ext = 'jpg'
# The directory which contains the annotations.
anno_dir = 'Annotations'
anno_ext = 'json'

# list file -> (image sets, image folder; None: the folder is the name's second field, as
# in COCO_train2014_000000000009, shuffle)
LISTS = [
    ('train.txt', ['train2014', 'valminusminival2014'], None, True),
    ('minival.txt', ['minival2014'], 'val2014', False),
    ('testdev.txt', ['test-dev2015'], 'test2015', False),
    ('test.txt', ['test2015'], 'test2015', False),
]


def entries(imgset, subset):
    """(image file, annotation file) of each name in ImageSets/<imgset>.txt, both checked."""
    imgset_file = '{}/{}/{}.txt'.format(data_dir, imgset_dir, imgset)
    out = []
    with open(imgset_file) as f:
        for number, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                continue
            folder = subset or name.split('_')[1]
            img_file = '{}/{}/{}.{}'.format(img_dir, folder, name, img_ext)
            anno_file = '{}/{}/{}.{}'.format(anno_dir, folder, name, anno_ext)
            for rel in (img_file, anno_file):
                if not os.path.exists('{}/{}'.format(data_dir, rel)):
                    sys.exit('{}:{}: {}/{} does not exist'.format(imgset_file, number,
                                                                 data_dir, rel))
            out.append((img_file, anno_file))
    return out


def main():
    for list_name, imgsets, subset, shuffle in LISTS:
        list_file = os.path.join(CURDIR, list_name)
        if not redo and os.path.exists(list_file):
            continue
        missing = [s for s in imgsets
                   if not os.path.exists('{}/{}/{}.txt'.format(data_dir, imgset_dir, s))]
        if missing:
            print('Skip {}: no image set {} under {}/{}'.format(list_name, ', '.join(missing),
                                                                data_dir, imgset_dir))
            continue
        pairs = [p for s in imgsets for p in entries(s, subset)]
        if shuffle:
            random.shuffle(pairs)
        with open(list_file, 'w') as f:
            for img_file, anno_file in pairs:
                f.write('{} {}\n'.format(img_file, anno_file))
        print('Wrote {} ({} images)'.format(list_file, len(pairs)))


if __name__ == '__main__':
    main()
