"""upgrade_net_proto_text, upgrade_net_proto_binary, upgrade_solver_proto_text.

Caffe's tools that rewrite old nets and solvers in the current format:

    upgrade_net_proto_text v0_net_proto_file_in net_proto_file_out
    upgrade_net_proto_binary v0_net_proto_file_in net_proto_file_out
    upgrade_solver_proto_text old_solver_proto_file_in solver_proto_file_out

A net goes through every step of Caffe's UpgradeNetAsNeeded: V0 -> V1 -> current layers,
the V1 data layers' transformation fields, BatchNorm's frozen statistics, and the net-level
input fields (`input` with `input_dim` or `input_shape`) turned into an `Input` layer at the
front of the net, as current Caffe writes them. A solver's `solver_type` enum becomes the
`type` string. A file already current is written out unchanged (with a note), and the exit
status is 0 on success, 1 on a wrong argument count or a failed upgrade, 2 when the input
cannot be parsed.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .. import _log, protoio, upgrade
from ..errors import CaffeError
from ..proto import caffe_pb2

_WHERE = 'upgrade_proto.cpp'


def net_needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Caffe's NetNeedsUpgrade: legacy layers, data transformation, BatchNorm or input fields."""
    return upgrade.net_needs_upgrade(net) or len(net.input) > 0


def input_fields_to_layer(net: caffe_pb2.NetParameter) -> None:
    """Caffe's UpgradeNetInput: `input` + shapes become one `Input` layer named "input",
    placed first; an input without shapes (an old .caffemodel) is simply dropped."""
    shapes = list(net.input_shape)
    dims = list(net.input_dim)
    if shapes or dims:
        layer = caffe_pb2.LayerParameter(name='input', type='Input')
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if shapes:
                shape.CopyFrom(shapes[i])
            else:
                shape.dim.extend(dims[4 * i:4 * i + 4])
        rest = list(net.layer)
        del net.layer[:]
        net.layer.extend([layer] + rest)
    net.ClearField('input')
    net.ClearField('input_shape')
    net.ClearField('input_dim')


def upgrade_net_as_needed(net: caffe_pb2.NetParameter, source: str) -> None:
    """Every upgrade step Caffe applies to a net read from `source` (in place)."""
    upgrade.upgrade_net(net, source)
    if len(net.input):
        _log.info(_WHERE, 'Attempting to upgrade input file specified using deprecated input '
                          'fields: %s' % source)
        input_fields_to_layer(net)
        _log.info(_WHERE, 'Successfully upgraded file specified using deprecated input fields.')
        _log.warning(_WHERE, 'Note that future Caffe releases will only support input layers '
                             'and not input fields.')


def _upgrade_net_tool(argv: Optional[Sequence[str]], binary: bool) -> int:
    prog = 'upgrade_net_proto_binary' if binary else 'upgrade_net_proto_text'
    where = prog + '.cpp'
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        _log.error(where, 'Usage: %s v0_net_proto_file_in net_proto_file_out' % prog)
        return 1
    src, dst = argv
    net = caffe_pb2.NetParameter()
    try:
        net = (protoio.read_binary if binary else protoio.read_text)(src, caffe_pb2.NetParameter)
    except (CaffeError, OSError) as e:
        _log.error(where, 'Failed to parse input %s file as NetParameter: %s (%s)'
                   % ('binary' if binary else 'text', src, e))
        return 2
    ok = True
    if net_needs_upgrade(net):
        try:
            upgrade_net_as_needed(net, src)
        except CaffeError as e:
            _log.error(where, str(e))
            _log.error(where, 'Encountered error(s) while upgrading prototxt; see details above.')
            ok = False
    else:
        _log.error(where, 'File already in latest proto format: %s' % src)
    (protoio.write_binary if binary else protoio.write_text)(dst, net)
    _log.info(where, 'Wrote upgraded NetParameter %s proto to %s'
              % ('binary' if binary else 'text', dst))
    return 0 if ok else 1


def upgrade_net_proto_text(argv: Optional[Sequence[str]] = None) -> int:
    """Upgrade a net prototxt; see the module docstring."""
    return _upgrade_net_tool(argv, binary=False)


def upgrade_net_proto_binary(argv: Optional[Sequence[str]] = None) -> int:
    """Upgrade a binary net (a .caffemodel); see the module docstring."""
    return _upgrade_net_tool(argv, binary=True)


def upgrade_solver_proto_text(argv: Optional[Sequence[str]] = None) -> int:
    """Upgrade a solver prototxt (solver_type -> type)."""
    where = 'upgrade_solver_proto_text.cpp'
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        _log.error(where, 'Usage: upgrade_solver_proto_text old_solver_proto_file_in '
                          'solver_proto_file_out')
        return 1
    src, dst = argv
    try:
        solver = protoio.read_text(src, caffe_pb2.SolverParameter)
    except (CaffeError, OSError) as e:
        _log.error(where, 'Failed to parse input text file as SolverParameter: %s (%s)' % (src, e))
        return 2
    ok = True
    if solver.HasField('solver_type'):
        _log.info(_WHERE, "Attempting to upgrade input file specified using deprecated "
                          "'solver_type' field (enum)': %s" % src)
        try:
            upgrade.upgrade_solver(solver)
            _log.info(_WHERE, "Successfully upgraded file specified using deprecated "
                              "'solver_type' field (enum) to 'type' field (string).")
            _log.warning(_WHERE, "Note that future Caffe releases will only support 'type' "
                                 "field (string) for a solver's type.")
        except CaffeError as e:
            _log.error(where, str(e))
            _log.error(where, 'Encountered error(s) while upgrading prototxt; see details above.')
            ok = False
    else:
        _log.error(where, 'File already in latest proto format: %s' % src)
    protoio.write_text(dst, solver)
    _log.info(where, 'Wrote upgraded SolverParameter text proto to %s' % dst)
    return 0 if ok else 1
