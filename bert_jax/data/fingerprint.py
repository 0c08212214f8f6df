"""What the train stream reads: saved with every checkpoint, compared on resume.

The grain iterator state in a checkpoint is a position in one particular stream: line
numbers in one sorted list of shards, a count of groups of ``docs_per_group``
documents, a window shuffle of one buffer size, one stream per input shard. Applied to
another stream it reads other data without a word (another file list, another
sequence length) or fails deep in grain (another source: ``KeyError: 'next_index'``).
``data_fingerprint(config)`` describes the stream; ``differences(saved, current)``
names what changed, as config fields ``old -> new``.

The files are identified by their names and sizes, not their directory, so a corpus
moved elsewhere (a changed pattern matching the same files) still resumes.
"""

from __future__ import annotations

import hashlib
import logging
import os

import jax

from bert_jax.checkpointing.guard import CheckpointMismatchError
from bert_jax.data.jsonl_source import expand_patterns
from bert_jax.data.tokenized_source import file_sha256

REMEDY = (
    "resume with the data it was written with, or set --config.data.allow_new_data=True to "
    "restart the data stream on this data (parameters and optimizer state are kept)"
)
# config.data fields that change what a saved position means.
STREAM_FIELDS = (
    "source",
    "max_seq_length",
    "docs_per_group",
    "shuffle_buffer",
    "cycle_length",
    "worker_count",
    "text_field",
)


def _files(pattern: str) -> dict:
    paths = expand_patterns(pattern)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{os.path.basename(path)}\t{os.path.getsize(path)}\n".encode())
    return {"count": len(paths), "sha256": digest.hexdigest()}


def data_fingerprint(config) -> dict:
    """The train stream of ``config`` (``config.seed`` and ``config.data``) as JSON.

    Raises:
      ValueError: ``config.data.train_pattern`` matches no file (naming it).
    """
    data = config.data
    record = {f"data.{name}": data.get(name) for name in STREAM_FIELDS}
    record["seed"] = config.seed
    # One stream per input shard (per host when 0): each host's position is in its own.
    record["data.input_shards"] = data.input_shards or jax.process_count()
    if data.source == "tfds":
        record["train_files"] = {"tfds": f"{data.tfds_name}:{data.train_split}"}
    else:
        record["data.train_pattern"] = data.train_pattern
        record["train_files"] = _files(data.train_pattern)
    record["data.vocab_path"] = data.vocab_path
    record["vocab_sha256"] = file_sha256(data.vocab_path)
    return record


def _describe_files(files: dict) -> str:
    if "tfds" in files:
        return repr(files["tfds"])
    return f"{files.get('count')} files ({files.get('sha256', '')[:12]})"


def differences(saved: dict, current: dict) -> list[str]:
    """``config.FIELD: old -> new`` for each difference that changes the stream.

    A field the saved record lacks (added since) is not compared.
    """
    diffs = []
    for key, value in current.items():
        if key not in saved or key in ("data.train_pattern", "data.vocab_path"):
            continue
        old = saved[key]
        if old == value:
            continue
        if key == "train_files":
            pattern = (saved.get("data.train_pattern"), current.get("data.train_pattern"))
            what = (
                f"config.data.train_pattern: {pattern[0]!r} -> {pattern[1]!r}"
                if pattern[0] != pattern[1]
                else f"files matching config.data.train_pattern={pattern[1]!r}"
            )
            diffs.append(f"{what} ({_describe_files(old)} -> {_describe_files(value)})")
        elif key == "vocab_sha256":
            paths = (saved.get("data.vocab_path"), current.get("data.vocab_path"))
            diffs.append(f"config.data.vocab_path: {paths[0]!r} -> {paths[1]!r} (another file)")
        else:
            diffs.append(f"config.{key}: {old!r} -> {value!r}")
    return diffs


def check_resume(saved: dict | None, current: dict, where: str, allow_new_data: bool) -> bool:
    """Whether the data position saved in checkpoint ``where`` may be restored.

    Args:
      saved: the checkpoint's record; None for a checkpoint written before records
        existed, which resumes unchecked (with a warning).
      current: this run's ``data_fingerprint``.
      where: the checkpoint, for messages.
      allow_new_data: ``config.data.allow_new_data``: on a difference, return False
        (the stream restarts; a warning names the differences) instead of raising.

    Raises:
      CheckpointMismatchError: other data, one line naming each field ``old -> new``.
    """
    if saved is None:
        logging.warning(
            "%s records no description of its data (written before they existed): "
            "resuming without checking config.data against it",
            where,
        )
        return True
    diffs = differences(saved, current)
    if not diffs:
        return True
    if not allow_new_data:
        raise CheckpointMismatchError(
            f"{where} was written reading other training data: {'; '.join(diffs)}. {REMEDY}"
        )
    logging.warning(
        "config.data.allow_new_data=True: %s read other data (%s); the data stream restarts "
        "from its beginning",
        where,
        "; ".join(diffs),
    )
    return False
