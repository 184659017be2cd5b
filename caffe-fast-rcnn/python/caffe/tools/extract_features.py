"""extract_features: blobs of a net over N mini-batches into databases of Datums, as Caffe's tool.

    extract_features pretrained_net_param feature_extraction_proto_file
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...]
        num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]

The net (TEST phase, the pretrained weights copied in) runs forward num_mini_batches times;
after each pass every named blob is cut along its first axis and each item stored in that
blob's database as a Datum of float_data with the blob's channels, height and width, under
the key `%010d` (the item's running index). Transactions are committed every 1000 items.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .. import _log, db
from ..cli import Fatal, run_tool, split_list
from ..proto import caffe_pb2

_WHERE = 'extract_features.cpp'
USAGE = ('This program takes in a trained network and an input data layer, and then extract '
         'features of the input data produced by the net.\n'
         'Usage: extract_features  pretrained_net_param  feature_extraction_proto_file  '
         'extract_feature_blob_name1[,name2,...]  save_feature_dataset_name1[,name2,...]  '
         'num_mini_batches  db_type  [CPU/GPU] [DEVICE_ID=0]\n'
         'Note: you can extract multiple features in one pass by specifying multiple feature '
         'blob names and dataset names separated by \',\'. The names cannot contain white '
         'space characters and the number of blobs and datasets must be equal.')


def _legacy_shape(shape, name: str):
    if len(shape) > 4:
        raise Fatal('Cannot use legacy accessors on Blobs with > 4 axes (blob %r has shape %s)'
                    % (name, tuple(shape)))
    dims = list(shape) + [1] * (4 - len(shape))
    return dims[1], dims[2], dims[3]


def _body(argv: List[str]) -> int:
    import caffe
    if len(argv) < 6:
        _log.error(_WHERE, USAGE)
        return 1
    if len(argv) > 6 and argv[6] == 'GPU':
        _log.error(_WHERE, 'Using GPU')
        device = int(argv[7]) if len(argv) > 7 else 0
        if device < 0:
            raise Fatal('Check failed: device_id >= 0 (%d vs. 0)' % device)
        _log.error(_WHERE, 'Using Device_id=%d' % device)
        caffe.set_device(device)
        caffe.set_mode_gpu()
    else:
        _log.error(_WHERE, 'Using CPU')
        caffe.set_mode_cpu()
    weights, proto, blob_arg, dataset_arg, batches_arg, db_type = argv[:6]
    net = caffe.Net(proto, caffe.TEST)
    net.copy_from(weights)
    blob_names, dataset_names = split_list(blob_arg), split_list(dataset_arg)
    if len(blob_names) != len(dataset_names):
        raise Fatal('Check failed: blob_names.size() == dataset_names.size() (%d vs. %d)  the '
                    'number of blob names and dataset names must be equal'
                    % (len(blob_names), len(dataset_names)))
    for name in blob_names:
        if name not in net.blobs:
            raise Fatal('Unknown feature blob name %s in the network %s' % (name, proto))
    try:
        num_batches = int(batches_arg)
    except ValueError:
        raise Fatal('num_mini_batches must be an integer, got %r' % batches_arg) from None
    dbs, txns = [], []
    for name in dataset_names:
        _log.info(_WHERE, 'Opening dataset %s' % name)
        dbs.append(db.open_db(db_type, name, 'new'))
        txns.append(dbs[-1].new_transaction())
    _log.error(_WHERE, 'Extracting Features')
    indices = [0] * len(blob_names)
    datum = caffe_pb2.Datum()
    for _ in range(num_batches):
        net.forward()
        for i, name in enumerate(blob_names):
            blob = net.blobs[name]
            channels, height, width = _legacy_shape(blob.shape, name)
            items = np.asarray(blob.data, dtype=np.float32).reshape(blob.shape[0] if blob.shape else 1, -1)
            for row in items:
                datum.Clear()
                datum.channels, datum.height, datum.width = channels, height, width
                datum.float_data.extend(row.tolist())
                txns[i].put('%010d' % indices[i], datum.SerializeToString())
                indices[i] += 1
                if indices[i] % 1000 == 0:
                    txns[i].commit()
                    txns[i] = dbs[i].new_transaction()
                    _log.error(_WHERE, 'Extracted features of %d query images for feature blob %s'
                               % (indices[i], name))
    for i, name in enumerate(blob_names):
        if indices[i] % 1000 != 0:
            txns[i].commit()
        _log.error(_WHERE, 'Extracted features of %d query images for feature blob %s'
                   % (indices[i], name))
        dbs[i].close()
    _log.error(_WHERE, 'Successfully extracted the features!')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_tool(_body, argv, _WHERE)
