"""Document sources: C4-style json.gz shards, TFDS array_record datasets, plain text.

`document_stream` turns `config.data` into a resumable grain `IterDataset` of raw
document texts, already restricted to this host's share of the corpus:

  jsonl  C4-format shards (`c4-train.00000-of-01024.json.gz`, or plain .json /
         .jsonl), one JSON object per line. Each shard is streamed by
         `JsonLinesIterDataset` (state = line number) and shards are interleaved.
  tfds   a TFDS dataset prepared in array_record format (real `c4/en` or our own
         `c4_shards`, see `bert_jax/data/c4_tfds.py`), read by random access
         through `tfds.data_source`, without TensorFlow.
  text   plain text files, one document per blank-line-separated block.

Bad records never stop a run: they are skipped, counted in `SkipCounts` and
logged (rate limited) with file and line.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import zlib
from collections.abc import Sequence

import grain
import numpy as np
from absl import logging

# Per counter: warn for the first few skips, then only every N-th one.
_FIRST_WARNINGS = 5
_WARN_EVERY = 1000


@dataclasses.dataclass
class SkipCounts:
    """How many records a reader dropped, and why."""

    invalid_utf8: int = 0
    invalid_json: int = 0
    missing_field: int = 0
    empty_documents: int = 0
    corrupt_files: int = 0  # truncated / corrupt gzip: the rest of the file is lost
    no_sentences: int = 0  # documents the tokenizer turned into zero sentences

    def record(self, reason: str, where: str) -> None:
        """Counts one skipped record and logs it, rate limited per reason."""
        count = getattr(self, reason) + 1
        setattr(self, reason, count)
        if count <= _FIRST_WARNINGS or count % _WARN_EVERY == 0:
            logging.warning("Skipped record (%s, %d so far): %s", reason, count, where)

    def total(self) -> int:
        return sum(dataclasses.asdict(self).values())


def expand_patterns(patterns: str) -> list[str]:
    """Sorted files matching a comma-separated list of globs.

    Raises:
      ValueError: naming the pattern if it is empty or matches no file.
    """
    if not patterns:
        raise ValueError("No file pattern given (config.data.train_pattern / eval_pattern).")
    paths = set()
    for pattern in patterns.split(","):
        matches = glob.glob(os.path.expanduser(pattern.strip()))
        if not matches:
            raise ValueError(f"File pattern {pattern.strip()!r} matches no file.")
        paths.update(path for path in matches if os.path.isfile(path))
    return sorted(paths)


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def parse_json_line(raw: bytes, where: str, text_field: str, counts: SkipCounts) -> dict | None:
    """Decodes one JSON-lines record; returns None (counted) if it is unusable."""
    if not raw.strip():
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        counts.record("invalid_utf8", where)
        return None
    except ValueError:
        counts.record("invalid_json", where)
        return None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        counts.record("missing_field", f"{where} (no string field {text_field!r})")
        return None
    if not record[text_field].strip():
        counts.record("empty_documents", where)
        return None
    return record


class _JsonLinesIterator(grain.DatasetIterator):
    """Streams one JSON-lines file; the state is the number of lines read."""

    def __init__(self, path, text_field, line_offset, line_stride, whole_records):
        super().__init__()
        self._path = path
        self._text_field = text_field
        self._line_offset = line_offset
        self._line_stride = line_stride
        self._whole_records = whole_records
        self._lines = None  # opened lazily, so that set_state can reposition first
        self._next_line = 0
        self._done = False  # set after a corrupt tail, so resuming does not re-read it
        self.skip_counts = SkipCounts()

    def _read_line(self) -> bytes:
        """The next raw line; StopIteration at the end or on a corrupt file."""
        try:
            if self._lines is None:
                self._lines = _open_binary(self._path)
                for _ in range(self._next_line):  # resume: gzip cannot seek by line
                    next(self._lines)
            raw = next(self._lines)
        except StopIteration:
            self._finish()
            raise
        except (EOFError, OSError, zlib.error) as error:
            # Truncated downloads are common with C4 mirrors: keep the lines we have.
            self.skip_counts.record(
                "corrupt_files", f"{self._path} unreadable at line {self._next_line + 1}: {error}"
            )
            self._finish()
            raise StopIteration from error
        self._next_line += 1
        return raw

    def _finish(self):
        self._done = True
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        if self.skip_counts.total():
            logging.info("Finished %s, skipped %s", self._path, self.skip_counts)

    def __next__(self):
        while not self._done:
            raw = self._read_line()
            line_number = self._next_line - 1
            if line_number % self._line_stride != self._line_offset:
                continue  # another host's line
            where = f"{self._path}:{line_number + 1}"
            record = parse_json_line(raw, where, self._text_field, self.skip_counts)
            if record is not None:
                return record if self._whole_records else record[self._text_field]
        raise StopIteration

    def get_state(self):
        return {
            "next_line": self._next_line,
            "done": int(self._done),
            "skip_counts": dataclasses.asdict(self.skip_counts),
        }

    def set_state(self, state):
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        self._next_line = int(state["next_line"])
        self._done = bool(state["done"])
        self.skip_counts = SkipCounts(**state["skip_counts"])


class JsonLinesIterDataset(grain.IterDataset):
    """One C4-format JSON-lines file (.json.gz, .json or .jsonl) as a resumable stream.

    Yields the `text_field` string of each record (or the whole dict if
    `whole_records`). Only lines with `line_number % line_stride == line_offset`
    are read, which splits a file between hosts when there are fewer files than
    hosts. The iterator exposes `skip_counts`.
    """

    def __init__(
        self,
        path: str,
        text_field: str = "text",
        *,
        line_offset: int = 0,
        line_stride: int = 1,
        whole_records: bool = False,
    ):
        super().__init__()
        self._args = (path, text_field, line_offset, line_stride, whole_records)

    def __iter__(self) -> _JsonLinesIterator:
        return _JsonLinesIterator(*self._args)

    def __str__(self) -> str:
        return f"JsonLinesIterDataset({self._args[0]})"


class _MakeJsonLinesDataset:
    """Picklable file path -> JsonLinesIterDataset (grain workers pickle the pipeline)."""

    def __init__(self, text_field: str, line_offset: int, line_stride: int):
        self._kwargs = dict(text_field=text_field, line_offset=line_offset, line_stride=line_stride)

    def __call__(self, path: str) -> JsonLinesIterDataset:
        return JsonLinesIterDataset(path, **self._kwargs)


def _jsonl_stream(pattern, data_config, *, seed, process_index, process_count, repeat, shuffle):
    paths = expand_patterns(pattern)
    if len(paths) >= process_count:
        paths, line_offset, line_stride = paths[process_index::process_count], 0, 1
    else:
        line_offset, line_stride = process_index, process_count
        logging.warning(
            "%d shard(s) for %d hosts: every host reads all shards, keeping every %d-th line.",
            len(paths),
            process_count,
            process_count,
        )
    files = grain.MapDataset.source(paths)
    if shuffle:
        files = files.shuffle(seed=seed)  # reshuffled every epoch by `repeat`
    files = files.repeat(None if repeat else 1)
    file_datasets = files.map(
        _MakeJsonLinesDataset(data_config.text_field, line_offset, line_stride)
    )
    return grain.experimental.InterleaveIterDataset(
        file_datasets, cycle_length=data_config.get("cycle_length", 4)
    )


class TextBlocksSource(Sequence[str]):
    """Random access to the blank-line-separated blocks of plain text files.

    Only (file, start, end) byte offsets are kept in memory; texts are read on
    demand with `os.pread`, which is safe from grain's reader threads.
    Invalid UTF-8 is replaced (U+FFFD) and reported once per file.
    """

    def __init__(self, paths: Sequence[str]):
        self._paths = list(paths)
        spans = []
        for file_index, path in enumerate(self._paths):
            with open(path, "rb") as f:
                data = f.read()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                logging.warning("%s: invalid UTF-8 at byte %d, replaced.", path, error.start)
            start, end, position = None, 0, 0
            for line in data.splitlines(keepends=True):
                if line.strip():
                    start = position if start is None else start
                    end = position + len(line)
                elif start is not None:
                    spans.append((file_index, start, end))
                    start = None
                position += len(line)
            if start is not None:
                spans.append((file_index, start, end))
        self._spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)  # [documents, 3]
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index):
        file_index, start, end = (int(v) for v in self._spans[index])
        if file_index not in self._fds:
            self._fds[file_index] = os.open(self._paths[file_index], os.O_RDONLY)
        data = os.pread(self._fds[file_index], end - start, start)
        return data.decode("utf-8", errors="replace").strip()

    def __getstate__(self):
        return {"_paths": self._paths, "_spans": self._spans, "_fds": {}}

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)


def _tfds_source(data_config, split_name):
    import tensorflow_datasets as tfds  # heavy import, only for this source

    try:
        return tfds.data_source(
            data_config.tfds_name, split=split_name, data_dir=data_config.tfds_data_dir or None
        )
    except (tfds.core.registered.DatasetNotFoundError, NotImplementedError, ValueError) as error:
        raise ValueError(
            f"Cannot open TFDS dataset {data_config.tfds_name!r} split {split_name!r} in "
            f"data_dir {data_config.tfds_data_dir!r} for random access. It must be prepared in "
            "array_record format, e.g. `python -m data_prep.prepare_tfds --train_pattern ... "
            f"--data_dir DIR` or tfds download_and_prepare(file_format='array_record'): {error}"
        ) from error


class _RecordText:
    """Picklable TFDS record -> text (TFDS returns Text features as UTF-8 bytes)."""

    def __init__(self, text_field: str):
        self._text_field = text_field

    def __call__(self, record) -> str:
        text = record[self._text_field]
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def document_stream(
    data_config,
    split: str,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    repeat: bool,
) -> grain.IterDataset:
    """This host's documents (raw texts) as a checkpointable grain `IterDataset`.

    Args:
      data_config: `config.data`; reads source, train_pattern / eval_pattern,
        tfds_name, tfds_data_dir, train_split / eval_split, text_field and the
        optional cycle_length (json shards read concurrently, default 4).
      split: 'train' or 'eval'. The train split is shuffled (shard order for
        jsonl, document order otherwise) with a new order every epoch; eval is
        read in a fixed order.
      seed: shuffle seed.
      process_index: this host; process_count: number of hosts. jsonl shards
        are dealt round-robin by sorted name; with fewer shards than hosts every
        host reads all shards and keeps lines `process_index::process_count`.
        tfds and text documents are sliced `[process_index::process_count]`.
      repeat: loop forever (epochs) instead of stopping after one pass.

    Returns:
      IterDataset[str] of non-empty document texts.

    Raises:
      ValueError: unknown source or split, a pattern matching no file, or a
        TFDS dataset that is missing or not in array_record format.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    shuffle = split == "train"
    pattern = data_config.train_pattern if shuffle else data_config.eval_pattern
    source = data_config.source
    if source == "jsonl":
        return _jsonl_stream(
            pattern,
            data_config,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            repeat=repeat,
            shuffle=shuffle,
        )
    if source == "tfds":
        split_name = data_config.train_split if shuffle else data_config.eval_split
        texts = grain.MapDataset.source(_tfds_source(data_config, split_name))
        texts = texts[process_index::process_count].map(_RecordText(data_config.text_field))
        texts = texts.filter(lambda text: bool(text.strip()))
    elif source == "text":
        texts = grain.MapDataset.source(TextBlocksSource(expand_patterns(pattern)))
        texts = texts[process_index::process_count]
    else:
        raise ValueError(f"Unknown data source {source!r}; expected 'jsonl', 'tfds' or 'text'.")
    if len(texts) == 0:
        raise ValueError(f"No documents for host {process_index} of {process_count} ({source}).")
    if shuffle:
        texts = texts.shuffle(seed=seed)
    texts = texts.repeat(None if repeat else 1)
    return texts.to_iter_dataset()
