"""The T5 denoising family in NumPy: noise masks and the functions that apply them.

Semantics follow `t5/data/preprocessors.py` of google-research/text-to-text-transfer-transformer
(`random_spans_noise_mask`, `noise_span_to_unique_sentinel`, ...), written as vectorised
NumPy over 1-D int32 token arrays. A noise mask says which tokens are corrupted; an
"inputs function" turns (tokens, mask) into the encoder input and a "targets function"
into the decoder target (None: the original tokens). Sentinels count down from the end
of the vocabulary: the i-th noise span becomes <extra_id_i> = vocab_size - 1 - i.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class DenoisingVocab:
    """The ids the corruption functions need (picklable, unlike a tokenizer).

    Attributes:
        sentinel_ids: int32 [num_sentinels]; sentinel_ids[i] is <extra_id_i>.
        random_token_low: first id a random replacement may take (first normal piece).
        random_token_high: one past the last (sentencepiece size, so never a sentinel).
    """

    sentinel_ids: np.ndarray
    random_token_low: int
    random_token_high: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> DenoisingVocab:
        """Reads sentinels and the normal-piece range from a `data.tokenizer.Tokenizer`."""
        extra_ids = getattr(tokenizer, "extra_ids", 0)
        if extra_ids < 1:
            raise ValueError(
                "T5 objectives need sentinel ids: build the Tokenizer with extra_ids > 0 "
                f"(got extra_ids={extra_ids})"
            )
        sentinels = np.array([tokenizer.sentinel_id(i) for i in range(extra_ids)], np.int32)
        return cls(sentinels, tokenizer.first_normal_id, tokenizer.vocab_size - extra_ids)


# ------------------------------------------------------------------------------- lengths


def random_spans_counts(length: int, noise_density: float, mean_noise_span_length: float):
    """Numbers of noise tokens and noise spans `random_spans_noise_mask` uses.

    Both are deterministic in the length: num_noise = round(length * density) clipped to
    [1, length - 1]; num_spans = max(1, round(num_noise / mean_noise_span_length)).
    Both roundings are computed in float32, as T5's `random_spans_noise_mask` does in
    TensorFlow: in float64, 190 * 0.15 = 28.499999... rounds to 28 where T5 gets 29.
    Lengths below 2 are treated as 2 (the mask is then cut back), as in T5. Where T5
    would fail (more spans than noise or non-noise tokens) the span count is capped.
    """
    length = max(length, 2)
    noise = np.round(np.float32(length) * np.float32(noise_density))
    num_noise_tokens = min(max(int(noise), 1), length - 1)
    spans = np.round(np.float32(num_noise_tokens) / np.float32(mean_noise_span_length))
    num_noise_spans = max(int(spans), 1)
    num_noise_spans = min(num_noise_spans, num_noise_tokens, length - num_noise_tokens)
    return num_noise_tokens, num_noise_spans


def span_corruption_lengths(
    inputs_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """Raw chunk length and targets length so span-corrupted inputs fill `inputs_length`.

    T5's `random_spans_helper`: the longest raw chunk whose encoded inputs (non-noise
    tokens, one sentinel per noise span, EOS) fit `inputs_length`, and the encoded length
    of its targets (noise tokens, one sentinel per span, EOS). (512, 0.15, 3.0) -> (568, 114).

    Returns:
        (tokens_length, targets_length).
    """

    def encoded_lengths(tokens_length):
        # Unclipped counts, exactly as T5's helper (the mask clips them for tiny lengths).
        noise = int(round(tokens_length * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        inputs = tokens_length - noise + spans * extra_tokens_per_span_inputs + 1
        return inputs, noise + spans * extra_tokens_per_span_targets + 1

    tokens_length = inputs_length - 1
    while encoded_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    encoded_inputs, targets_length = encoded_lengths(tokens_length)
    # T5's rounding hack: at 50% noise keep targets at the (usually round) inputs length.
    if noise_density == 0.5 and targets_length > encoded_inputs:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


# ----------------------------------------------------------------------------- noise masks


def _segment_cuts(num_items: int, num_segments: int, rng) -> np.ndarray:
    """Sorted cuts of a uniform composition of num_items into num_segments positive parts:
    int [num_segments - 1], values in [1, num_items)."""
    return np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False)) + 1


def random_spans_noise_masks(
    count: int,
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """`count` masks of noise in random spans, alternating non-noise / noise and starting
    with non-noise. Row i equals the i-th of `count` calls of `random_spans_noise_mask`.

    The token and span counts are fixed by `random_spans_counts`; subject to them every
    mask is equally likely (span lengths are uniform random compositions).

    Returns:
        bool [count, length].
    """
    padded_length = max(length, 2)
    num_noise, num_spans = random_spans_counts(length, noise_density, mean_noise_span_length)
    cuts = np.zeros((2, count, num_spans - 1), np.int64)  # noise, non-noise
    for row in range(count):  # one draw after the other, in T5's order: noise, non-noise
        cuts[0, row] = _segment_cuts(num_noise, num_spans, rng)
        cuts[1, row] = _segment_cuts(padded_length - num_noise, num_spans, rng)
    rows = np.arange(count)[:, None]
    # Noise span j covers [nonnoise_end[j] + noise_start[j], nonnoise_end[j] + noise_end[j]).
    last_nonnoise = np.full((count, 1), padded_length - num_noise)
    nonnoise_end = np.concatenate([cuts[1], last_nonnoise], axis=1)  # [count, spans]
    noise_bounds = cuts[0]
    noise_start = np.concatenate([np.zeros((count, 1), np.int64), noise_bounds], axis=1)
    noise_end = np.concatenate([noise_bounds, np.full((count, 1), num_noise)], axis=1)
    steps = np.zeros((count, padded_length + 1), np.int32)
    steps[rows, nonnoise_end + noise_start] = 1
    steps[rows, nonnoise_end + noise_end] = -1
    return (np.cumsum(steps, axis=1)[:, :length] > 0).reshape(count, length)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """One mask of `random_spans_noise_masks`. Returns bool [length]."""
    return random_spans_noise_masks(1, length, noise_density, mean_noise_span_length, rng)[0]


def iid_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    """Each token is noise independently with probability noise_density. bool [length]."""
    return rng.random(length) < noise_density


def prefix_noise_mask(length: int, rng: np.random.Generator) -> np.ndarray:
    """T5's random_prefix_noise_mask: a prefix of uniform length in [1, length - 1] is noise.

    With drop_nonnoise_tokens as inputs and drop_noise_tokens as targets this is prefix LM.
    """
    max_prefix = length - 1
    prefix_length = rng.integers(min(max_prefix, 1), max_prefix + 1)
    return np.arange(length) < prefix_length


# ---------------------------------------------------- inputs / targets from (tokens, mask)


def _span_starts(mask: np.ndarray) -> np.ndarray:
    """True where a run of True values begins."""
    previous = np.concatenate([[False], mask[:-1]])
    return mask & ~previous


def noise_span_to_unique_sentinel(tokens, noise_mask, vocab: DenoisingVocab, rng=None):
    """Each run of noise tokens becomes one sentinel, <extra_id_0>, <extra_id_1>, ... in order.

    Runs beyond the number of sentinels reuse the last one (T5 would silently spill into
    normal pieces).
    """
    del rng
    first_noise = _span_starts(noise_mask)
    span_index = np.minimum(np.cumsum(first_noise) - 1, len(vocab.sentinel_ids) - 1)
    sentinels = vocab.sentinel_ids[np.maximum(span_index, 0)]
    corrupted = np.where(first_noise, sentinels, tokens)
    return corrupted[~noise_mask | first_noise].astype(np.int32)


def nonnoise_span_to_unique_sentinel(tokens, noise_mask, vocab: DenoisingVocab, rng=None):
    """Targets for span corruption: <extra_id_i> followed by the tokens of noise span i.

    T5 writes this as "each non-noise run becomes the next sentinel", which lines up with
    the inputs' sentinels only when the chunk starts with non-noise (always true for random
    spans). When i.i.d. noise hits the first token T5's numbering is off by one; a virtual
    non-noise token in front keeps the targets aligned with the inputs in every case.
    """
    if len(tokens) == 0:
        return np.zeros(0, np.int32)
    with_virtual = np.concatenate([np.zeros(1, np.int32), tokens])
    kept_with_virtual = np.concatenate([[True], ~noise_mask])
    return noise_span_to_unique_sentinel(with_virtual, kept_with_virtual, vocab, rng)


def noise_span_to_sentinel(tokens, noise_mask, vocab: DenoisingVocab, rng=None):
    """Each run of noise tokens becomes the same sentinel <extra_id_0>."""
    del rng
    first_noise = _span_starts(noise_mask)
    corrupted = np.where(first_noise, vocab.sentinel_ids[0], tokens)
    return corrupted[~noise_mask | first_noise].astype(np.int32)


def nonnoise_span_to_sentinel(tokens, noise_mask, vocab: DenoisingVocab, rng=None):
    """Each run of non-noise tokens becomes the same sentinel <extra_id_0>."""
    return noise_span_to_sentinel(tokens, ~noise_mask, vocab, rng)


def drop_noise_tokens(tokens, noise_mask, vocab=None, rng=None):
    """Removes the noise tokens."""
    return tokens[~noise_mask].astype(np.int32)


def drop_nonnoise_tokens(tokens, noise_mask, vocab=None, rng=None):
    """Keeps only the noise tokens."""
    return tokens[noise_mask].astype(np.int32)


def permute_noise_tokens(tokens, noise_mask, vocab, rng: np.random.Generator):
    """Shuffles the noise tokens among their own positions; the rest stay in place."""
    permuted = np.array(tokens, dtype=np.int32)
    permuted[noise_mask] = rng.permutation(permuted[noise_mask])
    return permuted


def noise_token_to_sentinel(tokens, noise_mask, vocab: DenoisingVocab, rng=None):
    """Every noise token becomes <extra_id_0> (MASS-style masking)."""
    return np.where(noise_mask, vocab.sentinel_ids[0], tokens).astype(np.int32)


def noise_token_to_random_token(tokens, noise_mask, vocab: DenoisingVocab, rng):
    """Every noise token becomes a uniformly random normal piece."""
    replaced = np.array(tokens, dtype=np.int32)
    count = int(noise_mask.sum())
    replaced[noise_mask] = rng.integers(vocab.random_token_low, vocab.random_token_high, count)
    return replaced


def noise_token_to_random_token_or_sentinel(
    tokens, noise_mask, vocab: DenoisingVocab, rng: np.random.Generator, random_prob: float = 0.1
):
    """BERT-style: each noise token becomes a random piece (random_prob) or <extra_id_0>."""
    use_random = rng.random(len(tokens)) < random_prob
    replaced = noise_token_to_sentinel(tokens, noise_mask & ~use_random, vocab)
    return noise_token_to_random_token(replaced, noise_mask & use_random, vocab, rng)


# Name -> function, for configs. Each takes (tokens, noise_mask, vocab, rng).
NOISE_FUNCTIONS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        noise_span_to_unique_sentinel,
        nonnoise_span_to_unique_sentinel,
        noise_span_to_sentinel,
        nonnoise_span_to_sentinel,
        drop_noise_tokens,
        drop_nonnoise_tokens,
        permute_noise_tokens,
        noise_token_to_sentinel,
        noise_token_to_random_token,
        noise_token_to_random_token_or_sentinel,
    )
}


def encoded_token_counts(fn_name: str | None, noise_mask: np.ndarray) -> np.ndarray:
    """How many output tokens each source token produces under the named function.

    Its cumsum is the encoded length of every prefix of a chunk, which is how an
    over-long example is cut to fit (see `T5Objective`). None means "the original tokens".

    Returns:
        int32 [length].
    """
    if fn_name in ("noise_span_to_unique_sentinel", "noise_span_to_sentinel"):
        counts = ~noise_mask | _span_starts(noise_mask)
    elif fn_name == "nonnoise_span_to_unique_sentinel":
        counts = (noise_mask | _span_starts(~noise_mask)).astype(np.int32)
        counts[:1] += noise_mask[:1]  # the leading <extra_id_0> when noise comes first
    elif fn_name == "nonnoise_span_to_sentinel":
        counts = noise_mask | _span_starts(~noise_mask)
    elif fn_name == "drop_noise_tokens":
        counts = ~noise_mask
    elif fn_name == "drop_nonnoise_tokens":
        counts = noise_mask
    else:  # token-for-token functions, or the original tokens
        counts = np.ones_like(noise_mask)
    return counts.astype(np.int32)
