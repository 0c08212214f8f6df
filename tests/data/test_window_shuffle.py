"""The NumPy window shuffle: a seeded permutation per window, exact resume anywhere."""

from __future__ import annotations

import json

import grain
import numpy as np
import pytest

from bert_jax.data.window_shuffle import batch_rows, window_shuffle


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


# --- chunked stages: a parent element is a chunk of items (a list or a block of rows) ---

CHUNK_SIZES = [3, 0, 7, 1, 5, 0, 9, 2, 4, 6]  # 37 items, empty chunks included


def chunked_parent(as_block: bool):
    chunks, start = [], 0
    for size in CHUNK_SIZES:
        ids = np.arange(start, start + size)
        start += size
        if as_block:
            chunks.append({"id": ids, "twice": 2 * ids[:, None]})
        else:
            chunks.append([{"id": np.asarray(i), "twice": np.array([2 * i])} for i in ids])
    return grain.MapDataset.source(chunks).to_iter_dataset()


def chunked_batches(as_block: bool, *, window_size=6, batch_size=4, seed=3):
    ds = window_shuffle(chunked_parent(as_block), window_size=window_size, seed=seed, chunks=True)
    return batch_rows(ds, batch_size)


def itemwise_batches(*, window_size=6, batch_size=4, seed=3):
    items = [{"id": np.asarray(i), "twice": np.array([2 * i])} for i in range(sum(CHUNK_SIZES))]
    ds = window_shuffle(
        grain.MapDataset.source(items).to_iter_dataset(), window_size=window_size, seed=seed
    )
    return ds.batch(batch_size, drop_remainder=True)


@pytest.mark.parametrize("as_block", [True, False], ids=["blocks", "lists"])
def test_chunked_shuffle_and_batch_equal_the_item_by_item_stages(as_block):
    got, want = list(chunked_batches(as_block)), list(itemwise_batches())
    assert len(got) == len(want) == sum(CHUNK_SIZES) // 4  # last partial batch dropped
    for ours, grains in zip(got, want, strict=True):
        assert sorted(ours) == sorted(grains)
        for name in grains:
            assert ours[name].dtype == grains[name].dtype
            np.testing.assert_array_equal(ours[name], grains[name])


@pytest.mark.parametrize("as_block", [True, False], ids=["blocks", "lists"])
@pytest.mark.parametrize("consumed", [0, 1, 2, 4, 5, 8])
def test_chunked_stages_resume_exactly_mid_chunk_and_mid_window(as_block, consumed):
    it = iter(chunked_batches(as_block))
    for _ in range(consumed):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    rest = [batch["id"].tolist() for batch in it]
    resumed = iter(chunked_batches(as_block))
    resumed.set_state(state)
    assert [batch["id"].tolist() for batch in resumed] == rest
    assert len(rest) == sum(CHUNK_SIZES) // 4 - consumed


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batch_rows(chunked_parent(True), 0)
