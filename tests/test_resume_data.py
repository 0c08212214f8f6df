"""A resume reads the data its checkpoint was written for (bert_jax/data/fingerprint.py)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import pytest
from conftest import CORPUS_DIR, tiny_bert_config

from bert_jax.checkpointing.checkpointer import CheckpointMismatchError
from bert_jax.training import loop

ALL_SHARDS = str(CORPUS_DIR / "c4-train.*.json.gz")
THREE_SHARDS = str(CORPUS_DIR / "c4-train.0000[0-2]-of-00004.json.gz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vocab_path, corpus_dir):
    """A workdir with a checkpoint at step 2 of the tiny run (read-only: tests copy it)."""
    workdir = tmp_path_factory.mktemp("resume_data") / "run"
    loop.train_and_evaluate(tiny_bert_config(**{"train.num_steps": 2}), str(workdir))
    return workdir


# Resumes below stop where the checkpoint is (step 2): the restore is what they test, and
# the loop then compiles and trains nothing.
RESUME_ONLY = {"train.num_steps": 2}


def _copy(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


def test_other_files_and_sequence_length_are_refused_naming_each_field(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    other = tiny_bert_config(
        **{"train.num_steps": 4, "data.train_pattern": THREE_SHARDS, "data.max_seq_length": 48}
    )
    with pytest.raises(CheckpointMismatchError) as raised:
        loop.train_and_evaluate(other, str(workdir))
    message = str(raised.value)
    assert "\n" not in message
    assert f"config.data.train_pattern: {ALL_SHARDS!r} -> {THREE_SHARDS!r} (4 files (" in message
    assert "config.data.max_seq_length: 64 -> 48" in message
    assert "--config.data.allow_new_data=True" in message
    assert not (workdir / "checkpoints" / "4").exists()
    assert (workdir / "checkpoints" / "2" / "data_spec").is_dir()


def test_allow_new_data_restarts_the_stream_and_says_so(trained, tmp_path, caplog):
    workdir = _copy(trained, tmp_path)
    other = tiny_bert_config(
        **{**RESUME_ONLY, "data.train_pattern": THREE_SHARDS, "data.allow_new_data": True}
    )
    with caplog.at_level(logging.WARNING):
        result = loop.train_and_evaluate(other, str(workdir))
    assert result["start_step"] == 2
    assert "the data stream restarts from its beginning" in caplog.text
    assert "config.data.train_pattern" in caplog.text


def test_a_moved_corpus_resumes_unchanged(trained, tmp_path, caplog):
    workdir = _copy(trained, tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    for shard in CORPUS_DIR.glob("c4-train.*.json.gz"):
        shutil.copy(shard, moved)
    config = tiny_bert_config(
        **{**RESUME_ONLY, "data.train_pattern": str(moved / "c4-train.*.json.gz")}
    )
    with caplog.at_level(logging.WARNING):
        result = loop.train_and_evaluate(config, str(workdir))
    assert result["start_step"] == 2 and "restarts" not in caplog.text


def test_a_checkpoint_from_before_the_record_resumes_but_not_onto_another_source(
    trained, tmp_path, caplog
):
    workdir = _copy(trained, tmp_path)
    # As written before the record existed.
    shutil.rmtree(workdir / "checkpoints" / "2" / "data_spec", ignore_errors=True)
    # Another source: grain's own error was KeyError: 'next_index', with a traceback.
    texts = tmp_path / "texts.txt"
    with gzip.open(CORPUS_DIR / "c4-train.00000-of-00004.json.gz", "rt") as f:
        texts.write_text("\n\n".join(json.loads(line)["text"] for line in f))
    other = tiny_bert_config(
        **{**RESUME_ONLY, "data.source": "text", "data.train_pattern": str(texts)}
    )
    with pytest.raises(CheckpointMismatchError, match="does not fit config.data .*allow_new_data"):
        loop.train_and_evaluate(other, str(workdir))
    with caplog.at_level(logging.WARNING):
        result = loop.train_and_evaluate(tiny_bert_config(**RESUME_ONLY), str(workdir))
    assert result["start_step"] == 2
    assert "records no description of its data" in caplog.text
