#!/usr/bin/env python3
"""Create an LMDB of AnnotatedDatum from a list of images and annotations (SSD's
scripts/create_annoset.py, on Python 3).

    python scripts/create_annoset.py [--anno-type detection --label-map-file MAP ...]
        ROOT LISTFILE OUTDIR EXAMPLEDIR

checks its inputs, runs build/tools/convert_annoset with the matching flags, and links
OUTDIR into EXAMPLEDIR (EXAMPLEDIR/basename(OUTDIR) -> OUTDIR), where the example scripts look
for it. Unlike the Python 2 original, a failure of convert_annoset is this script's failure
(its exit status), and paths may contain spaces.
"""
import argparse
import os
import shutil
import subprocess
import sys

import types

CAFFE_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if 'caffe' not in sys.modules:
    # Only the messages are needed: enter the package without its __init__, which loads
    # PyTorch (seconds of start-up).
    _pkg = types.ModuleType('caffe')
    _pkg.__path__ = [os.path.join(CAFFE_ROOT, 'python', 'caffe')]
    sys.modules['caffe'] = _pkg

from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Create AnnotatedDatum database')
    p.add_argument('root', help='The root directory which contains the images and annotations.')
    p.add_argument('listfile', help='The file which contains image paths and annotation info.')
    p.add_argument('outdir', help='The output directory which stores the database file.')
    p.add_argument('exampledir', help='The directory to store the link of the database files.')
    p.add_argument('--redo', default=False, action='store_true',
                   help='Recreate the database.')
    p.add_argument('--anno-type', default='classification',
                   help='The type of annotation {classification, detection}.')
    p.add_argument('--label-type', default='xml',
                   help='The type of label file format for detection {xml, json, txt}.')
    p.add_argument('--backend', default='lmdb',
                   help='The backend {lmdb, leveldb} for storing the result')
    p.add_argument('--check-size', default=False, action='store_true',
                   help='Check that all the datum have the same size.')
    p.add_argument('--encode-type', default='',
                   help="What type should we encode the image as ('png','jpg',...).")
    p.add_argument('--encoded', default=False, action='store_true',
                   help='The encoded image will be save in datum.')
    p.add_argument('--gray', default=False, action='store_true',
                   help='Treat images as grayscale ones.')
    p.add_argument('--label-map-file', default='', help='A file with LabelMap protobuf message.')
    p.add_argument('--min-dim', default=0, type=int,
                   help='Minimum dimension images are resized to.')
    p.add_argument('--max-dim', default=0, type=int,
                   help='Maximum dimension images are resized to.')
    p.add_argument('--resize-height', default=0, type=int, help='Height images are resized to.')
    p.add_argument('--resize-width', default=0, type=int, help='Width images are resized to.')
    p.add_argument('--shuffle', default=False, action='store_true',
                   help='Randomly shuffle the order of images and their labels.')
    p.add_argument('--check-label', default=False, action='store_true',
                   help='Check that there is no duplicated name/label.')
    return p.parse_args(argv)


def fail(message):
    print(message)
    sys.exit(1)


def check_inputs(args, root):
    """The checks of the original: root, list file (its first line), label map."""
    if not os.path.exists(args.listfile):
        fail('list file: {} does not exist'.format(args.listfile))
    with open(args.listfile) as lf:
        first = next((line for line in lf if line.strip()), None)
    if first is not None:
        fields = first.split()
        if len(fields) != 2:
            fail('{}:1: expected "<image> <annotation>", got {!r}'.format(args.listfile,
                                                                         first.rstrip('\n')))
        img_file, anno = fields
        if not os.path.exists(root + img_file):
            print('image file: {} does not exist'.format(root + img_file))
        if args.anno_type == 'classification' and not anno.isdigit():
            print('annotation: {} is not an integer'.format(anno))
        elif args.anno_type == 'detection' and not os.path.exists(root + anno):
            fail('annotation file: {} does not exist'.format(root + anno))
    if args.anno_type == 'detection':
        if not os.path.exists(args.label_map_file):
            fail('label map file: {} does not exist'.format(args.label_map_file))
        try:
            with open(args.label_map_file) as f:
                text_format.Merge(f.read(), caffe_pb2.LabelMap())
        except Exception as e:  # text_format.ParseError, UnicodeDecodeError
            fail('Cannot parse label map file: {} ({})'.format(args.label_map_file, e))


def convert_command(args, root):
    """The convert_annoset command line the original builds (bools as True/False)."""
    cmd = [os.path.join(CAFFE_ROOT, 'build', 'tools', 'convert_annoset'),
           '--anno_type={}'.format(args.anno_type)]
    if args.anno_type == 'detection':
        cmd += ['--label_type={}'.format(args.label_type),
                '--label_map_file={}'.format(args.label_map_file),
                '--check_label={}'.format(args.check_label)]
    cmd += ['--min_dim={}'.format(args.min_dim), '--max_dim={}'.format(args.max_dim),
            '--resize_height={}'.format(args.resize_height),
            '--resize_width={}'.format(args.resize_width),
            '--backend={}'.format(args.backend), '--shuffle={}'.format(args.shuffle),
            '--check_size={}'.format(args.check_size),
            '--encode_type={}'.format(args.encode_type), '--encoded={}'.format(args.encoded),
            '--gray={}'.format(args.gray), root, args.listfile, args.outdir]
    return cmd


def main(argv=None):
    args = parse_args(argv)
    root = args.root
    if not os.path.exists(root):
        fail('root directory: {} does not exist'.format(root))
    if not root.endswith('/'):
        root += '/'
    check_inputs(args, root)
    out_parent = os.path.dirname(os.path.abspath(args.outdir))
    os.makedirs(out_parent, exist_ok=True)
    if os.path.exists(args.outdir):
        if not args.redo:
            fail('{} already exists and I do not hear redo'.format(args.outdir))
        shutil.rmtree(args.outdir)
    cmd = convert_command(args, root)
    print(' '.join(cmd))
    sys.stdout.flush()
    status = subprocess.call(cmd)
    if status != 0:
        sys.exit(status)
    os.makedirs(args.exampledir, exist_ok=True)
    link = os.path.join(args.exampledir, os.path.basename(os.path.normpath(args.outdir)))
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(args.outdir), link)


if __name__ == '__main__':
    main()
