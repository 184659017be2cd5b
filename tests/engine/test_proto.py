"""caffe.proto and the generated caffe_pb2 stay what Caffe's files are on the wire.

Two things can drift: the committed caffe_pb2.py may stop matching caffe.proto (someone
edits one and forgets to regenerate the other), and caffe.proto may stop matching Caffe's
own schema (a field number, type or default that differs silently breaks reading real
.caffemodel and prototxt files). The reference schema is shared/caffe_proto_fields.json,
a listing of BVLC master plus caffe-fast-rcnn's fields; a copy lives beside this file for
checkouts without shared/.
"""
import ast
import json
import os
import subprocess
import sys

import pytest

from caffe.proto import caffe_pb2
from google.protobuf import descriptor as _d

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(REPO, 'caffe-fast-rcnn', 'python', 'caffe', 'proto')
SHARED_JSON = os.path.join(REPO, '..', 'shared', 'caffe_proto_fields.json')
LOCAL_JSON = os.path.join(HERE, 'caffe_proto_fields.json')
SSD_SHARED_JSON = os.path.join(REPO, '..', 'shared', 'caffe_proto_ssd_refinedet_fields.json')
SSD_LOCAL_JSON = os.path.join(HERE, 'caffe_proto_ssd_refinedet_fields.json')


def _serialized_descriptor(pb2_path):
    """The bytes a generated *_pb2.py hands to AddSerializedFile (found without importing it)."""
    tree = ast.parse(open(pb2_path, encoding='utf-8').read())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'AddSerializedFile'):
            return node.args[0].value
    raise AssertionError('%s has no AddSerializedFile call' % pb2_path)


def test_committed_pb2_matches_protoc_output(tmp_path):
    subprocess.run([sys.executable, '-m', 'grpc_tools.protoc', '-I' + PROTO_DIR,
                    '--python_out=' + str(tmp_path), os.path.join(PROTO_DIR, 'caffe.proto')],
                   check=True, capture_output=True)
    fresh = _serialized_descriptor(str(tmp_path / 'caffe_pb2.py'))
    committed = _serialized_descriptor(os.path.join(PROTO_DIR, 'caffe_pb2.py'))
    assert fresh == committed, 'caffe_pb2.py is stale: regenerate it from caffe.proto'
    # And the module the engine imports is that file.
    assert os.path.samefile(caffe_pb2.__file__, os.path.join(PROTO_DIR, 'caffe_pb2.py'))


def _load(shared, local):
    path = shared if os.path.isfile(shared) else local
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _reference():
    return _load(SHARED_JSON, LOCAL_JSON)


@pytest.mark.parametrize('shared,local', [(SHARED_JSON, LOCAL_JSON),
                                          (SSD_SHARED_JSON, SSD_LOCAL_JSON)])
def test_local_copy_of_reference_is_current(shared, local):
    mine = json.load(open(local, encoding='utf-8'))
    assert mine['messages']
    if os.path.isfile(shared):
        assert json.load(open(shared, encoding='utf-8')) == mine, \
            '%s differs from shared/: copy it again' % os.path.basename(local)


_TYPES = {
    'double': _d.FieldDescriptor.TYPE_DOUBLE, 'float': _d.FieldDescriptor.TYPE_FLOAT,
    'int64': _d.FieldDescriptor.TYPE_INT64, 'uint64': _d.FieldDescriptor.TYPE_UINT64,
    'int32': _d.FieldDescriptor.TYPE_INT32, 'uint32': _d.FieldDescriptor.TYPE_UINT32,
    'bool': _d.FieldDescriptor.TYPE_BOOL, 'string': _d.FieldDescriptor.TYPE_STRING,
    'bytes': _d.FieldDescriptor.TYPE_BYTES, 'message': _d.FieldDescriptor.TYPE_MESSAGE,
    'enum': _d.FieldDescriptor.TYPE_ENUM,
}


def _label(f):
    if f.is_repeated:
        return 'repeated'
    return 'required' if f.is_required else 'optional'


def _default_matches(f, text):
    value = f.default_value
    if f.type == _d.FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values_by_number[value].name == text
    if f.type == _d.FieldDescriptor.TYPE_BOOL:
        return value == (text == 'true')
    if f.type in (_d.FieldDescriptor.TYPE_FLOAT, _d.FieldDescriptor.TYPE_DOUBLE):
        return abs(value - float(text)) <= 1e-6 * max(1.0, abs(float(text)))
    if f.type in (_d.FieldDescriptor.TYPE_STRING, _d.FieldDescriptor.TYPE_BYTES):
        return value in (text, text.encode())
    return value == int(text)


REF = _reference()

# SSD's fork numbered SolverParameter.eval_type/ap_version 41/42, the numbers BVLC later gave
# to layer_wise_reduce/weights (REF). One descriptor cannot hold both; BVLC's keep theirs
# (see scripts/write_proto.py). Solver files are text, matched by name, so both read.
SSD_RENUMBERED = {('SolverParameter', 'eval_type'): 141, ('SolverParameter', 'ap_version'): 142}


def _ssd_reference():
    """The SSD/RefineDet table as (message, fields, enums) rows, types in REF's form."""
    ssd = _load(SSD_SHARED_JSON, SSD_LOCAL_JSON)
    rows = [(name, m['fields'], m.get('enums', {})) for name, m in ssd['messages'].items()]
    rows += [(name, m['fields'], m.get('enums', {}))
             for name, m in ssd['fields_added_to_existing_messages'].items()]
    out = {}
    for name, fields, enums in rows:
        norm = []
        for f in fields:
            f = dict(f, number=SSD_RENUMBERED.get((name, f['name']), f['number']))
            if f['type'] not in _TYPES:
                desc = caffe_pb2.DESCRIPTOR
                owner, _, sub = f['type'].rpartition('.')
                is_enum = bool(owner) and sub in desc.message_types_by_name[owner].enum_types_by_name
                f = dict(f, type='enum' if is_enum else 'message', type_name=f['type'])
            norm.append(f)
        out[name] = {'fields': norm, 'enums': enums}
    return out


SSD_REF = _ssd_reference()


def test_ssd_renumbering_is_the_only_clash():
    """The only fields of SSD's table not at SSD's number are the two BVLC took."""
    solver = caffe_pb2.SolverParameter.DESCRIPTOR
    assert solver.fields_by_name['layer_wise_reduce'].number == 41
    assert solver.fields_by_name['weights'].number == 42
    text = 'eval_type: "detection" ap_version: "11point" layer_wise_reduce: false'
    from google.protobuf import text_format
    p = text_format.Parse(text, caffe_pb2.SolverParameter())
    assert (p.eval_type, p.ap_version, p.layer_wise_reduce) == ('detection', '11point', False)


@pytest.mark.parametrize('message', sorted(REF['messages']))
def test_message_fields_match_caffe(message):
    _check_message(message, REF['messages'][message])


@pytest.mark.parametrize('message', sorted(SSD_REF))
def test_ssd_refinedet_fields_match_the_fork(message):
    _check_message(message, SSD_REF[message])


def _check_message(message, ref_msg):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name.get(message)
    assert desc is not None, 'caffe.proto lacks message %s' % message
    problems = []
    for ref in ref_msg['fields']:
        f = desc.fields_by_name.get(ref['name'])
        if f is None:
            problems.append('missing field %s = %d' % (ref['name'], ref['number']))
            continue
        where = '%s.%s' % (message, ref['name'])
        if f.number != ref['number']:
            problems.append('%s: number %d, Caffe has %d' % (where, f.number, ref['number']))
        if f.type != _TYPES[ref['type']]:
            problems.append('%s: type %d, Caffe has %s' % (where, f.type, ref['type']))
        if _label(f) != ref['label']:
            problems.append('%s: %s, Caffe has %s' % (where, _label(f), ref['label']))
        if 'type_name' in ref:
            sub = f.message_type or f.enum_type
            if sub.full_name != 'caffe.' + ref['type_name']:
                problems.append('%s: of type %s, Caffe has %s' % (where, sub.full_name, ref['type_name']))
        if 'default' in ref:
            if not f.has_default_value or not _default_matches(f, ref['default']):
                problems.append('%s: default %r, Caffe has %r' % (where, f.default_value, ref['default']))
        elif f.has_default_value and not f.is_repeated:
            problems.append('%s: has default %r, Caffe has none' % (where, f.default_value))
        if ref.get('packed', False) != f.is_packed:
            problems.append('%s: packed=%s, Caffe has packed=%s' % (where, f.is_packed, ref.get('packed', False)))
    for ename, values in ref_msg.get('enums', {}).items():
        e = desc.enum_types_by_name.get(ename)
        if e is None:
            problems.append('%s: missing enum %s' % (message, ename))
            continue
        mine = {v.name: v.number for v in e.values}
        for name, number in values.items():
            if mine.get(name) != number:
                problems.append('%s.%s.%s = %s, Caffe has %d' % (message, ename, name, mine.get(name), number))
    assert not problems, '\n'.join(problems)


def test_top_level_enums_match_caffe():
    for ename, values in REF['enums'].items():
        e = caffe_pb2.DESCRIPTOR.enum_types_by_name[ename]
        assert {v.name: v.number for v in e.values} == values
    assert caffe_pb2.DESCRIPTOR.package == REF['package']
