#!/usr/bin/env python3
"""Evaluate the recall of object proposals (py-faster-rcnn's tools/eval_recall.py).

    ./tools/eval_recall.py --imdb voc_2007_test --method rpn --rpn-file proposals.pkl
"""
import _init_paths  # noqa: F401
import argparse

import numpy as np

from datasets.factory import get_imdb

from _tool_args import parse_or_help, print_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate proposal recall')
    parser.add_argument('--imdb', dest='imdb_name', help='dataset to evaluate',
                        default='voc_2007_test', type=str)
    parser.add_argument('--method', dest='method', help='proposal method',
                        default='selective_search', type=str)
    parser.add_argument('--rpn-file', dest='rpn_file', default=None, type=str)
    return parse_or_help(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    print_args(args)
    imdb = get_imdb(args.imdb_name)
    imdb.set_proposal_method(args.method)
    if args.rpn_file is not None:
        imdb.config['rpn_file'] = args.rpn_file
    candidate_boxes = None  # the proposals of --method come from the imdb's roidb
    thresholds = np.arange(0.5, 0.95 + 1e-5, 0.05)
    results = imdb.evaluate_recall(candidate_boxes=candidate_boxes, thresholds=thresholds)
    print('Method: {}'.format(args.method))
    print('AverageRec: {:.3f}'.format(results['ar']))

    def recall_at(t):
        ind = np.where(np.abs(thresholds - t) < 1e-5)[0][0]
        return results['recalls'][ind]

    print('Recall@0.5: {:.3f}'.format(recall_at(0.5)))
    print('Recall@0.6: {:.3f}'.format(recall_at(0.6)))
    print('Recall@0.7: {:.3f}'.format(recall_at(0.7)))
    print('Recall@0.8: {:.3f}'.format(recall_at(0.8)))
    print('Recall@0.9: {:.3f}'.format(recall_at(0.9)))
    # print results
    print('thresholds:')
    print(' '.join('{:.3f}'.format(t) for t in thresholds))
    print('recalls:')
    print(' '.join('{:.3f}'.format(r) for r in results['recalls']))
    return results


if __name__ == '__main__':
    main()
