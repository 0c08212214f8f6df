"""The `manifest.json` of a pre-tokenised shard directory, and the shards a pattern reads.

`python -m data_prep.tokenize_shards` writes the manifest last, into the directory it
then swaps in whole: the format, the vocabulary (path and sha256), the token dtype,
totals, and per shard its file name (`output`), record count (`documents`) and size
(`bytes`). The manifest is what a directory holds: `listed_shards` reads exactly the
listed shards that the pattern selects, never a file the manifest does not list (a shard
left by an earlier run or copied in: named in a warning and ignored), and checks that the
pattern's directories share one vocabulary and token dtype, the run's. A listed shard's
record count and size are checked when it is opened (`tokenized_source.open_shards`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os

import numpy as np
from absl import logging

from bert_jax.data.jsonl_source import expand_patterns

FORMAT_NAME = "bert_jax.tokenized_documents"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".array_record"
TOKEN_DTYPES = ("<u2", "<u4")
_FIELDS = {"vocab_path": str, "vocab_sha256": str, "token_dtype": str, "shards": list}
_AGAIN = "prepare the shards again with `python -m data_prep.tokenize_shards`"


@dataclasses.dataclass(frozen=True)
class ListedShard:
    """A shard as its manifest lists it."""

    path: str
    records: int  # the manifest's `documents`
    bytes: int | None  # None in manifests written before sizes were recorded


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (the vocabulary checksum of the manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str) -> dict:
    """The manifest of one shard directory, checked for format, version and fields.

    Raises:
      ValueError: naming the manifest: missing, not JSON, another format or version, a
        field missing or of the wrong type.
    """
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
        raise ValueError(
            f"{path} not found: tokenized shards need the manifest written by "
            "`python -m data_prep.tokenize_shards` (config.data.source=tokenized)."
        )
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not a JSON manifest ({error}); {_AGAIN}.") from error
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{path} holds a JSON {type(manifest).__name__}, not a manifest; {_AGAIN}."
        )
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r}, expected {FORMAT_NAME!r} version "
            f"{FORMAT_VERSION}; {_AGAIN}."
        )
    for key, kind in _FIELDS.items():
        if not isinstance(manifest.get(key), kind):
            found = f"a {type(manifest[key]).__name__}" if key in manifest else "missing"
            raise ValueError(f"{path}: field {key!r} is {found}, not a {kind.__name__}; {_AGAIN}.")
    if manifest["token_dtype"] not in TOKEN_DTYPES:
        raise ValueError(
            f"{path}: token_dtype {manifest['token_dtype']!r} is not one of {TOKEN_DTYPES}; "
            f"{_AGAIN}."
        )
    for index, entry in enumerate(manifest["shards"]):
        name = entry.get("output") if isinstance(entry, dict) else None
        count = entry.get("documents") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or os.path.basename(name) != name
            or not isinstance(count, int)
            or count < 0
            or not isinstance(size, int | None)
        ):
            raise ValueError(
                f"{path}: shards[{index}] = {entry!r} needs a file name 'output' and a record "
                f"count 'documents' (and a size 'bytes'); {_AGAIN}."
            )
    return manifest


def check_vocabulary(manifest: dict, manifest_dir: str, vocab_path: str) -> None:
    """Raises ValueError naming both files unless the shards were made with `vocab_path`."""
    actual = file_sha256(vocab_path)
    if manifest["vocab_sha256"] != actual:
        raise ValueError(
            f"Vocabulary mismatch: {os.path.join(manifest_dir, MANIFEST_NAME)} was tokenised "
            f"with {manifest['vocab_path']} (sha256 {manifest['vocab_sha256'][:12]}...) but "
            f"config.data.vocab_path is {vocab_path} (sha256 {actual[:12]}...); "
            "tokenise the shards again with this vocabulary or point vocab_path at theirs."
        )


def _encoding(directory: str, manifest: dict) -> str:
    vocab, sha256, dtype = (manifest[k] for k in ("vocab_path", "vocab_sha256", "token_dtype"))
    return f"{directory} with {vocab} (sha256 {sha256[:12]}..., {dtype})"


def _check_one_encoding(manifests: dict[str, dict], pattern: str) -> None:
    """Raises ValueError naming two directories of `pattern` tokenised differently."""
    first_dir, first = next(iter(manifests.items()))
    for directory, manifest in manifests.items():
        if any(manifest[key] != first[key] for key in ("vocab_sha256", "token_dtype")):
            raise ValueError(
                f"The shards of {pattern!r} were tokenised differently: "
                f"{_encoding(first_dir, first)}, {_encoding(directory, manifest)}; "
                "tokenise every directory with one vocabulary."
            )


def listed_shards(pattern: str, vocab_path: str) -> tuple[list[ListedShard], np.dtype]:
    """The manifest-listed shards that `pattern` selects, every directory's manifest checked.

    A listed shard that `pattern` would match counts even when the file is missing
    (`open_shards` skips and counts it); a matched `.array_record` file that its
    directory's manifest does not list is ignored, with a warning naming it.

    Returns:
      (the shards, sorted by path; the token dtype of their records).

    Raises:
      ValueError: no shard matched or listed, a bad manifest, directories tokenised with
        different vocabularies or dtypes, or a vocabulary other than `vocab_path`.
    """
    matched = [path for path in expand_patterns(pattern) if path.endswith(SHARD_SUFFIX)]
    if not matched:
        raise ValueError(f"Pattern {pattern!r} matches no {SHARD_SUFFIX} shard.")
    globs = [os.path.abspath(os.path.expanduser(part.strip())) for part in pattern.split(",")]
    manifests = {d: read_manifest(d) for d in sorted({os.path.dirname(p) for p in matched})}
    _check_one_encoding(manifests, pattern)
    for directory, manifest in manifests.items():
        check_vocabulary(manifest, directory, vocab_path)
    shards, unlisted = [], {os.path.abspath(path): path for path in matched}
    for directory, manifest in manifests.items():
        for entry in manifest["shards"]:
            path = os.path.join(directory, entry["output"])
            if any(fnmatch.fnmatchcase(os.path.abspath(path), glob) for glob in globs):
                shards.append(ListedShard(path, entry["documents"], entry.get("bytes")))
                unlisted.pop(os.path.abspath(path), None)
    named = ", ".join(sorted(unlisted.values())[:3]) + (", ..." if len(unlisted) > 3 else "")
    if not shards:
        raise ValueError(
            f"None of the shards {pattern!r} matches is listed in its directory's "
            f"{MANIFEST_NAME} ({named}); {_AGAIN}."
        )
    if unlisted:
        logging.warning(
            "Ignoring %d file(s) of %r that their directory's %s does not list (left by an "
            "earlier run, or copied in): %s",
            len(unlisted),
            pattern,
            MANIFEST_NAME,
            named,
        )
    token_dtype = np.dtype(next(iter(manifests.values()))["token_dtype"])
    return sorted(shards, key=lambda shard: shard.path), token_dtype
