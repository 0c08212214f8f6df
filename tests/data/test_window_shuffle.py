"""The NumPy window shuffle: a seeded permutation per window, exact resume anywhere."""

from __future__ import annotations

import json

import grain
import numpy as np
import pytest

from bert_jax.data.window_shuffle import window_shuffle


def shuffled(n=23, window_size=5, seed=1):
    parent = grain.MapDataset.range(n).to_iter_dataset()
    return window_shuffle(parent, window_size=window_size, seed=seed)


def test_each_window_is_a_seeded_permutation_of_its_parent_elements():
    out = [int(x) for x in shuffled()]
    windows = [out[start : start + 5] for start in range(0, 23, 5)]
    for k, window in enumerate(windows):
        assert sorted(window) == list(range(5 * k, min(5 * k + 5, 23)))
        expected = 5 * k + np.random.default_rng((1, k)).permutation(len(window))
        assert window == expected.tolist()
    assert out != sorted(out)
    assert out == [int(x) for x in shuffled()]
    assert out != [int(x) for x in shuffled(seed=2)]


@pytest.mark.parametrize("consumed", [0, 3, 5, 11, 22, 23])
def test_resume_from_any_position_is_exact(consumed):
    it = iter(shuffled())
    for _ in range(consumed):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as orbax stores it
    rest = list(it)
    resumed = iter(shuffled())
    resumed.set_state(state)
    assert list(resumed) == rest
    assert len(rest) == 23 - consumed


def test_repeating_parent_keeps_going_across_epochs():
    parent = grain.MapDataset.range(7).repeat(None).to_iter_dataset()
    it = iter(window_shuffle(parent, window_size=4, seed=0))
    out = [int(next(it)) for _ in range(28)]
    assert sorted(out) == sorted(list(range(7)) * 4)


def test_window_size_must_be_positive():
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        shuffled(window_size=0)
