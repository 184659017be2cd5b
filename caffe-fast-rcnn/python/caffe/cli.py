"""Command-line flags in gflags' manner, and the list files, for Caffe's tools
(compute_image_mean, convert_imageset, convert_annoset, ...).

Caffe's tools take gflags flags: `-name=value`, `--name=value`, `-name value` and
`--name value` all set a flag; a boolean is switched on by `-name`, off by `-noname`, or set
by `-name=true|false|1|0`; flags may come anywhere among the positional arguments, and `--`
ends them. An unknown flag is an error (`ERROR: unknown command line flag 'x'`), and
`-help` prints the tool's usage and its flags. Each tool declares its flags once
(`Flags.define`) with the default that gives the flag its type.

`run_tool` wraps a tool's body as Caffe's CHECK/LOG(FATAL) do: a failure is logged at level F
with the tool's source tag and the process exits with status 1. The tool's own failures
(`Fatal`) read as Caffe's messages; an error from elsewhere (the engine, the OS) is prefixed
with its kind (`NetError: ...`). `read_list` reads the `<image> <label or annotation>` lists
of the data tools.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _log
from .errors import CaffeError

Value = Union[bool, int, float, str]
T = TypeVar('T')


class FlagError(CaffeError):
    """A command line the tool cannot run with (unknown flag, bad value)."""


class Fatal(CaffeError):
    """A tool's LOG(FATAL) / failed CHECK: logged at level F, exit status 1."""


class _Flag:
    __slots__ = ('name', 'default', 'help', 'value', 'given')

    def __init__(self, name: str, default: Value, help: str):
        self.name, self.default, self.help, self.value = name, default, help, default
        self.given = False


_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')
_TYPE_NAMES = {bool: 'bool', int: 'int32', float: 'double', str: 'string'}  # as gflags names them


class Flags:
    """A tool's flags and its usage text; `parse` returns the positional arguments."""

    def __init__(self, program: str, usage: str, source: str):
        self.program = program
        self.usage = usage
        self.source = source  # e.g. tools/compute_image_mean.cpp, shown in -help as gflags does
        self._flags: Dict[str, _Flag] = {}

    def define(self, name: str, default: Value, help: str) -> None:
        self._flags[name] = _Flag(name, default, help)

    def __getattr__(self, name: str) -> Value:
        flags = self.__dict__.get('_flags', {})
        if name in flags:
            return flags[name].value
        raise AttributeError(name)

    def given(self, name: str) -> bool:
        """Whether the command line set flag `name` (gflags' `!is_default`)."""
        return self._flags[name].given

    def _set(self, flag: _Flag, text: str) -> None:
        kind = type(flag.default)
        flag.given = True
        try:
            if kind is bool:
                low = text.lower()
                if low not in _TRUE + _FALSE:
                    raise ValueError(text)
                flag.value = low in _TRUE
            else:
                flag.value = kind(text)
        except ValueError:
            raise FlagError("ERROR: illegal value '%s' specified for %s flag '%s'"
                            % (text, _TYPE_NAMES[kind], flag.name)) from None

    def parse(self, argv: Sequence[str]) -> List[str]:
        """Set the flags found in argv; the other arguments, in order. `-help` prints the
        usage and exits with status 1 (as gflags does)."""
        positional: List[str] = []
        args = list(argv)
        i = 0
        while i < len(args):
            a = args[i]
            i += 1
            if a == '--':
                positional.extend(args[i:])
                break
            if not a.startswith('-') or a == '-':
                positional.append(a)
                continue
            body = a.lstrip('-')
            name, eq, text = body.partition('=')
            if name in ('help', 'helpfull', 'h'):
                sys.stderr.write(self.help_text())
                raise SystemExit(1)
            flag = self._flags.get(name)
            if flag is None and name.startswith('no') and not eq:
                negated = self._flags.get(name[2:])
                if negated is not None and isinstance(negated.default, bool):
                    negated.value, negated.given = False, True
                    continue
            if flag is None:
                raise FlagError("ERROR: unknown command line flag '%s'" % name)
            if eq:
                self._set(flag, text)
            elif isinstance(flag.default, bool):
                flag.value, flag.given = True, True
            elif i < len(args):
                self._set(flag, args[i])
                i += 1
            else:
                raise FlagError("ERROR: flag '%s' is missing its argument" % a)
        return positional

    def help_text(self) -> str:
        lines = ['%s: %s' % (self.program, self.usage.rstrip('\n')), '',
                 '  Flags from %s:' % self.source]
        for f in self._flags.values():
            kind = _TYPE_NAMES[type(f.default)]
            default = ('"%s"' % f.default if isinstance(f.default, str)
                       else str(f.default).lower() if isinstance(f.default, bool) else f.default)
            lines.append('    -%s (%s) type: %s default: %s' % (f.name, f.help, kind, default))
        return '\n'.join(lines) + '\n'

    def show_usage(self) -> None:
        """gflags' ShowUsageWithFlagsRestrict: what the tools print for a wrong argument count."""
        sys.stderr.write(self.help_text())


def run_tool(body: Callable[[List[str]], int], argv: Optional[Sequence[str]], where: str) -> int:
    """Run a tool's body on argv (sys.argv[1:] when None); failures end with an F log line
    tagged `where` and status 1, as a failed CHECK ends a Caffe tool."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(body(argv) or 0)
    except FlagError as e:
        sys.stderr.write('%s\n' % e)
        return 1
    except Fatal as e:
        _log.log('F', where, str(e))
        return 1
    except (CaffeError, OSError) as e:
        _log.log('F', where, '%s: %s' % (type(e).__name__, e))
        return 1


def split_list(text: str) -> List[str]:
    """Caffe's comma-separated flag values (`a,b,c`); empty parts are dropped."""
    return [s for s in text.split(',') if s]


def read_list(path: str, second: Callable[[str], T] = int, what: str = 'label',
              names_with_spaces: bool = False) -> List[Tuple[str, T]]:
    """The `<image> <second>` lines of a data tool's list file (blank lines skipped), the
    second column converted by `second`. With `names_with_spaces` it is what follows the
    last space, so image names may hold spaces (convert_imageset's reading); else a line is
    split on white space (SSD's `infile >> image >> second`). A line that does not fit stops
    the tool naming the file and the line, where Caffe's stream reads would silently end."""
    try:
        with open(path, 'r') as f:
            text = f.read()
    except OSError as e:
        raise Fatal('Failed to open file: %s (%s)' % (path, e.strerror)) from None
    lines: List[Tuple[str, T]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if names_with_spaces:
            name, space, value = line.rpartition(' ')
            parts = [name, value] if space else [line]
        else:
            parts = line.split()
        if len(parts) != 2:
            raise Fatal('%s:%d: expected "<image> <%s>" (2 columns), got %d: %r'
                        % (path, number, what, len(parts), line))
        try:
            lines.append((parts[0], second(parts[1])))
        except ValueError:
            raise Fatal('%s:%d: the %s %r is not %s'
                        % (path, number, what, parts[1],
                           'an integer' if second is int else 'valid')) from None
    return lines
