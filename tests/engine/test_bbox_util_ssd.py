"""caffe.bbox_util: SSD's box maths against hand values and the loop-based reference."""
import math

import numpy as np
import pytest
import torch

from caffe import bbox_util as bu
from caffe.proto import caffe_pb2

import ssd_reference as ref

T = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
CODE = caffe_pb2.PriorBoxParameter
MB = caffe_pb2.MultiBoxLossParameter

pytestmark = pytest.mark.usefixtures('one_torch_thread')


# ---- sizes and overlaps ---------------------------------------------------------------------

def test_size_and_overlap_hand_values():
    a = T([[0.1, 0.1, 0.3, 0.5]])
    b = T([[0.2, 0.3, 0.4, 0.6], [0.3, 0.1, 0.5, 0.5], [0.6, 0.6, 0.5, 0.9]])
    assert bu.bbox_size(a)[0] == pytest.approx(0.08)
    assert bu.bbox_size(b)[2] == 0                                  # inverted: size 0
    ov = bu.jaccard_overlap(a, b)[0]
    # 0.1 x 0.2 = 0.02 over 0.08 + 0.06 - 0.02; touching boxes: 0; inverted: 0.
    assert ov[0] == pytest.approx(0.02 / 0.12)
    assert ov[1] == 0 and ov[2] == 0


def test_overlap_broadcasts_over_batches():
    rng = np.random.RandomState(0)
    a = rng.rand(3, 5, 4)
    a[..., 2:] += a[..., :2]
    b = rng.rand(3, 2, 4)
    b[..., 2:] += b[..., :2]
    got = bu.jaccard_overlap(T(a), T(b))
    for i in range(3):
        for j in range(5):
            for k in range(2):
                assert got[i, j, k] == pytest.approx(ref.jaccard(a[i, j], b[i, k]))


def test_sized_overlap_pixel_boxes_caffe_quirk():
    """Pixel boxes that do not meet still 'intersect' in a 1 x 1 box in Caffe."""
    a, b = T([[0, 0, 9, 9]]), T([[20, 20, 29, 29]])
    sa, sb = bu.bbox_size(a, False), bu.bbox_size(b, False)
    assert bu.sized_jaccard_overlap(a, sa, b, sb, False)[0, 0] == pytest.approx(1 / 199)
    c = T([[5, 5, 14, 14]])
    assert bu.sized_jaccard_overlap(a, sa, c, bu.bbox_size(c, False), False)[0, 0] == \
        pytest.approx(25 / 175)


# ---- encode / decode ------------------------------------------------------------------------

PRIOR = [0.2, 0.2, 0.6, 0.4]
VAR = [0.1, 0.1, 0.2, 0.2]
BOX = [0.25, 0.15, 0.55, 0.5]


@pytest.mark.parametrize('code', [CODE.CORNER, CODE.CENTER_SIZE, CODE.CORNER_SIZE])
@pytest.mark.parametrize('in_target', [False, True])
def test_encode_decode_against_reference_and_round_trip(code, in_target):
    enc = bu.encode_bbox(T(PRIOR), T(VAR), T(BOX), code, in_target)
    np.testing.assert_allclose(enc.numpy(), ref.encode(PRIOR, VAR, BOX, code, in_target))
    dec = bu.decode_bbox(T(PRIOR), T(VAR), enc, code, in_target)
    np.testing.assert_allclose(dec.numpy(), BOX, atol=1e-12)


def test_center_size_hand_values():
    enc = bu.encode_bbox(T(PRIOR), T(VAR), T(BOX), CODE.CENTER_SIZE)
    # centres (0.4, 0.3) -> (0.4, 0.325); sizes 0.4 x 0.2 -> 0.3 x 0.35
    np.testing.assert_allclose(enc.numpy(), [0.0, 0.025 / 0.2 / 0.1, math.log(0.75) / 0.2,
                                             math.log(1.75) / 0.2], atol=1e-12)


def test_decode_clip_and_broadcast():
    priors = T([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    loc = torch.zeros(3, 2, 4, dtype=torch.float64)
    loc[..., 2] = 5.0                                                 # very wide boxes
    out = bu.decode_bbox(priors, T(VAR), loc, CODE.CENTER_SIZE, clip=True)
    assert out.shape == (3, 2, 4)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_encode_refuses_empty_ground_truth():
    with pytest.raises(bu.BoxError, match='ground-truth box width and height must be positive'):
        bu.encode_bbox(T(PRIOR), T(VAR), T([0.3, 0.3, 0.3, 0.5]), CODE.CENTER_SIZE)


# ---- ground truth and matching --------------------------------------------------------------

def test_ground_truth_grouping():
    rows = T([[1, 3, 0, .1, .1, .2, .2, 0],
              [0, 1, 0, .3, .3, .4, .4, 1],
              [-1, -1, -1, -1, -1, -1, -1, -1],
              [1, 2, 1, .5, .5, .6, .6, 0],
              [0, 2, 1, .6, .6, .7, .7, 0]])
    gt = bu.get_ground_truth(rows, 2, 0, True, 4)
    assert gt.valid.tolist() == [[True, True], [True, True]]
    assert gt.labels.tolist() == [[1, 2], [3, 2]]
    assert gt.difficult[0, 0]
    no_diff = bu.get_ground_truth(rows, 2, 0, False, 4)
    assert no_diff.labels[0, 0] == 2 and no_diff.valid[0].tolist() == [True, False]
    stopped = bu.get_ground_truth(rows, 2, 0, True, 4, stop_at_invalid=True)
    assert stopped.valid.sum() == 2
    two = bu.get_ground_truth(rows, 2, 0, True, 2)                   # ARM: labels 2+ -> 1
    assert set(two.labels[two.valid].tolist()) == {1}
    with pytest.raises(bu.GroundTruthError, match='row 1'):
        bu.get_ground_truth(rows, 2, 1, True, 4)


def random_case(rng, grid):
    """Boxes on a coarse grid (many equal overlaps, so ties matter)."""
    def boxes(k):
        lo = rng.randint(0, grid - 1, (k, 2))
        hi = lo + rng.randint(1, grid // 2 + 1, (k, 2))
        return np.concatenate([lo, hi], 1) / grid - 0.05
    return boxes(rng.randint(5, 25)), boxes(rng.randint(1, 6))


@pytest.mark.parametrize('match_type', [MB.BIPARTITE, MB.PER_PREDICTION])
@pytest.mark.parametrize('ignore', [False, True])
def test_match_against_reference_with_ties(match_type, ignore):
    rng = np.random.RandomState(match_type * 2 + ignore)
    for trial in range(40):
        preds, gts = random_case(rng, 6)
        ov = bu.jaccard_overlap(T(preds)[None], T(gts)[None])
        valid = torch.ones(1, len(gts), dtype=torch.bool)
        ign = bu.is_cross_boundary(T(preds))[None] if ignore else None
        idx, best = bu.match_bbox(ov, valid, match_type, 0.3, ign)
        ridx, rbest = ref.match([(1, list(g)) for g in gts], [list(p) for p in preds], -1,
                                match_type, 0.3, ignore)
        assert idx[0].tolist() == ridx, trial
        np.testing.assert_allclose(best[0].numpy(), rbest)


def test_match_batched_with_padding_equals_single_images():
    rng = np.random.RandomState(3)
    cases = [random_case(rng, 8) for _ in range(4)]
    p = max(len(c[0]) for c in cases)
    g = max(len(c[1]) for c in cases)
    preds = np.full((4, p, 4), 2.0)
    gts = np.zeros((4, g, 4))
    valid = torch.zeros(4, g, dtype=torch.bool)
    for i, (pr, gt) in enumerate(cases):
        preds[i, :len(pr)] = pr
        gts[i, :len(gt)] = gt
        valid[i, :len(gt)] = True
    idx, _ = bu.match_bbox(bu.jaccard_overlap(T(preds), T(gts)), valid, MB.PER_PREDICTION, 0.5)
    for i, (pr, gt) in enumerate(cases):
        ridx, _ = ref.match([(1, list(b)) for b in gt], [list(b) for b in pr], -1,
                            MB.PER_PREDICTION, 0.5, False)
        assert idx[i, :len(pr)].tolist() == ridx


# ---- NMS ------------------------------------------------------------------------------------

def nms_case(rng, n):
    lo = rng.randint(0, 8, (n, 2))
    hi = lo + rng.randint(1, 5, (n, 2))
    boxes = np.concatenate([lo, hi], 1) / 10.0
    scores = rng.randint(0, 6, n) / 6.0                  # many ties
    return boxes, scores


@pytest.mark.parametrize('eta,top_k', [(1.0, -1), (1.0, 7), (0.8, -1), (0.6, 9)])
def test_nms_fast_against_reference(eta, top_k):
    rng = np.random.RandomState(int(eta * 10) + top_k)
    for trial in range(25):
        boxes, scores = nms_case(rng, rng.randint(1, 30))
        got = bu.apply_nms_fast(T(boxes), T(scores).float(), 0.1, 0.55, eta, top_k)
        want = ref.nms_fast([list(b) for b in boxes], list(np.float32(scores)), 0.1, 0.55, eta, top_k)
        assert got.tolist() == want, trial


@pytest.mark.parametrize('eta', [1.0, 0.7])
def test_nms_grouped_equals_groups_alone(eta):
    rng = np.random.RandomState(5)
    boxes, scores = nms_case(rng, 60)
    groups = rng.randint(0, 4, 60)
    got = bu.apply_nms_fast_grouped(T(boxes), T(scores), torch.tensor(groups), 0.0, 0.5, eta, 6)
    want = []
    for g in range(4):
        members = np.nonzero(groups == g)[0]
        kept = ref.nms_fast([list(boxes[m]) for m in members], list(scores[members]), 0.0, 0.5,
                            eta, 6)
        want += [int(members[k]) for k in kept]
    assert got.tolist() == want


def test_nms_for_mining_drops_small_boxes():
    rng = np.random.RandomState(8)
    for trial in range(20):
        boxes, scores = nms_case(rng, 20)
        boxes[::5, 2] = boxes[::5, 0] + 1e-6                    # tiny boxes
        got = bu.apply_nms(T(boxes), T(scores), 0.45, 12)
        want = ref.nms([list(b) for b in boxes], list(scores), 0.45, 12)
        assert got.tolist() == want, trial


# ---- mining ---------------------------------------------------------------------------------

def test_max_negative_mining_ties_and_ratio():
    loss = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1, 0.5],
                         [0.2, 0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float32)
    match = torch.tensor([[0, -1, -1, -1, -1, -1], [-1, 1, 0, -1, -1, -2]])
    eligible = match == -1
    mined = bu.mine_hard_examples(loss, match, eligible, MB.MAX_NEGATIVE, 2.5, 0)
    # Image 0: 1 match -> int(2.5) = 2 negatives: 0.9 (prior 1), then the first 0.5 (prior 2).
    assert mined.negative[0].tolist() == [False, True, True, False, False, False]
    # Image 1: 2 matches -> 5, but only 3 eligible (prior 5 is ignored): all of them.
    assert mined.negative[1].tolist() == [True, False, False, True, True, False]
    assert mined.positive.tolist() == (match > -1).tolist()


def test_hard_example_mining_drops_unpicked_matches():
    loss = torch.tensor([[0.1, 0.9, 0.8, 0.2]], dtype=torch.float32)
    match = torch.tensor([[0, 1, -1, -1]])
    eligible = torch.ones_like(match, dtype=torch.bool)
    mined = bu.mine_hard_examples(loss, match, eligible, MB.HARD_EXAMPLE, 3.0, 2)
    assert mined.positive.tolist() == [[False, True, False, False]]
    assert mined.negative.tolist() == [[False, False, True, False]]


# ---- average precision ----------------------------------------------------------------------

def pairs(dets):
    return [(s, t) for s, t in dets], [(s, 1 - t) for s, t in dets]


def test_ap_three_versions_hand_values():
    tp, fp = pairs([(0.9, 1), (0.8, 0), (0.7, 1), (0.6, 0), (0.5, 1)])
    prec, rec, ap = bu.compute_ap(tp, 4, fp, '11point')
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3, 0.5, 0.6], rtol=1e-6)
    np.testing.assert_allclose(rec, [0.25, 0.25, 0.5, 0.5, 0.75], rtol=1e-6)
    # recall >= 0, .1, .2: 1; >= .3, .4, .5: 2/3; >= .6, .7: 0.6; >= .8: none.
    assert ap == pytest.approx((3 + 2 + 1.2) / 11, rel=1e-6)
    assert bu.compute_ap(tp, 4, fp, 'MaxIntegral')[2] == pytest.approx(
        0.6 * 0.25 + 2 / 3 * 0.25 + 0.25, rel=1e-6)
    assert bu.compute_ap(tp, 4, fp, 'Integral')[2] == pytest.approx(
        0.25 + 2 / 3 * 0.25 + 0.6 * 0.25, rel=1e-6)


def test_ap_envelope_versus_raw_integral():
    tp, fp = pairs([(0.7, 1), (0.9, 0), (0.8, 1)])          # ranked: fp, tp, tp
    assert bu.compute_ap(tp, 2, fp, 'Integral')[2] == pytest.approx(0.5 * 0.5 + 2 / 3 * 0.5,
                                                                      rel=1e-6)
    assert bu.compute_ap(tp, 2, fp, 'MaxIntegral')[2] == pytest.approx(2 / 3, rel=1e-6)
    assert bu.compute_ap(tp, 2, fp, '11point')[2] == pytest.approx(2 / 3, rel=1e-6)


def test_ap_ties_keep_order_and_edge_cases():
    tp, fp = pairs([(0.5, 0), (0.5, 1)])                     # equal scores: fp first
    prec, _, _ = bu.compute_ap(tp, 1, fp, 'Integral')
    np.testing.assert_allclose(prec, [0, 0.5])
    assert bu.compute_ap([], 3, [], '11point')[2] == 0
    assert bu.compute_ap(tp, 0, fp, '11point')[2] == 0
    with pytest.raises(ValueError, match='Unknown ap_version'):
        bu.compute_ap(tp, 1, fp, 'VOC2010')


# ---- original image sizes -------------------------------------------------------------------

def test_output_bbox_warp_and_default():
    boxes = T([[-0.1, 0.2, 0.5, 1.2]])
    out, size = bu.output_bbox(boxes, 100.0, 200.0)
    np.testing.assert_allclose(out.numpy(), [[0, 20, 100, 100]])
    assert size[0] == pytest.approx(101 * 81)                      # pixel size: "+ 1"
    rp = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.WARP, height=300,
                                   width=300)
    out2, _ = bu.output_bbox(boxes, 100.0, 200.0, rp)
    np.testing.assert_allclose(out2.numpy(), out.numpy())


def test_output_bbox_fit_large_size_and_pad():
    # A 100 x 200 (h x w) image padded into 300 x 300: content rows 75..225.
    rp = caffe_pb2.ResizeParameter(
        resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD, height=300, width=300)
    out, _ = bu.output_bbox(T([[0.1, 0.25, 0.5, 0.5]]), 100.0, 200.0, rp)
    np.testing.assert_allclose(out.numpy(), [[20, 0, 100, 50]], atol=1e-9)


def test_output_bbox_fit_small_size_with_scales():
    rp = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_SMALL_SIZE,
                                   height=300, width=300, height_scale=400, width_scale=600)
    out, size = bu.output_bbox(T([[0.1, 0.1, 0.5, 0.3]]), 100.0, 200.0, rp)
    np.testing.assert_allclose(out.numpy(), [[60, 40, 200, 100]])
    assert size[0] == pytest.approx(140 * 60)                     # no "+ 1" in this mode
