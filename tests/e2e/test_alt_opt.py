"""4-step alternating optimisation (tools/train_faster_rcnn_alt_opt.py) on a tiny toy set,
with and without OHEM in the Fast R-CNN stages, then tools/test_net.py of the final model.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from e2e_helpers import (NUM_TEST, REPO, assert_finite, check_evaluation,
                         check_proposals, iteration_losses, output_losses, run, set_args,
                         split_images, window_means, write_solver)
from utils.safe_pickle import load_arrays

ALT_OPT = REPO / 'models' / 'toy' / 'ToyNet' / 'faster_rcnn_alt_opt'
STAGE_ITERS = 20
STAGES = ['Stage 1 RPN, init from ImageNet model',
          'Stage 1 RPN, generate proposals',
          'Stage 1 Fast R-CNN using RPN proposals, init from ImageNet model',
          'Stage 2 RPN, init from stage 1 Fast R-CNN model',
          'Stage 2 RPN, generate proposals',
          'Stage 2 Fast R-CNN, init from stage 2 RPN R-CNN model']


def _models_dir(tmp: Path) -> Path:
    """A MODELS_DIR whose ToyNet alt-opt solvers log every iteration's own loss.

    The solvers' nets stay the repository's prototxts; the RPN test net is copied as is.
    """
    root = tmp / 'models'
    dst = root / 'ToyNet' / 'faster_rcnn_alt_opt'
    for src in ALT_OPT.glob('*solver*.pt'):
        write_solver(src, dst / src.name)
    shutil.copy(ALT_OPT / 'rpn_test.pt', dst / 'rpn_test.pt')
    return root


def _split_stages(log: str) -> Dict[str, str]:
    """The log of each stage, keyed by the stage's banner."""
    parts = re.split(r'^~{70}\n(.*)\n~{70}$', log, flags=re.M)
    # parts: [preamble, banner1, text1, banner2, text2, ...]
    return dict(zip(parts[1::2], parts[2::2]))


def _check_training_stage(text: str, losses: set) -> Dict[str, List[float]]:
    its = iteration_losses(text)
    assert [i for i, _ in its] == list(range(STAGE_ITERS))
    assert_finite([v for _, v in its], 'loss')
    parts = output_losses(text)
    assert set(parts) == losses, sorted(parts)
    return parts


@pytest.mark.parametrize('ohem', [False, True], ids=['plain', 'ohem'])
def test_alt_opt_four_stages_then_test(ohem, toy_data, exps, logs, tmp_path):
    exp = exps.new('alt_opt_ohem' if ohem else 'alt_opt')
    tag = 'alt_opt_ohem' if ohem else 'alt_opt'
    cfg = 'experiments/cfgs/toy_faster_rcnn_alt_opt%s.yml' % ('_ohem' if ohem else '')
    iters = ','.join([str(STAGE_ITERS)] * 4)
    log = run(['tools/train_faster_rcnn_alt_opt.py', '--gpu', '-1', '--net_name', 'ToyNet',
               '--imdb', 'toy_2007_trainval', '--cfg', cfg, '--iters', iters]
              + (['--ohem'] if ohem else [])
              + set_args(toy_data, exp, 'MODELS_DIR', str(_models_dir(tmp_path))),
              logs / (tag + '_train.log'))

    stages = _split_stages(log)
    assert list(stages) == STAGES
    out_dir = REPO / 'output' / exp / 'toy_2007_trainval'
    frcn = 'toynet_fast_rcnn_ohem' if ohem else 'toynet_fast_rcnn'
    snapshots = ['toynet_rpn_stage1', frcn + '_stage1', 'toynet_rpn_stage2', frcn + '_stage2']
    train_stages = [STAGES[0], STAGES[2], STAGES[3], STAGES[5]]
    rpn_losses = {'rpn_cls_loss', 'rpn_loss_bbox'}
    frcn_losses = {'loss_cls', 'loss_bbox'}
    for stage, prefix in zip(train_stages, snapshots):
        text = stages[stage]
        snap = out_dir / ('%s_iter_%d.caffemodel' % (prefix, STAGE_ITERS))
        assert 'Wrote snapshot to: %s' % snap in text
        assert snap.is_file()
        rpn_stage = stage in (STAGES[0], STAGES[3])
        parts = _check_training_stage(text, rpn_losses if rpn_stage else frcn_losses)
        # each stage's training makes its objectness or classification loss fall
        key = 'rpn_cls_loss' if rpn_stage else 'loss_cls'
        first, last = window_means(parts[key], 5)
        assert last < first, (stage, key, first, last)
        if stage == STAGES[0]:
            # the RPN from scratch: objectness loss from ln 2, clearly down in 20 steps
            assert abs(parts['rpn_cls_loss'][0] - np.log(2)) < 0.05
            assert last < 0.8 * first, (first, last)
        if stage in (STAGES[2], STAGES[5]):
            # --ohem selects the stage*_fast_rcnn_ohem nets and turns TRAIN.USE_OHEM on
            mining = re.search(r'^I.*Creating Layer hard_roi_mining$', text, re.M)
            assert bool(mining) == ohem
            assert ("'USE_OHEM': %s" % ohem) in text

    for stage, rpn in ((STAGES[1], 'toynet_rpn_stage1'), (STAGES[4], 'toynet_rpn_stage2')):
        pkl = out_dir / ('%s_iter_%d_proposals.pkl' % (rpn, STAGE_ITERS))
        assert 'Wrote RPN proposals to %s' % pkl in stages[stage]
        # rpn_generate keeps up to 2000 boxes per image after NMS
        check_proposals(load_arrays(str(pkl)), split_images(toy_data, 'trainval'), 1, 2000)
    for stage, prefix in ((STAGES[2], 'toynet_rpn_stage1'), (STAGES[5], 'toynet_rpn_stage2')):
        assert 'RPN proposals: %s' % (out_dir / ('%s_iter_%d_proposals.pkl'
                                                  % (prefix, STAGE_ITERS))) in stages[stage]

    final = out_dir / 'ToyNet_faster_rcnn_final.caffemodel'
    assert re.search(r'^Final model: %s$' % re.escape(str(final)), log, re.M)
    last = out_dir / ('%s_iter_%d.caffemodel' % (snapshots[-1], STAGE_ITERS))
    assert final.read_bytes() == last.read_bytes()

    log = run(['tools/test_net.py', '--gpu', '-1', '--def', ALT_OPT / 'faster_rcnn_test.pt',
               '--net', final, '--imdb', 'toy_2007_test', '--cfg', cfg, '--wait', '0']
              + set_args(toy_data, exp), logs / (tag + '_test.log'))
    assert re.search(r'^im_detect: %d/%d ' % (NUM_TEST, NUM_TEST), log, re.M)
    check_evaluation(log, toy_data)
    assert (REPO / 'output' / exp / 'toy_2007_test' / final.stem / 'detections.pkl').is_file()
