"""Data faults (issue 12): a split with no usable document, or mostly bad records, stops
with a clear error instead of looping forever; skip counts reach the train loop; too few
documents for next-sentence prediction and directory patterns are named.

Each case that used to hang runs under a deadline (SIGALRM in-process, a subprocess
timeout for the CLI), so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from conftest import base_config_with

from bert_jax.data import faults, pipeline, sources, tokenized_source
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.objectives.bert_task import BertDataConfig, BertObjective
from data_prep import tokenize_shards


@contextlib.contextmanager
def deadline(seconds: int = 60):
    def on_alarm(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s: the pipeline hangs")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return Tokenizer(vocab_path)


def data_config(source, pattern, vocab_path, **overrides):
    fields = dict(source=source, train_pattern=pattern, eval_pattern=pattern, text_field="text")
    fields.update(vocab_path=vocab_path, cycle_length=2, max_skipped_fraction=0.5)
    return base_config_with({"data": {**fields, **overrides}}).data


def write_jsonl(path, texts, bad_every: int = 0):
    """C4-style lines; with bad_every=k every k-th line (from the first) is invalid JSON."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            bad = bad_every and i % bad_every == 0
            f.write("{not json\n" if bad else json.dumps({"text": text}) + "\n")


def read_documents(config, tokenizer, split="train", n=10, **kwargs):
    host = dict(seed=0, process_index=0, process_count=1, repeat=split == "train")
    stream = sources.documents(config, split, tokenizer, **host, **kwargs)
    with deadline():
        return [document for document, _ in zip(stream, range(n), strict=False)]


def test_jsonl_all_empty_documents_stops_with_counts_and_few_log_lines(
    tmp_path, tokenizer, vocab_path, caplog
):
    for shard in range(3):
        write_jsonl(tmp_path / f"c4-train.{shard}.json.gz", ["   "] * 20)
    pattern = str(tmp_path / "c4-train.*.json.gz")
    with caplog.at_level(logging.INFO), pytest.raises(faults.DataFaultError) as error:
        read_documents(data_config("jsonl", pattern, vocab_path), tokenizer)
    message = str(error.value)
    assert pattern in message and "train_pattern" in message
    assert "every one of the 3 shard(s)" in message and "empty_documents" in message
    # Named skips are rate limited: 5 per reason, then only count summaries.
    assert caplog.text.count("Skipped record") == 5
    assert len(caplog.records) < 20


def test_jsonl_shards_that_are_not_gzip_stop(tmp_path, tokenizer, vocab_path):
    for shard in range(2):
        (tmp_path / f"c4-train.{shard}.json.gz").write_bytes(b"plain bytes, not gzip\n" * 50)
    pattern = str(tmp_path / "*.json.gz")
    for split in ("train", "eval"):
        with pytest.raises(faults.DataFaultError, match="corrupt_files 2") as error:
            read_documents(data_config("jsonl", pattern, vocab_path), tokenizer, split)
        assert pattern in str(error.value)


def test_jsonl_shards_unreadable_from_their_first_line_count_as_a_share_of_the_files(
    tmp_path, tokenizer, vocab_path
):
    texts = [f"Sentence {i} of a good shard. Another one here." for i in range(40)]
    write_jsonl(tmp_path / "c4-train.0.json.gz", texts)
    for shard in (1, 2, 3):  # 3 of 4 shards lost whole: once one record against the fraction
        (tmp_path / f"c4-train.{shard}.json.gz").write_bytes(b"plain bytes, not gzip\n" * 50)
    pattern = str(tmp_path / "*.json.gz")
    with pytest.raises(faults.DataFaultError) as error:
        read_documents(data_config("jsonl", pattern, vocab_path), tokenizer, n=1000)
    message = str(error.value)
    assert "3 of the 4 shard(s) of this host (75.0%) are unreadable from their first line" in (
        message
    )
    assert "max_skipped_fraction=0.5" in message and pattern in message
    lenient = data_config("jsonl", pattern, vocab_path, max_skipped_fraction=0.8)
    assert len(read_documents(lenient, tokenizer, "eval", n=1000)) == 40
    (tmp_path / "c4-train.3.json.gz").unlink()  # 2 of 3 lost whole is still too many
    with pytest.raises(faults.DataFaultError, match="2 of the 3 shard"):
        read_documents(data_config("jsonl", pattern, vocab_path), tokenizer, n=1000)
    (tmp_path / "c4-train.2.json.gz").unlink()  # 1 of 2: at the limit, read
    assert len(read_documents(data_config("jsonl", pattern, vocab_path), tokenizer, n=30)) == 30


def test_text_source_with_no_usable_file_or_block_stops(tmp_path, tokenizer, vocab_path):
    write_jsonl(tmp_path / "a.txt", ["not text"])  # gzip bytes under a .txt name
    (tmp_path / "b.txt").write_bytes(b"\0\1\2 binary\n")
    with pytest.raises(faults.DataFaultError, match="corrupt_files 2") as error:
        read_documents(data_config("text", str(tmp_path / "*.txt"), vocab_path), tokenizer)
    assert "gzip-compressed" in str(error.value)
    (tmp_path / "c.text").write_text("\u200b\n\n\u200b\u200b\n")  # blocks without a token
    with pytest.raises(faults.DataFaultError, match="whole pass") as error:
        read_documents(data_config("text", str(tmp_path / "*.text"), vocab_path), tokenizer)
    assert "no_sentences 2" in str(error.value)


def write_tokenized(directory, records: list[bytes], vocab_path, num_shards: int = 1):
    """`records` dealt to `num_shards` shards (contiguous runs), with their manifest."""
    directory.mkdir()
    entries = []
    for shard, run in enumerate(np.array_split(np.arange(len(records)), num_shards)):
        path = directory / f"shard-{shard}.array_record"
        writer = ArrayRecordWriter(str(path), "group_size:1")
        for index in run:
            writer.write(records[index])
        writer.close()
        entries.append(
            dict(output=path.name, sources=[], documents=len(run), sentences=0, tokens=0)
        )
        entries[-1].update(bytes=path.stat().st_size, skip_counts=vars(faults.SkipCounts()))
    manifest = tokenize_shards.build_manifest(entries, vocab_path, "text")
    manifest["token_dtype"] = "<u2"
    (directory / tokenized_source.MANIFEST_NAME).write_text(json.dumps(manifest))
    return str(directory / "*.array_record")


def test_tokenized_source_with_only_bad_records_or_shards_stops(tmp_path, tokenizer, vocab_path):
    header_lies = np.array([1, 50], "<u4").tobytes() + np.arange(3, dtype="<u2").tobytes()
    empty = np.array([0], "<u4").tobytes()
    pattern = write_tokenized(tmp_path / "bad_records", [header_lies, empty] * 3, vocab_path)
    with pytest.raises(faults.DataFaultError, match="whole pass") as error:
        read_documents(data_config("tokenized", pattern, vocab_path), tokenizer)
    assert "corrupt_records 3" in str(error.value) and "no_sentences 3" in str(error.value)
    (tmp_path / "bad_records" / "shard-0.array_record").write_bytes(b"not an array record")
    with pytest.raises(faults.DataFaultError, match="readable ArrayRecord") as error:
        read_documents(data_config("tokenized", pattern, vocab_path), tokenizer)
    assert pattern in str(error.value) and "corrupt_files 1" in str(error.value)


def good_records(count: int) -> list[bytes]:
    """Pre-tokenised records of two short sentences each."""
    return [
        tokenized_source.encode_record([np.arange(1, 3 + i % 40)] * 2, np.dtype("<u2"))
        for i in range(count)
    ]


def test_unreadable_tokenized_shards_count_by_the_records_they_held(
    tmp_path, tokenizer, vocab_path
):
    pattern = write_tokenized(tmp_path / "shards", good_records(400), vocab_path, num_shards=4)
    for shard in (1, 2, 3):  # truncated downloads: 300 of the 400 records lost
        path = tmp_path / "shards" / f"shard-{shard}.array_record"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(faults.DataFaultError) as error:
        read_documents(data_config("tokenized", pattern, vocab_path), tokenizer)
    message = str(error.value)
    assert "3 of the 4 shard(s) are unreadable or missing, holding 300 of the 400" in message
    assert "max_skipped_fraction=0.5" in message and "shard-1.array_record" in message
    lenient = data_config("tokenized", pattern, vocab_path, max_skipped_fraction=0.8)
    assert len(read_documents(lenient, tokenizer, "eval", n=1000)) == 100  # shard 0 only


def test_unreadable_shards_count_with_the_bad_records_of_the_others(
    tmp_path, tokenizer, vocab_path, caplog
):
    bad = np.array([1, 50], "<u4").tobytes()  # a header that promises more ids than there are
    records = [bad if i % 5 < 2 else record for i, record in enumerate(good_records(400))]
    pattern = write_tokenized(tmp_path / "shards", records, vocab_path, num_shards=4)
    (tmp_path / "shards" / "shard-3.array_record").unlink()  # 25% lost, 40% of the rest bad
    with caplog.at_level(logging.WARNING), pytest.raises(faults.DataFaultError) as error:
        read_documents(data_config("tokenized", pattern, vocab_path), tokenizer, n=10_000)
    skipped = re.search(
        r"(\d+\.\d)% of the records read were skipped \((\d+\.\d)% with", str(error.value)
    )
    assert skipped and 35 < float(skipped[1]) < 45 and float(skipped[2]) > 50, str(error.value)
    assert "corrupt_files 1" in str(error.value)
    assert "shard-3.array_record (100 records) is listed in its manifest.json but missing" in (
        caplog.text
    )


def test_a_corrupt_tokenized_record_is_skipped_and_named(tmp_path, tokenizer, vocab_path, caplog):
    pattern = write_tokenized(tmp_path / "shards", good_records(100), vocab_path)
    path = tmp_path / "shards" / "shard-0.array_record"
    data = bytearray(path.read_bytes())
    middle = 5000  # inside a record's chunk: the records fill the first ~12 KB of the file
    data[middle : middle + 4] = bytes(byte ^ 0xFF for byte in data[middle : middle + 4])
    path.write_bytes(bytes(data))
    config = data_config("tokenized", pattern, vocab_path)
    host = dict(seed=0, process_index=0, process_count=1, repeat=False)
    iterator = iter(sources.documents(config, "eval", tokenizer, **host))
    with caplog.at_level(logging.WARNING), deadline():
        documents = list(iterator)
    assert len(documents) == 99 and iterator.skip_counts.corrupt_records == 1
    assert f"{path} record " in caplog.text and "Corrupted Riegeli" in caplog.text


def test_max_skipped_fraction_stops_a_mostly_bad_split(tmp_path, tokenizer, vocab_path):
    texts = [f"Document {i} has one sentence. And a second one." for i in range(1500)]
    write_jsonl(tmp_path / "c4-train.0.json.gz", texts, bad_every=3)  # 1 line in 3 bad
    pattern = str(tmp_path / "*.json.gz")
    strict = data_config("jsonl", pattern, vocab_path, max_skipped_fraction=0.2)
    with pytest.raises(faults.DataFaultError, match="max_skipped_fraction=0.2") as error:
        read_documents(strict, tokenizer, n=10_000)
    assert "invalid_json" in str(error.value)
    lenient = data_config("jsonl", pattern, vocab_path, max_skipped_fraction=0.5)
    assert len(read_documents(lenient, tokenizer, n=2000)) == 2000  # several epochs


def test_one_bad_line_among_the_first_records_is_not_an_error(tmp_path, tokenizer, vocab_path):
    write_jsonl(tmp_path / "c4-train.0.json.gz", ["One. Two."] * 10, bad_every=10)
    config = data_config("jsonl", str(tmp_path / "*.json.gz"), vocab_path)
    config.max_skipped_fraction = 0.01
    assert len(read_documents(config, tokenizer, n=9)) == 9


def test_records_in_a_row_without_a_document_stop_even_with_no_fraction_limit(
    tmp_path, tokenizer, vocab_path, monkeypatch
):
    monkeypatch.setattr(faults, "MAX_RECORDS_WITHOUT_DOCUMENT", 300)
    write_jsonl(tmp_path / "c4-train.0.json.gz", ["\u200b"] * 100)  # text, but no token
    config = data_config("jsonl", str(tmp_path / "*.json.gz"), vocab_path)
    config.max_skipped_fraction = 1.0
    with pytest.raises(faults.DataFaultError, match="records in a row") as error:
        read_documents(config, tokenizer)
    # Interleaved reader threads may each raise; the first to reach the consumer names its
    # count: 300, or a few more when another thread read on before the first one stopped.
    in_a_row = int(re.search(r"([\d,]+) records in a row", str(error.value)).group(1))
    assert 300 <= in_a_row <= 300 + 8, error.value
    assert "0 documents; skipped no_sentences" in str(error.value)
    with pytest.raises(ValueError, match="config.data.max_skipped_fraction must be >= 0"):
        read_documents(
            data_config("jsonl", config.train_pattern, vocab_path, max_skipped_fraction=-1),
            tokenizer,
        )


def bert_pipeline_config(source, pattern, vocab_path):
    config = base_config_with(
        dict(
            seed=0,
            data=dict(
                data_config(source, pattern, vocab_path),
                docs_per_group=4,
                shuffle_buffer=8,
                worker_count=0,
                prefetch=2,
                input_shards=0,
            ),
        )
    )
    return config


def test_skip_counts_reach_the_loop_and_survive_a_resume(tmp_path, tokenizer, vocab_path):
    texts = [f"Document {i}. It has two sentences, and more words." for i in range(40)]
    write_jsonl(tmp_path / "c4-train.0.json.gz", texts, bad_every=8)  # 5 bad lines an epoch
    config = bert_pipeline_config("jsonl", str(tmp_path / "*.json.gz"), vocab_path)
    objective = BertObjective(BertDataConfig(max_seq_length=32), tokenizer)

    def dataset():
        return pipeline.create_dataset(
            config, objective, tokenizer, split="train", global_batch_size=4
        )

    it = iter(dataset())
    with deadline():
        for _ in range(6):
            next(it)
    live = pipeline.skip_metrics(it)  # what the readers counted so far
    assert live["data_skipped/invalid_json"] == live["data_skipped"] > 0
    state = json.loads(json.dumps(it.get_state()))  # as orbax stores it
    # The state holds the counts at the start of the shuffle window it replays.
    in_state = sum(counts["invalid_json"] for counts in faults._find_states(state, []))
    resumed = iter(dataset())
    resumed.set_state(state)
    # Restored, then grown by the replay of the shuffle window.
    assert pipeline.skip_metrics(resumed)["data_skipped"] >= in_state > 0

    # Exactly restored where nothing replays: the documents iterator itself.
    def documents():
        return sources.documents(
            config.data, "train", tokenizer, seed=0, process_index=0, process_count=1, repeat=True
        )

    it = iter(documents())
    with deadline():
        for _ in range(12):
            next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert state[faults.STATE_KEY]["invalid_json"] >= 2  # lines 1 and 9
    resumed = iter(documents())  # its own tally: the first iterator's threads read on
    resumed.set_state(state)
    assert resumed.read_tally.state() == state[faults.STATE_KEY]


def test_too_few_documents_for_next_sentence_prediction(tmp_path, tokenizer, vocab_path, caplog):
    # No blank line: the whole file is one document.
    (tmp_path / "one.txt").write_text("".join(f"Sentence number {i} here.\n" for i in range(40)))
    config = bert_pipeline_config("text", str(tmp_path / "one.txt"), vocab_path)
    objective = BertObjective(BertDataConfig(max_seq_length=32), tokenizer)
    assert objective.min_documents == 2
    eval_error = pytest.raises(faults.DataFaultError, match="eval split .* holds 1 document")
    with eval_error as error, deadline():
        list(
            pipeline.create_dataset(config, objective, tokenizer, split="eval", global_batch_size=4)
        )
    assert "one.txt" in str(error.value) and "host 0 of 1" in str(error.value)
    train = iter(
        pipeline.create_dataset(config, objective, tokenizer, split="train", global_batch_size=4)
    )
    with caplog.at_level(logging.WARNING), deadline():
        next(train)
    assert "train split" in caplog.text and "holds 1 document(s)" in caplog.text


@pytest.mark.parametrize("source", ["jsonl", "text", "tokenized"])
def test_a_directory_pattern_names_the_pattern(tmp_path, tokenizer, vocab_path, source):
    with pytest.raises(ValueError, match="matches only directories") as error:
        read_documents(data_config(source, str(tmp_path), vocab_path), tokenizer)
    assert repr(str(tmp_path)) in str(error.value)


@pytest.mark.slow
def test_cli_with_an_all_empty_train_split_exits_with_one_error_line(tmp_path, repo_root):
    write_jsonl(tmp_path / "c4-train.0.json.gz", [""] * 3000)
    pattern = str(tmp_path / "c4-train.*.json.gz")
    command = [
        sys.executable,
        "-c",
        "from bert_jax.cli.main import run; run()",
        "pretrain",
        "--config=configs/bert.py:runlocal",
        f"--config.data.train_pattern={pattern}",
        f"--workdir={tmp_path / 'workdir'}",
    ]
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert (
        f"bert-jax: error: Giving up on the train split (config.data.train_pattern='{pattern}'"
        in done.stderr
    )
    assert "empty_documents" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr) < 20_000  # not 50 MB of warnings


@pytest.mark.slow
def test_skip_counts_reach_metrics_jsonl_and_the_console(tmp_path, corpus_dir, caplog):
    from conftest import tiny_bert_config

    from bert_jax.training import loop

    with gzip.open(corpus_dir / "c4-train.00000-of-00004.json.gz", "rt") as f:
        lines = [line for _, line in zip(range(200), f, strict=False)]
    with gzip.open(tmp_path / "c4-train.0.json.gz", "wt") as f:
        for i, line in enumerate(lines):
            f.write(line if i % 10 else "{not json\n")  # 20 bad lines
    config = tiny_bert_config(
        **{"data.train_pattern": str(tmp_path / "*.json.gz"), "train.num_steps": 2}
    )
    with caplog.at_level(logging.INFO), deadline(240):
        loop.train_and_evaluate(config, str(tmp_path / "workdir"))
    with open(tmp_path / "workdir" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    logged = [r for r in records if r["split"] == "train"]
    assert logged and all(r["data_skipped/invalid_json"] > 0 for r in logged)
    assert "data_skipped/invalid_json" in caplog.text  # the console progress line
