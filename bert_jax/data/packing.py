"""Pad or pack variable-length encoder-decoder examples into fixed-shape t5x features.

Input examples are {'inputs': int32 [n], 'targets': int32 [m]} (EOS already appended).
Output features use the t5x names:

  encoder_input_tokens   int32 [inputs_length]
  decoder_target_tokens  int32 [targets_length]
  decoder_input_tokens   int32 [targets_length]  targets shifted right, 0 starts each segment
  decoder_loss_weights   float32 [targets_length] 1 on real target tokens
  and, when packed: encoder_segment_ids, decoder_segment_ids (1, 2, ... per example, 0 on
  padding) and encoder_positions, decoder_positions (restarting at 0 in each example).

Packing is grain's `FirstFitPackIterDataset`: it packs several features at once with one
length each, emits segment ids and positions, and its iterator state (the parent's state
at the last emitted packed batch plus the row within it) restores exactly, so it lives in
the same checkpoint as the rest of the pipeline.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import grain
import numpy as np

# Bins filled at once: more bins waste less padding but hold more examples in memory.
DEFAULT_NUM_PACKING_BINS = 16


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


def pad_dataset(ds, lengths: Mapping[str, int]):
    """Pads every example of a grain Map/IterDataset to fixed lengths (t5x features).

    Args:
        ds: grain dataset of {'inputs', 'targets'} int32 1-D examples.
        lengths: {'inputs': inputs_length, 'targets': targets_length}.
    """
    return ds.map(functools.partial(pad_example, lengths=dict(lengths)))


def pack_dataset(
    ds,
    lengths: Mapping[str, int],
    *,
    num_packing_bins: int = DEFAULT_NUM_PACKING_BINS,
    seed: int = 0,
) -> grain.IterDataset:
    """Packs examples first-fit into rows of fixed lengths (t5x features with segments).

    Args:
        ds: grain Map/IterDataset of {'inputs', 'targets'} int32 1-D examples, each fitting.
        lengths: {'inputs': inputs_length, 'targets': targets_length}.
        num_packing_bins: rows filled at once before they are emitted.
        seed: seeds the order in which the filled rows are emitted.

    Returns:
        A resumable grain IterDataset of packed rows.
    """
    if isinstance(ds, grain.MapDataset):
        ds = ds.to_iter_dataset()
    lengths = {"inputs": int(lengths["inputs"]), "targets": int(lengths["targets"])}
    ds = ds.map(functools.partial(_checked_pair, lengths=lengths))
    packed = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=True
    )
    return packed.map(packed_to_t5x_features)


def _checked_pair(example: Mapping[str, np.ndarray], lengths: Mapping[str, int]) -> dict:
    """Keeps only the packed features, failing clearly (not inside grain) if one is too long."""
    _check_fits(example, lengths)
    return {"inputs": example["inputs"], "targets": example["targets"]}
