"""Properties of masked-LM corruption (BERT 80/10/10, whole-word, ALBERT n-grams) on any rows."""

from __future__ import annotations

import numpy as np
from conftest import property_examples
from hypothesis import given, settings
from hypothesis import strategies as st
from properties.strategies import CLS, FIRST_NORMAL, MASK, PAD, SEP, SPECIAL_IDS

from bert_jax.objectives.masking import mask_tokens

VOCAB_SIZE = 500
ROW_KINDS = ("pair", "random", "special", "repeated", "padding")


@st.composite
def rows(draw):
    """[N, L] int32 rows: BERT pairs, anything, only specials, one repeated token, all padding."""
    num_rows, length = draw(st.integers(1, 6)), draw(st.integers(1, 160))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.zeros((num_rows, length), np.int32)
    for row in range(num_rows):
        kind = draw(st.sampled_from(ROW_KINDS))
        if kind == "pair":
            total = int(rng.integers(1, length + 1))
            ids[row, :total] = rng.integers(FIRST_NORMAL, VOCAB_SIZE, total)
            ids[row, 0] = CLS
            ids[row, total - 1] = SEP
            ids[row, rng.integers(total)] = SEP
        elif kind == "random":
            ids[row] = rng.integers(0, VOCAB_SIZE, length)
        elif kind == "special":
            ids[row] = rng.choice(SPECIAL_IDS, length)
        elif kind == "repeated":
            ids[row] = rng.integers(FIRST_NORMAL, VOCAB_SIZE)
        else:
            ids[row] = PAD
    word_start = rng.random(VOCAB_SIZE) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    word_start[SPECIAL_IDS] = True
    return ids, word_start


OPTIONS = st.fixed_dictionaries(
    {
        "masked_lm_prob": st.sampled_from([0.0, 0.01, 0.15, 0.5, 1.0]),
        "max_predictions_per_seq": st.integers(1, 40),
        "whole_word": st.booleans(),
        "max_ngram": st.integers(1, 4),
    }
)


def units(ids: np.ndarray, word_start: np.ndarray) -> np.ndarray:
    """[N, L] unit index (word or token), -1 on special tokens: what masking must keep whole."""
    eligible = ~np.isin(ids, SPECIAL_IDS)
    previous = np.zeros_like(eligible)
    previous[:, 1:] = eligible[:, :-1]
    starts = eligible & (word_start[ids] | ~previous)
    return np.where(eligible, np.cumsum(starts, axis=1), -1)


@settings(max_examples=property_examples(150), deadline=None)
@given(rows(), OPTIONS, st.integers(0, 2**32 - 1))
def test_mask_tokens_invariants(batch, options, seed):
    ids, word_start = batch
    out = mask_tokens(
        ids,
        np.random.default_rng(seed),
        word_start=word_start,
        special_ids=SPECIAL_IDS,
        mask_id=MASK,
        random_token_range=(FIRST_NORMAL, VOCAB_SIZE),
        **options,
    )
    num_rows, length = ids.shape
    predictions = options["max_predictions_per_seq"]
    positions, targets = out["masked_lm_positions"], out["masked_lm_ids"]
    weights = out["masked_lm_weights"]
    assert out["input_ids"].shape == ids.shape and out["input_ids"].dtype == ids.dtype
    assert positions.shape == targets.shape == weights.shape == (num_rows, predictions)
    assert positions.dtype == targets.dtype == np.int32 and weights.dtype == np.float32

    # Real slots first, ascending positions; padding slots are (0, 0, 0).
    real = weights == 1
    assert set(np.unique(weights)) <= {0.0, 1.0}
    assert (np.diff(real.astype(int), axis=1) <= 0).all()
    assert (positions[~real] == 0).all() and (targets[~real] == 0).all()
    assert (np.diff(positions, axis=1)[real[:, 1:]] > 0).all()
    np.testing.assert_array_equal(targets[real], np.take_along_axis(ids, positions, 1)[real])

    chosen = np.zeros(ids.shape, bool)
    rows_index, slots = np.nonzero(real)
    chosen[rows_index, positions[rows_index, slots]] = True
    eligible = ~np.isin(ids, SPECIAL_IDS)
    assert not (chosen & ~eligible).any()  # no special token (or padding) is ever a target
    np.testing.assert_array_equal(out["input_ids"][~chosen], ids[~chosen])
    corrupted = out["input_ids"][chosen]
    assert np.all((corrupted == MASK) | (corrupted >= FIRST_NORMAL) & (corrupted < VOCAB_SIZE))

    # Budget: round(non-padding tokens * p) as google-research/bert counts them ([CLS] and
    # [SEP] included), at least 1, at most P and the eligible count; 0 when p = 0.
    num_eligible = eligible.sum(axis=1)
    num_tokens = (ids != PAD).sum(axis=1)
    budget = np.minimum(
        predictions, np.maximum(1, np.round(num_tokens * options["masked_lm_prob"]))
    )
    budget = np.minimum(budget, num_eligible) * (options["masked_lm_prob"] > 0)
    count = real.sum(axis=1)
    assert (count <= budget).all()
    if options["max_ngram"] == 1 and not options["whole_word"]:
        np.testing.assert_array_equal(count, budget)  # single tokens always fill it
    if options["whole_word"]:
        unit = units(ids, word_start)
        for row in range(num_rows):
            chosen_units = np.unique(unit[row][chosen[row]])
            np.testing.assert_array_equal(
                chosen[row], np.isin(unit[row], chosen_units) & eligible[row]
            )
