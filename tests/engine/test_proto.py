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


def _reference():
    path = SHARED_JSON if os.path.isfile(SHARED_JSON) else LOCAL_JSON
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def test_local_copy_of_reference_is_current():
    local = json.load(open(LOCAL_JSON, encoding='utf-8'))
    assert 'LayerParameter' in local['messages'] and 'V1LayerParameter' in local['messages']
    if os.path.isfile(SHARED_JSON):
        assert json.load(open(SHARED_JSON, encoding='utf-8')) == local, \
            'tests/engine/caffe_proto_fields.json differs from shared/: copy it again'


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


@pytest.mark.parametrize('message', sorted(REF['messages']))
def test_message_fields_match_caffe(message):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name.get(message)
    assert desc is not None, 'caffe.proto lacks message %s' % message
    problems = []
    for ref in REF['messages'][message]['fields']:
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
    for ename, values in REF['messages'][message].get('enums', {}).items():
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
