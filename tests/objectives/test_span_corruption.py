"""Noise masks and corruption functions of the T5 denoising family."""

import numpy as np
import pytest

from bert_jax.objectives import span_corruption

VOCAB_SIZE = 1100  # 1000 normal ids + 100 sentinels
VOCAB = span_corruption.DenoisingVocab(
    sentinel_ids=np.arange(VOCAB_SIZE - 1, VOCAB_SIZE - 101, -1, dtype=np.int32),
    random_token_low=6,
    random_token_high=1000,
)


def merge_sentinels(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Puts the target span that follows each sentinel back where the inputs hold it."""
    is_sentinel = targets >= VOCAB.random_token_high
    spans, current = {}, None
    for token, sentinel in zip(targets.tolist(), is_sentinel.tolist(), strict=True):
        if sentinel:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    merged = []
    for token in inputs.tolist():
        merged.extend(spans.get(token, []) if token >= VOCAB.random_token_high else [token])
    return np.array(merged, np.int32)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((512, 0.15, 3.0), (568, 114)),
        # The cases t5x/seqio test their port of random_spans_helper with.
        ((10, 0.0, 3.0), (9, 1)),
        ((10, 1.0, 1.0), (9, 19)),
        ((10, 0.15, 3.0), (10, 4)),
        ((10, 0.5, 3.0), (14, 10)),
    ],
)
def test_span_corruption_lengths_match_t5_helper(args, expected):
    assert span_corruption.span_corruption_lengths(*args) == expected


def test_span_corruption_lengths_fill_inputs_exactly():
    for inputs_length in (64, 128, 512, 1024):
        tokens_length, targets_length = span_corruption.span_corruption_lengths(
            inputs_length, 0.15, 3.0
        )
        mask = span_corruption.random_spans_noise_mask(
            tokens_length, 0.15, 3.0, np.random.default_rng(0)
        )
        tokens = np.arange(6, 6 + tokens_length, dtype=np.int32)
        inputs = span_corruption.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
        targets = span_corruption.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB)
        assert (len(inputs) + 1, len(targets) + 1) == (inputs_length, targets_length)


def test_random_spans_mask_structure():
    rng = np.random.default_rng(0)
    settings = [(n, 0.15, 3.0) for n in (1, 2, 3, 17, 568)] + [(10, 0.9, 1.0), (10, 0.5, 0.5)]
    for length, density, mean_span in settings:  # the last two would fail in T5
        mask = span_corruption.random_spans_noise_mask(length, density, mean_span, rng)
        assert mask.shape == (length,) and mask.dtype == bool
        if length >= 2:
            num_noise, num_spans = span_corruption.random_spans_counts(length, density, mean_span)
            assert not mask[0]  # starts with non-noise
            assert mask.sum() == num_noise
            assert int(np.sum(mask[1:] & ~mask[:-1])) == num_spans


@pytest.mark.parametrize(
    "density, mean_span", [(0.15, 3.0), (0.15, 2.0), (0.15, 5.0), (0.15, 10.0), (0.5, 3.0)]
)
def test_random_spans_density_and_span_length(density, mean_span):
    rng = np.random.default_rng(1)
    masks = [
        span_corruption.random_spans_noise_mask(n, density, mean_span, rng) for n in range(300, 700)
    ]
    noise = sum(int(m.sum()) for m in masks)
    spans = sum(int(np.sum(m[1:] & ~m[:-1])) for m in masks)
    tokens = sum(len(m) for m in masks)
    assert noise / tokens == pytest.approx(density, rel=0.02)
    assert noise / spans == pytest.approx(mean_span, rel=0.02)


def test_random_spans_are_uniform_inside_and_end_with_noise():
    # As in T5, spans alternate non-noise/noise from the first token, so the first token
    # is never noise and the last always is; positions in between are equally likely.
    rng = np.random.default_rng(2)
    hits = np.mean(
        [span_corruption.random_spans_noise_mask(100, 0.15, 3.0, rng) for _ in range(4000)], 0
    )
    assert hits[0] == 0 and hits[-1] == 1
    assert np.abs(hits[10:90] - hits[10:90].mean()).max() < 0.02


def test_iid_noise_mask_density_and_runs():
    mask = span_corruption.iid_noise_mask(400_000, 0.15, np.random.default_rng(3))
    assert mask.mean() == pytest.approx(0.15, rel=0.02)
    runs = int(mask[0]) + int(np.sum(mask[1:] & ~mask[:-1]))
    assert mask.sum() / runs == pytest.approx(1 / 0.85, rel=0.02)  # geometric run length


def test_prefix_noise_mask_is_a_prefix_of_uniform_length():
    rng = np.random.default_rng(4)
    masks = [span_corruption.prefix_noise_mask(10, rng) for _ in range(2000)]
    prefix_lengths = np.array([m.sum() for m in masks])
    assert all(
        np.array_equal(m, np.arange(10) < k) for m, k in zip(masks, prefix_lengths, strict=True)
    )
    assert set(prefix_lengths.tolist()) == set(range(1, 10))


def test_unique_sentinels_worked_example():
    # T5's docstring example: "We hold X to be Y that" -> "X these truths Y self evident Z".
    tokens = np.array([9, 10, 11, 12, 13, 14, 15], np.int32)
    mask = np.array([0, 1, 1, 0, 0, 1, 0], bool)
    s0, s1, s2 = VOCAB_SIZE - 1, VOCAB_SIZE - 2, VOCAB_SIZE - 3
    inputs = span_corruption.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
    targets = span_corruption.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB)
    assert inputs.tolist() == [9, s0, 12, 13, s1, 15]
    assert targets.tolist() == [s0, 10, 11, s1, 14, s2]
    assert span_corruption.noise_span_to_sentinel(tokens, mask, VOCAB).tolist() == [
        9,
        s0,
        12,
        13,
        s0,
        15,
    ]
    assert inputs.dtype == targets.dtype == np.int32


def test_targets_stay_aligned_when_noise_comes_first():
    # i.i.d. noise can hit the first token; T5's code would then number the target
    # sentinels one off from the inputs'. Ours put <extra_id_0> first.
    tokens = np.array([9, 10, 11, 12, 13], np.int32)
    mask = np.array([1, 1, 0, 1, 0], bool)
    s0, s1, s2 = VOCAB_SIZE - 1, VOCAB_SIZE - 2, VOCAB_SIZE - 3
    inputs = span_corruption.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
    targets = span_corruption.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB)
    assert inputs.tolist() == [s0, 11, s1, 13]
    assert targets.tolist() == [s0, 9, 10, s1, 12, s2]
    assert np.array_equal(merge_sentinels(inputs, targets), tokens)


def test_span_corruption_reconstructs_and_counts_sentinels_down():
    rng = np.random.default_rng(5)
    for _ in range(200):
        tokens = rng.integers(6, 1000, 568).astype(np.int32)
        mask = span_corruption.random_spans_noise_mask(len(tokens), 0.15, 3.0, rng)
        inputs = span_corruption.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
        targets = span_corruption.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB)
        sentinels = inputs[inputs >= 1000]
        assert sentinels.tolist() == list(
            range(VOCAB_SIZE - 1, VOCAB_SIZE - 1 - len(sentinels), -1)
        )
        assert np.array_equal(merge_sentinels(inputs, targets), tokens)


def test_more_spans_than_sentinels_reuse_the_last():
    tokens = np.arange(6, 406, dtype=np.int32)
    mask = np.arange(400) % 2 == 1  # 200 noise spans, 100 sentinels
    inputs = span_corruption.noise_span_to_unique_sentinel(tokens, mask, VOCAB)
    sentinels = inputs[inputs >= 1000]
    assert sentinels.min() == VOCAB_SIZE - 100 and len(sentinels) == 200


def test_drop_functions_split_tokens_into_complements():
    tokens = np.arange(6, 26, dtype=np.int32)
    mask = span_corruption.iid_noise_mask(20, 0.3, np.random.default_rng(6))
    kept, dropped = (
        span_corruption.drop_noise_tokens(tokens, mask),
        span_corruption.drop_nonnoise_tokens(tokens, mask),
    )
    assert np.array_equal(kept, tokens[~mask]) and np.array_equal(dropped, tokens[mask])


def test_permute_noise_tokens_moves_only_noise():
    rng = np.random.default_rng(7)
    tokens = np.arange(6, 506, dtype=np.int32)
    mask = span_corruption.iid_noise_mask(500, 0.5, rng)
    permuted = span_corruption.permute_noise_tokens(tokens, mask, VOCAB, rng)
    assert np.array_equal(permuted[~mask], tokens[~mask])
    assert sorted(permuted[mask]) == sorted(tokens[mask])
    assert not np.array_equal(permuted[mask], tokens[mask])


def test_random_token_replacement_stays_in_normal_pieces():
    rng = np.random.default_rng(8)
    tokens = np.full(10_000, 7, np.int32)
    mask = span_corruption.iid_noise_mask(10_000, 0.5, rng)
    replaced = span_corruption.noise_token_to_random_token(tokens, mask, VOCAB, rng)
    assert np.all(replaced[~mask] == 7)
    assert replaced[mask].min() >= 6 and replaced[mask].max() < 1000
    assert len(np.unique(replaced[mask])) > 900


def test_bert_style_is_ninety_percent_sentinel_ten_percent_random():
    rng = np.random.default_rng(9)
    tokens = np.full(200_000, 7, np.int32)
    mask = span_corruption.iid_noise_mask(len(tokens), 0.15, rng)
    corrupted = span_corruption.noise_token_to_random_token_or_sentinel(tokens, mask, VOCAB, rng)
    assert np.all(corrupted[~mask] == 7)
    sentinel = corrupted[mask] == VOCAB_SIZE - 1
    assert sentinel.mean() == pytest.approx(0.9, rel=0.02)
    assert np.all((corrupted[mask][~sentinel] >= 6) & (corrupted[mask][~sentinel] < 1000))
    assert np.array_equal(
        span_corruption.noise_token_to_sentinel(tokens, mask, VOCAB)[mask],
        np.full(mask.sum(), VOCAB_SIZE - 1),
    )


@pytest.mark.parametrize("name", sorted(span_corruption.NOISE_FUNCTIONS))
def test_encoded_token_counts_count_outputs(name):
    rng = np.random.default_rng(10)
    for length in (1, 2, 50):
        tokens = rng.integers(6, 1000, length).astype(np.int32)
        mask = span_corruption.iid_noise_mask(length, 0.4, rng)
        output = span_corruption.NOISE_FUNCTIONS[name](tokens, mask, VOCAB, rng)
        assert output.dtype == np.int32
        assert len(output) == span_corruption.encoded_token_counts(name, mask).sum()


def test_masks_are_deterministic_in_the_seed():
    def draw(seed):
        return span_corruption.random_spans_noise_mask(568, 0.15, 3.0, np.random.default_rng(seed))

    assert np.array_equal(draw(11), draw(11))
    assert not np.array_equal(draw(11), draw(12))


@pytest.mark.parametrize("length", [190, 350, 390])
def test_noise_counts_round_in_float32_as_t5(length):
    # T5: tf.round(tf.cast(length, tf.float32) * noise_density), likewise for the spans.
    # In float64 these products fall just below .5 and lost one noise token and one span.
    noise = int(np.round(np.float32(length) * np.float32(0.15)))
    spans = int(np.round(np.float32(noise) / np.float32(3.0)))
    assert span_corruption.random_spans_counts(length, 0.15, 3.0) == (noise, spans)
    assert noise == round(length * 0.15) + 1 and spans == round(round(length * 0.15) / 3) + 1
    mask = span_corruption.random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(0))
    assert mask.sum() == noise and (mask & ~np.concatenate([[False], mask[:-1]])).sum() == spans


def test_masks_in_rows_are_the_masks_drawn_one_by_one():
    for length in (2, 3, 17, 141, 568):
        rows = span_corruption.random_spans_noise_masks(
            5, length, 0.15, 3.0, np.random.default_rng(4)
        )
        rng = np.random.default_rng(4)
        one_by_one = [
            span_corruption.random_spans_noise_mask(length, 0.15, 3.0, rng) for _ in range(5)
        ]
        np.testing.assert_array_equal(rows, np.stack(one_by_one))
