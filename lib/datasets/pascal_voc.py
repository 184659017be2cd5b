"""PASCAL VOC data sets, and any data set laid out like one.

Layout (``devkit_path`` defaults to ``DATA_DIR/VOCdevkit<year>``)::

    <devkit_path>/VOC<year>/JPEGImages/<index>.jpg
    <devkit_path>/VOC<year>/Annotations/<index>.xml
    <devkit_path>/VOC<year>/ImageSets/Main/<image_set>.txt

Beyond the 20 VOC classes, ``pascal_voc`` takes a ``classes`` list, a
``devkit_path`` and a ``name``, which is how the toy data set and
``voc_custom_*`` data sets (see ``datasets.factory``) reuse it.

Annotations are checked when read: every box must have x1 <= x2, y1 <= y2 and
lie inside the image when the XML gives its <size>; the error names the XML
file, the object's index and its class.  One-pixel slips common in home-made
annotations (``xmin = 0`` written by 0-based tools, ``xmax = width + 1``) are
clamped onto the border and counted in a warning.  Boxes are stored as uint16
like the original, but only after these checks, so nothing can wrap around.

Caches (``DATA_DIR/cache/<name>_gt_roidb.npz`` ...) use the pickle-free format
of :mod:`datasets.roidb_io` and are rebuilt when the classes, the image list,
the ``use_diff`` option or any annotation file (size, mtime) changed.
"""

from __future__ import annotations

import os
import subprocess
import uuid
import warnings
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from caffe import atomic_files
from datasets import ds_utils
from datasets.ds_utils import AnnotationError
from datasets.imdb import imdb
from datasets.roidb_io import (file_stamps, fingerprint, load_box_list, load_roidb,
                               save_roidb)
from datasets.voc_eval import voc_eval
from fast_rcnn.config import cfg
from utils.sparse import csr_matrix

VOC_CLASSES = ('__background__',  # always index 0
               'aeroplane', 'bicycle', 'bird', 'boat',
               'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse',
               'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')

_UINT16_MAX = np.iinfo(np.uint16).max


class pascal_voc(imdb):
    """A VOC-format data set: image set ``image_set`` of VOC ``year``."""

    def __init__(self, image_set: str, year: str, devkit_path: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, name: Optional[str] = None,
                 image_ext: str = '.jpg', setup_hint: str = '') -> None:
        year = str(year)
        imdb.__init__(self, name or 'voc_' + year + '_' + image_set)
        self._year = year
        self._image_set = image_set
        self._devkit_path = self._get_default_path() if devkit_path is None \
            else os.path.abspath(os.path.expanduser(devkit_path))
        self._data_path = os.path.join(self._devkit_path, 'VOC' + self._year)
        self._setup_hint = setup_hint
        self._classes = VOC_CLASSES if classes is None else \
            ds_utils.with_background(classes, 'data set {}'.format(self.name))
        # XML class names are matched case-insensitively
        self._class_to_ind = {c.lower(): i for i, c in enumerate(self._classes)}
        self._image_ext = image_ext if image_ext.startswith('.') else '.' + image_ext
        self._check_layout()
        self._image_index = self._load_image_set_index()
        # Default to roidb handler
        self._roidb_handler = self.selective_search_roidb
        self._salt = str(uuid.uuid4())
        self._comp_id = 'comp4'
        self._n_clamped = 0

        # PASCAL specific config options
        self.config = {'cleanup': True,
                       'use_salt': True,
                       'use_diff': False,
                       'matlab_eval': False,
                       'rpn_file': None,
                       'min_size': 2,
                       # None: VOC2007's 11-point AP for years before 2010
                       'use_07_metric': None}

    # ------------------------------------------------------------------ paths
    def _missing(self, what: str, path: str) -> FileNotFoundError:
        hint = self._setup_hint or (
            'Put the PASCAL VOC {y} devkit there: for 2007 run '
            '`data/scripts/fetch_voc2007.sh`; otherwise extract the VOC{y} trainval/test '
            'tarballs and the devkit into one folder "VOCdevkit" and link it, e.g. '
            '`ln -s /path/to/VOCdevkit {d}`. To try the pipeline without VOC, make the '
            'toy data set with `python data/scripts/make_toy_dataset.py` and use '
            '--imdb toy_2007_trainval.').format(y=self._year, d=self._devkit_path)
        return FileNotFoundError('data set {}: {} not found: {}\n{}'.format(
            self.name, what, path, hint))

    def _check_layout(self) -> None:
        if not os.path.isdir(self._devkit_path):
            raise self._missing('VOCdevkit folder', self._devkit_path)
        if not os.path.isdir(self._data_path):
            raise self._missing('VOC{} folder (expected JPEGImages/, Annotations/ and '
                                'ImageSets/Main/ inside)'.format(self._year),
                                self._data_path)

    def image_path_at(self, i: int) -> str:
        """Return the absolute path to image ``i`` in the image sequence."""
        return self.image_path_from_index(self._image_index[i])

    def image_path_from_index(self, index: str) -> str:
        """Return the path of the image named ``index`` (checked to exist)."""
        image_path = os.path.join(self._data_path, 'JPEGImages', index + self._image_ext)
        if not os.path.exists(image_path):
            raise FileNotFoundError('data set {}: image {} listed in {} does not exist'
                                    .format(self.name, image_path, self._image_set_file()))
        return image_path

    def _image_set_file(self) -> str:
        return os.path.join(self._data_path, 'ImageSets', 'Main', self._image_set + '.txt')

    def _load_image_set_index(self) -> List[str]:
        """Read the image names listed in ImageSets/Main/<image_set>.txt."""
        image_set_file = self._image_set_file()
        if not os.path.exists(image_set_file):
            folder = os.path.dirname(image_set_file)
            have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.txt')) \
                if os.path.isdir(folder) else []
            raise FileNotFoundError('data set {}: image set file not found: {} '
                                    '(image sets present: {})'.format(
                                        self.name, image_set_file, have or 'none'))
        try:
            with open(image_set_file, 'r', encoding='utf-8') as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError('data set {}: cannot read image set file {}: {}'.format(
                self.name, image_set_file, exc)) from None
        # VOC lists may carry a second column (e.g. "000005  1"); keep the name
        image_index = [ln.split()[0] for ln in lines if ln.strip()]
        if not image_index:
            raise ValueError('data set {}: image set file {} lists no images (one image name '
                             'per line, without extension, expected)'.format(
                                 self.name, image_set_file))
        return image_index

    def _get_default_path(self) -> str:
        """Default location of PASCAL VOC: DATA_DIR/VOCdevkit<year>."""
        return os.path.join(cfg.DATA_DIR, 'VOCdevkit' + self._year)

    # ------------------------------------------------------------------ roidbs
    def _annotation_path(self, index: str) -> str:
        return os.path.join(self._data_path, 'Annotations', index + '.xml')

    def _cache_meta(self, kind: str) -> Dict[str, Any]:
        """What a cached roidb was built from: it is rebuilt when any of it changes,
        including an annotation file edited, added or removed since (size and mtime)."""
        return {'kind': kind, 'classes': list(self._classes),
                'use_diff': bool(self.config['use_diff']),
                'images': fingerprint(self._image_index),
                'data_path': os.path.abspath(self._data_path),
                'annotations': file_stamps([self._annotation_path(i)
                                            for i in self._image_index])}

    def gt_roidb(self) -> List[Dict[str, Any]]:
        """Return the ground-truth roidb, read from (or written to) the cache."""
        cache_file = os.path.join(self.cache_path, self.name + '_gt_roidb.npz')
        meta = self._cache_meta('gt')
        roidb = load_roidb(cache_file, meta) if os.path.exists(cache_file) else None
        if roidb is not None and len(roidb) == self.num_images:
            print('{} gt roidb loaded from {}'.format(self.name, cache_file))
            return roidb
        self._n_clamped = 0
        gt_roidb = [self._load_pascal_annotation(index) for index in self.image_index]
        if self._n_clamped:
            warnings.warn('data set {}: {} box coordinate(s) lay one pixel outside their '
                          'image (0-based xmin/ymin = 0 or xmax/ymax = size + 1) and were '
                          'moved onto the border'.format(self.name, self._n_clamped),
                          stacklevel=2)
        save_roidb(cache_file, gt_roidb, meta)
        print('wrote gt roidb to {}'.format(cache_file))
        return gt_roidb

    def selective_search_roidb(self) -> List[Dict[str, Any]]:
        """Ground truth plus selective search proposals (Fast R-CNN training)."""
        cache_file = os.path.join(self.cache_path, self.name + '_selective_search_roidb.npz')
        meta = self._cache_meta('selective_search')
        meta['min_size'] = self.config['min_size']
        meta['proposals'] = file_stamps([self._selective_search_file()])
        roidb = load_roidb(cache_file, meta) if os.path.exists(cache_file) else None
        if roidb is not None and len(roidb) == self.num_images:
            print('{} ss roidb loaded from {}'.format(self.name, cache_file))
            return roidb
        if self._has_gt():
            gt_roidb = self.gt_roidb()
            ss_roidb = self._load_selective_search_roidb(gt_roidb)
            roidb = imdb.merge_roidbs(gt_roidb, ss_roidb)
        else:
            roidb = self._load_selective_search_roidb(None)
        save_roidb(cache_file, roidb, meta)
        print('wrote ss roidb to {}'.format(cache_file))
        return roidb

    def _has_gt(self) -> bool:
        """Whether this image set has annotations to merge with proposals.

        VOC released test annotations for 2007 only; for other test sets the
        answer is whether an annotation file exists for the first image.
        """
        if self._image_set != 'test' or self._year == '2007' or not self._image_index:
            return True
        first = os.path.join(self._data_path, 'Annotations', self._image_index[0] + '.xml')
        return os.path.exists(first)

    def rpn_roidb(self) -> List[Dict[str, Any]]:
        """Ground truth plus the proposals in ``config['rpn_file']``."""
        if self._has_gt():
            gt_roidb = self.gt_roidb()
            rpn_roidb = self._load_rpn_roidb(gt_roidb)
            roidb = imdb.merge_roidbs(gt_roidb, rpn_roidb)
        else:
            roidb = self._load_rpn_roidb(None)
        return roidb

    def _load_rpn_roidb(self, gt_roidb: Optional[List[Dict[str, Any]]]
                        ) -> List[Dict[str, Any]]:
        filename = self.config['rpn_file']
        if not filename:
            raise ValueError("data set {}: config['rpn_file'] is not set; point it at the "
                             "proposals written by the RPN stage (.npz or .pkl)".format(
                                 self.name))
        print('loading {}'.format(filename))
        if not os.path.exists(filename):
            raise FileNotFoundError('data set {}: rpn data not found at: {}'.format(
                self.name, filename))
        box_list = load_box_list(filename)
        return self.create_roidb_from_box_list(box_list, gt_roidb)

    def _selective_search_file(self) -> str:
        return os.path.abspath(os.path.join(cfg.DATA_DIR, 'selective_search_data',
                                            self.name + '.mat'))

    def _load_selective_search_roidb(self, gt_roidb: Optional[List[Dict[str, Any]]]
                                     ) -> List[Dict[str, Any]]:
        filename = self._selective_search_file()
        if not os.path.exists(filename):
            raise FileNotFoundError(
                'data set {}: selective search data not found at: {} (fetch it with '
                '`data/scripts/fetch_selective_search_data.sh`, or use RPN proposals: '
                "TRAIN.PROPOSAL_METHOD 'rpn' or 'gt')".format(self.name, filename))
        try:
            import scipy.io as sio  # only this legacy MATLAB format needs SciPy
        except ImportError:
            raise ImportError('reading {} needs SciPy (pip install scipy); it is only '
                              'used for selective search .mat files'.format(filename)) from None
        raw_data = sio.loadmat(filename)['boxes'].ravel()
        box_list = []
        for i in range(raw_data.shape[0]):
            boxes = raw_data[i][:, (1, 0, 3, 2)] - 1
            keep = ds_utils.unique_boxes(boxes)
            boxes = boxes[keep, :]
            keep = ds_utils.filter_small_boxes(boxes, self.config['min_size'])
            box_list.append(boxes[keep, :])
        return self.create_roidb_from_box_list(box_list, gt_roidb)

    def _load_pascal_annotation(self, index: str) -> Dict[str, Any]:
        """Read one image's boxes and classes from its VOC XML file (checked)."""
        filename = self._annotation_path(index)
        if not os.path.exists(filename):
            raise FileNotFoundError('data set {}: annotation file {} for image {!r} does '
                                    'not exist'.format(self.name, filename, index))
        try:
            tree = ET.parse(filename)
        except ET.ParseError as exc:
            raise AnnotationError('{}: not a valid XML file ({})'.format(filename, exc)) from None

        width = height = 0
        size = tree.find('size')
        if size is not None:
            try:
                width = int(float(size.findtext('width', '0') or 0))
                height = int(float(size.findtext('height', '0') or 0))
            except ValueError:
                raise AnnotationError('{}: <size> has a non-numeric width/height'.format(
                    filename)) from None

        names: List[str] = []
        obj_ids: List[int] = []
        coords: List[List[float]] = []
        for ix, obj in enumerate(tree.findall('object')):
            name = (obj.findtext('name') or '').strip()
            where = '{}: object #{} ({!r})'.format(filename, ix, name)
            try:
                difficult = int(float(obj.findtext('difficult') or 0))
            except ValueError:
                raise AnnotationError('{}: <difficult> is not 0 or 1'.format(where)) from None
            if difficult and not self.config['use_diff']:
                continue  # difficult objects are excluded from training
            if not name:
                raise AnnotationError('{}: object #{} has no <name>'.format(filename, ix))
            if name.lower() not in self._class_to_ind:
                raise AnnotationError('{}: class {!r} is not one of the data set\'s classes '
                                      '{}'.format(where, name, list(self._classes[1:])))
            bbox = obj.find('bndbox')
            if bbox is None:
                raise AnnotationError('{}: object has no <bndbox>'.format(where))
            try:
                coords.append([float(bbox.findtext(t)) for t in
                               ('xmin', 'ymin', 'xmax', 'ymax')])
            except (TypeError, ValueError):
                raise AnnotationError('{}: <bndbox> needs numeric xmin, ymin, xmax, '
                                      'ymax'.format(where)) from None
            names.append(name)
            obj_ids.append(ix)

        num_objs = len(names)
        raw = [[int(c) if c.is_integer() else c for c in box] for box in coords]
        # Make pixel indexes 0-based
        xy = np.array(coords, dtype=np.float64).reshape(num_objs, 4) - 1
        self._n_clamped += self._clamp_one_pixel(xy, width, height)
        problems = ds_utils.box_problems(xy, width, height)
        too_big = xy[:, 2:4].max(axis=1, initial=0) > _UINT16_MAX if num_objs \
            else np.zeros(0, dtype=bool)
        bad = [i for i, p in enumerate(problems) if p or too_big[i]]
        if bad:
            lines = []
            for i in bad[:5]:
                why = problems[i] or 'coordinate above {}'.format(_UINT16_MAX)
                lines.append('  object #{} ({!r}): xmin, ymin, xmax, ymax = {}, i.e. 0-based '
                             'box [x1, y1, x2, y2] = {}: {}'.format(
                                 obj_ids[i], names[i], raw[i], xy[i].tolist(), why))
            raise AnnotationError('{}: {} invalid box(es) (image size {}x{}{}):\n{}'.format(
                filename, len(bad), width or '?', height or '?',
                '' if width else ', unknown', '\n'.join(lines)))

        boxes = xy.astype(np.uint16)
        gt_classes = np.array([self._class_to_ind[n.lower()] for n in names], dtype=np.int32)
        seg_areas = ((xy[:, 2] - xy[:, 0] + 1) * (xy[:, 3] - xy[:, 1] + 1)).astype(np.float32)
        # one-hot overlaps, built directly in CSR form
        overlaps = csr_matrix((np.ones(num_objs, dtype=np.float32), gt_classes,
                               np.arange(num_objs + 1)), shape=(num_objs, self.num_classes))
        return {'boxes': boxes,
                'gt_classes': gt_classes,
                'gt_overlaps': overlaps,
                'flipped': False,
                'seg_areas': seg_areas}

    @staticmethod
    def _clamp_one_pixel(xy: np.ndarray, width: int, height: int) -> int:
        """Move coordinates at most one pixel outside the image onto its border.

        Returns how many coordinates moved.  Larger excursions are left alone
        for validation to report.
        """
        n = 0
        for col in (0, 1):
            m = (xy[:, col] >= -1) & (xy[:, col] < 0)
            xy[m, col] = 0
            n += int(m.sum())
        for col, size in ((2, width), (3, height)):
            if size > 0:
                m = (xy[:, col] > size - 1) & (xy[:, col] <= size)
                xy[m, col] = size - 1
                n += int(m.sum())
        return n

    # -------------------------------------------------------------- evaluation
    def _get_comp_id(self) -> str:
        return (self._comp_id + '_' + self._salt if self.config['use_salt']
                else self._comp_id)

    def _get_voc_results_file_template(self) -> str:
        # VOCdevkit/results/VOC2007/Main/<comp_id>_det_test_aeroplane.txt
        filename = self._get_comp_id() + '_det_' + self._image_set + '_{:s}.txt'
        return os.path.join(self._devkit_path, 'results', 'VOC' + self._year, 'Main',
                            filename)

    def _write_voc_results_file(self, all_boxes: Sequence[Sequence[Any]]) -> None:
        """Write one comp4 results file per class: '<image> <score> <x1> <y1> <x2> <y2>'.

        Coordinates are written 1-based, as the VOC devkit expects.
        """
        template = self._get_voc_results_file_template()
        os.makedirs(os.path.dirname(template), exist_ok=True)
        for cls_ind, cls in enumerate(self.classes):
            if cls == '__background__':
                continue
            print('Writing {} VOC results file'.format(cls))
            chunks = []
            for im_ind, index in enumerate(self.image_index):
                dets = all_boxes[cls_ind][im_ind]
                if len(dets) == 0:
                    continue
                dets = np.asarray(dets, dtype=np.float64)
                cols = np.column_stack((dets[:, -1], dets[:, 0:4] + 1))
                line = index.replace('%', '%%') + ' %.3f %.1f %.1f %.1f %.1f\n'
                # one formatting call per image for all of its detections
                chunks.append((line * cols.shape[0]) % tuple(cols.ravel().tolist()))
            atomic_files.write_text(template.format(cls), ''.join(chunks))

    def _use_07_metric(self) -> bool:
        flag = self.config.get('use_07_metric')
        if flag is not None:
            return bool(flag)
        # The PASCAL VOC metric changed in 2010
        return self._year.isdigit() and int(self._year) < 2010

    def _do_python_eval(self, output_dir: str = 'output') -> List[float]:
        """Compute per-class AP with voc_eval, print them, save PR curves."""
        print('--------------------------------------------------------------')
        print('Evaluating with the Python VOC evaluation (voc_eval.py).')
        print('It should agree closely with the official MATLAB code;')
        print('use `./tools/reval.py --matlab ...` for numbers to publish.')
        print('--------------------------------------------------------------')
        annopath = os.path.join(self._devkit_path, 'VOC' + self._year, 'Annotations',
                                '{:s}.xml')
        imagesetfile = self._image_set_file()
        cachedir = os.path.join(self._devkit_path, 'annotations_cache')
        aps = []
        use_07_metric = self._use_07_metric()
        print('VOC07 metric? ' + ('Yes' if use_07_metric else 'No'))
        os.makedirs(output_dir, exist_ok=True)
        import pickle  # writing only: these files are this run's own output
        for cls in self._classes:
            if cls == '__background__':
                continue
            filename = self._get_voc_results_file_template().format(cls)
            rec, prec, ap = voc_eval(filename, annopath, imagesetfile, cls, cachedir,
                                     ovthresh=0.5, use_07_metric=use_07_metric)
            aps += [ap]
            print('AP for {} = {:.4f}'.format(cls, ap))
            with atomic_files.atomic_open(os.path.join(output_dir, cls + '_pr.pkl')) as f:
                pickle.dump({'rec': rec, 'prec': prec, 'ap': ap}, f)
        print('Mean AP = {:.4f}'.format(np.mean(aps)))
        print('~~~~~~~~')
        print('Results:')
        for ap in aps:
            print('{:.3f}'.format(ap))
        print('{:.3f}'.format(np.mean(aps)))
        print('~~~~~~~~')
        return aps

    def _do_matlab_eval(self, output_dir: str = 'output') -> None:
        """Run the official devkit through MATLAB (needs the wrapper and MATLAB)."""
        path = os.path.join(cfg.ROOT_DIR, 'lib', 'datasets', 'VOCdevkit-matlab-wrapper')
        if not os.path.isdir(path):
            raise FileNotFoundError('MATLAB evaluation needs the VOCdevkit MATLAB wrapper '
                                    'in {}; it is not part of this project, use the '
                                    'Python evaluation instead'.format(path))
        print('-----------------------------------------------------')
        print('Evaluating with the official MATLAB code.')
        print('-----------------------------------------------------')
        command = "dbstop if error; voc_eval('{:s}','{:s}','{:s}','{:s}'); quit;".format(
            self._devkit_path, self._get_comp_id(), self._image_set, output_dir)
        argv = [cfg.MATLAB, '-nodisplay', '-nodesktop', '-r', command]
        print('Running:\n{}'.format(' '.join(argv)))
        subprocess.call(argv, cwd=path)

    def evaluate_detections(self, all_boxes: Sequence[Sequence[Any]],
                            output_dir: Optional[str] = None) -> List[float]:
        """Write results files, evaluate them, and remove them unless configured not to."""
        output_dir = output_dir or 'output'
        self.check_detections(all_boxes)
        self._write_voc_results_file(all_boxes)
        aps = self._do_python_eval(output_dir)
        if self.config['matlab_eval']:
            self._do_matlab_eval(output_dir)
        if self.config['cleanup']:
            for cls in self._classes:
                if cls == '__background__':
                    continue
                filename = self._get_voc_results_file_template().format(cls)
                if os.path.exists(filename):
                    os.remove(filename)
        return aps

    def competition_mode(self, on: bool) -> None:
        """Competition mode: unsalted results file names, kept after evaluation."""
        if on:
            self.config['use_salt'] = False
            self.config['cleanup'] = False
        else:
            self.config['use_salt'] = True
            self.config['cleanup'] = True
