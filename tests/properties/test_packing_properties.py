"""Properties of t5x-style packing (grain first-fit) and padding: segments never mix."""

from __future__ import annotations

import collections

import grain
import numpy as np
import pytest
from conftest import property_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from bert_jax.data import packing


@st.composite
def examples_and_lengths(draw):
    """Examples whose tokens name them: example k holds ids 1000 * (k + 1) + position."""
    lengths = {"inputs": draw(st.integers(1, 40)), "targets": draw(st.integers(1, 40))}
    sizes = draw(
        st.lists(
            st.tuples(st.integers(1, lengths["inputs"]), st.integers(1, lengths["targets"])),
            max_size=30,
        )
    )
    examples = [
        {
            "inputs": np.arange(n, dtype=np.int32) + 1000 * (k + 1),
            "targets": np.arange(m, dtype=np.int32) + 1000 * (k + 1) + 500,
        }
        for k, (n, m) in enumerate(sizes)
    ]
    return examples, lengths


def _segments(tokens: np.ndarray, segment_ids: np.ndarray) -> dict[int, np.ndarray]:
    return {int(s): tokens[segment_ids == s] for s in np.unique(segment_ids) if s}


def _check_layout(segment_ids: np.ndarray, positions: np.ndarray) -> None:
    """Segments 1..k in order, each one contiguous run, padding (0) only at the end."""
    real = segment_ids > 0
    count = int(real.sum())
    assert real[:count].all() and not real[count:].any()
    starts = np.flatnonzero(np.diff(np.concatenate([[0], segment_ids[:count]])) != 0)
    np.testing.assert_array_equal(segment_ids[starts], np.arange(1, len(starts) + 1))
    # Positions restart at 0 in every segment.
    expected = np.arange(count) - np.repeat(starts, np.diff(np.append(starts, count)))
    np.testing.assert_array_equal(positions[:count], expected)


@settings(max_examples=property_examples(40), deadline=None)
@given(examples_and_lengths(), st.integers(1, 8), st.integers(1, 12))
def test_packing_keeps_every_example_whole_and_alone(data, num_bins, buffer_size):
    examples, lengths = data
    source = grain.MapDataset.source(examples)
    ds = packing.pack_dataset(source, lengths, num_packing_bins=num_bins, buffer_size=buffer_size)
    seen = collections.Counter()
    for row in ds:
        assert row["encoder_input_tokens"].shape == (lengths["inputs"],)
        assert row["decoder_target_tokens"].shape == (lengths["targets"],)
        assert all(value.dtype in (np.int32, np.float32) for value in row.values())
        _check_layout(row["encoder_segment_ids"], row["encoder_positions"])
        _check_layout(row["decoder_segment_ids"], row["decoder_positions"])
        inputs = _segments(row["encoder_input_tokens"], row["encoder_segment_ids"])
        targets = _segments(row["decoder_target_tokens"], row["decoder_segment_ids"])
        assert inputs.keys() == targets.keys()
        for segment, tokens in inputs.items():
            # Encoder and decoder segment s are the two halves of one and the same example.
            k = int(tokens[0]) // 1000 - 1
            np.testing.assert_array_equal(tokens, examples[k]["inputs"])
            np.testing.assert_array_equal(targets[segment], examples[k]["targets"])
            seen[k] += 1
        decoder_segments = row["decoder_segment_ids"]
        shifted = packing.make_decoder_inputs(row["decoder_target_tokens"], decoder_segments)
        np.testing.assert_array_equal(row["decoder_input_tokens"], shifted)
        starts = (row["decoder_positions"] == 0) & (decoder_segments > 0)
        assert (row["decoder_input_tokens"][starts] == 0).all()  # no token leaks across segments
        np.testing.assert_array_equal(row["decoder_loss_weights"], decoder_segments > 0)
    assert seen == collections.Counter(range(len(examples)))  # each example exactly once


@settings(max_examples=property_examples(40), deadline=None)
@given(examples_and_lengths())
def test_padding_keeps_each_example(data):
    examples, lengths = data
    for example in examples:
        row = packing.pad_example(example, lengths)
        num_inputs, num_targets = len(example["inputs"]), len(example["targets"])
        np.testing.assert_array_equal(row["encoder_input_tokens"][:num_inputs], example["inputs"])
        assert (row["encoder_input_tokens"][num_inputs:] == 0).all()
        np.testing.assert_array_equal(
            row["decoder_target_tokens"][:num_targets], example["targets"]
        )
        np.testing.assert_array_equal(
            row["decoder_loss_weights"], np.arange(lengths["targets"]) < num_targets
        )
        assert row["decoder_input_tokens"][0] == 0
        np.testing.assert_array_equal(
            row["decoder_input_tokens"][1:], row["decoder_target_tokens"][:-1]
        )


@pytest.mark.parametrize("empty", ["inputs", "targets"])
def test_an_empty_feature_is_refused_by_name(empty):
    # Before: packed silently, leaving a decoder segment with no encoder segment to attend to.
    example = {
        "inputs": np.arange(1, 4, dtype=np.int32),
        "targets": np.arange(1, 3, dtype=np.int32),
    }
    example[empty] = np.zeros(0, np.int32)
    lengths = {"inputs": 8, "targets": 6}
    with pytest.raises(ValueError, match=f"feature '{empty}' is empty"):
        list(packing.pack_dataset(grain.MapDataset.source([example]), lengths))
    with pytest.raises(ValueError, match=f"feature '{empty}' is empty"):
        packing.pad_example(example, lengths)


@settings(max_examples=property_examples(25), deadline=None)
@given(examples_and_lengths(), st.integers(1, 8), st.integers(1, 12), st.integers(0, 10))
def test_packing_resumes_from_any_row(data, num_bins, buffer_size, stop_after):
    examples, lengths = data

    def rows():
        source = grain.MapDataset.source(examples)
        ds = packing.pack_dataset(
            source, lengths, num_packing_bins=num_bins, buffer_size=buffer_size
        )
        return iter(ds)

    iterator = rows()
    head = [row for _, row in zip(range(stop_after), iterator, strict=False)]
    state = iterator.get_state()
    rest = list(iterator)
    resumed = rows()
    resumed.set_state(state)
    again = list(resumed)
    assert len(again) == len(rest) and len(head) + len(rest) == len(list(rows()))
    for row, row_again in zip(rest, again, strict=True):
        for name in row:
            np.testing.assert_array_equal(row[name], row_again[name])
