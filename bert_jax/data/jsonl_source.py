"""C4-format json lines shards: streamed, resumable, bad records skipped and counted.

`JsonLinesIterDataset` streams one shard (`c4-train.00000-of-01024.json.gz`, or plain
.json / .jsonl; state = line number); `jsonl_stream` deals shards to hosts and
interleaves them. Invalid UTF-8 or JSON, records without text and empty texts are
skipped, counted in `SkipCounts` and logged (rate limited) with file and line; a
truncated or corrupt gzip shard is logged and skipped.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import zlib

import grain
from absl import logging

from bert_jax.data.faults import ReadTally, SkipCounts

__all__ = ["JsonLinesIterDataset", "SkipCounts", "expand_patterns", "jsonl_stream"]


def expand_patterns(patterns: str) -> list[str]:
    """Sorted files matching a comma-separated list of globs.

    Raises:
      ValueError: naming the pattern if it is empty, matches nothing, or matches only
        directories.
    """
    if not patterns:
        raise ValueError("No file pattern given (config.data.train_pattern / eval_pattern).")
    paths = set()
    for pattern in patterns.split(","):
        pattern = pattern.strip()
        matches = glob.glob(os.path.expanduser(pattern))
        if not matches:
            raise ValueError(f"File pattern {pattern!r} matches no file.")
        files = [path for path in matches if os.path.isfile(path)]
        if not files:
            example = os.path.join(pattern.rstrip("/"), "*.json.gz")
            raise ValueError(
                f"File pattern {pattern!r} matches only directories ({sorted(matches)[0]!r}); "
                f"name the files in them, e.g. {example!r}."
            )
        paths.update(files)
    return sorted(paths)


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def parse_json_line(raw: bytes, where: str, text_field: str, counts) -> dict | None:
    """Decodes one JSON-lines record; returns None (counted) if it is unusable.

    `counts` has `record(reason, where)`: a `SkipCounts`, or a reader that also tells
    its `ReadTally`.
    """
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

    def __init__(self, path, text_field, line_offset, line_stride, whole_records, tally):
        super().__init__()
        self._tally: ReadTally | None = tally
        self._path = path
        self._text_field = text_field
        self._line_offset = line_offset
        self._line_stride = line_stride
        self._whole_records = whole_records
        self._lines = None  # opened lazily, so that set_state can reposition first
        self._next_line = 0
        self._done = False  # set after a corrupt tail, so resuming does not re-read it
        self._used_lines = 0  # usable lines since this iterator (re)started: 0 = barren shard
        self.skip_counts = SkipCounts()

    def record(self, reason: str, where: str) -> None:
        """Counts a skip here and in the tally, which then does the (rate-limited) logging."""
        self.skip_counts.record(reason, where, log=self._tally is None)
        if self._tally is not None:
            self._tally.skip(reason, where)

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
            self._finish(
                ("corrupt_files", f"{self._path} unreadable at line {self._next_line + 1}: {error}")
            )
            raise StopIteration from error
        self._next_line += 1
        return raw

    def _finish(self, corrupt: tuple[str, str] | None = None):
        self._done = True
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        try:
            if corrupt is not None:
                self.record(*corrupt)
        finally:
            if self._tally is not None:
                self._tally.file_finished(self._path, self._used_lines, corrupt is not None)
            elif self.skip_counts.total():
                logging.info("Finished %s, skipped %s", self._path, self.skip_counts)

    def __next__(self):
        while not self._done:
            raw = self._read_line()
            line_number = self._next_line - 1
            if line_number % self._line_stride != self._line_offset:
                continue  # another host's line
            where = f"{self._path}:{line_number + 1}"
            if self._tally is not None and raw.strip():
                self._tally.read()
            record = parse_json_line(raw, where, self._text_field, self)
            if record is not None:
                self._used_lines += 1
                if self._tally is not None:
                    self._tally.line_used()
                return record if self._whole_records else record[self._text_field]
        raise StopIteration

    def get_state(self):
        return {
            "next_line": self._next_line,
            "done": int(self._done),
            "skip_counts": dataclasses.asdict(self.skip_counts),
            "used_lines": self._used_lines,
        }

    def set_state(self, state):
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        self._next_line = int(state["next_line"])
        self._done = bool(state["done"])
        self.skip_counts = SkipCounts(**state["skip_counts"])
        # Older states: assume the shard gave lines, so it cannot look barren.
        self._used_lines = int(state.get("used_lines", 1))


class JsonLinesIterDataset(grain.IterDataset):
    """One C4-format JSON-lines file (.json.gz, .json or .jsonl) as a resumable stream.

    Yields the `text_field` string of each record (or the whole dict if
    `whole_records`). Only lines with `line_number % line_stride == line_offset`
    are read, which splits a file between hosts when there are fewer files than
    hosts. The iterator exposes `skip_counts`; with a `tally` (`jsonl_stream` passes
    the pipeline's) it also reports reads, skips and barren shards there.
    """

    def __init__(
        self,
        path: str,
        text_field: str = "text",
        *,
        line_offset: int = 0,
        line_stride: int = 1,
        whole_records: bool = False,
        tally: ReadTally | None = None,
    ):
        super().__init__()
        self._args = (path, text_field, line_offset, line_stride, whole_records, tally)

    def __iter__(self) -> _JsonLinesIterator:
        return _JsonLinesIterator(*self._args)

    def __str__(self) -> str:
        return f"JsonLinesIterDataset({self._args[0]})"


class _MakeJsonLinesDataset:
    """Picklable file path -> JsonLinesIterDataset (grain workers pickle the pipeline)."""

    def __init__(self, text_field: str, line_offset: int, line_stride: int, tally):
        self._kwargs = dict(
            text_field=text_field, line_offset=line_offset, line_stride=line_stride, tally=tally
        )

    def __call__(self, path: str) -> JsonLinesIterDataset:
        return JsonLinesIterDataset(path, **self._kwargs)


def jsonl_stream(
    pattern, data_config, *, seed, process_index, process_count, repeat, shuffle, tally=None
):
    """This host's texts of the shards matching `pattern`, interleaved (see document_stream).

    `tally` (a `ReadTally`) learns how many shards this host reads and counts every line.
    """
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
    if tally is not None:
        tally.host_files = len(paths)
    files = grain.MapDataset.source(paths)
    if shuffle:
        files = files.shuffle(seed=seed)  # reshuffled every epoch by `repeat`
    files = files.repeat(None if repeat else 1)
    file_datasets = files.map(
        _MakeJsonLinesDataset(data_config.text_field, line_offset, line_stride, tally)
    )
    return grain.experimental.InterleaveIterDataset(
        file_datasets, cycle_length=data_config.cycle_length
    )
