"""SSD's AnnotatedData layer: images and their boxes from an LMDB of AnnotatedDatum.

Reads `data_param.source` (LMDB, or LevelDB through plyvel) in key order with the Data layer's
machinery (layers/db_data.py: the same cursor, wrap-around, data-parallel dealing of records
to solvers, rand_skip and prefetch thread), and runs each record through SSD's annotated
transformation (caffe/annotated_transform.py: distortion, expansion, batch sampling, resize,
noise, crop, mirror, mean and scale).

Tops: `data` (N x C x H x W) and, when asked for, `label`. With an annotation type (BBOX,
from the records' `type` or `annotated_data_param.anno_type`, which then overrides it) the
label is SSD's (1, 1, G, 8): one row per box of the batch,

    [item_id, group_label, instance_id, xmin, ymin, xmax, ymax, difficult]

in normalised coordinates, the items in batch order and each item's boxes group by group; a
batch without any box gets a single row of -1. Without an annotation type the label is the
Datums' class labels, (N, 1, 1, 1). The label top's row count changes from batch to batch.

`annotated_data_param.label_map_file`, when given, is read at set-up, and a record whose box
names a label that is not in it stops the layer with an error naming the label, the record
and the file (SSD reads the file and ignores it; a label the map lacks means the data and the
net disagree on the classes). A record that is not an AnnotatedDatum, or an empty database,
stops the layer with an error naming it and the source.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .. import _log
from ..annotated_transform import AnnotatedDataTransformer, Annotations
from ..errors import CaffeError, LayerError, NetError
from ..labelmap import read_label_map
from ..proto import caffe_pb2
from ..sampler import check_batch_sampler
from . import register
from .db_data import Batch, ShardedRecords, _DatabaseLayer

_BBOX = caffe_pb2.AnnotatedDatum.BBOX
_WHERE = 'annotated_data_layer.cpp'


class _AnnotatedBatches:
    """Reads batch_size AnnotatedDatums and transforms them with their boxes: one batch per
    call (runs on the prefetch thread)."""

    def __init__(self, records: ShardedRecords, transformer: AnnotatedDataTransformer,
                 batch_size: int, samplers: Sequence[caffe_pb2.BatchSampler],
                 anno_type: Optional[int], type_from_param: bool, output_labels: bool,
                 known_labels: Optional[np.ndarray], label_map_file: str, layer: str,
                 source: str):
        self.records = records
        self.transformer = transformer
        self.batch_size = batch_size
        self.samplers = list(samplers)
        self.anno_type = anno_type
        self.type_from_param = type_from_param
        self.output_labels = output_labels
        self.known_labels = known_labels
        self.label_map_file = label_map_file
        self.layer = layer
        self.source = source

    def _error(self, where: str, what: str) -> LayerError:
        return LayerError('layer %r (AnnotatedData): %s of %s %s'
                          % (self.layer, where, self.source, what))

    def record(self, take: bool = True) -> tuple:
        """(AnnotatedDatum, name of the record) of the solver's next record; the cursor
        moves past it unless `take` is False (set-up peeks at the first record)."""
        where = self.records.where()
        data = self.records.value()
        if take:
            self.records.next()
        try:
            ad = caffe_pb2.AnnotatedDatum.FromString(data)
        except Exception as e:  # protobuf's DecodeError
            raise self._error(where, 'is not an AnnotatedDatum (%s)' % e) from None
        if not ad.HasField('datum') or not (len(ad.datum.data) or len(ad.datum.float_data)):
            raise self._error(where, 'is not an AnnotatedDatum: it holds no datum with an image '
                              '(is this a Datum database made by convert_imageset? AnnotatedData '
                              'reads databases made by convert_annoset)')
        return ad, where

    def _check(self, ad: caffe_pb2.AnnotatedDatum, anno: Annotations, where: str) -> None:
        if self.anno_type is not None and not self.type_from_param:
            if not ad.HasField('type'):
                raise self._error(where, 'misses AnnotationType (the first record has one)')
            if ad.type != self.anno_type:
                raise self._error(where, 'has AnnotationType %d, the first record %d'
                                  % (ad.type, self.anno_type))
        if self.known_labels is not None and anno.count:
            unknown = np.setdiff1d(anno.labels, self.known_labels)
            if len(unknown):
                raise self._error(where, 'has boxes of label(s) %s, which the label map %s does '
                                  'not list' % (', '.join(map(str, unknown)), self.label_map_file))

    def __call__(self) -> Batch:
        t = self.transformer
        images: List[np.ndarray] = []
        mirrors: List[bool] = []
        rows: List[np.ndarray] = []
        class_labels = np.zeros((self.batch_size, 1, 1, 1), dtype=t.dtype)
        for item in range(self.batch_size):
            ad, where = self.record()
            anno = Annotations.from_datum(ad)
            self._check(ad, anno, where)
            img, anno = t.augment(t.decode(ad.datum, '%s of %s' % (where, self.source)), anno,
                                  self.samplers)
            img, mirror, anno = t.finish(img, anno)
            if images and img.shape != images[0].shape:
                raise LayerError('layer %r (AnnotatedData): %s makes a %s image but the first '
                                 'of the batch is %s; images of one batch must have one size '
                                 '(resize_param WARP or FIT_LARGE_SIZE_AND_PAD, or batch_size 1)'
                                 % (self.layer, where, 'x'.join(map(str, img.shape[:2])),
                                    'x'.join(map(str, images[0].shape[:2]))))
            images.append(img)
            mirrors.append(mirror)
            if self.anno_type is not None:
                rows.append(np.column_stack([np.full(anno.count, item), anno.labels,
                                             anno.instances, anno.boxes, anno.difficult]))
            else:
                class_labels[item] = ad.datum.label
        data = t.to_blob(images, mirrors)
        if not self.output_labels:
            return data, None
        if self.anno_type is None:
            return data, class_labels
        table = np.concatenate(rows) if rows else np.zeros((0, 8))
        if not len(table):
            table = np.full((1, 8), -1.0)
        return data, table.astype(t.dtype).reshape(1, 1, -1, 8)


@register('AnnotatedData')
class AnnotatedData(_DatabaseLayer):
    """Annotated images from an LMDB of AnnotatedDatum (see the module docstring)."""

    def setup(self, bottom, top):
        lp = self.layer_param
        p, ap = lp.data_param, lp.annotated_data_param
        name = lp.name
        for i, bs in enumerate(ap.batch_sampler):
            check_batch_sampler(bs, 'layer %r (AnnotatedData): batch_sampler %d' % (name, i))
        known = None
        if ap.label_map_file:
            try:
                label_map = read_label_map(ap.label_map_file)
            except CaffeError as e:
                raise NetError('layer %r (AnnotatedData): label_map_file: %s' % (name, e)) \
                    from None
            known = np.array(sorted({int(item.label) for item in label_map.item}), np.int64)
        batch_size, records = self._open_source(AnnotatedDataTransformer, _WHERE)
        transformer = self.transformer
        maker = _AnnotatedBatches(records, transformer, batch_size, ap.batch_sampler, None,
                                  ap.HasField('anno_type'), len(top) > 1, known,
                                  ap.label_map_file, name, p.source)
        try:
            first, where = maker.record(take=False)
            img = transformer.decode(first.datum, '%s of %s' % (where, p.source))
            shape = transformer.output_shape(img.shape, NetError)
        except LayerError as e:
            raise NetError(str(e)) from None
        self._shape_tops(top, shape, batch_size, _WHERE)
        if len(top) > 1:
            if ap.HasField('anno_type'):
                if first.HasField('type'):
                    _log.warning(_WHERE, 'type stored in AnnotatedDatum is shadowed.')
                maker.anno_type = int(ap.anno_type)
            elif first.HasField('type'):
                maker.anno_type = int(first.type)
            if maker.anno_type is None:
                top[1].reshape(batch_size, 1, 1, 1)
            elif maker.anno_type == _BBOX:
                boxes = sum(len(g.annotation) for g in first.annotation_group)
                top[1].reshape(1, 1, max(boxes, 1), 8)
            else:
                raise NetError('layer %r (AnnotatedData): Unknown annotation type %d'
                               % (name, maker.anno_type))
        transformer.init_rand()
        self._start(maker)
