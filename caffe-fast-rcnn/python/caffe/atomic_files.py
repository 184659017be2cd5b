"""Files written whole or not at all, readable like any other file, and no debris left.

Every file the project writes for later use (snapshots, trained models, solver states,
caches, detections, proposals, results) goes through here:

* the bytes go to a hidden temporary file in the target's folder,
  `.NAME.PID-HOST.XXXXXXXX.tmp`, are flushed to disk, and the temporary is renamed over
  NAME, so a reader sees the old file or the new one, never half of one;
* the final file gets the mode a plain `open(NAME, 'w')` would give it (0666 less the
  umask, 0644 under the usual umask 022) rather than mkstemp's private 0600: a trained
  model must be readable by the process that serves it and by the user's colleagues, as
  Caffe's snapshots are;
* a writer killed between the two steps (SIGKILL, the OOM killer, a power cut) leaves its
  temporary behind. `remove_stale_temps` deletes those: only names of the pattern above,
  only for targets whose name starts with a given prefix, and only when the writer named
  in the file (its PID, on this host) is gone. Every write cleans up after killed writes
  of the same file; trainers also call it when they start and before each snapshot for
  all their snapshot names, so killed runs do not fill the disk with model-sized orphans.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import zlib
from typing import IO, Iterable, Iterator, List, Optional, Union

__all__ = ['file_mode', 'atomic_path', 'atomic_open', 'write_bytes', 'write_chunks',
           'write_text', 'copy_file', 'remove_stale_temps', 'temp_owner']

# Temporaries this process is writing right now: never stale, whatever their PID says.
_LIVE: set = set()
_LOCK = threading.Lock()
_TEMP_RE = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp$')


def _host_tag() -> str:
    """Eight hex digits naming this host (a PID only means something on its own host)."""
    return '%08x' % (zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xffffffff)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by
    setting and restoring it under a lock."""
    try:
        with open('/proc/self/status', 'r') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits open() gives a new file: 0666 without the umask's bits."""
    return 0o666 & ~_umask()


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[str]:
    """Yield the name of a fresh temporary file beside `path`; when the block ends without
    an exception, sync it, give it the umask's mode and rename it to `path`. On an
    exception (KeyboardInterrupt included) the temporary is removed and `path` is left as
    it was. For writers that need a file name (h5py); others use `atomic_open`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder, os.path.basename(path))   # a killed earlier write of this file
    fd, tmp = tempfile.mkstemp(prefix='.%s.%d-%s.' % (os.path.basename(path), os.getpid(),
                                                      _host_tag()),
                               suffix='.tmp', dir=folder)
    os.close(fd)
    with _LOCK:
        _LIVE.add(tmp)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        with _LOCK:
            _LIVE.discard(tmp)


@contextlib.contextmanager
def atomic_open(path: Union[str, os.PathLike], mode: str = 'wb',
                encoding: Optional[str] = None, newline: Optional[str] = None) -> Iterator[IO]:
    """`open(path, mode)` whose result appears under `path` only once complete (see
    `atomic_path`). `mode` is 'w' or 'wb' (and their 't' spellings)."""
    if 'w' not in mode or any(c in mode for c in 'ax+r'):
        raise ValueError("atomic_open writes new files: mode 'w', 'wt' or 'wb', got %r" % mode)
    if 'b' not in mode and encoding is None:
        encoding = 'utf-8'
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()


def write_chunks(path: Union[str, os.PathLike], chunks: Iterable) -> None:
    """Write byte chunks (bytes or memoryviews) one after another to `path`, atomically;
    a large file is written straight from the arrays' memory without joining it first."""
    with atomic_open(path, 'wb') as f:
        for chunk in chunks:
            f.write(chunk)


def write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    write_chunks(path, [data])


def write_text(path: Union[str, os.PathLike], text: str) -> None:
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def copy_file(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> None:
    """Copy `src` to `dst` atomically (a kill mid-copy never leaves a truncated `dst`)."""
    with atomic_open(dst, 'wb') as out, open(src, 'rb') as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def temp_owner(name: str) -> Optional[tuple]:
    """(target name, pid, host tag) of a temporary file name of ours, else None."""
    m = _TEMP_RE.match(os.path.basename(name))
    return (m.group('name'), int(m.group('pid')), m.group('host')) if m else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    except OSError:
        return True
    return True


def remove_stale_temps(folder: Union[str, os.PathLike], prefix: str = '') -> List[str]:
    """Delete temporaries left in `folder` by killed writers of files named `prefix...`.

    A temporary is stale when its name has this module's pattern, its target's name starts
    with `prefix`, it was made on this host, and its writer is no longer running (or is
    this very process, which is not writing it now). Returns the paths removed.
    """
    folder = os.fspath(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host, me = _host_tag(), os.getpid()
    removed = []
    for n in names:
        owner = temp_owner(n)
        if owner is None:
            continue
        target, pid, tag = owner
        if not target.startswith(prefix) or tag != host:
            continue
        full = os.path.join(folder, n)
        with _LOCK:
            live = full in _LIVE or os.path.abspath(full) in _LIVE
        if live or (pid != me and _alive(pid)):
            continue
        try:
            os.unlink(full)
            removed.append(full)
        except OSError:
            pass
    return removed
