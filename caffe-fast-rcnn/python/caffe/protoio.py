"""Reading and writing Caffe's proto files: prototxt (text) and binary (.caffemodel, ...).

Text files are parsed by protobuf's text_format; its errors are re-raised as ParseError
naming the file, line and column. Binary files are parsed whole; a truncated or corrupt
file becomes a ParseError naming the file. Writes go to a temporary file in the same
folder that is renamed over the target, so a crash never leaves half a snapshot.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Type, TypeVar

from google.protobuf import message as _message
from google.protobuf import text_format

from .errors import ParseError

M = TypeVar('M', bound=_message.Message)


def parse_text(text: str, msg: M, path: str = '<string>') -> M:
    """Merge prototxt `text` into `msg`; errors name `path`, line and column."""
    try:
        text_format.Merge(text, msg, allow_unknown_extension=False)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = str(e)
        m = re.match(r'^\s*\d+:\d+\s*:\s*(.*)$', detail, re.S)
        if m:
            detail = m.group(1)
        raise ParseError(path, detail, line, col) from None
    return msg


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
    msg = cls()
    try:
        msg.ParseFromString(data)
    except _message.DecodeError as e:
        raise ParseError(path, 'truncated or corrupt %s (%d bytes): %s'
                         % (cls.__name__, len(data), e)) from None
    return msg


def read_text_or_binary(path: str, cls: Type[M]) -> M:
    """Read a proto that may be text or binary (Caffe tries binary for .caffemodel)."""
    with open(path, 'rb') as f:
        head = f.read(4096)
    try:
        head.decode('utf-8')
        looks_text = b'\x00' not in head
    except UnicodeDecodeError:
        looks_text = False
    return read_text(path, cls) if looks_text else read_binary(path, cls)


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (never half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_binary(path: str, msg: _message.Message) -> None:
    atomic_write(path, msg.SerializeToString())


def write_text(path: str, msg: _message.Message) -> None:
    atomic_write(path, text_format.MessageToString(msg).encode('utf-8'))
