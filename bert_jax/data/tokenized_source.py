"""Pre-tokenised documents in ArrayRecord shards: record format, manifest, grain source.

`python -m data_prep.tokenize_shards` (an Apache Beam job) writes, per split directory,
ArrayRecord shards holding one record per document and a `manifest.json`. A record is
the document's sentences as sentencepiece ids, exactly what
`Tokenizer.encode_document(text)` returns for the raw text (documents with no sentence
are left out and counted, as the raw-text pipeline drops them):

    uint32 num_sentences | uint32 [num_sentences] sentence lengths | ids [sum of lengths]

with ids stored as `manifest["token_dtype"]` (uint16 when the vocabulary fits, halving
the bytes of C4). `config.data.source=tokenized` reads the shards named by
`train_pattern` / `eval_pattern` (e.g. `data/c4_tokenized/train/*.array_record`) by
random access with `grain.sources.ArrayRecordDataSource`: each host takes documents
`[process_index::process_count]`, the train split is reshuffled every epoch, and the
iterator state is an index (checkpointed with the model). The vocabulary checksum in
each shard directory's manifest must match the run's `config.data.vocab_path`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os

import grain
import numpy as np
from absl import logging

from bert_jax.data.faults import ReadTally
from bert_jax.data.jsonl_source import expand_patterns

FORMAT_NAME = "bert_jax.tokenized_documents"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".array_record"
_HEADER_DTYPE = np.dtype("<u4")


def token_dtype_for(vocab_size: int) -> np.dtype:
    """The narrowest little-endian unsigned dtype that holds every id of the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def encode_record(sentences: list[np.ndarray], token_dtype: np.dtype) -> bytes:
    """One document (its sentences' token ids) -> the bytes of one record."""
    lengths = np.array([len(s) for s in sentences], _HEADER_DTYPE)  # [num_sentences]
    header = np.concatenate([np.array([len(sentences)], _HEADER_DTYPE), lengths])
    ids = np.concatenate(sentences) if sentences else np.zeros(0)
    return header.tobytes() + ids.astype(token_dtype).tobytes()


def decode_record(record: bytes, token_dtype: np.dtype) -> list[np.ndarray]:
    """The bytes of one record -> the document's sentences, int32 token ids each."""
    num_sentences = int(np.frombuffer(record, _HEADER_DTYPE, count=1)[0])
    lengths = np.frombuffer(record, _HEADER_DTYPE, count=num_sentences, offset=4)
    offset = 4 * (num_sentences + 1)
    ids = np.frombuffer(record, token_dtype, offset=offset).astype(np.int32)  # [tokens]
    bounds = [0, *np.cumsum(lengths, dtype=np.int64).tolist()]
    return [ids[start:end] for start, end in itertools.pairwise(bounds)]  # np.split is slower


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (the vocabulary checksum of the manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str) -> dict:
    """The manifest of one shard directory, checked for format and version."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
        raise ValueError(
            f"{path} not found: tokenized shards need the manifest written by "
            "`python -m data_prep.tokenize_shards` (config.data.source=tokenized)."
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r}, expected {FORMAT_NAME!r} version "
            f"{FORMAT_VERSION}; prepare the shards again with data_prep.tokenize_shards."
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


def shard_paths(pattern: str, vocab_path: str) -> tuple[list[str], np.dtype]:
    """Shards matching `pattern`, with every directory's manifest checked against the vocab.

    Returns:
      (sorted shard paths, the token dtype their records use).
    """
    paths = [path for path in expand_patterns(pattern) if path.endswith(SHARD_SUFFIX)]
    if not paths:
        raise ValueError(f"Pattern {pattern!r} matches no {SHARD_SUFFIX} shard.")
    dtypes = set()
    for directory in sorted({os.path.dirname(path) for path in paths}):
        manifest = read_manifest(directory)
        check_vocabulary(manifest, directory, vocab_path)
        dtypes.add(manifest["token_dtype"])
    if len(dtypes) != 1:
        raise ValueError(f"Shards of {pattern!r} mix token dtypes {sorted(dtypes)}.")
    return paths, np.dtype(dtypes.pop())


class SkippedRecord:
    """A record that does not decode, or holds no token; `sources.documents` counts it."""

    def __init__(self, reason: str, where: str):
        self.reason, self.where = reason, where


class DecodeRecord:
    """Picklable record bytes -> list of sentence id arrays (grain workers pickle it)."""

    def __init__(self, token_dtype: np.dtype):
        self._token_dtype = np.dtype(token_dtype)

    def __call__(self, record: bytes) -> list[np.ndarray] | SkippedRecord:
        try:
            num_sentences = int(np.frombuffer(record, _HEADER_DTYPE, count=1)[0])
            lengths = np.frombuffer(record, _HEADER_DTYPE, count=num_sentences, offset=4)
        except ValueError as error:  # a header that promises more bytes than there are
            return SkippedRecord("corrupt_records", f"a record of {len(record)} bytes: {error}")
        ids_bytes = int(lengths.sum(dtype=np.int64)) * self._token_dtype.itemsize
        if 4 * (num_sentences + 1) + ids_bytes != len(record):
            # Decoding would silently shorten the last sentences.
            where = f"a record of {len(record)} bytes that its header does not fit"
            return SkippedRecord("corrupt_records", where)
        if not ids_bytes:
            return SkippedRecord("no_sentences", "a record without a token")
        return decode_record(record, self._token_dtype)


def _open_shards(paths: list[str], pattern: str, tally: ReadTally | None):
    """`ArrayRecordDataSource` over the shards that open; the others skipped, counted."""
    try:
        return grain.sources.ArrayRecordDataSource(paths)
    except RuntimeError:  # not an ArrayRecord file, or truncated: find which
        pass
    readable = []
    for path in paths:
        try:
            grain.sources.ArrayRecordDataSource([path])
        except RuntimeError as error:
            where = f"{path} is not a readable ArrayRecord shard: {error}"
            if tally is None:
                logging.warning("Skipped shard: %s", where)
            else:
                tally.skip("corrupt_files", where)
            continue
        readable.append(path)
    if not readable:
        message = f"none of the {len(paths)} shard(s) of {pattern!r} is a readable ArrayRecord file"
        raise tally.error(message) if tally is not None else ValueError(message)
    return grain.sources.ArrayRecordDataSource(readable)


def document_stream(
    data_config,
    split: str,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    repeat: bool,
    tally: ReadTally | None = None,
) -> grain.IterDataset:
    """This host's pre-tokenised documents (lists of int32 sentence ids), checkpointable.

    Args:
      data_config: `config.data`; reads train_pattern / eval_pattern (shard globs),
        vocab_path (checked against each shard directory's manifest) and read_threads
        (reader threads; 0, the default, reads in the consuming thread, best for local
        disks; network filesystems want a few).
      split: 'train' (shuffled, a new order every epoch) or 'eval' (shard and record
        order).
      seed: shuffle seed.
      process_index, process_count: this host takes documents [process_index::process_count].
      repeat: loop forever (epochs) instead of stopping after one pass.
      tally: the split's `ReadTally` (from `sources.documents`): counts unreadable
        shards and learns the records per pass. Records that do not decode come out as
        `SkippedRecord`s for `sources.documents` to count.

    Raises:
      ValueError: no shard, a missing manifest, or a vocabulary mismatch.
      DataFaultError: no shard is a readable ArrayRecord file.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    shuffle = split == "train"
    pattern = data_config.train_pattern if shuffle else data_config.eval_pattern
    paths, token_dtype = shard_paths(pattern, data_config.vocab_path)
    records = grain.MapDataset.source(_open_shards(paths, pattern, tally))
    records = records[process_index::process_count]
    if len(records) == 0:
        raise ValueError(f"No documents for host {process_index} of {process_count} ({pattern}).")
    if tally is not None:
        tally.records_per_pass = len(records)
    if shuffle:
        records = records.shuffle(seed=seed)
    records = records.repeat(None if repeat else 1)
    # Reading a record from a local shard costs less than handing it over from a reader
    # thread (grain's default is 16 threads): read in the consuming thread unless told to.
    threads = int(data_config.read_threads)
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64 * threads)
    return records.map(DecodeRecord(token_dtype)).to_iter_dataset(options)
