"""The T5 denoising functions over many equal-length chunks at once (2-D NumPy).

`T5Objective` cuts a group's concatenated tokens into chunks of one length; denoising them
one by one costs a dozen small NumPy calls per chunk. Here the masks of all chunks are
drawn in the per-chunk order (so every random draw is the one the per-chunk code makes)
and each function becomes a (values, keep) pair over [chunks, length]: the output of
chunk c is values[c][keep[c]]. Results equal `span_corruption.NOISE_FUNCTIONS` chunk by
chunk; only functions that draw no random numbers are here (those that do, such as
random-token replacement or permutation, interleave their draws with the masks'; the
objective runs them chunk by chunk).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from bert_jax.objectives import span_corruption

ROW_MASKS = ("spans", "iid")  # 'prefix' draws one bounded integer per chunk: chunk by chunk


def noise_masks(kind: str, count: int, length: int, config, rng) -> np.ndarray:
    """`count` noise masks, bool [count, length], exactly as `count` calls of the 1-D
    function draw them. `kind` is one of ROW_MASKS; `config` is the T5DataConfig."""
    if kind == "spans":
        return span_corruption.random_spans_noise_masks(
            count, length, config.noise_density, config.mean_noise_span_length, rng
        )
    if kind == "iid":  # one fill draws the same doubles as `count` fills of `length`
        return rng.random((count, length)) < config.noise_density
    raise ValueError(f"noise mask {kind!r} is drawn chunk by chunk, not in rows {ROW_MASKS}")


def _span_starts(mask: np.ndarray) -> np.ndarray:
    """True where a run of True values begins, along the last axis."""
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    return starts


def _unique_sentinel(tokens, mask, vocab: span_corruption.DenoisingVocab):
    first = _span_starts(mask)
    span_index = np.minimum(np.cumsum(first, axis=1) - 1, len(vocab.sentinel_ids) - 1)
    sentinels = vocab.sentinel_ids[np.maximum(span_index, 0)]  # [chunks, length]
    return np.where(first, sentinels, tokens), ~mask | first


def _same_sentinel(tokens, mask, vocab: span_corruption.DenoisingVocab):
    first = _span_starts(mask)
    return np.where(first, vocab.sentinel_ids[0], tokens), ~mask | first


def _nonnoise_unique_sentinel(tokens, mask, vocab):
    # A virtual non-noise token in front, as span_corruption.nonnoise_span_to_unique_sentinel does.
    count = len(tokens)
    with_virtual = np.concatenate([np.zeros((count, 1), tokens.dtype), tokens], axis=1)
    kept = np.concatenate([np.ones((count, 1), bool), ~mask], axis=1)
    return _unique_sentinel(with_virtual, kept, vocab)


# name -> (tokens [chunks, n], noise_mask [chunks, n], vocab) -> (values, keep), both
# [chunks, m]; None is "the original tokens".
ROW_FUNCTIONS: dict[str | None, Callable] = {
    "noise_span_to_unique_sentinel": _unique_sentinel,
    "nonnoise_span_to_unique_sentinel": _nonnoise_unique_sentinel,
    "noise_span_to_sentinel": _same_sentinel,
    "nonnoise_span_to_sentinel": lambda tokens, mask, vocab: _same_sentinel(tokens, ~mask, vocab),
    "drop_noise_tokens": lambda tokens, mask, vocab: (tokens, ~mask),
    "drop_nonnoise_tokens": lambda tokens, mask, vocab: (tokens, mask),
    "noise_token_to_sentinel": lambda tokens, mask, vocab: (
        np.where(mask, vocab.sentinel_ids[0], tokens),
        np.ones_like(mask),
    ),
    None: lambda tokens, mask, vocab: (tokens, np.ones_like(mask)),
}


def apply(name: str | None, tokens, mask, vocab) -> tuple[np.ndarray, np.ndarray]:
    """The named function on every chunk: (flat int32 outputs, chunk lengths)."""
    values, keep = ROW_FUNCTIONS[name](tokens, mask, vocab)
    return values[keep].astype(np.int32), keep.sum(axis=1)


def with_eos(flat: np.ndarray, lengths: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """Splits flat outputs into one array per chunk, each followed by EOS."""
    ends = np.cumsum(lengths)
    joined = np.insert(flat, ends, eos_id).astype(np.int32)  # [sum(lengths) + chunks]
    bounds = [0, *(ends + np.arange(1, len(ends) + 1)).tolist()]
    return [joined[start:end] for start, end in itertools.pairwise(bounds)]  # np.split is slower
