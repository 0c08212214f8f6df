"""The grain pipeline end to end: shapes, determinism, resume, eval, workers."""

from __future__ import annotations

import gzip
import json

import grain
import jax
import numpy as np
import pytest
from conftest import base_config_with
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.data import pipeline, sources
from bert_jax.data.tokenizer import Tokenizer

_WORDS = ["time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child"]


class ChunkObjective:
    """Test-only objective: fixed-length chunks of a group's tokens plus one random draw."""

    length = 16

    def examples_from_documents(self, documents, rng):
        tokens = np.concatenate([sentence for document in documents for sentence in document])
        num_chunks = len(tokens) // self.length
        chunks = tokens[: num_chunks * self.length].reshape(num_chunks, self.length)
        draws = rng.integers(0, 2**31, size=num_chunks)
        return [{"input_ids": c, "draw": d} for c, d in zip(chunks, draws, strict=True)]

    def finalize(self, ds, *, chunks=False):
        return ds


def write_corpus(directory, num_shards=4, docs_per_shard=30):
    rng = np.random.default_rng(0)
    for shard in range(num_shards):
        docs = []
        for i in range(docs_per_shard):
            sentences = [
                " ".join(rng.choice(_WORDS, size=rng.integers(4, 12))).capitalize() + "."
                for _ in range(rng.integers(1, 5))  # one-sentence documents included
            ]
            docs.append(f"Shard {shard} doc {i}. " + " ".join(sentences))
        docs.append("\u200b")  # survives the source, but has no sentence
        path = directory / f"c4-train.{shard:05d}-of-{num_shards:05d}.json.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": doc}) + "\n" for doc in docs)
    return str(directory / "c4-train.*.json.gz")


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return Tokenizer(vocab_path)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    train_pattern = write_corpus(tmp_path_factory.mktemp("corpus"))
    return base_config_with(
        dict(
            seed=7,
            data=dict(
                source="jsonl",
                train_pattern=train_pattern,
                eval_pattern=train_pattern.replace("*", "00000-of-00004"),
                text_field="text",
                docs_per_group=4,
                shuffle_buffer=32,
                worker_count=0,
                prefetch=2,
            ),
        )
    )


def take(dataset_or_iterator, n):
    it = iter(dataset_or_iterator)
    return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def dataset(config, tokenizer, split="train", **kwargs):
    kwargs = {"global_batch_size": 8, "process_index": 0, "process_count": 1, **kwargs}
    return pipeline.create_dataset(config, ChunkObjective(), tokenizer, split=split, **kwargs)


def test_batch_shapes_per_host(config, tokenizer):
    batch = take(dataset(config, tokenizer, process_index=1, process_count=2), 1)[0]
    assert batch["input_ids"].shape == (4, ChunkObjective.length)
    assert batch["input_ids"].dtype == np.int32 and batch["draw"].shape == (4,)
    with pytest.raises(ValueError, match="not divisible"):
        dataset(config, tokenizer, global_batch_size=9, process_count=2)


def test_equal_seeds_give_equal_batches(config, tokenizer):
    first = take(dataset(config, tokenizer), 5)
    assert_same_batches(first, take(dataset(config, tokenizer), 5))
    other_seed = config.copy_and_resolve_references()
    other_seed.seed = 8
    assert not np.array_equal(first[0]["draw"], take(dataset(other_seed, tokenizer), 1)[0]["draw"])


def test_hosts_draw_different_examples(config, tokenizer):
    host0, host1 = (
        take(dataset(config, tokenizer, process_index=i, process_count=2), 3) for i in range(2)
    )
    assert not np.array_equal(host0[0]["input_ids"], host1[0]["input_ids"])


def test_resume_from_state_is_exact(config, tokenizer):
    ds = dataset(config, tokenizer)
    it = iter(ds)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # as orbax stores it
    expected = take(it, 6)  # crosses shard and epoch boundaries (~25 batches per epoch)
    resumed = iter(dataset(config, tokenizer))
    resumed.set_state(state)
    assert_same_batches(take(resumed, 6), expected)


def test_eval_is_finite_and_identical_each_time(config, tokenizer):
    first = list(dataset(config, tokenizer, split="eval"))
    assert 0 < len(first) < 100
    assert_same_batches(list(dataset(config, tokenizer, split="eval")), first)


def test_documents_without_sentences_are_counted(config, tokenizer):
    texts = grain.MapDataset.source(["One. Two.", "\u200b", "Three."]).to_iter_dataset()
    it = iter(sources.EncodedDocumentsIterDataset(texts, tokenizer))
    assert [len(document) for document in it] == [2, 1]
    assert it.skip_counts.no_sentences == 1


def test_global_batch_is_sharded_over_the_batch_axis(config, tokenizer):
    batch = take(dataset(config, tokenizer), 1)[0]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    arrays = pipeline.global_batch(batch, NamedSharding(mesh, PartitionSpec("data")))
    assert isinstance(arrays["input_ids"], jax.Array)
    np.testing.assert_array_equal(np.asarray(arrays["input_ids"]), batch["input_ids"])


def test_two_grain_workers_resume_exactly(config, tokenizer):
    workers = config.copy_and_resolve_references()
    workers.data.worker_count = 2
    it = iter(dataset(workers, tokenizer))
    try:
        take(it, 2)
        state = json.loads(json.dumps(it.get_state()))
        expected = take(it, 3)
    finally:
        it.close()
    resumed = iter(dataset(workers, tokenizer))
    try:
        resumed.set_state(state)
        assert_same_batches(take(resumed, 3), expected)
    finally:
        resumed.close()


def test_real_bert_objective_on_the_sample_corpus(corpus_dir, tokenizer):
    from bert_jax.objectives.bert_task import BertDataConfig, BertObjective

    config = base_config_with(
        dict(
            seed=0,
            data=dict(
                source="jsonl",
                train_pattern=str(corpus_dir / "c4-train.*.json.gz"),
                eval_pattern=str(corpus_dir / "c4-validation.*.json.gz"),
                text_field="text",
                docs_per_group=8,
                shuffle_buffer=64,
                worker_count=0,
                prefetch=2,
            ),
        )
    )
    objective = BertObjective(
        BertDataConfig(max_seq_length=64, max_predictions_per_seq=10), tokenizer
    )
    ds = pipeline.create_dataset(
        config,
        objective,
        tokenizer,
        split="train",
        global_batch_size=16,
        process_count=1,
        process_index=0,
    )
    it = iter(ds)
    batch = next(it)
    shapes = {name: (value.shape, value.dtype) for name, value in batch.items()}
    assert shapes == {
        "input_ids": ((16, 64), np.int32),
        "input_mask": ((16, 64), np.int32),
        "segment_ids": ((16, 64), np.int32),
        "masked_lm_positions": ((16, 10), np.int32),
        "masked_lm_ids": ((16, 10), np.int32),
        "masked_lm_weights": ((16, 10), np.float32),
        "pair_labels": ((16,), np.int32),
    }
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 2)
    resumed = iter(ds)
    resumed.set_state(state)
    assert_same_batches(take(resumed, 2), expected)
