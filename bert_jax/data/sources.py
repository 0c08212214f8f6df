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

`documents` is what the pipeline reads: the same share as lists of sentence token ids,
encoded here for the three raw-text sources, or read as such from pre-tokenised shards
(`source=tokenized`, see `tokenized_source.py`).

Bad records are skipped, counted in `SkipCounts` and logged (the first few with file and
line, then count summaries); a split with no usable document, or more than
`config.data.max_skipped_fraction` of bad records, stops with a `DataFaultError`
naming the pattern and the counts (`faults.py`).
"""

from __future__ import annotations

import grain
import numpy as np

from bert_jax.data import tokenized_source
from bert_jax.data.faults import STATE_KEY, DataFaultError, ReadTally, SkipCounts
from bert_jax.data.jsonl_source import (
    JsonLinesIterDataset,
    expand_patterns,
    jsonl_stream,
    parse_json_line,
)
from bert_jax.data.text_source import TextBlocksSource

__all__ = [
    "DataFaultError",
    "EncodedDocumentsIterDataset",
    "JsonLinesIterDataset",
    "SkipCounts",
    "TextBlocksSource",
    "document_stream",
    "documents",
    "expand_patterns",
    "parse_json_line",
]


def describe_split(data_config, split: str) -> str:
    """The config fields a split reads, for messages: "config.data.train_pattern='...'"."""
    if data_config.source == "tfds":
        split_name = data_config.train_split if split == "train" else data_config.eval_split
        return f"config.data.tfds_name={data_config.tfds_name!r} split {split_name!r}"
    field = "train_pattern" if split == "train" else "eval_pattern"
    return f"config.data.{field}={data_config[field]!r}"


def new_tally(data_config, split: str, process_index: int, process_count: int, **kwargs):
    """The `ReadTally` of one split on one host (see faults.py)."""
    return ReadTally(
        split=split,
        what=describe_split(data_config, split),
        host=f"host {process_index} of {process_count}",
        max_skipped_fraction=float(data_config.max_skipped_fraction),
        **kwargs,
    )


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
      tally: the `ReadTally` that counts this split's reads and skips (`documents`
        passes its own); jsonl shards report their lines to it, the other sources
        set its records per pass.

    Returns:
      IterDataset[str] of document texts: jsonl skips (and counts) bad lines; tfds
      texts may be empty (`documents` counts them).

    Raises:
      ValueError: unknown source or split, a pattern matching no file (or only
        directories), or a TFDS dataset that is missing or not in array_record format.
      DataFaultError: no document at all (e.g. every text file unreadable).
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    tally = tally or new_tally(data_config, split, process_index, process_count)
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
            tally=tally,
        )
    if source == "tfds":
        from bert_jax.data import c4_tfds  # imports tensorflow_datasets: only for this source

        split_name = data_config.train_split if shuffle else data_config.eval_split
        texts = grain.MapDataset.source(c4_tfds.data_source(data_config, split_name))
        # No filter for empty texts: grain would skip them silently, forever if all are.
        texts = texts[process_index::process_count].map(c4_tfds.RecordText(data_config.text_field))
    elif source == "text":
        texts = grain.MapDataset.source(TextBlocksSource(expand_patterns(pattern), tally))
        texts = texts[process_index::process_count]
    else:
        raise ValueError(
            f"Unknown data source {source!r}; expected 'jsonl', 'tfds', 'text' or 'tokenized' "
            "(pre-tokenised shards, read by bert_jax/data/tokenized_source.py)."
        )
    if len(texts) == 0:
        raise tally.error("no document in the files")
    tally.records_per_pass = len(texts)
    if shuffle:
        texts = texts.shuffle(seed=seed)
    texts = texts.repeat(None if repeat else 1)
    return texts.to_iter_dataset()


class _DocumentsIterator(grain.DatasetIterator):
    def __init__(self, parent, tokenizer, tally: ReadTally, count_reads: bool):
        super().__init__(parent)
        self._tokenizer = tokenizer
        self._tally = tally
        self._count_reads = count_reads
        self._records_in_pass = 0
        self._documents_in_pass = 0
        self._ended = False

    @property
    def read_tally(self) -> ReadTally:
        """The live counts (`faults.skip_metrics` finds them here)."""
        return self._tally

    @property
    def skip_counts(self) -> SkipCounts:
        return self._tally.skips

    def _document(self, record) -> list[np.ndarray] | None:
        """A record as a document, or None (counted) if it holds no sentence."""
        if isinstance(record, tokenized_source.SkippedRecord):
            self._tally.skip(record.reason, record.where)
            return None
        if self._tokenizer is None:  # pre-tokenised, and DecodeRecord flagged empty ones
            return record
        if not record.strip():
            self._tally.skip("empty_documents", "an empty text")
            return None
        sentences = self._tokenizer.encode_document(record)  # only non-empty sentences
        if not sentences:
            self._tally.skip("no_sentences", repr(record[:80]))
            return None
        return sentences

    def __next__(self) -> list[np.ndarray]:
        tally = self._tally
        while True:
            try:
                record = next(self._parent)
            except StopIteration:
                if not self._ended:  # the end of a single pass (eval)
                    self._ended = True
                    if tally.records_per_pass is None or self._records_in_pass:
                        tally.pass_finished(self._documents_in_pass)
                raise
            if self._count_reads:
                tally.read()
            document = self._document(record)
            self._records_in_pass += 1
            if document is not None:
                tally.document()
                self._documents_in_pass += 1
            if self._records_in_pass == tally.records_per_pass:  # a pass of a map source
                documents, self._records_in_pass, self._documents_in_pass = (
                    self._documents_in_pass,
                    0,
                    0,
                )
                tally.pass_finished(documents)
            if document is not None:
                return document

    def get_state(self):
        return {
            "parent": self._parent.get_state(),
            STATE_KEY: self._tally.state(),
            "pass": [self._records_in_pass, self._documents_in_pass],
        }

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        # States written before the tally held only no_sentences.
        self._tally.restore(state.get(STATE_KEY, {"no_sentences": state.get("no_sentences", 0)}))
        self._records_in_pass, self._documents_in_pass = (int(n) for n in state.get("pass", (0, 0)))
        self._ended = False


class EncodedDocumentsIterDataset(grain.IterDataset):
    """Records -> documents (lists of sentence token ids), counted in a `ReadTally`.

    Texts are sentence-split and encoded with `tokenizer` (None: the records are
    pre-tokenised documents already); records with no sentence are dropped and
    counted. The tally gives up on a split with no usable document (faults.py).

    Args:
      parent: IterDataset of texts (or decoded documents).
      tokenizer: has `encode_document(text)`; None for pre-tokenised records.
      tally: counts reads, skips and documents; default: a fresh one that never stops
        on the skipped fraction.
      count_reads: count each record as read here (False for jsonl, whose shards
        count their lines themselves).
    """

    def __init__(self, parent, tokenizer, tally: ReadTally | None = None, count_reads=True):
        super().__init__(parent)
        self._tokenizer = tokenizer
        self._tally = tally or ReadTally(
            split="train", what="documents", host="this host", max_skipped_fraction=1.0
        )
        self._count_reads = count_reads
        # What building the stream already counted (unreadable text files): each new
        # iterator starts from there.
        self._initial_counts = self._tally.state()

    def __iter__(self):
        self._tally.restore(self._initial_counts)
        return _DocumentsIterator(
            self._parent.__iter__(), self._tokenizer, self._tally, self._count_reads
        )


def documents(
    data_config,
    split: str,
    tokenizer,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    repeat: bool,
    min_documents: int = 1,
) -> grain.IterDataset:
    """This host's documents as lists of int32 sentence token ids, for every source.

    Raw-text sources are sentence-split and encoded here (documents with no
    sentence dropped and counted); `tokenized` shards already hold the result.
    Arguments as `document_stream`; `tokenizer` encodes raw text; `min_documents`
    is what the objective needs in this host's share of the split (fewer: a warning
    for train, a `DataFaultError` for eval). The iterator state holds the skip counts
    (`faults.skip_metrics`).
    """
    tally = new_tally(data_config, split, process_index, process_count, min_documents=min_documents)
    tokenized = data_config.source == "tokenized"
    stream_fn = tokenized_source.document_stream if tokenized else document_stream
    ds = stream_fn(
        data_config,
        split,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        repeat=repeat,
        tally=tally,
    )
    return EncodedDocumentsIterDataset(
        ds, None if tokenized else tokenizer, tally, count_reads=data_config.source != "jsonl"
    )
