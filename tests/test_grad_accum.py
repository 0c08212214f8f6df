"""Gradient accumulation: M microbatches in one step equal the one large batch."""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
from conftest import load_recipe, tiny_bert_config

from bert_jax import objectives
from bert_jax.runtime import sharding
from bert_jax.training import loop, optim, step
from bert_jax.training.state import abstract_train_state

BATCH = 8


def _setup(config):
    task = objectives.get_task(config)
    tx, schedule = optim.create_optimizer(config.optim, config.train.num_steps)
    graphdef, _, init = abstract_train_state(task.create_model, tx, config.seed)
    dataset = task.batches("train", BATCH)
    batch = jax.tree.map(np.asarray, next(iter(dataset)))
    return task, graphdef, tx, schedule, jax.jit(init)(), batch


def _step(task, graphdef, tx, schedule, state, batch, microbatches, repeats=1):
    step = jax.jit(loop.make_train_step(task, graphdef, tx, schedule, microbatches))
    runs = [step(state, batch, jax.random.key(0)) for _ in range(repeats)]
    outputs = [(jax.device_get(s.params), jax.device_get(m)) for s, m in runs]
    return outputs[0] if repeats == 1 else outputs


def _bert_config(dropout=0.0):
    rates = {"model.dropout_rate": dropout, "model.attention_dropout_rate": dropout}
    return tiny_bert_config(**{"train.batch_size": BATCH, **rates})


def _t5_config():
    config = load_recipe("t5")
    config.train.batch_size = BATCH
    config.model.dropout_rate = 0.0
    return config


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "t5"])
def test_four_microbatches_equal_one_large_batch(family, vocab_path, corpus_dir):
    config = _bert_config() if family == "bert" else _t5_config()
    task, graphdef, tx, schedule, state, batch = _setup(config)
    # Padding in one row makes the microbatches' counts (masked positions, target
    # tokens) differ, which is what weighting microbatches by their counts is for.
    name = "masked_lm_weights" if family == "bert" else "decoder_loss_weights"
    batch[name][0, 2:] = 0
    counts = step.split_microbatches(batch[name], 4).reshape(4, -1).sum(axis=1)
    assert len(set(np.asarray(counts).tolist())) > 1, counts
    params_big, metrics_big = _step(task, graphdef, tx, schedule, state, batch, 1)
    params_acc, metrics_acc = _step(task, graphdef, tx, schedule, state, batch, 4)
    assert set(metrics_acc) == set(metrics_big)
    for name in metrics_big:
        np.testing.assert_allclose(metrics_acc[name], metrics_big[name], atol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(params_acc), jax.tree.leaves(params_big), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    if family == "bert":  # without the task's counts the masked-LM loss is off
        unweighted = copy.copy(task)
        unweighted.mean_weights = lambda batch: {}  # every microbatch weighs the same
        _, metrics_equal = _step(unweighted, graphdef, tx, schedule, state, batch, 4)
        assert abs(metrics_equal["mlm_loss"] - metrics_big["mlm_loss"]) > 1e-4


@pytest.mark.slow
def test_dropout_per_microbatch_is_deterministic(vocab_path, corpus_dir):
    task, graphdef, tx, schedule, state, batch = _setup(_bert_config(dropout=0.1))
    (params_a, metrics_a), (params_b, metrics_b) = _step(
        task, graphdef, tx, schedule, state, batch, 2, repeats=2
    )
    assert metrics_a == metrics_b
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_that_does_not_divide_names_the_keys():
    mesh = sharding.create_mesh((1, 1, 1))
    with pytest.raises(ValueError, match="batch_size=8.*gradient_accumulation_steps=3"):
        step.check_batch_divides(8, 3, mesh)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be a positive"):
        step.check_batch_divides(8, 0, mesh)
    with pytest.raises(ValueError, match="config.train.batch_size must be a positive int, got -8"):
        step.check_batch_divides(-8, 1, mesh)  # -8 % 1 == 0: divisible, yet no batch
    step.check_batch_divides(8, 4, mesh)
