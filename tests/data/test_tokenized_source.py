"""Pre-tokenised ArrayRecord shards: same examples as raw text, exact resume, vocab check."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import base_config_with

from bert_jax.data import pipeline, sources, tokenized_source
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.objectives.bert_task import BertDataConfig, BertObjective
from bert_jax.objectives.t5_data import T5DataConfig, T5Objective
from data_prep import tokenize_shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, corpus_dir, vocab_path):
    """Two raw shards cut from the embedded corpus (plus a document with no sentence),
    and their tokenised shards, written by the job's serial runner."""
    raw = tmp_path_factory.mktemp("raw")
    with gzip.open(corpus_dir / "c4-train.00000-of-00004.json.gz", "rt") as f:
        lines = [line for _, line in zip(range(60), f, strict=False)]
    lines.insert(5, json.dumps({"text": "\u200b"}) + "\n")
    for shard in range(2):
        with gzip.open(raw / f"c4-train.{shard:05d}-of-00002.json.gz", "wt") as f:
            f.writelines(lines[shard::2])
    tokenized = tmp_path_factory.mktemp("tokenized")
    pattern = str(raw / "c4-train.*.json.gz")
    manifest, _ = tokenize_shards.run(pattern, str(tokenized), vocab_path, runner="serial")
    return {"raw": pattern, "tokenized": str(tokenized / "*.array_record"), "manifest": manifest}


def make_config(source, pattern, vocab_path, **data):
    return base_config_with(
        dict(
            seed=3,
            data=dict(
                source=source,
                train_pattern=pattern,
                eval_pattern=pattern,
                text_field="text",
                vocab_path=vocab_path,
                docs_per_group=4,
                shuffle_buffer=16,
                cycle_length=1,  # json shards one after the other, as the shards are laid out
                worker_count=0,
                prefetch=0,
                **data,
            ),
        )
    )


def batches(config, objective, tokenizer, split, n=None):
    ds = pipeline.create_dataset(
        config,
        objective,
        tokenizer,
        split=split,
        global_batch_size=4,
        process_count=1,
        process_index=0,
    )
    it = iter(ds)
    return list(it) if n is None else [next(it) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def objectives(vocab_path):
    bert = BertObjective(
        BertDataConfig(max_seq_length=64, max_predictions_per_seq=10), Tokenizer(vocab_path)
    )
    t5 = T5Objective(T5DataConfig.preset("span_corruption", 64), Tokenizer(vocab_path, 100))
    return {"bert": (bert, Tokenizer(vocab_path)), "t5": (t5, Tokenizer(vocab_path, 100))}


def test_manifest_counts_and_records_equal_the_raw_text_encoding(corpus, vocab_path):
    tokenizer = Tokenizer(vocab_path)
    manifest = corpus["manifest"]
    assert manifest["documents"] == 60 and manifest["skip_counts"]["no_sentences"] == 1
    assert manifest["vocab_sha256"] == tokenized_source.file_sha256(vocab_path)
    raw_config = make_config("jsonl", corpus["raw"], vocab_path)
    raw = sources.documents(
        raw_config.data, "eval", tokenizer, seed=0, process_index=0, process_count=1, repeat=False
    )
    ours = tokenized_source.document_stream(
        make_config("tokenized", corpus["tokenized"], vocab_path).data,
        "eval",
        seed=0,
        process_index=0,
        process_count=1,
        repeat=False,
    )
    raw, ours = list(raw), list(ours)
    assert len(ours) == len(raw) == 60
    assert manifest["tokens"] == sum(len(s) for document in ours for s in document)
    for expected, actual in zip(raw, ours, strict=True):
        assert len(expected) == len(actual)
        for a, b in zip(expected, actual, strict=True):
            assert b.dtype == np.int32
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_tokenized_source_gives_the_raw_text_examples(corpus, vocab_path, family):
    objective, tokenizer = objectives(vocab_path)[family]
    raw = batches(make_config("jsonl", corpus["raw"], vocab_path), objective, tokenizer, "eval")
    tokenized_config = make_config("tokenized", corpus["tokenized"], vocab_path)
    assert_same_batches(batches(tokenized_config, objective, tokenizer, "eval"), raw)
    if family == "bert":  # ids, NSP labels and masks all match, and both labels occur
        labels = np.concatenate([b["pair_labels"] for b in raw])
        assert 0 < labels.mean() < 1


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_tokenized_train_split_resumes_exactly(corpus, vocab_path, family):
    objective, tokenizer = objectives(vocab_path)[family]
    config = make_config("tokenized", corpus["tokenized"], vocab_path)
    ds = pipeline.create_dataset(
        config,
        objective,
        tokenizer,
        split="train",
        global_batch_size=4,
        process_index=0,
        process_count=1,
    )
    it = iter(ds)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as orbax stores it
    expected = [next(it) for _ in range(30)]  # past the end of an epoch of 60 documents
    resumed = iter(
        pipeline.create_dataset(
            config,
            objective,
            tokenizer,
            split="train",
            global_batch_size=4,
            process_index=0,
            process_count=1,
        )
    )
    resumed.set_state(state)
    assert_same_batches([next(resumed) for _ in range(30)], expected)


def test_hosts_take_disjoint_shares_of_documents(corpus, vocab_path):
    config = make_config("tokenized", corpus["tokenized"], vocab_path)
    shares = [
        list(
            tokenized_source.document_stream(
                config.data, "eval", seed=0, process_index=i, process_count=2, repeat=False
            )
        )
        for i in range(2)
    ]
    texts = [np.concatenate(document).tobytes() for share in shares for document in share]
    assert [len(share) for share in shares] == [30, 30] and len(set(texts)) == 60


def test_vocabulary_mismatch_names_both_files(corpus, vocab_path, tmp_path):
    other_vocab = tmp_path / "other_spm.model"
    shutil.copyfile(vocab_path, other_vocab)
    with open(other_vocab, "ab") as f:
        f.write(b"\0")  # another file: another checksum
    config = make_config("tokenized", corpus["tokenized"], str(other_vocab))
    manifest_dir = corpus["tokenized"].rsplit("/", 1)[0]
    with pytest.raises(ValueError, match="Vocabulary mismatch") as error:
        tokenized_source.document_stream(
            config.data, "train", seed=0, process_index=0, process_count=1, repeat=True
        )
    assert f"{manifest_dir}/manifest.json" in str(error.value)
    assert str(other_vocab) in str(error.value) and vocab_path in str(error.value)


def test_missing_manifest_and_no_shards_are_clear_errors(corpus, vocab_path, tmp_path):
    shard = corpus["tokenized"].replace("*", "c4-train.00000-of-00002")
    shutil.copyfile(shard, tmp_path / "lonely.array_record")
    config = make_config("tokenized", str(tmp_path / "*.array_record"), vocab_path)
    with pytest.raises(ValueError, match="manifest.json not found"):
        tokenized_source.document_stream(
            config.data, "eval", seed=0, process_index=0, process_count=1, repeat=False
        )
    config = make_config("tokenized", corpus["raw"], vocab_path)
    with pytest.raises(ValueError, match="matches no .array_record shard"):
        tokenized_source.document_stream(
            config.data, "eval", seed=0, process_index=0, process_count=1, repeat=False
        )


def test_record_round_trip_keeps_sentences_and_wide_ids():
    sentences = [np.array([6, 7, 8], np.int32), np.array([70000], np.int32)]
    for dtype in (np.dtype("<u4"),):
        decoded = tokenized_source.decode_record(
            tokenized_source.encode_record(sentences, dtype), dtype
        )
        assert [s.tolist() for s in decoded] == [[6, 7, 8], [70000]]
    assert tokenized_source.token_dtype_for(32000) == np.dtype("<u2")
    assert tokenized_source.token_dtype_for(70001) == np.dtype("<u4")


@pytest.mark.slow
def test_two_grain_workers_resume_exactly_from_shards(corpus, vocab_path):
    objective, tokenizer = objectives(vocab_path)["bert"]
    config = make_config("tokenized", corpus["tokenized"], vocab_path)
    config.data.worker_count = 2

    def make_iterator():
        return iter(
            pipeline.create_dataset(
                config,
                objective,
                tokenizer,
                split="train",
                global_batch_size=4,
                process_index=0,
                process_count=1,
            )
        )

    it = make_iterator()
    try:
        for _ in range(3):
            next(it)
        state = json.loads(json.dumps(it.get_state()))
        expected = [next(it) for _ in range(4)]
    finally:
        it.close()
    resumed = make_iterator()
    try:
        resumed.set_state(state)
        assert_same_batches([next(resumed) for _ in range(4)], expected)
    finally:
        resumed.close()


def copy_shards(corpus, directory):
    shutil.copytree(corpus["tokenized"].rsplit("/", 1)[0], directory)
    return str(directory / "*.array_record")


def eval_documents(pattern, vocab_path):
    config = make_config("tokenized", pattern, vocab_path)
    host = dict(seed=0, process_index=0, process_count=1, repeat=False)
    return list(tokenized_source.document_stream(config.data, "eval", **host))


def test_only_the_shards_the_manifest_lists_are_read(corpus, vocab_path, tmp_path, caplog):
    pattern = copy_shards(corpus, tmp_path / "shards")
    stale = tmp_path / "shards" / "tokenized-00000-of-00001.array_record"  # an earlier run's
    shutil.copyfile(tmp_path / "shards" / "c4-train.00000-of-00002.array_record", stale)
    with caplog.at_level("WARNING"):
        assert len(eval_documents(pattern, vocab_path)) == 60
    assert f"Ignoring 1 file(s) of {pattern!r}" in caplog.text and str(stale) in caplog.text


def test_a_shard_unlike_its_manifest_entry_is_refused(corpus, vocab_path, tmp_path):
    pattern = copy_shards(corpus, tmp_path / "shards")
    first, second = (
        tmp_path / "shards" / f"c4-train.0000{k}-of-00002.array_record" for k in (0, 1)
    )
    shutil.copyfile(second, first)  # 29 records where the manifest lists 31
    with pytest.raises(ValueError, match="holds 29 records") as error:
        eval_documents(pattern, vocab_path)
    assert str(first) in str(error.value) and "manifest.json lists 31 records" in str(error.value)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda m: "{not json", "is not a JSON manifest"),
        (lambda m: "[]", "holds a JSON list, not a manifest"),
        (
            lambda m: json.dumps({k: v for k, v in m.items() if k != "shards"}),
            "'shards' is missing",
        ),
        (lambda m: json.dumps({**m, "token_dtype": 7}), "'token_dtype' is a int, not a str"),
        (lambda m: json.dumps({**m, "shards": [{"output": "x"}]}), r"shards\[0\]"),
    ],
)
def test_a_damaged_manifest_names_its_file(corpus, vocab_path, tmp_path, damage, expected):
    pattern = copy_shards(corpus, tmp_path / "shards")
    path = tmp_path / "shards" / "manifest.json"
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(ValueError, match=expected) as error:
        eval_documents(pattern, vocab_path)
    assert str(path) in str(error.value)


def test_directories_of_one_pattern_with_other_vocabularies_are_named(corpus, vocab_path, tmp_path):
    copy_shards(corpus, tmp_path / "a")
    copy_shards(corpus, tmp_path / "b")
    path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(vocab_path="/elsewhere/spm.model", vocab_sha256="0" * 64, token_dtype="<u4")
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="tokenised differently") as error:
        eval_documents(str(tmp_path / "*" / "*.array_record"), vocab_path)
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)
