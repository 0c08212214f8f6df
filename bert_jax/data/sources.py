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

import os
from collections.abc import Sequence

import grain
import numpy as np
from absl import logging

from bert_jax.data.jsonl_source import (
    JsonLinesIterDataset,
    SkipCounts,
    expand_patterns,
    jsonl_stream,
    parse_json_line,
)

__all__ = [
    "JsonLinesIterDataset",
    "SkipCounts",
    "TextBlocksSource",
    "document_stream",
    "expand_patterns",
    "parse_json_line",
]


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
        return jsonl_stream(
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
