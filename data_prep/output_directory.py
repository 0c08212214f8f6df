"""An output directory a data job replaces whole: staged beside it, then swapped in.

A job that wrote its files straight into `--output` would leave the shards of an earlier
run beside its new manifest (other names, or other shard counts) and a half-written
directory when it fails. Instead `stage` checks the output first (a file, a mount point,
a non-empty directory without `overwrite`, or one holding files the job does not write
are refused, naming the path) and makes an empty staging directory beside it,
`.NAME.tmp-PID` (a hidden name: a glob such as `*/*.array_record` skips it). The job
writes there; `swap_in` exchanges the two directories in one atomic step (Linux
`renameat2(RENAME_EXCHANGE)`) and deletes the previous one. Where the filesystem cannot
exchange, it moves the previous one aside and renames the staging directory: between
those two renames a reader finds no directory, never a mix. A failed job deletes the
staging directory and leaves the previous output as it was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _own_files(names: list[str], suffix: str, manifest: str) -> bool:
    return all(name == manifest or name.endswith(suffix) for name in names)


def stage(output_dir: str, *, overwrite: bool, suffix=".array_record", manifest="manifest.json"):
    """Checks `output_dir` can be replaced and returns a new empty staging directory.

    Args:
      output_dir: the `--output` directory (need not exist).
      overwrite: allow replacing a non-empty `output_dir` that holds only the job's own
        files (`manifest` and `*suffix`).

    Raises:
      ValueError: naming `output_dir` and what is wrong with it, or the staging path
        that could not be made (e.g. a read-only filesystem).
    """
    output = os.path.realpath(output_dir)  # a symlink's target is what gets replaced
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output_dir!r} is a file, not a directory")
    if os.path.isdir(output):
        if os.path.ismount(output):
            raise ValueError(
                f"--output {output_dir!r} is a mount point: the job replaces the directory "
                "as a whole, so name a directory inside it"
            )
        names = sorted(os.listdir(output))
        if names and not overwrite:
            raise ValueError(
                f"--output {output_dir!r} is not empty ({len(names)} entries, e.g. "
                f"{names[0]!r}); pass --overwrite to replace its shards, or name a new directory"
            )
        if names and not _own_files(names, suffix, manifest):
            others = [name for name in names if not _own_files([name], suffix, manifest)]
            raise ValueError(
                f"--output {output_dir!r} holds files other than {manifest} and *{suffix} "
                f"({', '.join(others[:3])}); --overwrite replaces only a directory of shards, "
                "so name another directory"
            )
    parent, name = os.path.split(output)
    ancestor = parent
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"--output {output_dir!r} is under {ancestor!r}, which is a file")
    staging = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run of this pid
        os.mkdir(staging)
    except OSError as error:
        raise ValueError(
            f"--output {output_dir!r}: cannot create the staging directory {staging!r} "
            f"beside it: {error.strerror}"
        ) from error
    return staging


def _exchange(first: str, second: str) -> bool:
    """Swaps two existing paths atomically; False where the OS or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # not Linux, or glibc before 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    paths = (os.fsencode(first), os.fsencode(second))
    if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)


def swap_in(staging: str, output_dir: str) -> None:
    """Puts `staging` in place of `output_dir` and deletes the previous one."""
    output = os.path.realpath(output_dir)
    if not os.path.exists(output):
        os.rename(staging, output)
        return
    if _exchange(staging, output):
        shutil.rmtree(staging)  # now the previous output
        return
    parent, name = os.path.split(output)
    previous = os.path.join(parent, f".{name}.old-{os.getpid()}")
    shutil.rmtree(previous, ignore_errors=True)
    os.rename(output, previous)
    os.rename(staging, output)
    shutil.rmtree(previous)
