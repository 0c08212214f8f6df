"""Buffered stages: read N items, transform the buffer in NumPy, emit; checkpointable.

Three pipeline stages have this shape: the window shuffle (a seeded permutation of each
window), T5 packing (first-fit over a buffer of examples, rows assembled at once) and
batching. `BufferedIterDataset` does the bookkeeping for all three. Its state is the
parent's state at the start of the current buffer, the buffer's index and how many
outputs of it were emitted; restoring re-reads that buffer and re-applies the
(deterministic) transform.

With `chunks=True` every parent element is a *chunk* of items: a list of examples, or a
block (a dict of arrays sharing their leading axis, one row per example). Buffers still
hold exactly `buffer_size` items, cut across chunk boundaries, so a chunked stage gives
the same items in the same buffers as the same stage over one item per element, without
a Python hop (and grain's per-element hooks) for every example. The state then also
holds how many items of the chunk that opens the buffer earlier buffers took.

grain's `WindowShuffleIterDataset` computes each position's source with a Python call to
`index_shuffle` (a 4-round Feistel network, ~15 us an element, ~30 ms per 2048-example
window) plus per-element stats hooks; here a window is permuted by one
`np.random.default_rng((seed, window_index)).permutation(n)` call. Same contract (window
k holds parent elements [k * size, (k + 1) * size), each emitted once), another
permutation: the example order differs from grain's for the same seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import grain
import numpy as np


def chunk_length(chunk) -> int:
    """Items in a chunk: a list's length, or a block's rows."""
    if isinstance(chunk, dict):
        return len(next(iter(chunk.values()))) if chunk else 0
    return len(chunk)


def _cut(chunk, start: int, stop: int):
    if isinstance(chunk, dict):
        return {name: values[start:stop] for name, values in chunk.items()}
    return chunk[start:stop]


def join_chunks(pieces: list):
    """Pieces of chunks -> one chunk (lists joined, blocks concatenated row-wise)."""
    if not pieces:
        return []
    if not isinstance(pieces[0], dict):
        return [item for piece in pieces for item in piece]
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


class _BufferedIterator(grain.DatasetIterator):
    def __init__(self, parent, buffer_size: int, transform: Callable, chunks: bool):
        super().__init__(parent)
        self._buffer_size = buffer_size
        self._transform = transform
        self._chunks = chunks
        self._buffer_index = 0
        self._position = 0  # outputs of the current buffer already emitted
        self._outputs: list = []
        self._chunk = None  # chunks: the parent chunk being read, None between chunks
        self._offset = 0  # its items taken by earlier buffers
        self._chunk_state = None  # the parent's state before self._chunk
        self._buffer_start = (self._parent.get_state(), 0)
        self._parent_exhausted = False

    def _take_items(self) -> list:
        items = []
        for _ in range(self._buffer_size):
            try:
                items.append(next(self._parent))
            except StopIteration:
                self._parent_exhausted = True
                break
        return items

    def _take_chunks(self):
        pieces, wanted = [], self._buffer_size
        while wanted:
            if self._chunk is None:
                self._chunk_state = self._parent.get_state()
                try:
                    self._chunk = next(self._parent)
                except StopIteration:
                    self._parent_exhausted = True
                    break
            length = chunk_length(self._chunk)
            stop = min(length, self._offset + wanted)
            if stop > self._offset:
                pieces.append(_cut(self._chunk, self._offset, stop))
                wanted -= stop - self._offset
            if stop == length:
                self._chunk, self._offset = None, 0
            else:
                self._offset = stop
        return join_chunks(pieces)

    def _fill(self) -> None:
        buffer = self._take_chunks() if self._chunks else self._take_items()
        self._outputs = self._transform(buffer, self._buffer_index) if chunk_length(buffer) else []

    def _start_state(self):
        if self._chunk is not None:
            return (self._chunk_state, self._offset)
        return (self._parent.get_state(), self._offset)

    def __next__(self):
        while self._position == len(self._outputs):
            if self._parent_exhausted:
                raise StopIteration
            if self._outputs:  # the previous buffer is used up: start the next one
                self._buffer_index += 1
            self._buffer_start = self._start_state()
            self._position = 0
            self._fill()
        output = self._outputs[self._position]
        self._outputs[self._position] = None  # let it go: buffers hold whole examples
        self._position += 1
        return output

    def get_state(self):
        state = {
            "parent_buffer_start_state": copy.deepcopy(self._buffer_start[0]),
            "buffer_index": self._buffer_index,
            "position": self._position,
        }
        if self._chunks:
            state["parent_chunk_offset"] = self._buffer_start[1]
        return state

    def set_state(self, state):
        start = copy.deepcopy(state["parent_buffer_start_state"])
        offset = int(state.get("parent_chunk_offset", 0))
        self._buffer_start = (start, offset)
        self._parent.set_state(start)
        self._chunk, self._offset, self._chunk_state = None, offset, start
        self._buffer_index = int(state["buffer_index"])
        self._parent_exhausted = False
        self._fill()
        self._position = min(int(state["position"]), len(self._outputs))
        self._outputs[: self._position] = [None] * self._position


class BufferedIterDataset(grain.IterDataset):
    """Applies `transform(buffer, buffer_index) -> outputs` to successive buffers.

    Args:
      parent: the IterDataset to read.
      buffer_size: items per buffer (the last one may be shorter).
      transform: deterministic and picklable (grain workers pickle the pipeline); gets a
        list of items, or with chunks a list or a block (as the chunks are).
      chunks: each parent element is a chunk of items (a list, or a block of rows).
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        buffer_size: int,
        transform: Callable,
        chunks: bool = False,
    ):
        super().__init__(parent)
        if buffer_size < 1:
            raise ValueError(f"buffer size must be >= 1, got {buffer_size}")
        self._buffer_size = int(buffer_size)
        self._transform = transform
        self._chunks = bool(chunks)

    def __iter__(self) -> _BufferedIterator:
        return _BufferedIterator(
            self._parent.__iter__(), self._buffer_size, self._transform, self._chunks
        )

    def __str__(self) -> str:
        return f"BufferedIterDataset({self._transform}, buffer_size={self._buffer_size})"


class _PermuteWindow:
    def __init__(self, seed: int, chunks: bool = False):
        self._seed = int(seed)
        self._chunks = bool(chunks)

    def __call__(self, window, window_index: int) -> list:
        order = np.random.default_rng((self._seed, window_index)).permutation(chunk_length(window))
        if isinstance(window, dict):  # a block
            return [{name: values[order] for name, values in window.items()}]
        permuted = [window[i] for i in order]
        return [permuted] if self._chunks else permuted

    def __repr__(self) -> str:
        return f"window shuffle (seed {self._seed})"


def window_shuffle(parent: grain.IterDataset, *, window_size: int, seed: int, chunks: bool = False):
    """Emits each window of `window_size` parent items in a seeded random order.

    Args:
      parent: the IterDataset to shuffle.
      window_size: items per window (config.data.shuffle_buffer).
      seed: with the window index, seeds each window's permutation.
      chunks: the parent's elements are chunks (lists or blocks): each window comes out as
        one chunk of the same kind, permuted.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    return BufferedIterDataset(
        parent, buffer_size=window_size, transform=_PermuteWindow(seed, chunks), chunks=chunks
    )


class _StackBatch:
    def __init__(self, batch_size: int):
        self._batch_size = int(batch_size)

    def __call__(self, rows, batch_index: int) -> list:
        del batch_index
        if chunk_length(rows) < self._batch_size:
            return []  # the last, partial batch is dropped
        if isinstance(rows, dict):
            return [rows]
        return [{name: np.stack([row[name] for row in rows]) for name in rows[0]}]

    def __repr__(self) -> str:
        return f"batch of {self._batch_size}"


def batch_rows(parent: grain.IterDataset, batch_size: int) -> BufferedIterDataset:
    """Chunks (blocks of rows, or lists of examples) -> batches of `batch_size` rows.

    The same batches as grain's `batch(batch_size, drop_remainder=True)` over the items
    one by one (np.stack of each feature), cut from the blocks without a per-row hop.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return BufferedIterDataset(
        parent, buffer_size=batch_size, transform=_StackBatch(batch_size), chunks=True
    )
