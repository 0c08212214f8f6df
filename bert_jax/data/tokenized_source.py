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
iterator state is an index (checkpointed with the model).

What is read is what the manifests list (`tokenized_manifest.py`: the pattern selects
among the listed shards; their vocabulary must be the run's `config.data.vocab_path`).
Each listed shard is opened first: one that holds another record count or size than
listed is refused (it belongs to another run); one that is missing or does not open
(truncated, not ArrayRecord) is skipped, logged and counted with the records its
manifest lists, against `config.data.max_skipped_fraction`; a record whose chunk fails
riegeli's checksum (flipped bytes) is skipped and counted when read (`corrupt_records`).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import itertools
import os

import grain
import numpy as np
from absl import logging
from array_record.python.array_record_module import ArrayRecordReader

from bert_jax.data.faults import ReadTally
from bert_jax.data.tokenized_manifest import (  # noqa: F401 (the format's names, for users)
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_SUFFIX,
    ListedShard,
    check_vocabulary,
    file_sha256,
    listed_shards,
    read_manifest,
)

_HEADER_DTYPE = np.dtype("<u4")
# Shards opened at once to check their record counts (a network filesystem wants several).
_OPEN_THREADS = 16


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


class SkippedRecord:
    """A record that does not decode, or holds no token; `sources.documents` counts it."""

    def __init__(self, reason: str, where: str):
        self.reason, self.where = reason, where


class DecodeRecord:
    """Picklable record bytes -> list of sentence id arrays (grain workers pickle it)."""

    def __init__(self, token_dtype: np.dtype):
        self._token_dtype = np.dtype(token_dtype)

    def __call__(self, record: bytes | SkippedRecord) -> list[np.ndarray] | SkippedRecord:
        if isinstance(record, SkippedRecord):  # a record the shard could not give
            return record
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


@dataclasses.dataclass(frozen=True)
class _WholeShard:
    """A shard and its record count (array_record's FileInstruction: not opened again)."""

    filename: str
    take: int
    skip: int = 0

    @property
    def examples_in_shard(self) -> int:
        return self.take


class ShardRecords:
    """The records of the readable shards, by index; a record whose chunk fails riegeli's
    checksum (a corrupt shard) comes out as a `SkippedRecord` naming shard and position."""

    def __init__(self, shards: list[_WholeShard]):
        self._source = grain.sources.ArrayRecordDataSource(shards)
        self._paths = [shard.filename for shard in shards]
        self._ends = list(itertools.accumulate(shard.take for shard in shards))

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> bytes | SkippedRecord:
        try:
            return self._source[index]
        except RuntimeError as error:  # riegeli: "Corrupted Riegeli/records file: ..."
            shard = bisect.bisect_right(self._ends, index)
            position = index - (self._ends[shard - 1] if shard else 0)
            where = f"{self._paths[shard]} record {position}: {' '.join(str(error).split())}"
            return SkippedRecord("corrupt_records", where)


def _check_shard(shard: ListedShard) -> str | None:
    """None if `shard` opens, or why it cannot be read (its records are lost).

    Raises:
      ValueError: it opens but holds another record count or size than its manifest
        lists: a shard of another run, not a damaged one.
    """
    try:
        size = os.path.getsize(shard.path)
        reader = ArrayRecordReader(shard.path)
        try:
            count = reader.num_records()
        finally:
            reader.close()  # riegeli reports a file it could not read here
    except FileNotFoundError:
        return "listed in its manifest.json but missing"
    except (RuntimeError, OSError) as error:  # not an ArrayRecord file, or truncated
        return f"not a readable ArrayRecord shard: {' '.join(str(error).split())}"
    if count != shard.records or shard.bytes not in (None, size):
        listed = f"{shard.records} records" + (f", {shard.bytes} bytes" if shard.bytes else "")
        raise ValueError(
            f"{shard.path} holds {count} records, {size} bytes, but its manifest.json lists "
            f"{listed}: not the shard the manifest describes (from another run?); tokenise "
            "the directory again with `python -m data_prep.tokenize_shards`."
        )
    return None


def open_shards(shards: list[ListedShard], pattern: str, tally: ReadTally | None) -> ShardRecords:
    """The records of `shards`; unreadable or missing shards skipped and counted by the
    records their manifest lists (`tally.files_lost` stops on too large a share).

    Raises:
      ValueError: a shard that differs from its manifest (`_check_shard`).
      DataFaultError: no shard readable, or too many records in unreadable ones.
    """
    with concurrent.futures.ThreadPoolExecutor(min(_OPEN_THREADS, len(shards))) as pool:
        problems = list(pool.map(_check_shard, shards))
    lost = [(shard, problem) for shard, problem in zip(shards, problems, strict=True) if problem]
    for shard, problem in lost:
        where = f"{shard.path} ({shard.records:,} records) is {problem}"
        if tally is None:
            logging.warning("Skipped shard: %s", where)
        else:
            tally.skip("corrupt_files", where)
    pairs = zip(shards, problems, strict=True)
    readable = [_WholeShard(shard.path, shard.records) for shard, problem in pairs if not problem]
    if not readable:
        message = (
            f"none of the {len(shards)} shard(s) of {pattern!r} is a readable ArrayRecord file"
        )
        raise tally.error(message) if tally is not None else ValueError(message)
    if lost and tally is not None:
        tally.files_lost(
            sum(shard.records for shard, _ in lost),
            sum(shard.records for shard in shards),
            f"{len(lost)} of the {len(shards)} shard(s) are unreadable or missing",
        )
    return ShardRecords(readable)


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
        shards (with their records) and learns the records per pass. Records that do
        not decode come out as `SkippedRecord`s for `sources.documents` to count.

    Raises:
      ValueError: no shard, a missing or bad manifest, a vocabulary mismatch, or a shard
        that differs from its manifest.
      DataFaultError: no shard is a readable ArrayRecord file, or the unreadable ones
        hold more than `max_skipped_fraction` of the records.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    shuffle = split == "train"
    pattern = data_config.train_pattern if shuffle else data_config.eval_pattern
    shards, token_dtype = listed_shards(pattern, data_config.vocab_path)
    records = grain.MapDataset.source(open_shards(shards, pattern, tally))
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
