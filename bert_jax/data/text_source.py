"""Plain text files as documents: one document per blank-line-separated block.

`TextBlocksSource` indexes the blocks by byte offsets and reads them on demand. A file
that cannot be read, or is not text at all (gzip-compressed, or holding NUL bytes: a
binary), is skipped and counted as a corrupt file, not decoded into garbage.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from bert_jax.data.faults import ReadTally

_GZIP_MAGIC = b"\x1f\x8b"


def _not_text(data: bytes) -> str | None:
    """Why the bytes of a file are not plain text, or None if they are."""
    if data.startswith(_GZIP_MAGIC):
        return "gzip-compressed, not plain text (C4 json.gz shards want source=jsonl)"
    if b"\0" in data[: 1 << 16]:
        return "binary (NUL bytes), not plain text"
    return None


class TextBlocksSource(Sequence[str]):
    """Random access to the blank-line-separated blocks of plain text files.

    Only (file, start, end) byte offsets are kept in memory; texts are read on
    demand with `os.pread`, which is safe from grain's reader threads.
    Invalid UTF-8 is replaced (U+FFFD) and reported once per file. Unreadable and
    non-text files are skipped, logged and counted in `tally` (as corrupt_files).
    """

    def __init__(self, paths: Sequence[str], tally: ReadTally | None = None):
        self._paths = list(paths)
        spans = []
        for file_index, path in enumerate(self._paths):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as error:
                self._skip_file(tally, f"{path} unreadable: {error}")
                continue
            reason = _not_text(data)
            if reason is not None:
                self._skip_file(tally, f"{path} is {reason}")
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                logging.warning("%s: invalid UTF-8 at byte %d, replaced.", path, error.start)
            spans.extend((file_index, start, end) for start, end in _block_spans(data))
        self._spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)  # [documents, 3]
        self._fds: dict[int, int] = {}

    @staticmethod
    def _skip_file(tally: ReadTally | None, where: str) -> None:
        if tally is not None:
            tally.skip("corrupt_files", where)
        else:
            logging.warning("Skipped file: %s", where)

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


def _block_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the non-blank blocks of `data`."""
    spans = []
    start, end, position = None, 0, 0
    for line in data.splitlines(keepends=True):
        if line.strip():
            start = position if start is None else start
            end = position + len(line)
        elif start is not None:
            spans.append((start, end))
            start = None
        position += len(line)
    if start is not None:
        spans.append((start, end))
    return spans
