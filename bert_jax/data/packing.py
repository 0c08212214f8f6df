"""Pad or pack variable-length encoder-decoder examples into fixed-shape t5x features.

Input examples are {'inputs': int32 [n], 'targets': int32 [m]} (EOS already appended).
Output features use the t5x names:

  encoder_input_tokens   int32 [inputs_length]
  decoder_target_tokens  int32 [targets_length]
  decoder_input_tokens   int32 [targets_length]  targets shifted right, 0 starts each segment
  decoder_loss_weights   float32 [targets_length] 1 on real target tokens
  and, when packed: encoder_segment_ids, decoder_segment_ids (1, 2, ... per example, 0 on
  padding) and encoder_positions, decoder_positions (restarting at 0 in each example).

Packing is first-fit, in NumPy: examples are read in buffers of `PACK_BUFFER`, each
buffer is packed into rows (each example goes into the first of the open rows with room
for both its inputs and its targets; at most `num_packing_bins` rows are open, the oldest
is closed when a new one is needed) and the rows of a buffer are assembled with one
scatter per feature. The stage is a `window_shuffle.BufferedIterDataset`: its state (the
parent's state at the buffer start plus the rows emitted) restores exactly, in the same
checkpoint as the rest of the pipeline. It replaced grain's `FirstFitPackIterDataset`
(per-example Python over tree_map, about half of a T5 batch's time); rows now come out
in the order they were opened instead of grain's shuffled bins, and the window shuffle
downstream mixes them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import grain
import numpy as np

from bert_jax.data.window_shuffle import BufferedIterDataset

# Rows open at once: more rows waste less padding (more chances for a short example to fit).
DEFAULT_NUM_PACKING_BINS = 16
# Examples packed per buffer: rows still open at its end are emitted part-filled.
PACK_BUFFER = 1024


def make_decoder_inputs(targets: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    """Teacher-forcing decoder inputs: targets shifted right by one, 0 as the start token.

    With segment ids (packed rows) every segment starts with 0 instead of the previous
    segment's last token, as t5x's `make_autoregressive_inputs` does.

    Args:
        targets: int [..., length].
        segment_ids: int [..., length] or None for a single unpacked sequence.

    Returns:
        int32 [..., length].
    """
    shifted = np.zeros_like(targets, dtype=np.int32)
    shifted[..., 1:] = targets[..., :-1]
    if segment_ids is not None:
        continues_segment = np.zeros(segment_ids.shape, dtype=bool)
        continues_segment[..., 1:] = segment_ids[..., 1:] == segment_ids[..., :-1]
        shifted = np.where(continues_segment, shifted, 0).astype(np.int32)
    return shifted


def _check_fits(example: Mapping[str, np.ndarray], lengths: Mapping[str, int]) -> None:
    for key, length in lengths.items():
        if len(example[key]) == 0:
            # A packed decoder segment with no encoder tokens would attend to nothing.
            raise ValueError(
                f"bert_jax/data/packing.py: feature {key!r} is empty; every example needs at "
                "least its EOS"
            )
        if len(example[key]) > length:
            raise ValueError(
                f"bert_jax/data/packing.py: feature {key!r} has {len(example[key])} tokens, "
                f"more than its length {length}; the objective must produce examples that fit"
            )


def pad_example(example: Mapping[str, np.ndarray], lengths: Mapping[str, int]) -> dict:
    """One unpacked example -> t5x features padded with 0 to {'inputs': Li, 'targets': Lt}."""
    _check_fits(example, lengths)
    inputs = np.zeros(lengths["inputs"], np.int32)
    inputs[: len(example["inputs"])] = example["inputs"]
    targets = np.zeros(lengths["targets"], np.int32)
    num_targets = len(example["targets"])
    targets[:num_targets] = example["targets"]
    return {
        "encoder_input_tokens": inputs,
        "decoder_target_tokens": targets,
        # Plain shift, as t5x does without packing (the pad after EOS gets no loss weight).
        "decoder_input_tokens": make_decoder_inputs(targets),
        "decoder_loss_weights": (np.arange(lengths["targets"]) < num_targets).astype(np.float32),
    }


def packed_to_t5x_features(packed: Mapping[str, np.ndarray]) -> dict:
    """grain's packed row ('inputs', 'inputs_segment_ids', ...) -> t5x feature names."""
    decoder_segment_ids = packed["targets_segment_ids"].astype(np.int32)
    targets = packed["targets"].astype(np.int32)
    return {
        "encoder_input_tokens": packed["inputs"].astype(np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": make_decoder_inputs(targets, decoder_segment_ids),
        "decoder_loss_weights": (decoder_segment_ids > 0).astype(np.float32),
        "encoder_segment_ids": packed["inputs_segment_ids"].astype(np.int32),
        "decoder_segment_ids": decoder_segment_ids,
        "encoder_positions": packed["inputs_positions"].astype(np.int32),
        "decoder_positions": packed["targets_positions"].astype(np.int32),
    }


def pad_examples(examples: list, lengths: Mapping[str, int]):
    """A list of examples -> one block of padded t5x features ([examples, length] each)."""
    if not examples:
        return []
    padded = [pad_example(example, lengths) for example in examples]
    return {name: np.stack([row[name] for row in padded]) for name in padded[0]}


def pad_dataset(ds, lengths: Mapping[str, int], *, chunks: bool = False):
    """Pads every example of a grain Map/IterDataset to fixed lengths (t5x features).

    Args:
        ds: grain dataset of {'inputs', 'targets'} int32 1-D examples, or with chunks of
            lists of them (one block of padded rows out per list).
        lengths: {'inputs': inputs_length, 'targets': targets_length}.
    """
    pad = pad_examples if chunks else pad_example
    return ds.map(functools.partial(pad, lengths=dict(lengths)))


def pack_dataset(
    ds,
    lengths: Mapping[str, int],
    *,
    num_packing_bins: int = DEFAULT_NUM_PACKING_BINS,
    buffer_size: int = PACK_BUFFER,
    chunks: bool = False,
) -> grain.IterDataset:
    """Packs examples first-fit into rows of fixed lengths (t5x features with segments).

    Args:
        ds: grain Map/IterDataset of {'inputs', 'targets'} int32 1-D examples, each fitting.
        lengths: {'inputs': inputs_length, 'targets': targets_length}.
        num_packing_bins: rows open at once.
        buffer_size: examples packed together (see PACK_BUFFER).
        chunks: ds gives lists of examples (the same buffers are cut across them) and each
            buffer's rows come out as one block.

    Returns:
        A resumable grain IterDataset of packed rows (with chunks, blocks of them).
    """
    if isinstance(ds, grain.MapDataset):
        ds = ds.to_iter_dataset()
    lengths = {"inputs": int(lengths["inputs"]), "targets": int(lengths["targets"])}
    pack = _PackBuffer(lengths, num_packing_bins, as_block=chunks)
    return BufferedIterDataset(ds, buffer_size=buffer_size, transform=pack, chunks=chunks)


def first_fit(sizes: np.ndarray, capacity: tuple[int, int], max_open: int):
    """Row and segment (1, 2, ...) of each example under first-fit with `max_open` rows.

    Args:
        sizes: int [examples, 2], (inputs, targets) lengths.
        capacity: (inputs_length, targets_length).

    Returns:
        (row, segment, offsets, num_rows): row and segment int [examples], offsets
        int [examples, 2] (where the example starts in its row), the number of rows.
    """
    rooms: list[list[int]] = []  # per row: free inputs, free targets, examples so far
    open_rows: list[int] = []
    row_of, segment_of = np.zeros(len(sizes), np.int64), np.zeros(len(sizes), np.int64)
    offsets = np.zeros((len(sizes), 2), np.int64)
    for index, (size_inputs, size_targets) in enumerate(sizes.tolist()):
        row = next(
            (r for r in open_rows if rooms[r][0] >= size_inputs and rooms[r][1] >= size_targets),
            None,
        )
        if row is None:
            if len(open_rows) == max_open:
                open_rows.pop(0)
            row = len(rooms)
            rooms.append([capacity[0], capacity[1], 0])
            open_rows.append(row)
        room = rooms[row]
        offsets[index] = (capacity[0] - room[0], capacity[1] - room[1])
        room[0] -= size_inputs
        room[1] -= size_targets
        room[2] += 1
        row_of[index], segment_of[index] = row, room[2]
        if room[0] == 0 or room[1] == 0:  # full: nothing else fits (examples are non-empty)
            open_rows.remove(row)
    return row_of, segment_of, offsets, len(rooms)


class _PackBuffer:
    """Picklable transform: a buffer of examples -> its packed rows (t5x features)."""

    def __init__(self, lengths: Mapping[str, int], max_open: int, as_block: bool = False):
        self._lengths = dict(lengths)
        self._max_open = int(max_open)
        self._as_block = bool(as_block)

    def __call__(self, examples: list, buffer_index: int) -> list[dict]:
        del buffer_index  # packing draws no random numbers
        for example in examples:
            _check_fits(example, self._lengths)
        sizes = np.array([[len(e["inputs"]), len(e["targets"])] for e in examples])
        capacity = (self._lengths["inputs"], self._lengths["targets"])
        row_of, segment_of, offsets, num_rows = first_fit(sizes, capacity, self._max_open)
        packed = {}
        for side, key in enumerate(("inputs", "targets")):
            size = sizes[:, side]
            starts = np.cumsum(size) - size
            position = np.arange(size.sum()) - np.repeat(starts, size)  # [tokens]
            rows = np.repeat(row_of, size)
            columns = np.repeat(offsets[:, side], size) + position
            tokens = np.zeros((num_rows, capacity[side]), np.int32)  # [rows, length]
            tokens[rows, columns] = np.concatenate([e[key] for e in examples])
            segments, positions = np.zeros_like(tokens), np.zeros_like(tokens)
            segments[rows, columns] = np.repeat(segment_of, size)
            positions[rows, columns] = position
            packed.update(
                {key: tokens, f"{key}_segment_ids": segments, f"{key}_positions": positions}
            )
        features = packed_to_t5x_features(packed)  # every row at once
        if self._as_block:
            return [features]
        return [{name: values[row] for name, values in features.items()} for row in range(num_rows)]

    def __repr__(self) -> str:
        return f"first-fit packing {self._lengths}"
