"""Data faults: what the readers skip, how it is logged, and when they give up.

A scraped corpus always holds some bad records (invalid UTF-8 or JSON, empty texts,
truncated gzip shards): they are skipped and counted. A split that yields no usable
document at all would make a repeating pipeline loop forever, though, and a mostly-bad
one would train on what little is left. One `ReadTally` per reader pipeline (one split
on one host, or in one grain worker) counts what every stage reads, skips and produces,
names the first few skipped records and then only logs count summaries, and raises
`DataFaultError` (a ValueError, so `bert-jax: error:` prints it) when

- a whole pass produced no document (jsonl: every shard of this host ended without a
  usable line; the other sources: a pass over all their records), or
- `MAX_RECORDS_WITHOUT_DOCUMENT` records in a row gave no document, or
- more than `config.data.max_skipped_fraction` of the records read were skipped, once
  `MIN_RECORDS_FOR_FRACTION` were read (one bad line among the first ten is no error), or
- whole files skipped hold more than that fraction of its records (pre-tokenised
  shards, when the split is opened: their manifest's counts, `files_lost`; jsonl shards
  that break off before their first usable line, e.g. not gzip: a file's share of this
  host's shards, as they are met); their share also counts with the records skipped later.

It also warns (train) or raises (eval) when the first pass holds fewer documents than
the objective needs (next-sentence prediction draws its random next segment from
another document: 2). The counts are part of the iterator state (key `data_faults`),
so they survive a resume and reach the main process from grain workers;
`skip_metrics(iterator)` sums them for the train loop's log line. (Over 300 lines: one
tally for every source, kept whole.)
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

from absl import logging

# Skipped records named in the log per reason; after them only count summaries.
_FIRST_WARNINGS = 5
# Per standalone SkipCounts (no tally): every N-th skip after the first ones.
_WARN_EVERY = 1000
MIN_RECORDS_FOR_FRACTION = 1000
MAX_RECORDS_WITHOUT_DOCUMENT = 100_000
STATE_KEY = "data_faults"


class DataFaultError(ValueError):
    """The data cannot feed the run: no usable document, or too many bad records."""


@dataclasses.dataclass
class SkipCounts:
    """How many records a reader dropped, and why."""

    invalid_utf8: int = 0
    invalid_json: int = 0
    missing_field: int = 0
    empty_documents: int = 0
    corrupt_files: int = 0  # unreadable, truncated or not the format: the rest of the file is lost
    no_sentences: int = 0  # documents the tokenizer turned into zero sentences
    corrupt_records: int = 0  # pre-tokenised records that do not decode

    def record(self, reason: str, where: str, *, log: bool = True) -> None:
        """Counts one skipped record and (unless `log` is False) logs it, rate limited."""
        count = getattr(self, reason) + 1
        setattr(self, reason, count)
        if log and (count <= _FIRST_WARNINGS or count % _WARN_EVERY == 0):
            logging.warning("Skipped record (%s, %d so far): %s", reason, count, where)

    def total(self) -> int:
        return sum(dataclasses.asdict(self).values())

    def records(self) -> int:
        """Skipped records (a corrupt file is not a record)."""
        return self.total() - self.corrupt_files

    def nonzero(self) -> dict[str, int]:
        return {reason: n for reason, n in dataclasses.asdict(self).items() if n}


class ReadTally:
    """What one reader pipeline read, skipped and produced; thread-safe (grain reads
    json shards in prefetch threads). Raises `DataFaultError` as the module says.

    Args:
      split: 'train' or 'eval' (an eval split with too few documents is an error).
      what: the data the split reads, for messages, e.g. "config.data.train_pattern='x*'".
      host: e.g. 'host 0 of 1'.
      max_skipped_fraction: `config.data.max_skipped_fraction`; >= 1 never stops the run.
      min_documents: documents the objective needs in a split (this host's share).
    """

    def __init__(self, *, split, what, host, max_skipped_fraction=0.5, min_documents=1):
        if not max_skipped_fraction >= 0.0:  # also rejects NaN
            raise ValueError(
                f"config.data.max_skipped_fraction must be >= 0, got {max_skipped_fraction}"
            )
        self.split, self.what, self.host = split, what, host
        self.max_skipped_fraction = max_skipped_fraction
        self.min_documents = min_documents
        self.host_files: int | None = None  # jsonl: this host's shards (jsonl_stream sets it)
        self.records_per_pass: int | None = None  # other sources: this host's records
        # Records of the split in files that could not be opened (files_lost, or jsonl
        # shards skipped whole); kept by reset(): a property of the files, not of one iterator.
        self.lost_share = 0.0
        self._skipped_files: set[str] = set()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero counts, for a fresh iterator."""
        self.skips = SkipCounts()
        self.records = 0
        self.documents = 0
        self._since_document = 0
        self._barren_files: set[str] = set()  # shards ended barren since a usable line
        self._first_pass_files: dict[str, int] = {}  # shard -> usable lines, first reading
        self._first_pass_checked = False
        self._next_summary = 10
        self._examples: list[str] = []

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- events -------------------------------------------------------------------------

    def read(self) -> None:
        """One record read (a line of this host, a text block, an ArrayRecord record)."""
        with self._lock:
            self.records += 1
            self._since_document += 1
            if self._since_document >= MAX_RECORDS_WITHOUT_DOCUMENT:
                raise self.error(f"{self._since_document:,} records in a row gave no document")

    def skip(self, reason: str, where: str) -> None:
        """One record (or, for corrupt_files, a file) skipped; logged, rate limited."""
        with self._lock:
            self.skips.record(reason, where, log=False)
            count = getattr(self.skips, reason)
            if len(self._examples) < 3:
                self._examples.append(f"{where} ({reason})")
            if count <= _FIRST_WARNINGS:
                later = "; later ones are counted, not named" if count == _FIRST_WARNINGS else ""
                logging.warning("Skipped record (%s, %d so far): %s%s", reason, count, where, later)
            if self.skips.total() >= self._next_summary:
                self._next_summary *= 10
                logging.warning("%s: %s", self.what, self._summary())
            skipped = self.skips.records()
            if self.records < MIN_RECORDS_FOR_FRACTION:
                return
            if self.lost_share:  # lost: in the unreadable files, or skipped among the rest
                share = 1 - (1 - self.lost_share) * (1 - skipped / self.records)
                too_many = share > self.max_skipped_fraction
                with_files = f" ({share:.1%} with the records of the unreadable files)"
            else:
                too_many = skipped > self.max_skipped_fraction * self.records
                with_files = ""
            if too_many:
                raise self.error(
                    f"{skipped / self.records:.1%} of the records read were skipped{with_files}, "
                    f"more than config.data.max_skipped_fraction={self.max_skipped_fraction} "
                    "(raise it to accept this data)"
                )

    def files_lost(self, lost_records: int, split_records: int, what: str) -> None:
        """Files skipped when the split was opened (each already `skip`ped as corrupt_files)
        held `lost_records` of the split's `split_records` records.

        Raises `DataFaultError` when that share is over `max_skipped_fraction` (no minimum
        of records read: the counts are the files' own); otherwise the share counts with
        the records skipped later.
        """
        with self._lock:
            self.lost_share = lost_records / max(split_records, 1)
            if self.lost_share > self.max_skipped_fraction:
                raise self.error(
                    f"{what}, holding {lost_records:,} of the {split_records:,} records "
                    f"({self.lost_share:.1%}), more than config.data.max_skipped_fraction="
                    f"{self.max_skipped_fraction} (raise it to accept this data)"
                )

    def document(self) -> None:
        """A document left the reader."""
        with self._lock:
            self.documents += 1
            self._since_document = 0

    def line_used(self) -> None:
        """A jsonl shard gave a usable line."""
        if self._barren_files:  # read without the lock: a stale value costs one clear()
            with self._lock:
                self._barren_files.clear()

    def file_finished(self, path: str, used_lines: int, broken: bool = False) -> None:
        """A jsonl shard ended (or, `broken`, broke off) after `used_lines` usable lines.

        A shard that breaks off before its first usable line (not gzip, cut in its first
        block) is skipped whole: its share of this host's shards counts as lost, and more
        than `max_skipped_fraction` of them stops the run. A shard cut later keeps the
        lines read (C4 downloads are often cut short near their end).
        """
        with self._lock:
            if used_lines == 0:
                self._barren_files.add(path)
                if self.host_files and len(self._barren_files) >= self.host_files:
                    raise self.error(
                        f"every one of the {self.host_files} shard(s) of this host ended "
                        "without a usable line"
                    )
                if broken and self.host_files and path not in self._skipped_files:
                    self._skipped_files.add(path)
                    self.lost_share = len(self._skipped_files) / self.host_files
                    if self.lost_share > self.max_skipped_fraction:
                        raise self.error(
                            f"{len(self._skipped_files)} of the {self.host_files} shard(s) of "
                            f"this host ({self.lost_share:.1%}) are unreadable from their first "
                            f"line, more than config.data.max_skipped_fraction="
                            f"{self.max_skipped_fraction} (raise it to accept this data)"
                        )
            self._first_pass_files.setdefault(path, used_lines)
            first_pass_done = len(self._first_pass_files) == self.host_files
            if first_pass_done and self.split == "train" and not self._first_pass_checked:
                self._check_documents(sum(self._first_pass_files.values()))

    def pass_finished(self, documents_in_pass: int) -> None:
        """A whole pass over the split ended with `documents_in_pass` documents."""
        with self._lock:
            if documents_in_pass == 0:
                raise self.error("a whole pass over the data produced no document")
            if not self._first_pass_checked:
                self._check_documents(documents_in_pass)

    # -- messages and state -------------------------------------------------------------

    def _check_documents(self, documents: int) -> None:
        self._first_pass_checked = True
        if documents >= self.min_documents:
            return
        message = (
            f"the {self.split} split ({self.what}, {self.host}) holds {documents} document(s), "
            f"fewer than the {self.min_documents} the objective needs: next-sentence "
            "prediction draws its random next segment from another document, so every pair "
            "would be an actual next and its accuracy meaningless. Give more documents (the "
            "text source separates documents by blank lines)."
        )
        if self.split == "eval":
            raise DataFaultError(message)
        logging.warning("%s", message)

    def _summary(self) -> str:
        skips = ", ".join(f"{reason} {n:,}" for reason, n in self.skips.nonzero().items())
        examples = "; ".join(self._examples)
        return (
            f"read {self.records:,} records, {self.documents:,} documents; "
            f"skipped {skips or 'nothing'}" + (f"; first skipped: {examples}" if examples else "")
        )

    def error(self, reason: str) -> DataFaultError:
        """The error that stops the run, naming the split, `reason` and the counts."""
        return DataFaultError(
            f"Giving up on the {self.split} split ({self.what}, {self.host}): {reason}. "
            f"So far {self._summary()}."
        )

    def state(self) -> dict[str, int]:
        """The counts, JSON-friendly (part of the iterator state)."""
        with self._lock:
            return {"records": self.records, "documents": self.documents, **vars(self.skips)}

    def restore(self, state: Mapping[str, int] | None) -> None:
        self.reset()
        state = dict(state or {})
        self.records = int(state.pop("records", 0))
        self.documents = int(state.pop("documents", 0))
        reasons = {field.name for field in dataclasses.fields(SkipCounts)}
        self.skips = SkipCounts(**{k: int(v) for k, v in state.items() if k in reasons})
        while self._next_summary <= self.skips.total():  # no burst of summaries on resume
            self._next_summary *= 10


def _find_states(tree, found: list) -> list:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if key == STATE_KEY and isinstance(value, Mapping):
                found.append(value)
            else:
                _find_states(value, found)
    elif isinstance(tree, list | tuple):
        for value in tree:
            _find_states(value, found)
    return found


def _live_tallies(iterator) -> list[ReadTally]:
    """The tallies of the documents iterators under `iterator` in this process.

    Walks grain's iterator tree (`_parents`); the documents iterator exposes its tally
    as `read_tally`. Empty behind `mp_prefetch` (the readers run in worker processes).
    """
    found, stack, seen = [], [iterator], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        tally = getattr(node, "read_tally", None)
        if isinstance(tally, ReadTally):
            found.append(tally)
        else:
            stack.extend(getattr(node, "_parents", ()))
    return found


def skip_metrics(iterator) -> dict[str, float]:
    """This host's skip counts from a pipeline iterator, as scalars for the log line.

    Reads the live tallies of the readers in this process, else (grain workers) sums
    the `data_faults` entries of `iterator.get_state()`, which lag by the shuffle
    window (the state replays it on resume). Several readers (`input_shards`) are
    summed. Returns `data_skipped` (records and corrupt files) and
    `data_skipped/<reason>` for each reason seen; empty when nothing was skipped, so a
    clean run's log line stays as it was.
    """
    if not hasattr(iterator, "get_state"):  # e.g. a fine-tuning task's own reader
        return {}
    states = [tally.state() for tally in _live_tallies(iterator)]
    if not states:
        states = _find_states(iterator.get_state(), [])
    totals = SkipCounts()
    reasons = {field.name for field in dataclasses.fields(SkipCounts)}
    for state in states:
        for reason, count in state.items():
            if reason in reasons:
                setattr(totals, reason, getattr(totals, reason) + int(count))
    if not totals.total():
        return {}
    return {
        "data_skipped": float(totals.total()),
        **{f"data_skipped/{reason}": float(n) for reason, n in totals.nonzero().items()},
    }
