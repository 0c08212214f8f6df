"""Sentence pairs for NSP / SOP, checked against the provenance of every token."""

import numpy as np
import pytest

from bert_jax.objectives.sentence_pairs import (
    build_bert_inputs,
    create_segment_pairs,
    truncation_counts,
)

# Token ids encode where they come from: 6 + document * STRIDE + position in the document.
STRIDE = 100_000


def synthetic_documents(rng, num_documents, sentences=(2, 40), sentence_length=(2, 12)):
    documents = []
    for document_index in range(num_documents):
        lengths = rng.integers(*sentence_length, size=rng.integers(*sentences))
        positions = np.arange(lengths.sum()) + 6 + document_index * STRIDE
        documents.append(np.split(positions.astype(np.int32), np.cumsum(lengths)[:-1]))
    return documents


def origin(tokens):
    """(document index, position in the document) of each synthetic token."""
    return (tokens - 6) // STRIDE, (tokens - 6) % STRIDE


def is_contiguous_from_one_document(tokens):
    document, position = origin(tokens)
    return bool((document == document[0]).all() and (np.diff(position) == 1).all())


def sentence_starts(document):
    return set(np.cumsum([0] + [len(s) for s in document[:-1]]).tolist())


@pytest.fixture(scope="module")
def documents():
    return synthetic_documents(np.random.default_rng(0), 300, sentences=(20, 200))


def test_truncation_counts_match_one_token_at_a_time():
    for length_a in range(12):
        for length_b in range(12):
            for max_num_tokens in range(2, 14):
                a, b = length_a, length_b
                while a + b > max_num_tokens:  # the original rule: longer one, B on ties
                    if a > b:
                        a -= 1
                    else:
                        b -= 1
                removed = truncation_counts(np.array(length_a), np.array(length_b), max_num_tokens)
                assert (int(removed[0]), int(removed[1])) == (length_a - a, length_b - b)


@pytest.mark.parametrize("task", ["nsp", "sop", "none"])
def test_pairs_fit_and_are_nonempty_contiguous_slices(documents, task):
    pairs = create_segment_pairs(
        documents, np.random.default_rng(1), max_num_tokens=61, short_seq_prob=0.1, task=task
    )
    assert len(pairs) > 1000
    for tokens_a, tokens_b, label in pairs:
        assert len(tokens_a) >= 1 and len(tokens_b) >= 1
        assert len(tokens_a) + len(tokens_b) <= 61
        assert tokens_a.dtype == tokens_b.dtype == np.int32
        assert is_contiguous_from_one_document(tokens_a)
        assert is_contiguous_from_one_document(tokens_b)
        assert label in (0, 1)


def test_truncation_cuts_front_and_back_evenly():
    documents = [[np.arange(6, 506, dtype=np.int32)], [np.arange(1006, 1506, dtype=np.int32)]]
    front_cut = []
    for seed in range(400):
        pairs = create_segment_pairs(
            documents, np.random.default_rng(seed), max_num_tokens=100, short_seq_prob=0, task="nsp"
        )
        for tokens_a, tokens_b, _ in pairs:
            assert len(tokens_a) == len(tokens_b) == 50  # 500 + 500 -> 50 + 50
            front_cut.append(int(tokens_a[0]) % 1000 - 6)  # tokens removed from A's front
    # 450 removals, each from the front with probability 1/2: mean 225, std ~10.6.
    assert abs(np.mean(front_cut) - 225) < 3


def test_nsp_labels_are_balanced(documents):
    # As in BERT, a chunk of a single sentence always takes a random next. With short_seq_prob=0
    # and sentences far shorter than the target, that happens exactly when A ends the document;
    # all other pairs come from the 50% coin.
    last_position = {index: sum(map(len, document)) - 1 for index, document in enumerate(documents)}
    coin_labels, all_labels = [], []
    for seed in range(3):
        pairs = create_segment_pairs(
            documents,
            np.random.default_rng(seed),
            max_num_tokens=125,
            short_seq_prob=0,
            task="nsp",
        )
        for tokens_a, _, label in pairs:
            document, position = origin(tokens_a)
            all_labels.append(label)
            if position[-1] != last_position[int(document[0])]:
                coin_labels.append(label)
    assert len(coin_labels) > 5000
    assert abs(np.mean(coin_labels) - 0.5) < 0.02, np.mean(coin_labels)
    assert 0.5 < np.mean(all_labels) < 0.53  # the forced random nexts of BERT


def test_nsp_pairs_follow_bert_exactly_without_truncation():
    # max_num_tokens is larger than any two documents: no truncation, every document is one chunk.
    rng = np.random.default_rng(2)
    documents = synthetic_documents(rng, 200, sentences=(1, 30), sentence_length=(1, 10))
    pairs = create_segment_pairs(documents, rng, max_num_tokens=1000, short_seq_prob=0, task="nsp")
    covered = [np.zeros(sum(map(len, document)), bool) for document in documents]
    expected_start = {}
    for tokens_a, tokens_b, label in pairs:
        document_a, position_a = origin(tokens_a)
        document_b, position_b = origin(tokens_b)
        index = int(document_a[0])
        # A starts where the previous pair of the document stopped (sentences put back).
        assert position_a[0] == expected_start.get(index, 0)
        covered[index][position_a] = True
        if label == 0:
            assert document_b[0] == index and position_b[0] == position_a[-1] + 1
            assert position_b[-1] == len(covered[index]) - 1  # B runs to the end of the chunk
            covered[index][position_b] = True
            expected_start[index] = len(covered[index])
        else:
            other = int(document_b[0])
            assert other != index  # random next comes from another document
            assert position_b[0] in sentence_starts(documents[other])
            expected_start[index] = int(position_a[-1]) + 1
    assert all(mask.all() for mask in covered)  # nothing wasted


def test_nsp_single_sentence_documents_take_a_random_next():
    documents = [[np.full(5, 6 + i, np.int32)] for i in range(10)]
    pairs = create_segment_pairs(
        documents, np.random.default_rng(0), max_num_tokens=20, short_seq_prob=0, task="nsp"
    )
    assert len(pairs) == 10
    for index, (tokens_a, tokens_b, label) in enumerate(pairs):
        assert label == 1 and (tokens_a == 6 + index).all() and tokens_b[0] != 6 + index


def test_nsp_with_a_single_document_falls_back_to_actual_next():
    (document,) = synthetic_documents(np.random.default_rng(3), 1, sentences=(60, 61))
    pairs = create_segment_pairs(
        [document, [], [np.array([], np.int32)]],  # empty documents do not count as "other"
        np.random.default_rng(0),
        max_num_tokens=40,
        short_seq_prob=0,
        task="nsp",
    )
    assert pairs and all(label == 0 for _, _, label in pairs)
    single = [[np.arange(6, 12, dtype=np.int32)]]
    assert (
        create_segment_pairs(
            single, np.random.default_rng(0), max_num_tokens=40, short_seq_prob=0, task="nsp"
        )
        == []
    )


def test_sop_labels_are_balanced_and_never_use_another_document(documents):
    pairs = [
        pair
        for seed in range(3)
        for pair in create_segment_pairs(
            documents,
            np.random.default_rng(seed),
            max_num_tokens=125,
            short_seq_prob=0.1,
            task="sop",
        )
    ]
    labels = np.array([label for _, _, label in pairs])
    assert len(labels) > 5000
    assert abs(labels.mean() - 0.5) < 0.02, labels.mean()
    for tokens_a, tokens_b, label in pairs:
        document_a, position_a = origin(tokens_a)
        document_b, position_b = origin(tokens_b)
        assert document_a[0] == document_b[0]
        first, second = (position_b, position_a) if label else (position_a, position_b)
        assert first[-1] < second[0]


def test_swapped_sop_pair_is_the_two_consecutive_segments_reversed():
    rng = np.random.default_rng(4)
    documents = synthetic_documents(rng, 100, sentences=(2, 30), sentence_length=(1, 10))
    text = [np.concatenate(document) for document in documents]
    pairs = create_segment_pairs(documents, rng, max_num_tokens=1000, short_seq_prob=0, task="sop")
    assert len(pairs) == 100 and 0 < sum(label for _, _, label in pairs) < 100
    for tokens_a, tokens_b, label in pairs:
        index = int(origin(tokens_a)[0][0])
        first, second = (tokens_b, tokens_a) if label else (tokens_a, tokens_b)
        assert np.array_equal(np.concatenate([first, second]), text[index])  # whole document
        assert origin(second)[1][0] in sentence_starts(documents[index])  # split on a sentence


@pytest.mark.parametrize("task", ["sop", "none"])
def test_sop_and_none_skip_single_sentence_chunks(task):
    documents = [[np.arange(6, 20, dtype=np.int32)], [np.arange(30, 33, dtype=np.int32)] * 2]
    pairs = create_segment_pairs(
        documents, np.random.default_rng(0), max_num_tokens=50, short_seq_prob=0, task=task
    )
    assert len(pairs) == 1 and pairs[0][0][0] == 30


def test_none_task_keeps_natural_order(documents):
    pairs = create_segment_pairs(
        documents, np.random.default_rng(5), max_num_tokens=61, short_seq_prob=0.1, task="none"
    )
    for tokens_a, tokens_b, label in pairs:
        assert label == 0
        assert origin(tokens_a)[0][0] == origin(tokens_b)[0][0]
        assert origin(tokens_a)[1][-1] < origin(tokens_b)[1][0]


def test_empty_documents_and_sentences_are_skipped():
    empty = np.array([], np.int32)
    assert (
        create_segment_pairs(
            [[], [empty]], np.random.default_rng(0), max_num_tokens=10, short_seq_prob=0, task="nsp"
        )
        == []
    )
    documents = [[empty, np.array([7, 8], np.int32), empty, np.array([9], np.int32)], []]
    pairs = create_segment_pairs(
        documents, np.random.default_rng(0), max_num_tokens=10, short_seq_prob=0, task="sop"
    )
    assert len(pairs) == 1 and sorted(np.concatenate(pairs[0][:2]).tolist()) == [7, 8, 9]


def test_same_seed_same_pairs(documents):
    def run(seed):
        return create_segment_pairs(
            documents,
            np.random.default_rng(seed),
            max_num_tokens=61,
            short_seq_prob=0.1,
            task="nsp",
        )

    first, again, other = run(7), run(7), run(8)
    assert len(first) == len(again)
    for (a1, b1, l1), (a2, b2, l2) in zip(first, again, strict=True):
        assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and l1 == l2
    assert [label for *_, label in first] != [label for *_, label in other]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="task must be one of"):
        create_segment_pairs(
            [], np.random.default_rng(0), max_num_tokens=10, short_seq_prob=0, task="mlm"
        )
    with pytest.raises(ValueError, match="document 1, sentence 0"):
        create_segment_pairs(
            [[np.ones(3)], [np.ones((2, 2))]],
            np.random.default_rng(0),
            max_num_tokens=10,
            short_seq_prob=0,
            task="nsp",
        )


def test_build_bert_inputs_layout():
    pairs = [
        (np.array([10, 11], np.int32), np.array([20], np.int32), 0),
        (np.array([12], np.int32), np.array([21, 22, 23], np.int32), 1),
    ]
    inputs = build_bert_inputs(pairs, cls_id=3, sep_id=4, max_seq_length=9)
    np.testing.assert_array_equal(
        inputs["input_ids"], [[3, 10, 11, 4, 20, 4, 0, 0, 0], [3, 12, 4, 21, 22, 23, 4, 0, 0]]
    )
    np.testing.assert_array_equal(
        inputs["input_mask"], [[1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        inputs["segment_ids"], [[0, 0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0, 0]]
    )
    assert all(array.dtype == np.int32 for array in inputs.values())
    assert build_bert_inputs([], cls_id=3, sep_id=4, max_seq_length=9)["input_ids"].shape == (0, 9)
    with pytest.raises(ValueError, match="pair 2 needs 10 tokens"):
        build_bert_inputs(
            pairs + [(np.ones(3), np.ones(4), 0)], cls_id=3, sep_id=4, max_seq_length=9
        )


def test_sop_both_orders_scores_every_pair_swapped_and_not():
    rng = np.random.default_rng(5)
    documents = synthetic_documents(rng, 100, sentences=(2, 30), sentence_length=(1, 10))
    text = [np.concatenate(document) for document in documents]
    pairs = create_segment_pairs(
        documents, rng, max_num_tokens=1000, short_seq_prob=0, task="sop", both_orders=True
    )
    assert len(pairs) == 200
    for (swapped_a, swapped_b, swapped), (tokens_a, tokens_b, label) in zip(
        pairs[::2], pairs[1::2], strict=True
    ):
        assert (swapped, label) == (1, 0)
        assert np.array_equal(swapped_a, tokens_b) and np.array_equal(swapped_b, tokens_a)
        index = int(origin(tokens_a)[0][0])
        assert np.array_equal(np.concatenate([tokens_a, tokens_b]), text[index])
