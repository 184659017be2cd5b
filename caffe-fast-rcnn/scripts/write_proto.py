"""Write caffe/proto/caffe.proto from a table of Caffe's messages and field numbers.

    python write_proto.py FIELDS_JSON OUT_PROTO

The table (../shared/caffe_proto_fields.json) lists every message, field number, type,
default and enum of Caffe's schema; file formats are interfaces, so those facts must
match exactly. This script lays them out in this project's own order and words: messages
grouped by what they are for, each with a one-line note. Run it again only if the table
changes; the committed caffe.proto is the source of truth for caffe_pb2.
"""
import json
import sys

GROUPS = [
    ('Blobs and data records', ['BlobShape', 'BlobProto', 'BlobProtoVector', 'Datum']),
    ('Nets, net state and parameter specs',
     ['FillerParameter', 'NetParameter', 'NetState', 'NetStateRule', 'ParamSpec', 'LayerParameter',
      'TransformationParameter', 'LossParameter']),
    ('Solvers', ['SolverParameter', 'SolverState']),
]
NOTES = {
    'BlobShape': 'The dimensions of a blob, outermost first.',
    'BlobProto': 'A blob as stored in .caffemodel and .solverstate files.',
    'BlobProtoVector': 'A list of blobs (mean files, solver history).',
    'Datum': 'One image or feature vector with its label, as stored in data bases.',
    'FillerParameter': 'How a parameter blob is initialised.',
    'NetParameter': 'A whole net: the prototxt of a model, or the weights of a .caffemodel.',
    'SolverParameter': 'A solver prototxt: what to train, and how.',
    'SolverState': 'What a .solverstate holds to resume training.',
    'NetState': 'The phase, level and stages a net is built for.',
    'NetStateRule': 'An include/exclude rule matched against a NetState.',
    'ParamSpec': 'Per-parameter settings of a layer: sharing name, lr and decay multipliers.',
    'LayerParameter': 'One layer: name, type, wiring, and the parameters of its type.',
    'V1LayerParameter': 'Legacy (V1) layer with an enum type; upgraded on load.',
    'V0LayerParameter': 'Legacy (V0) layer; upgraded on load.',
    'ROIPoolingParameter': 'caffe-fast-rcnn: max pooling of regions of interest to a fixed grid.',
    'SmoothL1LossParameter': 'caffe-fast-rcnn: the smooth L1 loss of box regression.',
}


def literal(field):
    d = field['default']
    t = field['type']
    if t == 'string':
        return '"%s"' % d.replace('\\', '\\\\').replace('"', '\\"')
    if t == 'float' or t == 'double':
        return d
    return d


def field_line(field, indent):
    parts = [field['label']]
    t = field['type']
    parts.append(field['type_name'] if t in ('message', 'enum') else t)
    parts.append(field['name'])
    parts.append('=')
    parts.append(str(field['number']))
    opts = []
    if 'default' in field:
        opts.append('default = %s' % literal(field))
    if field.get('packed'):
        opts.append('packed = true')
    text = ' '.join(parts)
    if opts:
        text += ' [' + ', '.join(opts) + ']'
    return indent + text + ';'


def enum_block(name, values, indent):
    lines = [indent + 'enum %s {' % name]
    for k, v in sorted(values.items(), key=lambda kv: kv[1]):
        lines.append(indent + '  %s = %d;' % (k, v))
    lines.append(indent + '}')
    return lines


def message_block(name, msg):
    lines = []
    if name in NOTES:
        lines.append('// ' + NOTES[name])
    lines.append('message %s {' % name)
    for ename, values in sorted(msg.get('enums', {}).items()):
        lines += enum_block(ename, values, '  ')
    for field in sorted(msg['fields'], key=lambda f: f['number']):
        lines.append(field_line(field, '  '))
    lines.append('}')
    return lines


def main():
    table = json.load(open(sys.argv[1]))
    messages = table['messages']
    out = ['// Caffe\'s schema for nets, weights and solvers, as this project reads and writes it.',
           '// Wire-compatible with BVLC Caffe and caffe-fast-rcnn: every field number, type and',
           '// default below is theirs; the layout and notes are this project\'s.',
           'syntax = "proto2";', '', 'package caffe;', '']
    for ename, values in table['enums'].items():
        out += enum_block(ename, values, '')
        out.append('')
    placed = set()
    for title, names in GROUPS:
        out += ['// ---- %s ----' % title, '']
        for n in names:
            out += message_block(n, messages[n]) + ['']
            placed.add(n)
    rest = [n for n in messages if n not in placed and not n.startswith('V')]
    out += ['// ---- Layer parameters, one message per layer type ----', '']
    for n in sorted(rest):
        out += message_block(n, messages[n]) + ['']
    out += ['// ---- Legacy formats, upgraded on load ----', '']
    for n in sorted(x for x in messages if x.startswith('V') and x not in placed):
        out += message_block(n, messages[n]) + ['']
    open(sys.argv[2], 'w').write('\n'.join(out))


if __name__ == '__main__':
    main()
