"""Properties of NSP / SOP pair building and of whole BERT / ALBERT examples, on any documents."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VOCAB_PATH, property_examples
from hypothesis import given, settings
from hypothesis import strategies as st
from properties.strategies import document_of_token, documents, unique_token_documents

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.objectives.bert_task import BertDataConfig, BertObjective
from bert_jax.objectives.sentence_pairs import SENTENCE_PAIR_TASKS, create_segment_pairs

PAIR_OPTIONS = st.fixed_dictionaries(
    {
        "max_num_tokens": st.integers(2, 130),
        "short_seq_prob": st.sampled_from([0.0, 0.1, 1.0]),
        "task": st.sampled_from(SENTENCE_PAIR_TASKS),
        "both_orders": st.booleans(),
    }
)


def _is_run(segment: np.ndarray) -> bool:
    return bool(np.all(np.diff(segment) == 1))


@settings(max_examples=property_examples(120), deadline=None)
@given(unique_token_documents(), PAIR_OPTIONS, st.integers(0, 2**32 - 1))
def test_pairs_are_contiguous_text_in_the_right_order(group, options, seed):
    pairs = create_segment_pairs(group, np.random.default_rng(seed), **options)
    source = document_of_token(group)
    task = options["task"]
    for a, b, label in pairs:
        assert a.dtype == b.dtype == np.int32 and a.ndim == b.ndim == 1
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= options["max_num_tokens"]
        # Truncation only trims the ends, so each segment is one contiguous piece of text.
        assert _is_run(a) and _is_run(b)
        same_document = source[int(a[0])] == source[int(b[0])]
        a_before_b = a[-1] < b[0]
        if task == "none":
            assert label == 0 and same_document and a_before_b
        elif task == "sop":
            assert same_document and a_before_b == (label == 0)
        else:  # nsp: label 1 = B from another document of the group
            assert label in (0, 1) and same_document == (label == 0)
            if label == 0:
                assert a_before_b
    if task == "sop" and options["both_orders"]:
        # (B, A, 1) then (A, B, 0): the same truncated text in both orders.
        assert len(pairs) % 2 == 0
        for (b, a, swapped), (a_again, b_again, label) in zip(pairs[::2], pairs[1::2], strict=True):
            assert (swapped, label) == (1, 0)
            assert np.array_equal(a, a_again) and np.array_equal(b, b_again)


@settings(max_examples=property_examples(80), deadline=None)
@given(documents(vocab_size=8000), PAIR_OPTIONS, st.integers(0, 2**32 - 1))
def test_pairs_from_any_documents_fit(group, options, seed):
    pairs = create_segment_pairs(group, np.random.default_rng(seed), **options)
    tokens = [s for document in group for s in document]
    if not any(len(s) for s in tokens):
        assert pairs == []
    for a, b, label in pairs:
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= options["max_num_tokens"]
        assert label in (0, 1)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(VOCAB_PATH)


BERT_OPTIONS = st.fixed_dictionaries(
    {
        "max_seq_length": st.integers(5, 96),
        "max_predictions_per_seq": st.integers(1, 24),
        "whole_word_masking": st.booleans(),
        "max_ngram": st.integers(1, 3),
        "sentence_pair_task": st.sampled_from(SENTENCE_PAIR_TASKS),
        "short_seq_prob": st.sampled_from([0.0, 0.1]),
    }
)


@settings(max_examples=property_examples(60), deadline=None)
@given(documents(vocab_size=8000), BERT_OPTIONS, st.integers(0, 2**32 - 1))
def test_bert_examples_layout_and_targets(tokenizer, group, options, seed):
    config = BertDataConfig(**options)
    objective = BertObjective(config, tokenizer)
    examples = objective.examples_from_documents(group, np.random.default_rng(seed))
    length, predictions = config.max_seq_length, config.max_predictions_per_seq
    special = np.isin(np.arange(tokenizer.vocab_size), tokenizer.special_ids)
    for example in examples:
        assert example["input_ids"].shape == example["segment_ids"].shape == (length,)
        assert example["masked_lm_positions"].shape == (predictions,)
        assert example["pair_labels"].shape == () and int(example["pair_labels"]) in (0, 1)
        real = example["input_mask"] == 1
        total = int(real.sum())
        assert real[:total].all() and not real[total:].any()
        ids = example["input_ids"]
        assert ids[0] == tokenizer.cls_id and ids[total - 1] == tokenizer.sep_id
        assert (ids[total:] == tokenizer.pad_id).all()
        segment_b = np.flatnonzero(example["segment_ids"])
        # Segment 1 is B plus its [SEP]: one run ending at the last real token.
        assert segment_b.size >= 2 and segment_b[-1] == total - 1 and _is_run(segment_b)
        assert ids[segment_b[0] - 1] == tokenizer.sep_id
        weights = example["masked_lm_weights"] == 1
        positions = example["masked_lm_positions"][weights]
        targets = example["masked_lm_ids"][weights]
        # Targets only at real, non-special positions; everything else is untouched.
        assert real[positions].all() and not special[targets].any()
        assert (positions > 0).all() and (positions != segment_b[0] - 1).all()
