"""Fine-tuning end to end on Rotten Tomatoes: random init, and from a tiny pretraining run."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_bert_config
from flax import nnx

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import classification, finetune, metrics, rotten_tomatoes, runner
from bert_jax.runtime import run_config
from bert_jax.training import loop

DOWNLOADS = str(REPO_ROOT / "data" / "downloads")


def finetune_config(vocab_path, arg="", **overrides):
    config = run_config.load_recipe(
        f"configs/finetune.py:runlocal,{arg}" if arg else "configs/finetune.py:runlocal"
    )
    config.data.vocab_path = vocab_path
    config.data.max_seq_length = 32
    config.train.batch_size = 64
    config.train.num_steps = 2
    config.finetune.max_eval_examples = 128  # one evaluation batch
    config.finetune.download_dir = DOWNLOADS
    for name, value in dict(
        hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2
    ).items():
        config.model[name] = value
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def test_rotten_tomatoes_split_is_fixed():
    first = rotten_tomatoes.load_splits(DOWNLOADS)
    again = rotten_tomatoes.load_splits(DOWNLOADS)
    assert {
        split: len(examples) for split, examples in first.items()
    } == rotten_tomatoes.SPLIT_SIZES
    assert first == again
    for examples in first.values():
        labels = np.array([e.label for e in examples])
        assert set(labels) == {0, 1} and 0.5 < labels.mean() < 0.65  # fresh is the majority
        assert all(e.text_a and e.text_b is None for e in examples)
    train_texts = {e.text_a for e in first["train"]}
    assert not train_texts & {e.text_a for e in first["validation"]}


def test_encode_pair_layout_and_truncation(vocab_path):
    tokenizer = Tokenizer(vocab_path)
    a, b = "a long first sentence with many words in it", "short"
    features = classification.encode_pair(tokenizer, a, b, max_seq_length=10)
    ids, mask, segments = features["input_ids"], features["input_mask"], features["segment_ids"]
    len_b = len(tokenizer.encode(b))
    assert mask.sum() == 10  # the longer side was cut to fit
    assert ids[0] == tokenizer.cls_id and ids[9] == tokenizer.sep_id
    assert ids[9 - len_b - 1] == tokenizer.sep_id
    assert segments.tolist() == [0] * (9 - len_b) + [1] * (len_b + 1)
    single = classification.encode_pair(tokenizer, "short", None, max_seq_length=10)
    n = int(single["input_mask"].sum())
    assert single["input_ids"][n - 1] == tokenizer.sep_id and single["segment_ids"].sum() == 0
    assert (single["input_ids"][n:] == tokenizer.pad_id).all()


def _flat(state) -> dict:
    return {
        path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(jax.device_get(state))
    }


def test_finetune_from_random_and_from_a_pretraining_checkpoint(tmp_path, vocab_path, corpus_dir):
    random_run = finetune.run_finetune(
        finetune_config(vocab_path, "init=random"), str(tmp_path / "random")
    )
    accuracy = random_run["final"]["validation"]["accuracy"]
    assert 0.0 < accuracy < 1.0 and random_run["step"] == 2
    assert all(math.isfinite(v) for v in random_run["eval"].values())
    assert "majority_accuracy" in random_run["eval"] and "f1" in random_run["eval"]
    saved = json.loads((tmp_path / "random" / "finetune_results.json").read_text())
    assert saved["final"]["validation"]["accuracy"] == accuracy

    pretrain_dir = str(tmp_path / "pretrain")
    pretrained = loop.train_and_evaluate(tiny_bert_config(**{"train.num_steps": 2}), pretrain_dir)
    # A zero learning rate leaves the loaded weights untouched: they must be the checkpoint's.
    config = finetune_config(
        vocab_path,
        "init=pretrained",
        **{"finetune.init_workdir": pretrain_dir, "optim.learning_rate": 0.0},
    )
    run = finetune.run_finetune(config, str(tmp_path / "from_pretrained"))
    assert all(math.isfinite(v) for v in run["eval"].values())
    assert math.isfinite(run["final"]["validation"]["accuracy"])
    loaded, expected = (
        _flat(run["state"].params["encoder"]),
        _flat(pretrained["state"].params["encoder"]),
    )
    assert loaded.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(loaded[path], value, err_msg=str(path))
    random_encoder = _flat(random_run["state"].params["encoder"])
    assert not np.array_equal(random_encoder[("pooler", "kernel")], expected[("pooler", "kernel")])


def test_bad_init_sources_are_named(tmp_path, vocab_path):
    config = finetune_config(
        vocab_path, "init=pretrained", **{"finetune.init_workdir": str(tmp_path)}
    )
    with pytest.raises(FileNotFoundError, match="checkpoints does not exist"):
        finetune.run_finetune(config, str(tmp_path / "out"))
    config = finetune_config(vocab_path, "init=hf", **{"finetune.hf_dir": str(tmp_path / "none")})
    with pytest.raises(FileNotFoundError, match="hf_dir"):
        finetune.run_finetune(config, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="unknown task='sts'"):
        finetune_config(vocab_path, "task=sts")


@pytest.mark.slow
def test_bert_stsb_regression_runs_through_the_same_pipeline(tmp_path, vocab_path):
    from downstream.test_text_to_text import write_stsb  # GLUE-layout STS-B rows

    config = finetune_config(vocab_path, "task=stsb,init=random")
    config.finetune.data_dir = write_stsb(tmp_path / "glue")
    config.train.batch_size = 8
    result = finetune.run_finetune(config, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "finetune_results.json").read_text())
    validation = saved["final"]["validation"]
    assert set(validation) == {"pearson", "spearman"} and saved["task"] == "stsb"
    # The final scores are the official metrics of the one prediction pass, and the
    # in-loop squared error (weighted sums over padded batches of 8) saw the same
    # 10 predictions. (Not the in-loop Pearson: after 2 steps the outputs differ by
    # 1e-5, below what its float32 moment sums resolve.)
    task = finetune.build_task(config)
    outputs = runner.predict(config, task, result["state"].params, "validation")[:, 0]
    labels = np.array([example.label for example in task.splits["validation"]])
    assert validation["pearson"] == pytest.approx(metrics.pearson(outputs, labels))
    assert validation["spearman"] == pytest.approx(metrics.spearman(outputs, labels))
    assert result["eval"]["loss"] == pytest.approx(np.mean((outputs - labels) ** 2), rel=1e-5)
    assert "mean_prediction_mse" in result["eval"]
