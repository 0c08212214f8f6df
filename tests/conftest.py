"""Shared fixtures: the repository root and the embedded corpus and vocabulary.

`make test` builds data/c4_sample and data/vocab/spm.model before running
pytest, so tests use the real corpus and the real sentencepiece model.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT / "data" / "c4_sample"
VOCAB_PATH = REPO_ROOT / "data" / "vocab" / "spm.model"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def vocab_path() -> str:
    if not VOCAB_PATH.exists():
        pytest.fail(f"{VOCAB_PATH} is missing: run `make vocab` (make test builds it)")
    return str(VOCAB_PATH)


@pytest.fixture(scope="session")
def corpus_dir() -> pathlib.Path:
    if not any(CORPUS_DIR.glob("c4-train.*.json.gz")):
        pytest.fail(f"{CORPUS_DIR} has no shards: run `make corpus` (make test builds it)")
    return CORPUS_DIR


def tiny_bert_config(tmp_path=None, **overrides):
    """configs/bert.py:runlocal with absolute data paths and a very small model."""
    config = load_recipe("bert")
    config.data.max_seq_length = 64
    config.objective.max_predictions_per_seq = 10
    config.model.hidden_size = 32
    config.model.num_heads = 2
    config.model.intermediate_size = 64
    config.model.num_layers = 2
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_recipe(name: str, arg: str = "runlocal"):
    """configs/NAME.py:ARG with the embedded corpus and vocabulary as absolute paths."""
    from bert_jax.run_config import load_recipe as load

    return load(f"configs/{name}.py:{arg}", data_root=REPO_ROOT / "data")
