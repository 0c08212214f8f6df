"""Padding and first-fit packing of encoder-decoder examples into t5x features."""

import grain
import numpy as np
import pytest

from bert_jax.data import packing

LENGTHS = {"inputs": 32, "targets": 12}


def make_examples(num_examples: int = 200, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Distinct variable-length examples ending with EOS (1); ids >= 2 elsewhere."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(num_examples):
        num_inputs, num_targets = rng.integers(2, LENGTHS["inputs"] + 1), rng.integers(2, 13)
        inputs = rng.integers(2, 1000, num_inputs).astype(np.int32)
        inputs[0] = 1000 + index  # makes every example recognisable after packing
        targets = rng.integers(2, 1000, num_targets).astype(np.int32)
        inputs[-1] = targets[-1] = 1
        examples.append({"inputs": inputs, "targets": targets})
    return examples


def packed_rows(examples, **kwargs) -> list[dict[str, np.ndarray]]:
    ds = grain.MapDataset.source(examples).to_iter_dataset()
    return list(packing.pack_dataset(ds, LENGTHS, **kwargs))


def unpack(row: dict[str, np.ndarray]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (inputs, targets) pairs a packed row holds, by segment id."""
    pairs = []
    for segment in range(1, row["encoder_segment_ids"].max() + 1):
        inputs = row["encoder_input_tokens"][row["encoder_segment_ids"] == segment]
        targets = row["decoder_target_tokens"][row["decoder_segment_ids"] == segment]
        pairs.append((tuple(inputs.tolist()), tuple(targets.tolist())))
    return pairs


def test_make_decoder_inputs_shifts_right_per_segment():
    targets = np.array([7, 8, 1, 9, 1, 5, 6, 1, 0, 0])
    segments = np.array([1, 1, 1, 2, 2, 3, 3, 3, 0, 0])
    expected = [0, 7, 8, 0, 9, 0, 5, 6, 0, 0]
    assert packing.make_decoder_inputs(targets, segments).tolist() == expected
    assert packing.make_decoder_inputs(targets).tolist() == [0, 7, 8, 1, 9, 1, 5, 6, 1, 0]
    batch = np.stack([targets, targets])  # [batch, length]
    assert packing.make_decoder_inputs(batch, np.stack([segments, segments]))[1].tolist() == (
        expected
    )


def test_pad_dataset_gives_t5x_features():
    examples = make_examples(5)
    rows = list(packing.pad_dataset(grain.MapDataset.source(examples), LENGTHS))
    for example, row in zip(examples, rows, strict=True):
        num_targets = len(example["targets"])
        assert row["encoder_input_tokens"].shape == (32,)
        assert row["encoder_input_tokens"].dtype == np.int32
        assert np.array_equal(
            row["encoder_input_tokens"][: len(example["inputs"])], example["inputs"]
        )
        assert not row["encoder_input_tokens"][len(example["inputs"]) :].any()
        assert np.array_equal(row["decoder_target_tokens"][:num_targets], example["targets"])
        assert row["decoder_input_tokens"][0] == 0
        assert np.array_equal(row["decoder_input_tokens"][1:num_targets], example["targets"][:-1])
        assert row["decoder_loss_weights"].dtype == np.float32
        assert row["decoder_loss_weights"].tolist() == [1.0] * num_targets + [0.0] * (
            12 - num_targets
        )
        assert "encoder_segment_ids" not in row


def test_packed_rows_are_consistent():
    rows = packed_rows(make_examples())
    assert len(rows) < 200  # several examples share a row
    for row in rows:
        assert row["encoder_input_tokens"].shape == (32,)
        assert row["decoder_target_tokens"].shape == (12,)
        for side, tokens in (
            ("encoder", "encoder_input_tokens"),
            ("decoder", "decoder_target_tokens"),
        ):
            segments, positions = row[f"{side}_segment_ids"], row[f"{side}_positions"]
            real = segments > 0
            # Segments are contiguous, numbered 1, 2, ... in order, padding (0) only at the end.
            assert np.all(np.diff(segments[real]) >= 0) and segments[real][0] == 1
            assert set(np.unique(segments[real])) == set(range(1, segments.max() + 1))
            assert np.all(np.diff(real.astype(np.int32)) <= 0)  # padding only at the end
            assert not row[tokens][~real].any() and not positions[~real].any()
            for segment in range(1, segments.max() + 1):  # positions restart in each segment
                assert positions[segments == segment].tolist() == list(
                    range((segments == segment).sum())
                )
        assert row["encoder_segment_ids"].max() == row["decoder_segment_ids"].max()
        assert np.array_equal(
            row["decoder_input_tokens"],
            packing.make_decoder_inputs(row["decoder_target_tokens"], row["decoder_segment_ids"]),
        )
        starts = row["decoder_positions"] == 0
        assert not row["decoder_input_tokens"][starts].any()  # each segment starts with 0
        assert np.array_equal(row["decoder_loss_weights"], (row["decoder_segment_ids"] > 0))


def test_packed_and_padded_hold_the_same_examples():
    examples = make_examples()
    packed = sorted(pair for row in packed_rows(examples) for pair in unpack(row))
    original = sorted((tuple(e["inputs"].tolist()), tuple(e["targets"].tolist())) for e in examples)
    assert packed == original


def test_packing_is_deterministic_and_first_fit():
    first, again = packed_rows(make_examples()), packed_rows(make_examples())
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    # 3 rows open at once: the 4th example opens a row, closing the oldest (row 0).
    sizes = np.array([[20, 4], [20, 4], [20, 4], [20, 4], [10, 4], [12, 8]])
    rows, segments, offsets, num_rows = packing.first_fit(sizes, (32, 12), max_open=3)
    assert rows.tolist() == [0, 1, 2, 3, 1, 2] and num_rows == 4
    assert segments.tolist() == [1, 1, 1, 1, 2, 2]
    assert offsets[4].tolist() == [20, 4] and offsets[5].tolist() == [20, 4]


def test_packing_resumes_exactly_from_a_checkpointed_state():
    examples = make_examples(300)

    def make_iterator():
        ds = grain.MapDataset.source(examples).to_iter_dataset()
        return iter(packing.pack_dataset(ds, LENGTHS, num_packing_bins=4, buffer_size=50))

    iterator = make_iterator()
    for _ in range(13):  # stop in the middle of a buffer; the 20 rows read cross buffers
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(20)]
    resumed = make_iterator()
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(20)], strict=True):
        assert all(np.array_equal(want[k], got[k]) for k in want)


def test_too_long_examples_fail_clearly():
    too_long = [{"inputs": np.ones(40, np.int32), "targets": np.ones(3, np.int32)}]
    with pytest.raises(ValueError, match="'inputs' has 40 tokens, more than its length 32"):
        packed_rows(too_long)
    with pytest.raises(ValueError, match="'inputs' has 40 tokens"):
        list(packing.pad_dataset(grain.MapDataset.source(too_long), LENGTHS))


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "padded"])
def test_chunks_of_examples_give_the_rows_of_the_examples_one_by_one(pack):
    """The pipeline feeds each group's list of examples at once: same rows, as blocks."""
    examples = make_examples(230)
    cuts = [0, 17, 17, 60, 111, 112, 200, 230]  # uneven groups, one empty
    chunks = [examples[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    ds = grain.MapDataset.source(chunks).to_iter_dataset()
    one_by_one = grain.MapDataset.source(examples).to_iter_dataset()
    if pack:
        blocks = packing.pack_dataset(ds, LENGTHS, buffer_size=50, chunks=True)
        want = list(packing.pack_dataset(one_by_one, LENGTHS, buffer_size=50))
    else:
        blocks = packing.pad_dataset(ds, LENGTHS, chunks=True)
        want = list(packing.pad_dataset(one_by_one, LENGTHS))
    got = [
        {name: values[row] for name, values in block.items()}
        for block in blocks
        for row in range(len(block["encoder_input_tokens"]) if len(block) else 0)
    ]
    assert len(got) == len(want)
    for ours, theirs in zip(got, want, strict=True):
        assert sorted(ours) == sorted(theirs)
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
