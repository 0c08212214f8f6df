"""Masked-LM corruption statistics on a large synthetic batch."""

import numpy as np
import pytest

from bert_jax.objectives.masking import _sample_span_lengths, mask_tokens

PAD, CLS, SEP, MASK = 0, 3, 4, 5
SPECIAL_IDS = np.arange(6)
VOCAB_SIZE = 30_000
NUM_ROWS, LENGTH = 4000, 128


@pytest.fixture(scope="module")
def word_start():
    table = np.random.default_rng(0).random(VOCAB_SIZE) < 0.6  # ~1.7 pieces per word
    table[SPECIAL_IDS] = True
    return table


@pytest.fixture(scope="module")
def input_ids():
    """[CLS] A [SEP] B [SEP] [PAD]... rows with random lengths."""
    rng = np.random.default_rng(1)
    ids = rng.integers(6, VOCAB_SIZE, size=(NUM_ROWS, LENGTH)).astype(np.int32)
    total = rng.integers(8, LENGTH + 1, size=NUM_ROWS)
    first_sep = rng.integers(2, total - 3)
    column = np.arange(LENGTH)
    ids[column >= total[:, None]] = PAD
    ids[:, 0] = CLS
    ids[np.arange(NUM_ROWS), first_sep] = SEP
    ids[np.arange(NUM_ROWS), total - 1] = SEP
    return ids


def run(input_ids, word_start, seed=0, **overrides):
    options = dict(
        word_start=word_start,
        special_ids=SPECIAL_IDS,
        mask_id=MASK,
        random_token_range=(6, VOCAB_SIZE),
        masked_lm_prob=0.15,
        max_predictions_per_seq=LENGTH,  # not binding unless overridden
    )
    options.update(overrides)
    return mask_tokens(input_ids, np.random.default_rng(seed), **options)


def chosen_mask(input_ids, out):
    """[N, L] bool of the positions listed with weight 1."""
    chosen = np.zeros(input_ids.shape, bool)
    rows, slots = np.nonzero(out["masked_lm_weights"])
    chosen[rows, out["masked_lm_positions"][rows, slots]] = True
    return chosen


def eligible(input_ids):
    return ~np.isin(input_ids, SPECIAL_IDS)


def reference_budget(input_ids, masked_lm_prob=0.15, max_predictions=LENGTH):
    """google-research/bert: min(max_predictions, max(1, round(len(tokens) * prob))), where
    `tokens` holds [CLS] and [SEP] but no padding."""
    num_tokens = (input_ids != PAD).sum(1)
    return np.minimum(max_predictions, np.maximum(1, np.round(num_tokens * masked_lm_prob)))


MODES = [
    dict(),
    dict(whole_word=True),
    dict(max_ngram=3),
    dict(whole_word=True, max_ngram=3),
]


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_fifteen_percent_of_tokens_are_predicted(input_ids, word_start, mode):
    out = run(input_ids, word_start, **mode)
    rate = out["masked_lm_weights"].sum() / (input_ids != PAD).sum()
    assert abs(rate - 0.15) < 0.005, rate
    assert (out["masked_lm_weights"].sum(1) <= reference_budget(input_ids)).all()


def test_token_masking_fills_the_budget_exactly(input_ids, word_start):
    out = run(input_ids, word_start, max_predictions_per_seq=20)
    budget = reference_budget(input_ids, max_predictions=20)
    np.testing.assert_array_equal(out["masked_lm_weights"].sum(1), budget)
    assert out["masked_lm_positions"].shape == (NUM_ROWS, 20)


def test_the_budget_counts_cls_and_sep_as_google_research_bert_does(word_start):
    # A 64-token pair: the reference predicts round(0.15 * 64) = round(9.6) = 10 positions;
    # counting only the 61 maskable tokens would give round(9.15) = 9.
    row = np.concatenate([[CLS], np.arange(100, 130), [SEP], np.arange(200, 231), [SEP]])
    assert len(row) == 64
    padded = np.concatenate([row, np.full(64, PAD)])[None].astype(np.int32)  # [1, 128]
    for seed in range(5):
        out = run(padded, word_start, seed=seed)
        assert out["masked_lm_weights"].sum() == 10


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_eighty_ten_ten(input_ids, word_start, mode):
    out = run(input_ids, word_start, **mode)
    chosen = chosen_mask(input_ids, out)
    original, corrupted = input_ids[chosen], out["input_ids"][chosen]
    as_mask = np.mean(corrupted == MASK)
    unchanged = np.mean(corrupted == original)
    random = np.mean((corrupted != MASK) & (corrupted != original))
    assert abs(as_mask - 0.8) < 0.015 and abs(unchanged - 0.1) < 0.015
    assert abs(random - 0.1) < 0.015, (as_mask, unchanged, random)
    replaced = corrupted[(corrupted != MASK) & (corrupted != original)]
    assert replaced.min() >= 6 and replaced.max() < VOCAB_SIZE


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_special_tokens_and_padding_are_never_touched(input_ids, word_start, mode):
    out = run(input_ids, word_start, **mode)
    chosen = chosen_mask(input_ids, out)
    assert not (chosen & ~eligible(input_ids)).any()
    # Only chosen positions may change.
    np.testing.assert_array_equal(out["input_ids"][~chosen], input_ids[~chosen])
    assert out["input_ids"].dtype == input_ids.dtype


def test_prediction_slots_are_sorted_and_padded(input_ids, word_start):
    out = run(input_ids, word_start, max_predictions_per_seq=24, whole_word=True, max_ngram=3)
    positions, ids, weights = (
        out["masked_lm_positions"],
        out["masked_lm_ids"],
        out["masked_lm_weights"],
    )
    assert positions.dtype == ids.dtype == np.int32 and weights.dtype == np.float32
    real = weights == 1
    # Real slots first, then padding slots with position 0, id 0, weight 0.
    assert (np.diff(real.astype(int), axis=1) <= 0).all()
    assert (positions[~real] == 0).all() and (ids[~real] == 0).all()
    assert set(np.unique(weights)) <= {0.0, 1.0}
    gaps = np.diff(positions, axis=1)
    assert (gaps[real[:, 1:]] > 0).all()  # strictly ascending
    np.testing.assert_array_equal(ids[real], np.take_along_axis(input_ids, positions, 1)[real])


def word_ids(input_ids, word_start):
    """Word index of every token: a word starts at a word-start piece or after a special token."""
    is_eligible = eligible(input_ids)
    previous = np.zeros_like(is_eligible)
    previous[:, 1:] = is_eligible[:, :-1]
    starts = is_eligible & (word_start[input_ids] | ~previous)
    return np.cumsum(starts, axis=1), starts


def test_whole_word_masking_takes_every_piece_of_a_chosen_word(input_ids, word_start):
    out = run(input_ids, word_start, whole_word=True)
    chosen = chosen_mask(input_ids, out)
    words, _ = word_ids(input_ids, word_start)
    rows = np.repeat(np.arange(NUM_ROWS), LENGTH).reshape(NUM_ROWS, LENGTH)
    key = rows * LENGTH + words
    chosen_words = np.unique(key[chosen])
    in_chosen_word = np.isin(key, chosen_words) & eligible(input_ids)
    np.testing.assert_array_equal(chosen, in_chosen_word)
    # Multi-piece words really occur among the chosen ones.
    assert (chosen & ~word_start[input_ids]).sum() > 1000


def test_token_masking_splits_words(input_ids, word_start):
    out = run(input_ids, word_start)
    chosen = chosen_mask(input_ids, out)
    words, _ = word_ids(input_ids, word_start)
    key = np.arange(NUM_ROWS)[:, None] * LENGTH + words
    partially = np.isin(key, np.unique(key[chosen])) & eligible(input_ids) & ~chosen
    assert partially.any()


def test_ngram_lengths_follow_one_over_n():
    available = np.full(200_000, 3)
    lengths = _sample_span_lengths(available, np.random.default_rng(0), max_ngram=3)
    shares = np.bincount(lengths, minlength=4)[1:] / lengths.size
    np.testing.assert_allclose(shares, [6 / 11, 3 / 11, 2 / 11], atol=0.02)
    # Where only two units are left, p is renormalised over 1..2: 2/3, 1/3.
    lengths = _sample_span_lengths(np.full(100_000, 2), np.random.default_rng(1), max_ngram=3)
    np.testing.assert_allclose(np.bincount(lengths)[1:] / lengths.size, [2 / 3, 1 / 3], atol=0.02)


def masked_run_lengths(chosen):
    """Lengths of maximal runs of chosen tokens."""
    padded = np.pad(chosen.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    return np.nonzero(edges == -1)[1] - np.nonzero(edges == 1)[1]


def test_ngram_masking_produces_spans_of_one_over_n_lengths():
    # Sparse masking on long rows: spans rarely touch or collide, so the runs seen in the output
    # are the accepted n-grams.
    rng = np.random.default_rng(2)
    ids = rng.integers(6, VOCAB_SIZE, size=(400, 2048)).astype(np.int32)
    out = mask_tokens(
        ids,
        rng,
        word_start=np.ones(VOCAB_SIZE, bool),
        special_ids=SPECIAL_IDS,
        mask_id=MASK,
        random_token_range=(6, VOCAB_SIZE),
        masked_lm_prob=0.02,
        max_predictions_per_seq=64,
        max_ngram=3,
    )
    lengths = masked_run_lengths(chosen_mask(ids, out))
    shares = np.bincount(lengths, minlength=4)[1:4] / lengths.size
    np.testing.assert_allclose(shares, [6 / 11, 3 / 11, 2 / 11], atol=0.02)


def test_ngrams_run_over_sep_so_segment_b_starts_at_the_interior_rate(word_start):
    # ALBERT's candidates skip [CLS] and [SEP], so an n-gram from the end of segment A can
    # reach the first word of B. Rates on these rows of the reference (google-research/albert
    # create_masked_lm_predictions, ported): first word of A 11.1%, first of B 15.6%, other
    # words 16.0%; ours 10.9%, 16.0%, 15.9%. Stopping n-grams at [SEP] gave B 10.9%.
    rng = np.random.default_rng(4)
    num_rows = 20_000
    ids = rng.integers(6, VOCAB_SIZE, size=(num_rows, LENGTH)).astype(np.int32)
    first_sep = rng.integers(20, LENGTH - 20, size=num_rows)
    rows = np.arange(num_rows)
    ids[:, 0], ids[rows, first_sep], ids[:, -1] = CLS, SEP, SEP
    # Segments are whole sentences: each starts with a word-start piece.
    ids[:, 1] = ids[rows, first_sep + 1] = 6 + np.flatnonzero(word_start[6:])[0]
    out = run(ids, word_start, seed=4, max_predictions_per_seq=20, whole_word=True, max_ngram=3)
    chosen = chosen_mask(ids, out)
    _, word_starts = word_ids(ids, word_start)
    first_of_a, first_of_b = chosen[:, 1].mean(), chosen[rows, first_sep + 1].mean()
    interior = word_starts.copy()
    interior[:, 1] = interior[rows, first_sep + 1] = False
    interior_rate = chosen[interior].mean()
    assert abs(first_of_b - interior_rate) < 0.01, (first_of_b, interior_rate)
    # Nothing precedes the first word of A, in the reference too.
    assert first_of_a < interior_rate - 0.03, (first_of_a, interior_rate)
    assert not chosen[rows, first_sep].any()  # the [SEP] itself is never a target
    # Some n-grams really straddle the [SEP]: both neighbours chosen far above chance.
    straddle = (chosen[rows, first_sep - 1] & chosen[rows, first_sep + 1]).mean()
    assert straddle > 2 * first_of_a * first_of_b, straddle


def test_same_seed_same_output(input_ids, word_start):
    first = run(input_ids, word_start, seed=5, whole_word=True, max_ngram=3)
    again = run(input_ids, word_start, seed=5, whole_word=True, max_ngram=3)
    other = run(input_ids, word_start, seed=6, whole_word=True, max_ngram=3)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["masked_lm_positions"], other["masked_lm_positions"])


def test_rows_without_eligible_tokens_and_zero_probability(word_start):
    ids = np.array([[CLS, SEP, SEP, PAD], [CLS, 7, SEP, PAD]], np.int32)
    out = run(ids, word_start, max_predictions_per_seq=3)
    np.testing.assert_array_equal(out["masked_lm_weights"], [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out["masked_lm_positions"], [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out["masked_lm_ids"], [[0, 0, 0], [7, 0, 0]])
    out = run(ids, word_start, max_predictions_per_seq=3, masked_lm_prob=0.0)
    assert out["masked_lm_weights"].sum() == 0
    np.testing.assert_array_equal(out["input_ids"], ids)
    # P larger than L still gives [N, P] outputs.
    assert run(ids, word_start, max_predictions_per_seq=6)["masked_lm_ids"].shape == (2, 6)
