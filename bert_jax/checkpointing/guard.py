"""Checks around orbax saves and restores: disk space, OS errors, corrupt steps.

orbax reports a failed write from its background thread as a tensorstore
``ValueError`` (``... No space left on device [os_error_code='28']``) one save
later, under hundreds of lines of logged tracebacks; a corrupt step fails deep in
tensorstore or ``json``. The helpers here turn each into one message naming the
step, the file and the OS error, and let ``Checkpointer`` fall back to an older step.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import re
import shutil
import time
from typing import Any

import jax

# orbax writes per leaf, besides the array bytes, entries in _METADATA, _sharding and
# array_metadatas (about 0.8 KiB together for a small model) and OCDBT b-tree nodes.
METADATA_BYTES_PER_LEAF = 4096
# Steps that fail to restore are moved here (never deleted); orbax lists only
# integer-named directories, so they are no longer resumed from.
CORRUPT_DIR = "corrupt"
# What orbax/tensorstore print when an OS call fails: "...[os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")
_QUOTED_PATH = re.compile(r'"(/[^"]+)"|\'(/[^\']+)\'')
# tensorstore names the array it failed on: 'Error reading "params.encoder.x.value/0.0"'.
_ARRAY_KEY = re.compile(r'Error reading "([^"/][^"]*)"')


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message is the whole story.

    A ValueError, so the command line prints it as one line (bert_jax/cli/main.py).
    """


class CheckpointMismatchError(CheckpointError):
    """The checkpoint is intact but was written for another model, optimizer or data."""


def state_nbytes(state: Any) -> int:
    """Bytes this host writes for ``state``: one replica of each of its addressable shards."""
    total = 0
    for leaf in jax.tree.leaves(state):
        shards = getattr(leaf, "addressable_shards", None)
        if shards is None:
            total += getattr(leaf, "nbytes", 0)
        else:
            total += sum(s.data.nbytes for s in shards if s.replica_id == 0)
    return total


def bytes_needed(state: Any) -> int:
    return state_nbytes(state) + METADATA_BYTES_PER_LEAF * len(jax.tree.leaves(state))


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MB"


def check_free_space(directory: os.PathLike, step: int, state: Any) -> None:
    """Refuses a save that cannot fit, before orbax starts writing it.

    Raises:
      CheckpointError: "checkpoint of X MB at step N needs X MB in DIR, Y MB free".
    """
    need = bytes_needed(state)
    free = shutil.disk_usage(directory).free
    if need > free:
        raise CheckpointError(
            f"checkpoint of {_mb(state_nbytes(state))} at step {step} needs {_mb(need)} in "
            f"{directory}, {_mb(free)} free: free space there (or set --workdir elsewhere), "
            "then rerun the same command to resume from the last checkpoint"
        )


def os_error_of(error: BaseException) -> tuple[int | None, str | None]:
    """(errno, path) of the OS error behind ``error``: its chain, or tensorstore's text."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error.errno, error.filename
        match = _OS_ERROR_CODE.search(str(error))
        if match:
            return int(match.group(1)), file_in_error(error)
        error = error.__cause__ or error.__context__
    return None, None


def file_in_error(error: BaseException) -> str | None:
    """The damaged file (and tensorstore array) an error names, innermost cause first."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for link in reversed(chain):
        filename = getattr(link, "filename", None)
        paths = [filename] if isinstance(filename, str) else []
        paths += [a or b for a, b in _QUOTED_PATH.findall(str(link))]
        if paths:
            array = _ARRAY_KEY.search(str(link))
            return paths[-1] + (f" (array {array.group(1)})" if array else "")
    return None


def root_cause(error: BaseException) -> str:
    """``Type: first line`` of the innermost error in the chain."""
    seen = set()
    while id(error) not in seen and (error.__cause__ or error.__context__) is not None:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def write_error(error: BaseException, directory: os.PathLike, step: int, nbytes: int) -> str:
    """One message for a failed save of ``step``: the OS error, the file, the space."""
    code, path = os_error_of(error)
    reason = os.strerror(code) if code is not None else f"{type(error).__name__}: {error}"
    where = f" ({path})" if path else ""
    message = f"checkpoint of step {step} could not be written to {directory}: {reason}{where}"
    if code == errno.ENOSPC:
        try:
            free = _mb(shutil.disk_usage(directory).free)
        except OSError:
            free = "unknown"
        message += f"; it needs {_mb(nbytes)}, {free} free"
    return message + ". Fix that, then rerun the same command to resume from the last checkpoint"


def validate_step_files(step_dir: os.PathLike) -> None:
    """Parses every JSON file orbax reads first, so a truncated one is named.

    tensorstore and orbax would report it as a bare ``JSONDecodeError`` (no file) or
    a tensorstore trace; array data files are checked by the restore itself.
    """
    names = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/_sharding", "model/metadata")
    candidates = [os.path.join(step_dir, name) for name in names]
    for sub in ("state/array_metadatas", "data"):
        folder = os.path.join(step_dir, sub)
        if os.path.isdir(folder):
            candidates += [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    for path in candidates:
        if not os.path.isfile(path) or path.endswith("commit_success.txt"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            invalid = CheckpointError(f"{path} is not valid JSON ({error})")
            invalid.filename = path  # for file_in_error
            raise invalid from None


# tensorstore's status codes for bytes that are missing, short or undecodable.
_CORRUPTION_MARKERS = ("DATA_LOSS", "OUT_OF_RANGE", "Invalid JSON", "Error decoding", "NOT_FOUND")


def is_corruption(error: BaseException) -> bool:
    """Whether ``error`` says the step's files are damaged (not a mismatch or a full memory)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
            return True
        if isinstance(error, CheckpointError) and "is not valid JSON" in str(error):
            return True
        if any(marker in str(error) for marker in _CORRUPTION_MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return False


def set_aside(directory: os.PathLike, step: int) -> str | None:
    """Moves ``directory/step`` to ``directory/corrupt/step[-time]``; None if it cannot."""
    source = os.path.join(directory, str(step))
    target_dir = os.path.join(directory, CORRUPT_DIR)
    target = os.path.join(target_dir, str(step))
    if os.path.exists(target):
        target += time.strftime("-%Y%m%d-%H%M%S")
    if jax.process_index() != 0:  # one host moves the shared directory
        return target
    try:
        os.makedirs(target_dir, exist_ok=True)
        os.rename(source, target)
    except OSError as error:
        logging.warning("could not move %s aside (%s); it is skipped", source, error)
        return None
    return target


class QuietOrbaxFailures(logging.Filter):
    """Drops orbax's logged tracebacks of a failed save or restore.

    Checkpointer re-raises each such failure as one CheckpointError (or a fallback
    warning); the same traceback logged five times by orbax's threads says nothing
    more. BERT_JAX_VERBOSE=1 keeps them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("BERT_JAX_VERBOSE", "").lower() in ("1", "true", "yes"):
            return True
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (from_orbax and record.levelno >= logging.ERROR and record.exc_info)


def install_quiet_filter() -> None:
    logger = logging.getLogger("absl")  # orbax logs through absl.logging
    if not any(isinstance(f, QuietOrbaxFailures) for f in logger.filters):
        logger.addFilter(QuietOrbaxFailures())


def newest_that_restores(manager, directory: os.PathLike, restore):
    """``(restore(step), step)`` for the newest step of ``manager`` whose files are intact.

    A damaged step (truncated or missing file: ``is_corruption``) is moved to
    ``corrupt/`` with a warning naming the step and file, and the next older one is
    tried. A model, optimizer or data mismatch, or any other error, is raised as it is:
    those are not the checkpoint's fault.

    Returns:
      ``(None, None)`` when there is no step at all.

    Raises:
      CheckpointError: every step is damaged; names each with its file.
    """
    manager.reload()
    steps = sorted(manager.all_steps(), reverse=True)
    failed = []
    for step in steps:
        try:
            validate_step_files(pathlib.Path(directory) / str(step))
            result = restore(step)
        except CheckpointMismatchError:
            raise
        except Exception as error:
            if not is_corruption(error):
                raise
            path = file_in_error(error) or "unknown file"
            moved = set_aside(directory, step)
            cause = root_cause(error)
            logging.warning(
                "checkpoint step %d in %s does not restore: %s is damaged (%s); "
                "moved it to %s and trying the previous step",
                step, directory, path, cause, moved or "(not moved)",
            )  # fmt: skip
            failed.append(f"step {step}: {path}")
            continue
        if failed:
            logging.warning("restored step %d of %s instead", step, directory)
        manager.reload()  # orbax forgets the moved steps
        return result, step
    manager.reload()
    if failed:
        raise CheckpointError(
            f"no checkpoint in {directory} restores ({'; '.join(failed)}); they were "
            f"moved to {pathlib.Path(directory) / CORRUPT_DIR}. Start afresh with "
            "another --workdir, or move a step back once it is repaired"
        )
    return None, None
