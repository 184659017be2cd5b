"""Write caffe/proto/caffe.proto from a table of Caffe's messages and field numbers.

    python write_proto.py FIELDS_JSON [ADDITIONS_JSON ...] OUT_PROTO

The table (../shared/caffe_proto_fields.json) lists every message, field number, type,
default and enum of Caffe's schema; file formats are interfaces, so those facts must
match exactly. This script lays them out in this project's own order and words: messages
grouped by what they are for, each with a one-line note. Run it again only if the table
changes; the committed caffe.proto is the source of truth for caffe_pb2.

An additions table (../shared/caffe_proto_ssd_refinedet_fields.json: what SSD's and
RefineDet's fork adds) is merged in: its new messages join the schema and its
`fields_added_to_existing_messages` extend messages the base table has. Its fields name
their type directly ("Datum", "PriorBoxParameter.CodeType"); they are normalised to the base
table's form ('message'/'enum' with a type_name) before writing.
"""
import json
import sys

GROUPS = [
    ('Blobs and data records', ['BlobShape', 'BlobProto', 'BlobProtoVector', 'Datum']),
    ('Nets, net state and parameter specs',
     ['FillerParameter', 'NetParameter', 'NetState', 'NetStateRule', 'ParamSpec', 'LayerParameter',
      'TransformationParameter', 'LossParameter']),
    ('Solvers', ['SolverParameter', 'SolverState']),
    ('Annotated detection data (SSD / RefineDet)',
     ['LabelMapItem', 'LabelMap', 'NormalizedBBox', 'Annotation', 'AnnotationGroup',
      'AnnotatedDatum']),
    ('Sampling and augmentation of annotated images (SSD / RefineDet)',
     ['Sampler', 'SampleConstraint', 'BatchSampler', 'EmitConstraint', 'ResizeParameter',
      'SaltPepperParameter', 'NoiseParameter', 'DistortionParameter', 'ExpansionParameter']),
]
LEGACY = ('V0LayerParameter', 'V1LayerParameter')
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
    'LabelMap': 'SSD: names, ids and display names of a data set\'s classes.',
    'NormalizedBBox': 'SSD: a box in [0, 1] image coordinates, with its label and difficulty.',
    'AnnotatedDatum': 'SSD: an image Datum with its groups of box annotations (LMDB records).',
    'Sampler': 'SSD: the scale and aspect ratio range of a random crop.',
    'BatchSampler': 'SSD: one crop sampler of the data augmentation, tried max_trials times.',
    'EmitConstraint': 'SSD: which boxes survive a crop (by centre, or by covered fraction).',
    'ResizeParameter': 'SSD: how an annotated image is resized to the net\'s input.',
    'DistortionParameter': 'SSD: photometric distortions (brightness, contrast, hue, ...).',
    'ExpansionParameter': 'SSD: zoom-out augmentation onto a larger mean-filled canvas.',
    'MultiBoxLossParameter': 'SSD / RefineDet: matching, mining and the losses of a multibox head.',
    'DetectionOutputParameter': 'SSD / RefineDet: decoding, NMS and result files at test time.',
    'PriorBoxParameter': 'SSD: the default boxes of one feature map.',
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


def _normalise_field(field, messages):
    """An additions-table field in the base table's form (type 'message'/'enum' + type_name)."""
    t = field['type']
    if t in SCALARS:
        return field
    out = dict(field)
    owner, _, enum = t.rpartition('.')
    if owner and enum in messages.get(owner, {}).get('enums', {}):
        out['type'], out['type_name'] = 'enum', t
    elif t in messages:
        out['type'], out['type_name'] = 'message', t
    else:
        raise SystemExit('additions table: field %s has unknown type %s' % (field['name'], t))
    return out


# The one place where the two schemas disagree on the wire: SSD's fork gave SolverParameter
# fields 41 and 42 to eval_type and ap_version before BVLC gave the same numbers to
# layer_wise_reduce and weights. A descriptor can hold only one field per number; BVLC's
# keep theirs (this engine's base schema), SSD's move here. Solver files are text, where
# fields are matched by name, so SSD's solver.prototxt files read unchanged.
RENUMBERED = {('SolverParameter', 'eval_type'): 141, ('SolverParameter', 'ap_version'): 142}


def merge(table, additions):
    """The base table with an additions table's messages and fields merged in."""
    messages = dict(table['messages'])
    for name, msg in additions['messages'].items():
        if name in messages:
            raise SystemExit('additions table redefines message %s' % name)
        messages[name] = msg
    for name, extra in additions.get('fields_added_to_existing_messages', {}).items():
        base = messages[name]
        taken = {f['number'] for f in base['fields']}
        extra_fields = [dict(f, number=RENUMBERED.get((name, f['name']), f['number']))
                        for f in extra['fields']]
        clash = [f['name'] for f in extra_fields if f['number'] in taken]
        if clash:
            raise SystemExit('additions table reuses field numbers of %s: %s' % (name, clash))
        enums = dict(base.get('enums', {}), **extra.get('enums', {}))
        messages[name] = {'fields': base['fields'] + extra_fields, 'enums': enums}
    for msg in messages.values():
        msg['fields'] = [_normalise_field(f, messages) for f in msg['fields']]
    enums = dict(table['enums'], **additions.get('enums', {}))
    return dict(table, messages=messages, enums=enums)


SCALARS = {'double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64',
           'fixed32', 'fixed64', 'bool', 'string', 'bytes', 'message', 'enum'}


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    table = json.load(open(sys.argv[1]))
    for extra in sys.argv[2:-1]:
        table = merge(table, json.load(open(extra)))
    messages = table['messages']
    out = ['// Caffe\'s schema for nets, weights and solvers, as this project reads and writes it.',
           '// Wire-compatible with BVLC Caffe, caffe-fast-rcnn and SSD/RefineDet\'s fork: every',
           '// field number, type and default below is theirs; the layout and notes are this',
           '// project\'s.',
           'syntax = "proto2";', '', 'package caffe;', '']
    for ename, values in table['enums'].items():
        out += enum_block(ename, values, '')
        out.append('')
    placed = set()
    for title, names in GROUPS:
        names = [n for n in names if n in messages]
        if not names:
            continue
        out += ['// ---- %s ----' % title, '']
        for n in names:
            out += message_block(n, messages[n]) + ['']
            placed.add(n)
    rest = [n for n in messages if n not in placed and n not in LEGACY]
    out += ['// ---- Layer parameters, one message per layer type ----', '']
    for n in sorted(rest):
        out += message_block(n, messages[n]) + ['']
    out += ['// ---- Legacy formats, upgraded on load ----', '']
    for n in LEGACY:
        out += message_block(n, messages[n]) + ['']
    open(sys.argv[-1], 'w').write('\n'.join(out))


if __name__ == '__main__':
    main()
