"""`bert-jax evaluate`: ALBERT-style intrinsic cross-evaluation of a checkpoint."""

from __future__ import annotations

import json

from conftest import load_recipe

from bert_jax import evaluate, train


def tiny_albert_config():
    config = load_recipe("albert")
    config.data.max_seq_length = 64
    config.objective.max_predictions_per_seq = 10
    config.model.hidden_size = 32
    config.model.num_heads = 2
    config.model.intermediate_size = 64
    config.model.embedding_size = 16
    config.model.num_layers = 3
    return config


def test_albert_checkpoint_is_scored_on_nsp_and_sop_pairs(tmp_path, vocab_path, corpus_dir):
    config = tiny_albert_config()
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["step"] == config.train.num_steps
    scores = evaluate.evaluate_checkpoint(config, str(tmp_path))
    assert scores["step"] == config.train.num_steps
    for key in (
        "nsp_accuracy",
        "sop_accuracy",
        "mlm_accuracy_on_nsp_pairs",
        "mlm_accuracy_on_sop_pairs",
    ):
        assert 0.0 <= scores[key] <= 1.0, key
    # The SOP numbers equal the training loop's own evaluation (same held-out batches).
    assert abs(scores["sop_accuracy"] - result["eval"]["pair_accuracy"]) < 1e-6
    with open(tmp_path / "evaluate.json") as f:
        assert json.load(f)["nsp_accuracy"] == scores["nsp_accuracy"]


def test_evaluate_without_checkpoint_names_the_directory(tmp_path, vocab_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        evaluate.evaluate_checkpoint(tiny_albert_config(), str(tmp_path))
