"""Nothing non-finite is ever saved; the stop and skip policies (training/finite_guard.py)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax
import pytest
from conftest import tiny_bert_config

from bert_jax import objectives
from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.models import registry
from bert_jax.objectives import bert_task
from bert_jax.training import loop
from bert_jax.training.state import abstract_train_state


def _steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _saved_params(workdir, config, step):
    task = objectives.get_task(config)
    directory = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(directory, keep=None, model_config=task.model_config)
    params, _ = checkpointer.restore_params(
        registry.abstract_params(task.create_model)[1], step=step
    )
    checkpointer.close()
    return jax.tree.leaves(params)


def _exploding(**overrides):
    # lr 1e39 is inf in float32: the loss of the first step is finite (computed before
    # the update), its updated parameters are not; the old guard saved them.
    return tiny_bert_config(
        **{
            "optim.learning_rate": 1e39,
            "train.checkpoint_every": 1,
            "train.num_steps": 6,
            **overrides,
        }
    )


def test_fresh_run_that_explodes_says_no_checkpoint_was_written(tmp_path, vocab_path, corpus_dir):
    with pytest.raises(FloatingPointError, match="No checkpoint was written yet in .*checkpoints"):
        loop.train_and_evaluate(_exploding(**{"optim.warmup_steps": 0}), str(tmp_path))
    assert _steps(tmp_path) == []


def test_the_named_last_good_checkpoint_is_finite(tmp_path, vocab_path, corpus_dir):
    sane = tiny_bert_config(**{"train.checkpoint_every": 1, "train.num_steps": 2})
    loop.train_and_evaluate(sane, str(tmp_path))
    # Resumed at step 2 with lr 1e39, every update overflows: the next saves must not happen.
    with pytest.raises(FloatingPointError, match="last good checkpoint is step 2 in") as raised:
        loop.train_and_evaluate(_exploding(**{"optim.warmup_steps": 0}), str(tmp_path))
    # The loss of step 3 was finite; its update was not: the run diverged, not the data.
    assert "training diverged: lower config.optim.learning_rate" in str(raised.value)
    assert _steps(tmp_path) == [1, 2]
    assert all(np.isfinite(leaf).all() for leaf in _saved_params(tmp_path, sane, 2))


def test_skip_policy_counts_skipped_updates_and_stops_after_n_in_a_row(
    tmp_path, vocab_path, corpus_dir
):
    config = _exploding(
        **{
            "optim.warmup_steps": 0,
            "train.checkpoint_every": 2,
            "train.nonfinite_policy": "skip",
            "train.max_nonfinite_steps": 3,
        }
    )
    with pytest.raises(FloatingPointError, match=r"3 steps in a row .*max_nonfinite_steps=3"):
        loop.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    skipped = {r["step"]: r["nonfinite_skipped"] for r in records if r["split"] == "train"}
    assert skipped == {1: 1.0, 2: 1.0, 3: 1.0}
    # The step-2 checkpoint was written (skip goes on) and holds the untouched, finite
    # initial parameters: no update was applied.
    assert _steps(tmp_path) == [2]
    # Initialised as the loop does, under jit (an eager init may round differently: at the
    # suite's -O0, conftest.TEST_XLA_FLAGS, 50 of 1,024 elements differed by 1 ulp).
    create_model = objectives.get_task(config).create_model
    _, _, init = abstract_train_state(create_model, optax.identity(), config.seed)
    fresh = jax.tree.leaves(jax.jit(init)().params)
    for saved, init in zip(_saved_params(tmp_path, config, 2), fresh, strict=True):
        np.testing.assert_array_equal(saved, np.asarray(init))


def test_a_policy_that_does_not_exist_is_named(tmp_path, vocab_path, corpus_dir):
    config = tiny_bert_config(**{"train.nonfinite_policy": "ignore"})
    with pytest.raises(ValueError, match="config.train.nonfinite_policy='ignore'"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_token_ids_past_the_vocabulary_are_named_as_the_data_not_the_learning_rate(
    tmp_path, vocab_path, corpus_dir
):
    # Two good steps, then a batch with an id past the vocabulary (shards tokenised with
    # another vocabulary): its embedding is NaN. The old message said lower the learning rate.
    config = tiny_bert_config(**{"train.num_steps": 4, "train.checkpoint_every": 100})

    class BadDataTask(bert_task.BertPretrainingTask):
        def batches(self, split, size, draw=0):
            for index, batch in enumerate(super().batches(split, size, draw)):
                if split == "train" and index == 2:
                    batch = {**batch, "input_ids": batch["input_ids"].copy()}
                    batch["input_ids"][0, 1] = self.model_config.vocab_size + 7
                yield batch

    bad_data = BadDataTask(config)
    vocab_size = bad_data.model_config.vocab_size
    with pytest.raises(FloatingPointError) as raised:
        loop.train_and_evaluate(config, str(tmp_path), task=bad_data)
    message = str(raised.value)
    assert (
        f"The input batch of step 3 is bad (input_ids holds token ids >= the model's vocab_size "
        f"{vocab_size}): the data, not the learning rate, is the cause" in message
    )
    assert "lower config.optim.learning_rate" not in message


def test_nonfinite_imported_weights_stop_before_the_first_step(tmp_path, vocab_path, corpus_dir):
    def damaged(params):  # e.g. a converted checkpoint holding NaN
        leaves, treedef = jax.tree.flatten(params)
        return jax.tree.unflatten(treedef, [leaves[0] * np.nan, *leaves[1:]])

    config = tiny_bert_config()
    task = objectives.get_task(config)
    task.initial_params = damaged
    with pytest.raises(FloatingPointError) as raised:
        loop.train_and_evaluate(config, str(tmp_path), task=task)
    message = str(raised.value)
    assert message.startswith("the imported initial parameters")
    assert "hold non-finite values in 1 of " in message
    assert "no step was run, and the learning rate is not the cause" in message
    assert _steps(tmp_path) == [] and not (tmp_path / "metrics.jsonl").exists()


def test_the_guard_compiles_linearly_in_the_number_of_arrays():
    """keep_if_finite once selected leaf by leaf (``jnp.where``): XLA fused the scalar
    all-finite check, an ``and`` over every array, into each array's select, so N arrays
    compiled N x N ``and``s (a BERT-base train step took 116 s to compile on XLA:CPU instead
    of 9 s). Kept or not, every leaf comes back whole."""
    from bert_jax.training import finite_guard

    new = [jax.numpy.full((4, 3), float(i)) for i in range(96)]
    old = [jax.numpy.zeros((4, 3)) for _ in new]

    def guarded(new, old):
        return finite_guard.keep_if_finite(finite_guard.all_finite(new), new, old)

    compiled = jax.jit(guarded).lower(new, old).compile()
    assert compiled.as_text().count(" and(") < 4 * len(new)
    np.testing.assert_array_equal(compiled(new, old)[5], new[5])
    new[7] = new[7].at[1, 2].set(np.inf)
    kept = compiled(new, old)
    assert all((np.asarray(x) == 0).all() for x in kept)
