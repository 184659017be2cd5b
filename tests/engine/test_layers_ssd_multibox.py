"""MultiBoxLoss: against a loop-based reference of Caffe's algorithm over the settings,
float64 finite-difference gradient checks, RefineDet's 5- and 6-bottom forms, errors."""
import numpy as np
import pytest
import torch

import caffe
from caffe import protoio
from caffe.proto import caffe_pb2

import ssd_reference as ref
from gradcheck import check_net_gradients

pytestmark = pytest.mark.usefixtures('one_torch_thread')


ENUMS = {
    'loc_loss_type': {'L2': ref.L2, 'SMOOTH_L1': ref.SMOOTH_L1},
    'conf_loss_type': {'SOFTMAX': ref.SOFTMAX, 'LOGISTIC': ref.LOGISTIC},
    'match_type': {'BIPARTITE': ref.BIPARTITE, 'PER_PREDICTION': ref.PER_PREDICTION},
    'mining_type': {'NONE': ref.NONE, 'MAX_NEGATIVE': ref.MAX_NEGATIVE,
                    'HARD_EXAMPLE': ref.HARD_EXAMPLE},
    'code_type': {'CORNER': ref.CORNER, 'CENTER_SIZE': ref.CENTER_SIZE,
                  'CORNER_SIZE': ref.CORNER_SIZE},
}
NORM = {'FULL': 0, 'VALID': 1, 'BATCH_SIZE': 2, 'NONE': 3}


def make_priors(rng, p):
    """p priors: centres on a jittered grid, varied sizes, SSD's variances."""
    cx, cy = rng.uniform(0.05, 0.95, p), rng.uniform(0.05, 0.95, p)
    w, h = rng.uniform(0.1, 0.5, p), rng.uniform(0.1, 0.5, p)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], (p, 1))
    return np.stack([boxes.reshape(-1), var.reshape(-1)])[None]


def make_labels(rng, priors, num, per_image, num_classes, difficult_every=0, max_label=None):
    """Ground truth near some priors (so that they match), rows [item, label, ...]."""
    boxes = priors[0, 0].reshape(-1, 4)
    rows = []
    for i in range(num):
        for k in range(per_image):
            b = boxes[rng.randint(len(boxes))] + rng.uniform(-0.03, 0.03, 4)
            b = np.clip(b, 0.01, 0.99)
            b[2], b[3] = max(b[2], b[0] + 0.05), max(b[3], b[1] + 0.05)
            lab = rng.randint(1, (max_label or num_classes - 1) + 1)
            diff = 1 if difficult_every and (i * per_image + k) % difficult_every == 0 else 0
            rows.append([i, lab, k] + list(b) + [diff])
    return np.array(rows, np.float64).reshape(1, 1, -1, 8)


def layer_text(settings, bottoms, propagate):
    mp, loss = [], []
    for k, v in settings.items():
        if k == 'normalization':
            loss.append('normalization: %s' % v)
        elif k == 'normalize':
            loss.append('normalize: %s' % ('true' if v else 'false'))
        elif k in ('nms_threshold', 'nms_top_k'):
            continue
        elif isinstance(v, bool):
            mp.append('%s: %s' % (k, 'true' if v else 'false'))
        else:
            mp.append('%s: %s' % (k, v))
    if 'nms_threshold' in settings:
        mp.append('nms_param { nms_threshold: %s top_k: %d }'
                  % (settings['nms_threshold'], settings.get('nms_top_k', 0)))
    return ('layer { name: "mbox_loss" type: "MultiBoxLoss" %s top: "loss" %s '
            'multibox_loss_param { %s } loss_param { %s } }'
            % (' '.join('bottom: "%s"' % b for b in bottoms),
               ' '.join('propagate_down: %s' % ('true' if x else 'false') for x in propagate),
               ' '.join(mp), ' '.join(loss)))


def net_text(settings, inputs, propagate, force=True):
    lines = ['force_backward: true'] if force else []
    for name, arr in inputs.items():
        lines.append('input: "%s" input_shape { %s }'
                     % (name, ' '.join('dim: %d' % d for d in arr.shape)))
    return '\n'.join(lines + [layer_text(settings, list(inputs), propagate)])


def ref_params(settings):
    out = {}
    for k, v in settings.items():
        if k in ENUMS:
            out[k] = ENUMS[k][v]
        elif k == 'normalization':
            out[k] = NORM[v]
        elif k == 'normalize':
            out['normalization'] = NORM['VALID'] if v else NORM['BATCH_SIZE']
        else:
            out[k] = v
    return out


def make_inputs(settings, seed=0, num=2, p=24, per_image=3, bottoms=4):
    rng = np.random.RandomState(seed)
    c = settings['num_classes']
    lc = 1 if settings.get('share_location', True) else c
    priors = make_priors(rng, p)
    inputs = {'loc': rng.randn(num, p * lc * 4) * 0.5, 'conf': rng.randn(num, p * c),
              'priors': priors,
              'label': make_labels(rng, priors, num, per_image, c,
                                   settings.pop('_difficult_every', 0),
                                   settings.pop('_max_label', None))}
    if bottoms >= 5:
        a = rng.rand(num, p, 2)
        inputs['arm_conf'] = (a / a.sum(-1, keepdims=True)).reshape(num, -1)
    if bottoms >= 6:
        inputs['arm_loc'] = rng.randn(num, p * 4) * 0.3
    return inputs


def run_engine(settings, inputs, propagate):
    text = net_text(settings, inputs, propagate)
    param = protoio.parse_text(text, caffe_pb2.NetParameter())
    with caffe.precision(torch.float64):
        net = caffe.Net(param, caffe.TRAIN)
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        net.forward()
        net.backward()
    return net


SSD = dict(num_classes=4, code_type='CENTER_SIZE', match_type='PER_PREDICTION',
           mining_type='MAX_NEGATIVE', overlap_threshold=0.5, neg_overlap=0.5, neg_pos_ratio=3.0)

SETTINGS = {
    'ssd': dict(SSD),
    'bipartite_corner_l2_full': dict(SSD, match_type='BIPARTITE', code_type='CORNER',
                                     loc_loss_type='L2', normalization='FULL'),
    'corner_size_logistic_batch': dict(SSD, code_type='CORNER_SIZE', conf_loss_type='LOGISTIC',
                                       normalization='BATCH_SIZE'),
    'no_mining_unshared': dict(SSD, mining_type='NONE', share_location=False,
                               normalization='NONE'),
    'no_mining_logistic': dict(SSD, mining_type='NONE', conf_loss_type='LOGISTIC'),
    'hard_example': dict(SSD, mining_type='HARD_EXAMPLE', sample_size=10),
    'hard_example_nms': dict(SSD, mining_type='HARD_EXAMPLE', sample_size=10,
                             nms_threshold=0.5, nms_top_k=30),
    'hard_example_nms_priors': dict(SSD, mining_type='HARD_EXAMPLE', sample_size=6,
                                    nms_threshold=0.4, nms_top_k=30, use_prior_for_nms=True),
    'match_predictions': dict(SSD, use_prior_for_matching=False, overlap_threshold=0.3),
    'match_predictions_unshared': dict(SSD, use_prior_for_matching=False, share_location=False,
                                       mining_type='NONE', overlap_threshold=0.3),
    'ignore_cross_boundary': dict(SSD, ignore_cross_boundary_bbox=True),
    'no_difficult': dict(SSD, use_difficult_gt=False, _difficult_every=2),
    'bp_inside': dict(SSD, bp_inside=True, use_prior_for_matching=False, overlap_threshold=0.3),
    'agnostic': dict(SSD, num_classes=2, map_object_to_agnostic=True, _max_label=1),
    'two_classes_map_labels': dict(SSD, num_classes=2, _max_label=3),
    'legacy_normalize_false': dict(SSD, normalize=False),
    'legacy_normalize_true': dict(SSD, normalize=True),
    'loc_weight': dict(SSD, loc_weight=2.5, neg_pos_ratio=1.5),
}


@pytest.mark.parametrize('name', sorted(SETTINGS))
def test_matches_reference(name):
    settings = dict(SETTINGS[name])
    inputs = make_inputs(settings, seed=sum(map(ord, name)))
    net = run_engine(settings, inputs, [True, True, False, False])
    loss, dloc, dconf, matches = ref.multibox_loss(inputs['loc'], inputs['conf'], inputs['priors'],
                                                   inputs['label'], ref_params(settings))
    assert matches > 0
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-9)
    np.testing.assert_allclose(net.blobs['loc'].diff, dloc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.blobs['conf'].diff, dconf, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(net.blobs['priors'].diff, 0)


@pytest.mark.parametrize('bottoms', [5, 6])
@pytest.mark.parametrize('mining', ['MAX_NEGATIVE', 'NONE', 'HARD_EXAMPLE'])
def test_refinedet_odm_matches_reference(bottoms, mining):
    settings = dict(SSD, mining_type=mining, objectness_score=0.45, sample_size=12)
    inputs = make_inputs(settings, seed=bottoms * 7 + len(mining), bottoms=bottoms)
    prop = [True, True] + [False] * (bottoms - 2)
    net = run_engine(settings, inputs, prop)
    loss, dloc, dconf, _ = ref.multibox_loss(
        inputs['loc'], inputs['conf'], inputs['priors'], inputs['label'], ref_params(settings),
        arm_conf=inputs['arm_conf'], arm_loc=inputs.get('arm_loc'))
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-9)
    np.testing.assert_allclose(net.blobs['loc'].diff, dloc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.blobs['conf'].diff, dconf, rtol=1e-9, atol=1e-12)


def test_objectness_filter_removes_negatives():
    """With every ARM objectness below the threshold no negative is mined: only the
    matched priors are in the confidence loss."""
    settings = dict(SSD, objectness_score=0.99)
    inputs = make_inputs(settings, seed=5, bottoms=5)
    net = run_engine(settings, inputs, [True, True, False, False, False])
    dconf = net.blobs['conf'].diff.reshape(2, -1, 4)
    rows = np.abs(dconf).sum(-1) > 0
    plain = run_engine(dict(SSD), {k: v for k, v in inputs.items() if k != 'arm_conf'},
                       [True, True, False, False])
    plain_rows = np.abs(plain.blobs['conf'].diff.reshape(2, -1, 4)).sum(-1) > 0
    assert rows.sum() < plain_rows.sum()
    np.testing.assert_array_equal(net.blobs['loc'].diff, plain.blobs['loc'].diff)


def test_encode_variance_in_target_keeps_caffes_gradient():
    """Caffe divides prediction and target by the variance and copies the gradient of
    that quotient back unscaled: the reference (not finite differences) is the rule."""
    settings = dict(SSD, encode_variance_in_target=True)
    inputs = make_inputs(settings, seed=3)
    net = run_engine(settings, inputs, [True, True, False, False])
    loss, dloc, dconf, _ = ref.multibox_loss(inputs['loc'], inputs['conf'], inputs['priors'],
                                             inputs['label'], ref_params(settings))
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-9)
    np.testing.assert_allclose(net.blobs['loc'].diff, dloc, rtol=1e-9, atol=1e-12)


def test_propagate_down_false_leaves_loss_out():
    """Caffe adds a term to the loss only when its bottom propagates (layer_param)."""
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=11)
    both = run_engine(dict(settings), inputs, [True, True, False, False])
    conf_only = run_engine(dict(settings), inputs, [False, True, False, False])
    loss_conf, _, _, _ = ref.multibox_loss(inputs['loc'], inputs['conf'], inputs['priors'],
                                           inputs['label'], ref_params(settings),
                                           propagate=(False, True))
    assert float(conf_only.blobs['loss'].data) == pytest.approx(loss_conf, rel=1e-9)
    assert float(conf_only.blobs['loss'].data) < float(both.blobs['loss'].data)


def test_image_without_ground_truth_gets_no_mined_negatives():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=2)
    lab = inputs['label'].reshape(-1, 8)
    inputs['label'] = lab[lab[:, 0] == 0].reshape(1, 1, -1, 8)      # image 1: nothing
    net = run_engine(settings, inputs, [True, True, False, False])
    assert not net.blobs['conf'].diff.reshape(2, -1)[1].any()
    loss, _, dconf, _ = ref.multibox_loss(inputs['loc'], inputs['conf'], inputs['priors'],
                                          inputs['label'], ref_params(settings))
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-9)


def test_no_ground_truth_at_all():
    """A batch whose label blob is one row of -1 (AnnotatedData's empty batch)."""
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=4)
    inputs['label'] = -np.ones((1, 1, 1, 8))
    net = run_engine(settings, inputs, [True, True, False, False])
    assert float(net.blobs['loss'].data) == 0
    assert not net.blobs['loc'].diff.any() and not net.blobs['conf'].diff.any()


def test_loss_weight_scales_gradient():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=9)
    base = run_engine(dict(settings), inputs, [True, True, False, False])
    text = net_text(settings, inputs, [True, True, False, False]).replace(
        'top: "loss"', 'top: "loss" loss_weight: 3')
    with caffe.precision(torch.float64):
        net = caffe.Net(protoio.parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        net.forward()
        net.backward()
    np.testing.assert_allclose(net.blobs['conf'].diff, 3 * base.blobs['conf'].diff, rtol=1e-12)
    np.testing.assert_allclose(net.blobs['loc'].diff, 3 * base.blobs['loc'].diff, rtol=1e-12)


GRAD_SETTINGS = ['ssd', 'bipartite_corner_l2_full', 'corner_size_logistic_batch',
                 'no_mining_unshared', 'no_mining_logistic', 'hard_example', 'hard_example_nms',
                 'match_predictions', 'bp_inside', 'legacy_normalize_false', 'agnostic']


@pytest.mark.parametrize('name', GRAD_SETTINGS)
def test_gradient(name):
    settings = dict(SETTINGS[name])
    inputs = make_inputs(settings, seed=sum(map(ord, name)), p=8, per_image=2)
    check_net_gradients(net_text(settings, inputs, [True, True, False, False]), inputs,
                        skip_inputs=('priors', 'label'), check_params=False)


@pytest.mark.parametrize('bottoms', [5, 6])
def test_gradient_refinedet(bottoms):
    settings = dict(SSD, objectness_score=0.3)
    inputs = make_inputs(settings, seed=bottoms, p=8, per_image=2, bottoms=bottoms)
    check_net_gradients(net_text(settings, inputs, [True, True] + [False] * (bottoms - 2)),
                        inputs, skip_inputs=('priors', 'label', 'arm_conf', 'arm_loc'),
                        check_params=False)


def test_fixture_shaped_float32_run_matches_reference():
    """The float32 engine agrees with the float64 reference to float32 round-off."""
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=21, num=3, p=40, per_image=4)
    param = protoio.parse_text(net_text(settings, inputs, [True, True, False, False]),
                               caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TRAIN)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    net.backward()
    loss, dloc, dconf, _ = ref.multibox_loss(inputs['loc'], inputs['conf'], inputs['priors'],
                                             inputs['label'], ref_params(settings))
    assert float(net.blobs['loss'].data) == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(net.blobs['conf'].diff, dconf, atol=1e-6)
    np.testing.assert_allclose(net.blobs['loc'].diff, dloc, atol=1e-6)


# ---- errors ---------------------------------------------------------------------------------

def build(settings, inputs, propagate=(True, True, False, False)):
    param = protoio.parse_text(net_text(settings, inputs, list(propagate)),
                               caffe_pb2.NetParameter())
    return caffe.Net(param, caffe.TRAIN)


def test_error_priors_vs_loc():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=1)
    inputs['loc'] = inputs['loc'][:, :-4]
    with pytest.raises(caffe.LayerError, match=r"mbox_loss.*priors.*location predictions.*24 "
                                               r"priors x 1 x 4 = 96.*holds 92"):
        build(settings, inputs)


def test_error_num_classes_vs_conf():
    settings = dict(SSD, num_classes=5)
    inputs = make_inputs(dict(SSD), seed=1)
    with pytest.raises(caffe.LayerError, match=r"mbox_loss.*num_classes 5 = 120.*holds 96"):
        build(settings, inputs)


def test_error_background_label_in_ground_truth():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=1)
    inputs['label'][0, 0, 1, 1] = 0
    net = build(settings, inputs)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    with pytest.raises(caffe.LayerError, match=r"mbox_loss.*background label.*row 1"):
        net.forward()


def test_error_label_out_of_range():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=1)
    inputs['label'][0, 0, :, 1] = 7
    net = build(settings, inputs)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    with pytest.raises(caffe.LayerError, match=r"label 7 is outside \[0, num_classes = 4\)"):
        net.forward()


@pytest.mark.parametrize('extra,msg', [
    ({'num_classes': None}, 'Must provide num_classes'),
    ({'share_location': False}, 'only support negative mining if share_location'),
    ({'background_label_id': 4}, r'background_label_id should be within \[0, num_classes\)'),
    ({'mining_type': 'HARD_EXAMPLE', 'sample_size': 0}, 'sample_size must be positive'),
    ({'map_object_to_agnostic': True}, 'map_object_to_agnostic needs num_classes 2'),
])
def test_error_bad_parameters(extra, msg):
    settings = dict(SSD, **{k: v for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            settings.pop(k)
    inputs = make_inputs(dict(SSD), seed=1)
    with pytest.raises(caffe.LayerError, match=msg):
        build(settings, inputs)


def test_error_backward_to_priors():
    settings = dict(SSD)
    inputs = make_inputs(settings, seed=1)
    net = build(settings, inputs, (True, True, True, False))
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    with pytest.raises(caffe.LayerError, match='cannot backpropagate to prior inputs'):
        net._backward(len(net.layers) - 1, 0)
