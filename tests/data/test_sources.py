"""Document sources: jsonl shards, TFDS array_record, plain text; sharding and bad input."""

from __future__ import annotations

import gzip
import itertools
import json
import logging

import pytest
from conftest import base_config_with

from bert_jax.data import c4_tfds, sources


def write_shard(path, texts):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text, "url": f"u{i}", "timestamp": "t"}) + "\n")


def data_config(**overrides):
    config = base_config_with(
        {
            "data": dict(
                source="jsonl",
                train_pattern="",
                eval_pattern="",
                tfds_name="c4_shards",
                tfds_data_dir="",
                train_split="train",
                eval_split="validation",
                text_field="text",
                cycle_length=2,
            )
        }
    ).data
    config.update(overrides)
    return config


def read(data_config, split="train", *, seed=0, process_index=0, process_count=1, repeat=False):
    stream = sources.document_stream(
        data_config,
        split,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        repeat=repeat,
    )
    return list(stream)


@pytest.fixture
def shards(tmp_path):
    """5 train shards of 7 documents each, and one validation shard."""
    texts = {}
    for shard in range(5):
        path = tmp_path / f"c4-train.{shard:05d}-of-00005.json.gz"
        texts[path] = [f"Document {shard}-{i}. It has two sentences." for i in range(7)]
        write_shard(path, texts[path])
    write_shard(tmp_path / "c4-validation.00000-of-00001.json.gz", ["Eval one.", "Eval two."])
    return data_config(
        train_pattern=str(tmp_path / "c4-train.*.json.gz"),
        eval_pattern=str(tmp_path / "c4-validation.*.json.gz"),
    ), sorted(itertools.chain(*texts.values()))


def test_jsonl_reads_every_document_once(shards):
    config, all_texts = shards
    assert sorted(read(config)) == all_texts
    assert read(config, "eval") == ["Eval one.", "Eval two."]


@pytest.mark.parametrize("num_shards", [5, 1])  # 1 shard < 2 hosts: line striding
def test_jsonl_hosts_are_disjoint_and_cover(shards, num_shards, tmp_path):
    config, all_texts = shards
    if num_shards == 1:
        write_shard(tmp_path / "single.jsonl", all_texts)
        config.train_pattern = str(tmp_path / "single.jsonl")
    per_host = [read(config, process_index=i, process_count=2) for i in range(2)]
    assert not set(per_host[0]) & set(per_host[1])
    assert sorted(per_host[0] + per_host[1]) == all_texts
    assert abs(len(per_host[0]) - len(per_host[1])) <= 7  # shards, not documents, are dealt


def test_train_order_is_seeded_and_reshuffled_each_epoch(shards):
    config, all_texts = shards
    config.cycle_length = 1  # with more, the interleave blends the ends of two epochs
    n = len(all_texts)
    two_epochs = list(
        itertools.islice(
            sources.document_stream(
                config, "train", seed=1, process_index=0, process_count=1, repeat=True
            ),
            2 * n,
        )
    )
    assert sorted(two_epochs[:n]) == sorted(two_epochs[n:]) == all_texts
    assert two_epochs[:n] != two_epochs[n:]
    assert read(config, seed=1) == two_epochs[:n]
    assert read(config, seed=2) != two_epochs[:n]


def test_jsonl_resume_is_exact(shards):
    config, _ = shards
    stream = sources.document_stream(
        config, "train", seed=0, process_index=0, process_count=1, repeat=True
    )
    it = iter(stream)
    _ = [next(it) for _ in range(11)]
    state = json.loads(json.dumps(it.get_state()))  # must survive a JSON checkpoint
    expected = [next(it) for _ in range(40)]
    resumed = iter(stream)
    resumed.set_state(state)
    assert [next(resumed) for _ in range(40)] == expected


def test_bad_lines_are_skipped_counted_and_named(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "Good one."}).encode()
    lines = [
        good,
        b'{"text": "caf\xe9 latin-1"}',  # invalid UTF-8
        b'{"text": "no closing brace"',  # invalid JSON
        json.dumps({"body": "wrong field"}).encode(),
        json.dumps({"text": "   "}).encode(),  # empty document
        b"",  # blank line: ignored, not counted
        json.dumps({"text": "One sentence only"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    it = iter(sources.JsonLinesIterDataset(str(path)))
    with caplog.at_level(logging.WARNING):
        assert list(it) == ["Good one.", "One sentence only"]
    counts = it.skip_counts
    assert (counts.invalid_utf8, counts.invalid_json, counts.missing_field) == (1, 1, 1)
    assert counts.empty_documents == 1 and counts.corrupt_files == 0
    assert f"{path}:2" in caplog.text and f"{path}:3" in caplog.text
    assert "'text'" in caplog.text  # the missing field is named


def test_truncated_gzip_warns_and_continues_with_next_shard(tmp_path, caplog):
    texts = [f"Document number {i} with enough words to fill a block." * 20 for i in range(200)]
    write_shard(tmp_path / "a.json.gz", texts)
    data = (tmp_path / "a.json.gz").read_bytes()
    (tmp_path / "a.json.gz").write_bytes(data[: len(data) // 2])  # a cut download
    write_shard(tmp_path / "b.json.gz", ["Next shard."])
    truncated = iter(sources.JsonLinesIterDataset(str(tmp_path / "a.json.gz")))
    with caplog.at_level(logging.WARNING):
        prefix = list(truncated)
    assert 0 < len(prefix) < len(texts) and prefix == texts[: len(prefix)]
    assert truncated.skip_counts.corrupt_files == 1
    assert "a.json.gz unreadable at line" in caplog.text
    config = data_config(train_pattern=str(tmp_path / "*.json.gz"), cycle_length=1)
    assert sorted(read(config)) == sorted(prefix + ["Next shard."])


def test_pattern_matching_nothing_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "missing-*.json.gz")
    with pytest.raises(ValueError, match="missing-"):
        read(data_config(train_pattern=pattern))
    with pytest.raises(ValueError, match="No file pattern"):
        read(data_config(train_pattern=""))
    with pytest.raises(ValueError, match="Unknown data source"):
        read(data_config(source="parquet", train_pattern=pattern))


def test_tfds_array_record_source(shards, tmp_path):
    config, all_texts = shards
    data_dir = str(tmp_path / "tfds")
    c4_tfds.prepare(data_dir, config.train_pattern, config.eval_pattern)
    config = data_config(source="tfds", tfds_data_dir=data_dir)
    assert sorted(read(config)) == all_texts
    assert sorted(read(config, "eval")) == ["Eval one.", "Eval two."]
    per_host = [read(config, process_index=i, process_count=2) for i in range(2)]
    assert sorted(per_host[0] + per_host[1]) == all_texts
    assert not set(per_host[0]) & set(per_host[1])
    with pytest.raises(ValueError, match="array_record"):
        read(data_config(source="tfds", tfds_name="not_prepared", tfds_data_dir=data_dir))


def test_text_source_blocks_and_invalid_utf8(tmp_path, caplog):
    (tmp_path / "a.txt").write_bytes(b"First doc.\nStill first.\n\n\n  \nSecond doc.\n")
    (tmp_path / "b.txt").write_bytes(b"Caf\xe9 doc.\n\nLast doc.")
    config = data_config(source="text", train_pattern=str(tmp_path / "*.txt"))
    with caplog.at_level(logging.WARNING):
        docs = read(config)
    assert sorted(docs) == sorted(
        ["First doc.\nStill first.", "Second doc.", "Caf\ufffd doc.", "Last doc."]
    )
    assert "b.txt: invalid UTF-8" in caplog.text
    per_host = [read(config, process_index=i, process_count=2) for i in range(2)]
    assert sorted(per_host[0] + per_host[1]) == sorted(docs)
