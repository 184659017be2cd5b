#!/usr/bin/env python3
"""A net prototxt as a compact table, one line per layer, as Caffe's tools/extra/summarize.py:

    summarize.py net.prototxt [-w MAX_WIDTH]

Columns: layer name, type (a Python layer shows module.class), its parameters' sharing
names and learning/decay multipliers when not 1 (`x0` frozen, `Dx0` no decay), bottoms
`->` tops, and for convolutions and pooling `kernel[/stride][+pad] [num_output[/group]]`.
Each blob name has its own terminal colour, so a blob is easy to follow from the layer
that makes it to the layers that read it; a bottom nobody made is on red, a top nobody
reads is bold and underlined, and a loss weight is written before its top. Legacy (V1)
nets are upgraded first, as Caffe reads them.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'python'))

from caffe import protoio, upgrade  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

# ANSI SGR codes given to blobs in turn.
BLOB_COLOURS = ['92', '93', '94', '95', '97', '96', '42', '43;30', '100', '44', '103;30', '107;30']
UNKNOWN_BOTTOM = '41'
_ANSI = re.compile(r'\033\[[\d;]*m')


def read_net(path: str) -> caffe_pb2.NetParameter:
    """The net in `path`, upgraded from V0/V1 if it is legacy."""
    return upgrade.upgrade_net(protoio.read_text(path, caffe_pb2.NetParameter), path)


def paint(code: str, text: str) -> str:
    return '\033[%sm%s\033[0m' % (code, text)


def visible_len(text: str) -> int:
    """Length of `text` as the terminal shows it (colour codes take no room)."""
    return len(_ANSI.sub('', text))


def param_text(spec: caffe_pb2.ParamSpec) -> str:
    parts = [spec.name] if spec.name else []
    if spec.lr_mult != 1:
        parts.append('x%g' % spec.lr_mult)
    if spec.decay_mult != 1:
        parts.append('Dx%g' % spec.decay_mult)
    return ' '.join(parts)


def geometry_text(layer: caffe_pb2.LayerParameter) -> str:
    """kernel[/stride][+pad] and num_output[/group] of square convolutions and poolings."""
    if layer.type in ('Convolution', 'Deconvolution'):
        cp = layer.convolution_param
        if len(cp.kernel_size) != 1:
            return ''
        text = str(cp.kernel_size[0])
        if len(cp.stride) and cp.stride[0] != 1:
            text += '/%d' % cp.stride[0]
        if len(cp.pad) and cp.pad[0] != 0:
            text += '+%d' % cp.pad[0]
        text += ' %d' % cp.num_output
        if cp.group != 1:
            text += '/%d' % cp.group
        return text
    if layer.type == 'Pooling':
        pp = layer.pooling_param
        if pp.global_pooling:
            return 'global'
        text = str(pp.kernel_size)
        if pp.stride != 1:
            text += '/%d' % pp.stride
        if pp.pad != 0:
            text += '+%d' % pp.pad
        return text
    return ''


def summarize(net: caffe_pb2.NetParameter) -> List[List[str]]:
    """The table's rows (cells may hold colour codes)."""
    unread = set()
    for layer in net.layer:
        unread |= set(layer.top)
        unread -= set(layer.bottom)
    colours: Dict[str, str] = {}
    rows = []
    for layer in net.layer:
        bottoms = [paint(colours.get(b, UNKNOWN_BOTTOM), b) for b in layer.bottom]
        tops = []
        for i, top in enumerate(layer.top):
            code = colours.setdefault(top, BLOB_COLOURS[len(colours) % len(BLOB_COLOURS)])
            shown = ('\033[1;4m' + top) if top in unread else top
            if i < len(layer.loss_weight):
                shown = '%g * %s' % (layer.loss_weight[i], shown)
            tops.append(paint(code, shown))
        kind = (layer.python_param.module + '.' + layer.python_param.layer
                if layer.type == 'Python' else layer.type)
        params = [param_text(p) for p in layer.param]
        param_cell = '(%s)' % ', '.join(params) if any(params) else ''
        rows.append([layer.name, kind, param_cell, ', '.join(bottoms), '->', ', '.join(tops),
                     geometry_text(layer)])
    return rows


def format_table(rows: Sequence[Sequence[str]], max_width: int) -> List[str]:
    """Columns as narrow as their widest cell (capped at max_width); a longer cell spills
    into the next column, which then starts as soon after it as it can."""
    if not rows:
        return []
    widths = [min(max(visible_len(r[j]) + 1 for r in rows), max_width) for j in range(len(rows[0]))]
    lines = []
    for row in rows:
        line, edge = '', 0
        for cell, width in zip(row, widths):
            edge += width
            line += cell + ' '
            line += ' ' * max(edge - visible_len(line), 0)
        lines.append(line.rstrip())
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description='Print a concise summary of net computation.')
    p.add_argument('filename', help='net prototxt file to summarize')
    p.add_argument('-w', '--max-width', type=int, default=30, help='maximum field width')
    args = p.parse_args(argv)
    for line in format_table(summarize(read_net(args.filename)), args.max_width):
        print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
