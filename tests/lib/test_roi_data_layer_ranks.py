"""RoIDataLayer in data-parallel training: every rank draws the same permutation from the
shared seed and takes its own stride of it, so an epoch is split into disjoint shares."""
import numpy as np
import pytest

import caffe
from fast_rcnn.config import cfg, cfg_restore, cfg_snapshot


@pytest.fixture(autouse=True)
def _cfg():
    saved = cfg_snapshot()
    yield
    cfg_restore(saved)
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)


def _layer(tmp_path):
    path = tmp_path / 'roi_data.prototxt'
    path.write_text("name: 'roi_data'\n"
                    "layer { name: 'input-data' type: 'Python' top: 'data' top: 'im_info'\n"
                    "  top: 'gt_boxes' python_param { module: 'roi_data_layer.layer'\n"
                    "  layer: 'RoIDataLayer' param_str: \"'num_classes': 3\" } }\n")
    cfg.TRAIN.HAS_RPN = True
    return caffe.Net(str(path), caffe.TRAIN).layers[0]


def _roidb(n):
    # alternating landscape and portrait images
    return [{'width': 80, 'height': 50} if i % 2 == 0 else {'width': 40, 'height': 60}
            for i in range(n)]


def _walk(tmp_path, world, n, ims, grouping, steps):
    cfg.TRAIN.IMS_PER_BATCH = ims
    cfg.TRAIN.ASPECT_GROUPING = grouping
    layer = _layer(tmp_path)
    per_rank = []
    for rank in range(world):
        caffe.set_solver_count(world)
        caffe.set_solver_rank(rank)
        np.random.seed(1000 + rank)    # ranks' own global streams differ: must not matter
        layer.set_roidb(_roidb(n))
        per_rank.append([layer._get_next_minibatch_inds().tolist() for _ in range(steps)])
    return per_rank


@pytest.mark.parametrize('world,n,ims,grouping', [(2, 8, 1, False), (2, 12, 2, True),
                                                  (3, 10, 1, True)])
def test_each_epoch_is_split_into_disjoint_shares(tmp_path, world, n, ims, grouping):
    per_epoch = n // (world * ims)            # global minibatches in one permutation
    per_rank = _walk(tmp_path, world, n, ims, grouping, 2 * per_epoch)
    for e in range(2):
        shares = [sum(batches[e * per_epoch:(e + 1) * per_epoch], []) for batches in per_rank]
        flat = sorted(i for s in shares for i in s)
        assert len(flat) == len(set(flat)) == per_epoch * world * ims   # none twice
        if n % (world * ims) == 0:
            assert flat == list(range(n))                                 # none skipped
    if grouping:
        for batches in per_rank:
            assert all(len({i % 2 for i in b}) == 1 for b in batches)    # one orientation


def test_one_rank_walks_as_before(tmp_path):
    """solver_count 1: NumPy's global generator, one minibatch at a time (unchanged)."""
    cfg.TRAIN.IMS_PER_BATCH = 1
    cfg.TRAIN.ASPECT_GROUPING = False
    layer = _layer(tmp_path)
    np.random.seed(7)
    layer.set_roidb(_roidb(6))
    np.random.seed(7)
    expect = np.random.permutation(6)
    assert [int(layer._get_next_minibatch_inds()[0]) for _ in range(6)] == expect.tolist()


def test_too_small_a_roidb_for_the_ranks_is_an_error(tmp_path):
    cfg.TRAIN.IMS_PER_BATCH = 2
    layer = _layer(tmp_path)
    caffe.set_solver_count(3)
    layer.set_roidb(_roidb(4))
    with pytest.raises(ValueError, match='4 images.*IMS_PER_BATCH.*3 ranks'):
        layer._get_next_minibatch_inds()
