"""One writer per run folder and per index: an exclusive lock, refused with the holder's name.

The lock is an OS file lock (``filelock``), so it dies with its process: a lock left by a
killed writer is taken over without ceremony. Beside it, ``LOCK.holder.json`` records who
holds it (pid, host, command) so that a refused writer can say whom it is waiting for.
Re-entrant within one process: an audit that generates then scans into the same run takes
the run's lock once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from imgextract.errors import InputError

_held: dict[str, list] = {}  # path → [FileLock, depth]


@contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold ``lock_path`` for the duration, or raise InputError naming the current holder."""
    lock_path = Path(lock_path).absolute()
    key = str(lock_path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = lock_path.with_name(lock_path.name + ".holder.json")
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"{what} is being written by another imgextract ({_describe(holder)})",
                         "wait for it to finish, or stop it; a lock left by a dead process is taken over") from None
    holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv}))
    _held[key] = [lock, 1]
    try:
        yield
    finally:
        _held.pop(key, None)
        try:   # a folder made read-only meanwhile must not hide the error that brought us here
            holder.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            lock.release()
        except OSError:
            pass


def check_free(lock_path: Path, what: str) -> None:
    """Refuse now, naming the holder, when another process holds ``lock_path``: a second writer learns it before
    minutes of loading, not after. Creates nothing (an absent lock file is free); :func:`exclusive` still
    decides when the work starts."""
    lock_path = Path(lock_path).absolute()
    if str(lock_path) in _held or not lock_path.is_file():
        return
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"{what} is being written by another imgextract "
                         f"({_describe(lock_path.with_name(lock_path.name + '.holder.json'))})",
                         "wait for it to finish, or stop it; a lock left by a dead process is taken over") from None
    except OSError:
        return      # unreadable here: exclusive() says why when the work starts
    lock.release()


def _describe(holder: Path) -> str:
    try:
        h = json.loads(holder.read_text())
        return f"pid {h['pid']} on {h['host']}: {' '.join(map(str, h.get('command', [])))[:120]}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
