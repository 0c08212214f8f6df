"""The tokenize_shards job: every document once, in order, bad lines counted (serial + Beam)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import grain
import numpy as np
import pytest

from bert_jax.data import tokenized_source
from bert_jax.data.tokenizer import Tokenizer
from data_prep import tokenize_shards

_BAD_LINES = {  # raw line -> the skip reason the jsonl reader gives it
    b"{not json\n": "invalid_json",
    b'{"text": "caf\xe9 au lait."}\n': "invalid_utf8",
    b'{"url": "no text field"}\n': "missing_field",
    b'{"text": "   "}\n': "empty_documents",
    b'{"text": "\xe2\x80\x8b"}\n': "no_sentences",  # U+200B: text, but no token
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of numbered documents with every kind of bad line, and one truncated
    shard; returns the glob, the good texts per shard name and the expected skip counts."""
    directory = tmp_path_factory.mktemp("raw")
    texts, expected_skips = {}, dict.fromkeys(_BAD_LINES.values(), 0)
    for shard in range(3):
        good = [f"Shard {shard} document {i}. It has two sentences." for i in range(7 + shard)]
        lines = [json.dumps({"text": text}).encode() + b"\n" for text in good]
        for position, (bad, reason) in enumerate(_BAD_LINES.items()):
            lines.insert(2 * position + shard, bad)
            expected_skips[reason] += 1
        name = f"c4-train.{shard:05d}-of-00004"
        with gzip.open(directory / f"{name}.json.gz", "wb") as f:
            f.writelines(lines)
        texts[name] = good
    # A truncated download: the lines before the cut are kept, the rest is counted lost.
    whole = gzip.compress(
        b"".join(json.dumps({"text": f"Kept {i}."}).encode() + b"\n" for i in range(400))
    )
    with open(directory / "c4-train.00003-of-00004.json.gz", "wb") as f:
        f.write(whole[: len(whole) // 2])
    expected_skips["corrupt_files"] = 1
    return str(directory / "c4-train.*.json.gz"), texts, expected_skips


def read_shard(path: str, manifest: dict) -> list[list[np.ndarray]]:
    source = grain.sources.ArrayRecordDataSource([path])
    dtype = np.dtype(manifest["token_dtype"])
    return [tokenized_source.decode_record(source[i], dtype) for i in range(len(source))]


def check_job_output(output_dir, manifest, counters, shards, vocab_path):
    _, texts, expected_skips = shards
    tokenizer = Tokenizer(vocab_path)
    assert {shard["output"] for shard in manifest["shards"]} == {
        f"c4-train.{k:05d}-of-00004.array_record" for k in range(4)
    }
    documents = 0
    for name, good in texts.items():
        written = read_shard(os.path.join(output_dir, f"{name}.array_record"), manifest)
        assert len(written) == len(good)  # every good document once, nothing else
        for text, sentences in zip(good, written, strict=True):  # in input order
            expected = tokenizer.encode_document(text)
            assert [s.tolist() for s in sentences] == [s.tolist() for s in expected]
        documents += len(good)
    truncated = read_shard(
        os.path.join(output_dir, "c4-train.00003-of-00004.array_record"), manifest
    )
    assert 0 < len(truncated) < 400
    assert manifest["documents"] == documents + len(truncated)
    skips = {reason: manifest["skip_counts"][reason] for reason in expected_skips}
    assert skips == expected_skips
    for reason, count in {**manifest["skip_counts"], "documents": manifest["documents"]}.items():
        assert counters[reason] == count, reason
    assert manifest["vocab_sha256"] == tokenized_source.file_sha256(vocab_path)
    assert all(os.path.isabs(s) for shard in manifest["shards"] for s in shard["sources"])
    assert not [f for f in os.listdir(output_dir) if ".tmp" in f]


def test_serial_job_writes_every_document_once_in_order(shards, vocab_path, tmp_path):
    manifest, counters = tokenize_shards.run(shards[0], str(tmp_path), vocab_path, runner="serial")
    check_job_output(str(tmp_path), manifest, counters, shards, vocab_path)
    assert manifest == tokenized_source.read_manifest(str(tmp_path))


@pytest.mark.slow
def test_beam_direct_runner_with_two_workers(shards, vocab_path, tmp_path):
    beam_args = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    manifest, counters = tokenize_shards.run(
        shards[0], str(tmp_path), vocab_path, runner="DirectRunner", beam_args=beam_args
    )
    check_job_output(str(tmp_path), manifest, counters, shards, vocab_path)


def test_fixed_shard_count_keeps_contiguous_input_runs():
    inputs = [f"c4-train.{i:05d}-of-00005.json.gz" for i in range(5)]
    assignment = tokenize_shards.assign_shards(inputs, num_shards=2)
    assert assignment == [
        ("tokenized-00000-of-00002.array_record", inputs[:3]),
        ("tokenized-00001-of-00002.array_record", inputs[3:]),
    ]
    assert tokenize_shards.assign_shards(inputs)[4] == (
        "c4-train.00004-of-00005.array_record",
        inputs[4:],
    )
    with pytest.raises(ValueError, match="num_shards=6"):
        tokenize_shards.assign_shards(inputs, num_shards=6)


def test_a_second_run_replaces_the_directory_or_is_refused(shards, vocab_path, tmp_path):
    output = tmp_path / "train"
    tokenize_shards.run(shards[0], str(output), vocab_path, runner="serial")
    before = sorted(os.listdir(output))
    with pytest.raises(ValueError, match="is not empty .* pass --overwrite"):
        tokenize_shards.run(shards[0], str(output), vocab_path, runner="serial", num_shards=2)
    assert sorted(os.listdir(output)) == before  # the refused run changed nothing
    manifest, _ = tokenize_shards.run(
        shards[0], str(output), vocab_path, runner="serial", num_shards=2, overwrite=True
    )
    expected = [f"tokenized-0000{k}-of-00002.array_record" for k in range(2)]
    assert sorted(os.listdir(output)) == ["manifest.json", *expected]  # no shard of run 1
    assert [shard["output"] for shard in manifest["shards"]] == expected
    assert os.listdir(tmp_path) == ["train"]  # no staging directory left beside it
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files other than .*notes.txt"):
        tokenize_shards.run(shards[0], str(output), vocab_path, runner="serial", overwrite=True)


def run_main(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        tokenize_shards.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_bad_input_or_output_is_one_error_line(shards, vocab_path, tmp_path, capsys):
    serial = ["--runner=serial", f"--vocab={vocab_path}"]
    missing = str(tmp_path / "nothing" / "*.json.gz")
    error = run_main(["--input", missing, "--output", str(tmp_path / "out"), *serial], capsys)
    assert (
        error
        == f"data_prep.tokenize_shards: error: --input: File pattern {missing!r} matches no file."
    )
    (tmp_path / "a_file").write_text("x")
    error = run_main(
        ["--input", shards[0], "--output", str(tmp_path / "a_file" / "out"), *serial], capsys
    )
    assert f"--output {str(tmp_path / 'a_file' / 'out')!r} is under" in error
    assert not (tmp_path / "out").exists()


def test_a_read_only_output_is_one_error_line(shards, vocab_path, tmp_path, repo_root):
    from test_cli_errors import can_mount_read_only

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    if not can_mount_read_only(read_only):
        pytest.skip("no read-only mount here (needs unshare -m and mount)")
    job = f"{sys.executable} -m data_prep.tokenize_shards --input '{shards[0]}'"
    script = f"mount -t tmpfs -o ro none {read_only} && exec {job} --output {read_only}/train"
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("data_prep.tokenize_shards: error: --output") and "Read-only" in last


def test_swap_without_an_atomic_exchange_still_replaces_whole(tmp_path, monkeypatch):
    from data_prep import output_directory

    output = tmp_path / "out"
    output.mkdir()
    (output / "old.array_record").write_text("old")
    staging = output_directory.stage(str(output), overwrite=True)
    (tmp_path / os.path.basename(staging) / "new.array_record").write_text("new")
    monkeypatch.setattr(output_directory, "_exchange", lambda first, second: False)
    output_directory.swap_in(staging, str(output))
    assert os.listdir(output) == ["new.array_record"] and os.listdir(tmp_path) == ["out"]
