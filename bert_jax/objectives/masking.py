"""Masked-LM corruption (BERT 80/10/10, whole-word and ALBERT n-gram masking) over [N, L] arrays.

Semantics of `create_masked_lm_predictions` in google-research/bert and google-research/albert
`create_pretraining_data.py`, vectorised over the rows of a batch:

- Budget per row: min(max_predictions_per_seq, max(1, round(tokens * masked_lm_prob))), where
  tokens counts the row's non-padding tokens, [CLS] and [SEP] included, exactly as the originals
  count `len(tokens)` (a 64-token pair predicts round(9.6) = 10; counting only its 61 maskable
  tokens gave round(9.15) = 9, 1.3% fewer positions over a corpus); the budget never exceeds
  the tokens that can be chosen.
  Python's `round` and `np.round` both round half to even. masked_lm_prob == 0 gives no
  predictions, as in ALBERT.
- Units: single tokens, or with `whole_word` a word-start piece plus the continuation pieces that
  follow it. A continuation piece right after a special token starts its own unit (ALBERT would
  glue it to the last word before the [SEP]).
- Candidate units are visited in random order. At each one an n-gram of n units starting there
  is drawn with p(n) ∝ 1/n over the lengths available (ALBERT `favor_shorter_ngram`); if it
  would exceed the budget, shorter n-grams are tried; if none fits, or any of its units is
  already chosen, the candidate is skipped. Visiting stops when the budget is met. With
  max_ngram=1 and token units this picks a uniform random subset of `budget` tokens (BERT).
  N-grams run over special tokens as ALBERT's do (its candidates skip [CLS] and [SEP]), so
  the first word of segment B is masked as often as an interior word; the special tokens
  themselves are never chosen. Each row must therefore hold one example.
- Every chosen token independently (per token, as in both originals, also for whole words):
  80% [MASK], 10% a random id from `random_token_range`, 10% unchanged.
- Predictions are listed by ascending position, padded with position 0, id 0, weight 0.
"""

import numpy as np


def _unit_layout(eligible: np.ndarray, starts_unit: np.ndarray, max_ngram: int):
    """Groups eligible tokens into units and measures the n-grams that start at each unit.

    Returns:
      token_unit: [N, L] unit index of each token within its row (meaningful where eligible).
      num_units: [N] units per row.
      span_tokens: [N, U, max_ngram] tokens covered by the n-gram of n = 1..max_ngram units.
      available: [N, U] longest n-gram (<= max_ngram) that stays inside the row's units.
    """
    num_rows, _ = eligible.shape
    previous_eligible = np.zeros_like(eligible)
    previous_eligible[:, 1:] = eligible[:, :-1]
    run_start = eligible & ~previous_eligible  # [N, L] first token after a special one
    unit_start = run_start | (eligible & starts_unit)  # [N, L]
    token_unit = np.cumsum(unit_start, axis=1) - 1  # [N, L]
    num_units = unit_start.sum(axis=1)  # [N]
    max_units = int(num_units.max(initial=0))

    rows, columns = np.nonzero(eligible)
    flat_unit = rows * max_units + token_unit[rows, columns]
    unit_length = np.bincount(flat_unit, minlength=num_rows * max_units)
    unit_length = unit_length.reshape(num_rows, max_units)  # [N, U]
    # Cumulative tokens before each unit, padded so every n-gram end can be indexed.
    cumulative = np.zeros((num_rows, max_units + max_ngram), np.int64)  # [N, U + max_ngram]
    np.cumsum(unit_length, axis=1, out=cumulative[:, 1 : max_units + 1])
    cumulative[:, max_units + 1 :] = cumulative[:, max_units : max_units + 1]
    unit_index = np.arange(max_units)[:, None] + np.arange(1, max_ngram + 1)  # [U, max_ngram]
    span_tokens = cumulative[:, unit_index] - cumulative[:, :max_units, None]  # [N, U, max_ngram]

    # N-grams may cross [SEP] (ALBERT): only the row's end limits them. Padding units get 1,
    # a valid length that is never visited.
    units_left = num_units[:, None] - np.arange(max_units)  # [N, U]
    available = np.clip(units_left, 1, max_ngram).astype(np.int64)  # [N, U]
    return token_unit, num_units, span_tokens, available


def _sample_span_lengths(
    available: np.ndarray, rng: np.random.Generator, max_ngram: int
) -> np.ndarray:
    """Draws n in 1..available with p(n) ∝ 1/n, elementwise (ALBERT's n-gram length)."""
    if max_ngram == 1:
        return np.ones_like(available)
    weights = 1.0 / np.arange(1, max_ngram + 1)
    # cdf[a - 1] is the cumulative distribution over 1..a; entries past a never count.
    cdf = np.full((max_ngram, max_ngram), np.inf)
    for longest in range(1, max_ngram + 1):
        cdf[longest - 1, :longest] = np.cumsum(weights[:longest]) / weights[:longest].sum()
        cdf[longest - 1, longest - 1] = np.inf
    uniform = rng.random(available.shape)
    return 1 + (cdf[available - 1] <= uniform[..., None]).sum(axis=-1)


def _choose_tokens(
    eligible: np.ndarray,
    starts_unit: np.ndarray,
    budget: np.ndarray,
    rng: np.random.Generator,
    max_ngram: int,
) -> np.ndarray:
    """Returns the [N, L] bool of tokens to predict, at most `budget` per row."""
    num_rows, _ = eligible.shape
    token_unit, num_units, span_tokens, available = _unit_layout(eligible, starts_unit, max_ngram)
    max_units = span_tokens.shape[1]
    span_length = _sample_span_lengths(available, rng, max_ngram)  # [N, U]
    visit_keys = rng.random((num_rows, max_units))
    visit_keys[np.arange(max_units) >= num_units[:, None]] = np.inf  # padding units go last
    visit_order = np.argsort(visit_keys, axis=1)  # [N, U]

    chosen_units = np.zeros((num_rows, max_units + max_ngram), bool)
    chosen_tokens = np.zeros(num_rows, np.int64)
    ngram_offset = np.arange(max_ngram)
    # Sequential over the visit order (budget and overlap depend on earlier choices), vectorised
    # over the rows that still have budget left.
    for step in range(max_units):
        rows = np.flatnonzero((chosen_tokens < budget) & (step < num_units))
        if rows.size == 0:
            break
        unit = visit_order[rows, step]  # [R]
        tokens_by_length = span_tokens[rows, unit]  # [R, max_ngram]
        fits = chosen_tokens[rows, None] + tokens_by_length <= budget[rows, None]
        fits &= ngram_offset < available[rows, unit][:, None]
        # `fits` is a prefix over n, so its sum is the longest n that fits.
        length = np.minimum(span_length[rows, unit], fits.sum(axis=1))  # [R]
        span_units = unit[:, None] + ngram_offset  # [R, max_ngram]
        in_span = ngram_offset < length[:, None]  # [R, max_ngram]
        overlaps = (chosen_units[rows[:, None], span_units] & in_span).any(axis=1)
        accept = (length > 0) & ~overlaps
        gained = np.take_along_axis(tokens_by_length, np.maximum(length - 1, 0)[:, None], axis=1)
        rows, span_units, in_span = rows[accept], span_units[accept], in_span[accept]
        chosen_units[rows[:, None], span_units] |= in_span
        chosen_tokens[rows] += gained[accept, 0]

    row_index = np.arange(num_rows)[:, None]
    return chosen_units[row_index, np.maximum(token_unit, 0)] & eligible


def _gather_predictions(
    input_ids: np.ndarray, chosen: np.ndarray, max_predictions_per_seq: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_rows, length = input_ids.shape
    # A stable sort of "not chosen" lists chosen columns first, in ascending order.
    positions = np.argsort(~chosen, axis=1, kind="stable")[:, :max_predictions_per_seq]
    if positions.shape[1] < max_predictions_per_seq:
        positions = np.pad(positions, ((0, 0), (0, max_predictions_per_seq - length)))
    is_prediction = np.arange(max_predictions_per_seq) < chosen.sum(axis=1)[:, None]  # [N, P]
    positions = np.where(is_prediction, positions, 0).astype(np.int32)  # [N, P]
    ids = np.where(is_prediction, np.take_along_axis(input_ids, positions, axis=1), 0)
    return positions, ids.astype(np.int32), is_prediction.astype(np.float32)


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    word_start: np.ndarray,
    special_ids: np.ndarray,
    mask_id: int,
    random_token_range: tuple[int, int],
    masked_lm_prob: float = 0.15,
    max_predictions_per_seq: int,
    whole_word: bool = False,
    max_ngram: int = 1,
    padding_id: int = 0,
) -> dict[str, np.ndarray]:
    """Chooses masked-LM targets and corrupts them, BERT/ALBERT style (see module docstring).

    Args:
      input_ids: [N, L] int token ids, padded with an id listed in `special_ids`.
      rng: the only source of randomness; same state -> same output.
      word_start: [V] bool, True where a vocabulary piece starts a word (used by `whole_word`).
      special_ids: ids never chosen for prediction (must include the padding id).
      mask_id: id of [MASK].
      random_token_range: (low, high), random replacements are drawn from [low, high).
      masked_lm_prob: fraction of eligible tokens to predict.
      max_predictions_per_seq: P, most predictions per row and width of the outputs.
      whole_word: mask all pieces of a word together.
      max_ngram: longest n-gram of units (ALBERT uses 3); 1 for BERT.
      padding_id: the id that pads rows; every other token counts towards the budget.

    Returns:
      dict with input_ids [N, L] (corrupted, input dtype), masked_lm_positions [N, P] int32,
      masked_lm_ids [N, P] int32 (original ids), masked_lm_weights [N, P] float32 (1 real, 0 pad).
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [N, L], got shape {input_ids.shape}")
    if max_ngram < 1 or max_predictions_per_seq < 1:
        raise ValueError(
            f"max_ngram ({max_ngram}) and max_predictions_per_seq ({max_predictions_per_seq}) "
            "must be >= 1"
        )
    if not 0.0 <= masked_lm_prob <= 1.0:
        raise ValueError(f"masked_lm_prob must be in [0, 1], got {masked_lm_prob}")
    word_start = np.asarray(word_start, bool)
    is_special = np.zeros(len(word_start), bool)
    is_special[np.asarray(special_ids)] = True
    eligible = ~is_special[input_ids]  # [N, L]
    starts_unit = word_start[input_ids] if whole_word else np.ones_like(eligible)

    num_eligible = eligible.sum(axis=1)  # [N]
    num_tokens = (input_ids != padding_id).sum(axis=1)  # [N] specials included, as the originals
    budget = np.round(num_tokens * masked_lm_prob).astype(np.int64)
    budget = np.minimum(max_predictions_per_seq, np.maximum(1, budget))
    budget = np.minimum(budget, num_eligible) if masked_lm_prob > 0 else np.zeros_like(budget)
    chosen = _choose_tokens(eligible, starts_unit, budget, rng, max_ngram)  # [N, L]

    # 80% [MASK], 10% random token, 10% unchanged, decided per token as in the originals.
    decision = rng.random(input_ids.shape)
    use_mask = chosen & (decision < 0.8)
    use_random = chosen & (decision >= 0.8) & (decision < 0.9)
    corrupted = np.where(use_mask, mask_id, input_ids).astype(input_ids.dtype)
    low, high = random_token_range
    corrupted[use_random] = rng.integers(low, high, size=int(use_random.sum()))

    positions, ids, weights = _gather_predictions(input_ids, chosen, max_predictions_per_seq)
    return {
        "input_ids": corrupted,
        "masked_lm_positions": positions,
        "masked_lm_ids": ids,
        "masked_lm_weights": weights,
    }
