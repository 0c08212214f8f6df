"""`bert-jax evaluate`: ALBERT-style intrinsic cross-evaluation of a checkpoint."""

from __future__ import annotations

import json
import math

from conftest import load_recipe

from bert_jax.cli import evaluate
from bert_jax.training import loop


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
    result = loop.train_and_evaluate(config, str(tmp_path))
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
    for pair_task in ("nsp", "sop"):  # masked-LM figures by input kind on both pair sets
        counts = [
            scores[f"mlm_{kind}_count_on_{pair_task}_pairs"] for kind in ("mask", "random", "kept")
        ]
        assert sum(counts) == scores[f"mlm_count_on_{pair_task}_pairs"] > 0
        assert counts[0] > counts[1] + counts[2]
        for key in (
            "mlm_mask_loss",
            "mlm_mask_accuracy",
            "mask_unigram_xent",
            "mask_majority_accuracy",
        ):
            assert math.isfinite(scores[f"{key}_on_{pair_task}_pairs"]), (key, pair_task)
    assert scores["sop_majority_accuracy"] == 0.5  # both orders of every pair
    assert 0.5 <= scores["nsp_majority_accuracy"] < 0.6 and scores["nsp_pairs"] > 0
    # The SOP numbers equal the training loop's own evaluation (same held-out batches).
    assert abs(scores["sop_accuracy"] - result["eval"]["pair_accuracy"]) < 1e-6
    for key in ("mlm_mask_loss", "mlm_kept_accuracy", "mask_unigram_xent"):
        assert abs(scores[f"{key}_on_sop_pairs"] - result["eval"][key]) < 1e-6, key
    with open(tmp_path / "evaluate.json") as f:
        assert json.load(f)["nsp_accuracy"] == scores["nsp_accuracy"]
    # No config given (`bert-jax evaluate --workdir W`): the one the checkpoint records.
    assert evaluate.evaluate_checkpoint(None, str(tmp_path)) == scores


def test_held_out_sop_pairs_come_in_both_orders(vocab_path, corpus_dir):
    import numpy as np

    from bert_jax import objectives

    config = tiny_albert_config()
    task = objectives.get_task(config)
    batches = loop.eval_batches(config, task, 4)
    labels = np.concatenate([batch["pair_labels"] for batch in batches])
    assert labels.mean() == 0.5  # (B, A, 1) then (A, B, 0) for every consecutive pair
    for batch in batches:  # each consecutive pair twice: (B, A, 1) then (A, B, 0)
        assert batch["pair_labels"].tolist() == [1, 0] * (len(batch["pair_labels"]) // 2)
        lengths = batch["input_mask"].sum(axis=1)
        assert np.array_equal(lengths[::2], lengths[1::2])
    # Training pairs keep the coin flip.
    train_labels = next(iter(loop.task_dataset(config, task, "train")))["pair_labels"]
    assert 0 < train_labels.sum() < len(train_labels)


def test_evaluate_without_checkpoint_names_the_directory(tmp_path, vocab_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        evaluate.evaluate_checkpoint(tiny_albert_config(), str(tmp_path))
