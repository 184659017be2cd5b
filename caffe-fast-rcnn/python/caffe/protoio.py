"""Reading and writing Caffe's proto files: prototxt (text) and binary (.caffemodel, ...).

Text files are parsed by protobuf's text_format; its errors are re-raised as ParseError
naming the file, line and column. Binary files are parsed whole; a truncated or corrupt
file becomes a ParseError naming the file. Writes go to a temporary file in the same
folder that is renamed over the target, so a crash never leaves half a snapshot.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable, Type, TypeVar

from google.protobuf import message as _message
from google.protobuf import text_format

from . import atomic_files
from .errors import ParseError

M = TypeVar('M', bound=_message.Message)


def parse_text(text: str, msg: M, path: str = '<string>') -> M:
    """Merge prototxt `text` into `msg`; errors name `path`, line and column.

    The message shows the offending line with a caret under the column, and for a
    misspelt field name the fields of that message with the closest spelling.
    """
    try:
        text_format.Merge(text, msg, allow_unknown_extension=False)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = str(e)
        m = re.match(r'^\s*\d+:\d+\s*:\s*(.*)$', detail, re.S)
        if m:
            detail = m.group(1)
        # Some messages repeat the whole source line in quotes before the reason.
        m = re.match(r"^'.*?': (.*)$", detail, re.S)
        if m:
            detail = m.group(1)
        detail += _field_hint(detail, msg)
        if line is not None and line >= 1:
            lines = text.splitlines()
            if line <= len(lines):
                src = lines[line - 1].rstrip()
                detail += '\n  %s\n  %s^' % (src, ' ' * max(0, (col or 1) - 1))
        raise ParseError(path, detail, line, col) from None
    return msg


def _field_hint(detail: str, msg: _message.Message) -> str:
    """' Did you mean ...?' for 'Message type "caffe.X" has no field named "y"'."""
    m = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', detail)
    if not m:
        return ''
    try:
        desc = msg.DESCRIPTOR.file.pool.FindMessageTypeByName(m.group(1))
    except KeyError:
        return ''
    close = difflib.get_close_matches(m.group(2), list(desc.fields_by_name), n=3, cutoff=0.6)
    return (' Did you mean %s?' % ' or '.join('"%s"' % c for c in close)) if close else ''


def read_text(path: str, cls: Type[M]) -> M:
    """Read a prototxt file into a new `cls` message."""
    try:
        with open(path, 'r', encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise ParseError(path, 'cannot read file: %s' % e.strerror) from None
    except UnicodeDecodeError:
        raise ParseError(path, 'not a text file (is it a binary .caffemodel?)') from None
    return parse_text(text, cls(), path)


def read_binary(path: str, cls: Type[M]) -> M:
    """Read a binary proto file (.caffemodel, .solverstate, .binaryproto) into `cls`."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise ParseError(path, 'cannot read file: %s' % e.strerror) from None
    return parse_binary(data, cls, path)


def parse_binary(data: bytes, cls: Type[M], path: str = '<bytes>') -> M:
    """Parse serialised `data` into a new `cls`; a damaged file is a ParseError naming `path`."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except _message.DecodeError as e:
        hint = ''
        head = bytes(data[:256])
        if head.lstrip()[:1].isalpha() and b'\x00' not in head:
            hint = ' (it looks like text: is it a prototxt rather than a binary file?)'
        raise ParseError(path, 'truncated or corrupt binary %s (%d bytes): %s%s'
                         % (cls.__name__, len(data), e, hint)) from None
    return msg


def read_text_or_binary(path: str, cls: Type[M]) -> M:
    """Read a proto that may be text or binary (Caffe tries binary for .caffemodel)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(4096)
    except OSError as e:
        raise ParseError(path, 'cannot read file: %s' % e.strerror) from None
    try:
        head.decode('utf-8')
        looks_text = b'\x00' not in head
    except UnicodeDecodeError:
        looks_text = False
    return read_text(path, cls) if looks_text else read_binary(path, cls)


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (never half a file)."""
    atomic_files.write_bytes(path, data)


def atomic_write_chunks(path: str, chunks: Iterable) -> None:
    """Write the byte chunks (bytes or memoryviews) one after another to `path`, atomically.

    Chunks let a large file (a .caffemodel) be written straight from the arrays' memory
    without first joining it into one bytes object. See atomic_files for the temporary's
    name, the final file's mode (the umask's, as Caffe's files) and stale temporaries.
    """
    atomic_files.write_chunks(path, chunks)


def write_binary(path: str, msg: _message.Message) -> None:
    atomic_write(path, msg.SerializeToString())


def write_text(path: str, msg: _message.Message) -> None:
    atomic_write(path, text_format.MessageToString(msg).encode('utf-8'))
