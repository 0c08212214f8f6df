"""BERT/ALBERT examples end to end: real sentencepiece vocabulary, synthetic and real text."""

import pickle

import ml_collections
import numpy as np
import pytest
from conftest import tiny_bert_config

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.objectives.bert_task import BertDataConfig, BertObjective

FEATURES = {
    "input_ids": ((128,), np.int32),
    "input_mask": ((128,), np.int32),
    "segment_ids": ((128,), np.int32),
    "masked_lm_positions": ((20,), np.int32),
    "masked_lm_ids": ((20,), np.int32),
    "masked_lm_weights": ((20,), np.float32),
    "pair_labels": ((), np.int32),
}

TEXT = (
    "The quick brown fox jumps over the lazy dog. It was not amused. The dog barked twice. "
    "Then everyone went home. Tomorrow is another day. The weather will be sunny and warm. "
    "Bakers woke early to knead the dough. Bread was sold before noon. "
)


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return Tokenizer(vocab_path)


def synthetic_group(tokenizer, rng, num_documents=40):
    """Documents of random normal pieces: 5-60 sentences of 3-30 tokens."""
    return [
        [
            rng.integers(tokenizer.first_normal_id, tokenizer.vocab_size, size=length).astype(
                np.int32
            )
            for length in rng.integers(3, 30, size=rng.integers(5, 60))
        ]
        for _ in range(num_documents)
    ]


def stacked(examples):
    return {name: np.stack([example[name] for example in examples]) for name in examples[0]}


@pytest.mark.parametrize(
    "options",
    [dict(), dict(sentence_pair_task="sop", whole_word_masking=True, max_ngram=3)],
    ids=["bert", "albert"],
)
def test_examples_have_the_contract_features(tokenizer, options):
    objective = BertObjective(BertDataConfig(**options), tokenizer)
    rng = np.random.default_rng(0)
    examples = objective.examples_from_documents(synthetic_group(tokenizer, rng), rng)
    assert len(examples) > 100
    for example in examples:
        assert {name: (v.shape, v.dtype) for name, v in example.items()} == FEATURES
    batch = stacked(examples)
    ids, mask, segments = batch["input_ids"], batch["input_mask"], batch["segment_ids"]
    assert (ids[:, 0] == tokenizer.cls_id).all()
    assert ((ids == tokenizer.sep_id).sum(1) == 2).all()
    assert (ids[mask == 0] == tokenizer.pad_id).all() and (segments[mask == 0] == 0).all()
    length = mask.sum(1)
    assert (ids[np.arange(len(ids)), length - 1] == tokenizer.sep_id).all()
    # Segment 1 starts right after the first [SEP].
    first_sep = np.argmax(ids == tokenizer.sep_id, axis=1)
    np.testing.assert_array_equal(segments.sum(1), length - first_sep - 1)


def test_statistics_on_a_large_batch(tokenizer):
    objective = BertObjective(BertDataConfig(max_predictions_per_seq=128), tokenizer)
    rng = np.random.default_rng(1)
    examples = []
    while len(examples) < 2000:
        examples += objective.examples_from_documents(synthetic_group(tokenizer, rng), rng)
    batch = stacked(examples)
    weights = batch["masked_lm_weights"]
    # The budget counts every real token, [CLS] and [SEP] included (google-research/bert).
    assert abs(weights.sum() / batch["input_mask"].sum() - 0.15) < 0.005
    rows, slots = np.nonzero(weights)
    positions = batch["masked_lm_positions"][rows, slots]
    corrupted = batch["input_ids"][rows, positions]
    original = batch["masked_lm_ids"][rows, slots]
    assert not np.isin(original, tokenizer.special_ids).any()
    assert abs(np.mean(corrupted == tokenizer.mask_id) - 0.8) < 0.015
    assert abs(np.mean(corrupted == original) - 0.1) < 0.015
    assert 0.45 < batch["pair_labels"].mean() < 0.55  # NSP, incl. BERT's forced random nexts


def test_real_text_round_trips_through_the_masks(tokenizer):
    objective = BertObjective(
        BertDataConfig(max_seq_length=32, max_predictions_per_seq=5, whole_word_masking=True),
        tokenizer,
    )
    documents = [tokenizer.encode_document(TEXT), tokenizer.encode_document(TEXT.upper())]
    rng = np.random.default_rng(2)
    examples = objective.examples_from_documents(documents, rng)
    assert examples
    for example in examples:
        restored = example["input_ids"].copy()
        real = example["masked_lm_weights"] == 1
        restored[example["masked_lm_positions"][real]] = example["masked_lm_ids"][real]
        text = tokenizer.decode(restored)
        assert text.startswith("[CLS]") and text.count("[SEP]") == 2
        first, second = (part.strip() for part in text[len("[CLS]") :].split("[SEP]")[:2])
        source = TEXT.upper() if first.isupper() else TEXT
        assert first in source
        if example["pair_labels"] == 0:
            assert second in source and source.index(first) < source.index(second)


def test_same_seed_same_examples(tokenizer):
    objective = BertObjective(BertDataConfig(sentence_pair_task="sop", max_ngram=3), tokenizer)
    documents = synthetic_group(tokenizer, np.random.default_rng(3), num_documents=10)
    first = objective.examples_from_documents(documents, np.random.default_rng(4))
    again = objective.examples_from_documents(documents, np.random.default_rng(4))
    assert len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        for name in FEATURES:
            np.testing.assert_array_equal(a[name], b[name])


def test_empty_group_and_pickling(tokenizer):
    objective = BertObjective(BertDataConfig(), tokenizer)
    assert objective.examples_from_documents([[], []], np.random.default_rng(0)) == []
    restored = pickle.loads(pickle.dumps(objective))
    documents = synthetic_group(tokenizer, np.random.default_rng(5), num_documents=3)
    first = objective.examples_from_documents(documents, np.random.default_rng(6))
    second = restored.examples_from_documents(documents, np.random.default_rng(6))
    np.testing.assert_array_equal(first[0]["input_ids"], second[0]["input_ids"])
    assert objective.finalize("dataset") == "dataset"


def run_config(**objective):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"max_seq_length": 64})
    config.objective = ml_collections.ConfigDict(
        dict(
            name="albert",
            masked_lm_prob=0.15,
            max_predictions_per_seq=10,
            short_seq_prob=0.1,
            whole_word_masking=True,
            max_ngram=3,
            sentence_pair_task="sop",
            sop_both_orders=False,
        )
    )
    config.objective.update(objective)
    return config


def test_data_config_from_run_config():
    assert BertDataConfig.from_config(run_config()) == BertDataConfig(
        max_seq_length=64,
        max_predictions_per_seq=10,
        whole_word_masking=True,
        max_ngram=3,
        sentence_pair_task="sop",
    )
    with pytest.raises(ValueError, match="sentence_pair_task .*'mlm'.*config.objective"):
        BertDataConfig.from_config(run_config(sentence_pair_task="mlm"))
    config = run_config()
    del config.objective["max_ngram"]
    with pytest.raises(ValueError, match="config.objective.max_ngram is missing"):
        BertDataConfig.from_config(config)


def test_data_config_from_the_bert_recipe():
    config = BertDataConfig.from_config(tiny_bert_config())
    assert config.max_seq_length == 64 and config.sentence_pair_task == "nsp"
