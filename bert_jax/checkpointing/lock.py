"""The workdir lock: one writing run per workdir at a time.

Two runs writing one workdir interleave their ``metrics.jsonl`` records and their orbax
saves (a step directory holding ``commit_success.txt`` but no arrays). So every run that
writes a workdir (``train_and_evaluate``: pretrain, finetune, a compare cell) holds
``WORKDIR/bert_jax.lock`` while it runs; a second one is refused at once, with one line
naming the holder. Reading commands (evaluate, report, export) take no lock.

The lock is ``fcntl.flock`` on that file: atomic, and released by the kernel when the
holder exits however it exits. The file holds the holder's host, pid and start time for
the messages; a clean exit removes it. A file left behind by a holder killed with -9 is
a stale lock: the next run takes it over, with a warning naming the old holder. With
several processes only the chief (process 0) holds the lock, and every process learns
whether it got it, so all of them stop with the same line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

import jax
import numpy as np

from bert_jax.cli.errors import UserError

LOCK_NAME = "bert_jax.lock"
# Workdirs this process holds (abspath -> depth): a finetune holds its workdir around the
# train loop, which takes the same lock again.
_held: dict[str, int] = {}


class WorkdirLockedError(UserError):
    """Another run holds the workdir; the message names it."""


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"host {holder.get('host', '?')} pid {holder.get('pid', '?')} (started {when})"


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as error:
        return isinstance(error, PermissionError)  # alive, another user's
    return True


def read_holder(path: str) -> dict:
    """The holder recorded in the lock file ({} if there is none or it does not parse)."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _busy_message(workdir: str, path: str) -> str:
    holder = read_holder(path)
    if not holder:
        return f"--workdir {workdir!r} is in use by another run (lock {path}); wait for it to end"
    gone = holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid"))
    note = " (that pid has ended; a process it started still holds the lock)" if gone else ""
    return (
        f"--workdir {workdir!r} is in use by {_describe(holder)}{note}, which holds {path}: "
        "wait for that run to end or use another --workdir"
    )


def _open_locked(path: str) -> int | None:
    """An fd of ``path`` holding its flock, or None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:  # the holder before us may have removed the file we opened: lock the new one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def acquire(workdir: str) -> int:
    """Takes the lock of ``workdir`` in this process; returns its fd.

    Raises:
      WorkdirLockedError: another process holds it; the message names host, pid, start.
    """
    path = os.path.join(workdir, LOCK_NAME)
    fd = _open_locked(path)
    if fd is None:
        raise WorkdirLockedError(_busy_message(workdir, path))
    stale = read_holder(path)
    if stale:
        logging.warning(
            "taking over the stale lock %s of %s: that run ended without releasing it",
            path, _describe(stale),
        )  # fmt: skip
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
    os.fsync(fd)
    return fd


def release(workdir: str, fd: int) -> None:
    """Removes the lock file (while still locked, so no one locks the removed file) and unlocks."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(workdir, LOCK_NAME))
    os.close(fd)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir lock for the block (the chief takes it; every process agrees).

    Re-entrant within a process. Remote workdirs (``gs://...``) are not locked.

    Raises:
      WorkdirLockedError: another run holds the workdir (on every process).
    """
    key = os.path.abspath(workdir)
    if "://" in workdir or key in _held:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    fd, refused = None, None
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        try:
            fd = acquire(workdir)
        except WorkdirLockedError as error:
            refused = error
    if jax.process_count() > 1:  # every process stops if the chief could not lock
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather(np.int32(fd is not None or refused is None))
        if not int(np.asarray(got)[0]) and refused is None:
            refused = WorkdirLockedError(
                f"process 0 found --workdir {workdir!r} in use by "
                f"{_describe(read_holder(os.path.join(workdir, LOCK_NAME)))}"
            )
    if refused is not None:
        raise refused
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        if fd is not None:
            release(workdir, fd)
