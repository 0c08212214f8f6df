"""Held-out masked-LM figures by input kind ([MASK], random token, kept) on a tiny model."""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_recipe, tiny_bert_config
from flax import nnx

from bert_jax import objectives
from bert_jax.objectives import bert_eval
from bert_jax.training import loop

MASK_ID = 5
TINY_ALBERT = {
    "data.max_seq_length": 64,
    "objective.max_predictions_per_seq": 10,
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.intermediate_size": 64,
    "model.embedding_size": 16,
    "model.num_layers": 2,
}


def tiny_config(kind: str):
    if kind == "bert":
        return tiny_bert_config()
    config = load_recipe("albert")
    for dotted, value in TINY_ALBERT.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def test_prediction_kinds_read_the_input_against_the_label():
    input_ids = np.array([[3, MASK_ID, 17, 40, 4, 0]])
    positions = np.array([[1, 2, 3, 0]])
    # Slot 1 shows 17 for label 17: kept. Slot 2 shows 40 for label 41: random.
    labels = np.array([[9, 17, 41, 0]])
    expected = [[0, 2, 1, 1]]  # the padding slot (position 0, label 0) is weighted out later
    assert bert_eval.prediction_kinds(input_ids, positions, labels, MASK_ID).tolist() == expected
    on_device = bert_eval.prediction_kinds(
        jnp.asarray(input_ids), jnp.asarray(positions), jnp.asarray(labels), MASK_ID
    )
    assert isinstance(on_device, jax.Array) and np.asarray(on_device).tolist() == expected


def test_a_kind_without_positions_is_nan_not_zero():
    totals = {"mlm_xent": 6.0, "mlm_correct": 1.0, "mlm_count": 3.0}
    totals |= {"pair_correct": 1.0, "pair_count": 2.0}
    for kind in bert_eval.PREDICTION_KINDS:  # every position is [MASK]
        xent, correct, count = (6.0, 1.0, 3.0) if kind == "mask" else (0.0, 0.0, 0.0)
        totals |= {f"mlm_{kind}_xent": xent, f"mlm_{kind}_correct": correct}
        totals[f"mlm_{kind}_count"] = count
    metrics = bert_eval.eval_metrics(totals)
    assert metrics["mlm_mask_loss"] == 2.0 and metrics["mlm_mask_accuracy"] == 1 / 3
    assert math.isnan(metrics["mlm_random_loss"]) and math.isnan(metrics["mlm_kept_accuracy"])
    assert metrics["mlm_random_count"] == 0.0
    no_targets = bert_eval.unigram_baselines(np.ones(8), np.array([], int), np.array([0]))
    assert math.isnan(no_targets["unigram_xent"]) and math.isnan(no_targets["majority_accuracy"])


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_hidden_position_metrics_count_exactly_the_mask_inputs(kind, vocab_path, corpus_dir):
    config = tiny_config(kind)
    task = objectives.get_task(config)
    batches = loop.eval_batches(config, task, 8)
    model = task.create_model(nnx.Rngs(params=0))
    graphdef, params = nnx.split(model, nnx.Param)
    eval_step = jax.jit(loop.make_eval_step(task, graphdef))
    forward = jax.jit(
        lambda params, batch: bert_eval.pretraining_logits(
            nnx.merge(graphdef, params), batch, deterministic=True, rngs=None
        )[0]
    )
    totals = None
    # Independent per-slot reference: loops over the host batch, log-softmax in NumPy.
    reference = {name: {"count": 0, "xent": 0.0} for name in bert_eval.PREDICTION_KINDS}
    for batch in batches:
        sums = jax.device_get(eval_step(params, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
        logits = np.asarray(forward(params, batch), np.float64)  # [batch, predictions, vocab]
        top = logits.max(-1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        rows, slots = np.nonzero(batch["masked_lm_weights"])
        for row, slot in zip(rows, slots, strict=True):
            shown = batch["input_ids"][row, batch["masked_lm_positions"][row, slot]]
            label = batch["masked_lm_ids"][row, slot]
            name = "mask" if shown == MASK_ID else "kept" if shown == label else "random"
            reference[name]["count"] += 1
            reference[name]["xent"] -= log_probs[row, slot, label]
    metrics = task.eval_metrics({k: float(v) for k, v in totals.items()})

    for name in bert_eval.PREDICTION_KINDS:
        assert metrics[f"mlm_{name}_count"] == reference[name]["count"], name
        assert metrics[f"mlm_{name}_loss"] == pytest.approx(
            reference[name]["xent"] / reference[name]["count"], rel=1e-5
        ), name
    total = sum(reference[name]["count"] for name in bert_eval.PREDICTION_KINDS)
    assert metrics["mlm_count"] == total > 500
    # 80/10/10 corruption: the hidden share is near 80% (binomial sd under 2% here).
    assert 0.7 < metrics["mlm_mask_count"] / total < 0.9
    assert 0.03 < metrics["mlm_random_count"] / total < 0.17
    # The kinds partition the selected positions: their weighted losses give the overall one.
    weighted = sum(
        metrics[f"mlm_{name}_loss"] * metrics[f"mlm_{name}_count"]
        for name in bert_eval.PREDICTION_KINDS
    )
    assert weighted / total == pytest.approx(metrics["mlm_loss"], rel=1e-5)


def test_mask_baselines_use_only_the_mask_targets(vocab_path, corpus_dir):
    config = tiny_bert_config()
    task = objectives.get_task(config)
    batches = loop.eval_batches(config, task, 2)
    figures = task.eval_baselines(batches)
    assert figures["mask_unigram_xent"] != figures["unigram_xent"]
    # Hide every selected position: the [MASK] targets become all the targets.
    hidden = []
    for batch in batches:
        batch = dict(batch, input_ids=batch["input_ids"].copy())
        rows, slots = np.nonzero(batch["masked_lm_weights"])
        batch["input_ids"][rows, batch["masked_lm_positions"][rows, slots]] = MASK_ID
        hidden.append(batch)
    all_hidden = task.eval_baselines(hidden)
    assert all_hidden["mask_unigram_xent"] == pytest.approx(all_hidden["unigram_xent"])
    assert all_hidden["mask_majority_accuracy"] == all_hidden["majority_accuracy"]
    assert all_hidden["unigram_xent"] == figures["unigram_xent"]


def test_eval_masked_lm_prob_masks_only_the_held_out_split(vocab_path, corpus_dir):
    # A recipe may train at another masking rate; held-out figures stay at the eval rate.
    config = tiny_bert_config(
        **{
            "objective.masked_lm_prob": 0.4,
            "objective.max_predictions_per_seq": 32,
            "objective.eval_masked_lm_prob": 0.1,
        }
    )
    task = objectives.get_task(config)
    held_out = loop.eval_batches(config, task, 2)
    training = next(iter(task.batches("train", config.train.batch_size)))

    def rate(batches):
        predicted = sum(float(b["masked_lm_weights"].sum()) for b in batches)
        tokens = sum(float(b["input_mask"].sum()) for b in batches)
        return predicted / tokens

    assert rate(held_out) == pytest.approx(0.1, abs=0.04)
    assert rate([training]) == pytest.approx(0.4, abs=0.06)


def test_eval_masked_lm_prob_out_of_range_names_the_field(vocab_path, corpus_dir):
    config = tiny_bert_config(**{"objective.eval_masked_lm_prob": 1.5})
    with pytest.raises(ValueError, match="config.objective.eval_masked_lm_prob"):
        objectives.get_task(config)


@pytest.mark.parametrize("pair_task", ["nsp", "none"])
def test_metrics_carry_the_pair_head_only_when_it_trains(pair_task, vocab_path, corpus_dir):
    config = tiny_bert_config(**{"objective.sentence_pair_task": pair_task})
    task = objectives.get_task(config)
    batch = next(iter(task.batches("train", config.train.batch_size)))
    model = task.create_model(nnx.Rngs(params=0))
    loss, metrics = task.loss_fn(model, batch, deterministic=True)
    held_out = loop.eval_batches(config, task, 2)
    graphdef, params = nnx.split(model, nnx.Param)
    sums = jax.device_get(jax.jit(loop.make_eval_step(task, graphdef))(params, held_out[0]))
    evaluated = {**task.eval_metrics({k: float(v) for k, v in sums.items()})}
    evaluated.update(task.eval_baselines(held_out))
    if pair_task == "none":  # no untrained-head figures in the progress line or TensorBoard
        assert set(metrics) == {"mlm_loss", "mlm_accuracy"}
        assert float(loss) == pytest.approx(float(metrics["mlm_loss"]))
        # ...nor a "100% vs majority 100%" row in the held-out report (all labels are 0).
        assert not {"pair_accuracy", "pair_majority_accuracy"} & set(evaluated)
    else:
        assert 0.0 <= evaluated["pair_accuracy"] <= 1.0
        assert 0.5 <= evaluated["pair_majority_accuracy"] <= 1.0
        assert float(loss) == pytest.approx(
            float(metrics["mlm_loss"]) + float(metrics["pair_loss"]), rel=1e-6
        )


def test_a_short_held_out_split_is_read_again_as_other_draws(vocab_path, corpus_dir):
    config = tiny_bert_config()
    task = objectives.get_task(config)
    one_pass = list(task.batches("eval", config.train.batch_size))
    wanted = len(one_pass) + 2
    held_out = loop.eval_batches(config, task, wanted)
    assert len(held_out) == wanted
    for first, again in zip(one_pass, held_out, strict=False):  # draw 0 is unchanged
        for key in first:
            np.testing.assert_array_equal(first[key], again[key])
    redrawn, original = held_out[len(one_pass)], one_pass[0]
    assert not np.array_equal(redrawn["masked_lm_positions"], original["masked_lm_positions"])
    same = loop.eval_batches(config, task, wanted)  # fixed: identical at every evaluation
    for a, b in zip(held_out, same, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    # A fixed split (fine-tuning's) is read once: repeating it would only weight it twice.
    fixed = copy.copy(task)
    fixed.eval_draws = 1
    assert len(loop.eval_batches(config, fixed, wanted)) == len(one_pass)


def test_unigram_counts_are_made_once_per_process_until_the_files_change(
    tmp_path, vocab_path, corpus_dir
):
    """Pretraining's evaluation, `evaluate` and a compare cell count the same training
    documents: the second count is the first's (a copy); new file contents count anew."""
    import gzip
    import json
    import os

    from bert_jax.data.tokenizer import Tokenizer

    shard = tmp_path / "c4-train.0.json.gz"
    documents = ["The cat sat on the mat. It was happy there.", "Dogs bark at night."]
    with gzip.open(shard, "wt") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in documents)
    config = tiny_bert_config()
    config.data.train_pattern = str(shard)
    tokenizer = Tokenizer(vocab_path)
    first = bert_eval.training_unigram_counts(config.data, tokenizer)
    first[:] = 0  # the caller's array is a copy: the next caller is unaffected
    again = bert_eval.training_unigram_counts(config.data, tokenizer)
    expected = sum(len(tokenizer.encode(text)) for text in documents)
    assert again.sum() == expected
    with gzip.open(shard, "wt") as f:  # new contents (size and mtime change)
        f.write(json.dumps({"text": documents[1]}) + "\n")
    os.utime(shard, ns=(1, 1))
    assert bert_eval.training_unigram_counts(config.data, tokenizer).sum() == len(
        tokenizer.encode(documents[1])
    )
