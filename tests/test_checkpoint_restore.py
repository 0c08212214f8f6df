"""Restoring: damaged steps fall back to an older one, the optimizer must match, params alone."""

from __future__ import annotations

import logging
import os

import grain
import jax
import ml_collections
import numpy as np
import pytest
from conftest import tiny_bert_config

from bert_jax.checkpointing.checkpointer import Checkpointer, CheckpointError, optimizer_fingerprint
from bert_jax.models import registry
from bert_jax.models.bert_config import BertConfig
from bert_jax.training import loop, optim, state

CONFIG = BertConfig(vocab_size=64, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)


def _optim(name="adamw", **overrides):
    fields = {**tiny_bert_config().optim.to_dict(), "name": name, **overrides}
    return ml_collections.ConfigDict(fields)


def _abstract(optim_config):
    tx, _ = optim.create_optimizer(optim_config, 10)
    return state.abstract_train_state(registry.model_spec(CONFIG).create_model, tx, 0)


def _checkpointer(directory, optim_config=None, keep=3):
    optim_config = optim_config or _optim()
    fingerprint = optimizer_fingerprint(optim_config.name, _abstract(optim_config)[1].opt_state)
    return Checkpointer(directory, keep=keep, model_config=CONFIG, optimizer=fingerprint)


def _save_steps(directory, steps=(1, 2), record_optimizer=True) -> dict[int, object]:
    """Saves a real TrainState at each step (parameters differ per step); returns them."""
    _, _, init = _abstract(_optim())
    checkpointer = _checkpointer(directory)
    if not record_optimizer:  # as checkpoints written before the optimizer item existed
        checkpointer.optimizer = None
    iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
    saved = {}
    for step in steps:
        train_state = jax.jit(init)()
        shifted = jax.tree.map(lambda x, s=step: x + s, train_state.params)
        train_state = train_state.replace(params=shifted)
        checkpointer.save(step, train_state, iterator)
        checkpointer.wait()
        saved[step] = jax.device_get(train_state)
    checkpointer.close()
    return saved


def _truncate(path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _largest_array_file(step_dir) -> str:
    folder = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    return max((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getsize)


def _assert_params_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("damage", ["array_file", "metadata"])
def test_a_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    directory = tmp_path / "checkpoints"
    saved = _save_steps(directory)
    if damage == "array_file":
        _truncate(_largest_array_file(directory / "2"))
    else:
        _truncate(directory / "2" / "state" / "_METADATA")
    checkpointer = _checkpointer(directory)
    with caplog.at_level(logging.WARNING):
        restored, step = checkpointer.restore_latest(_abstract(_optim())[1])
    checkpointer.close()
    assert step == 1
    _assert_params_equal(restored.params, saved[1].params)
    warning = next(r.getMessage() for r in caplog.records if "does not restore" in r.getMessage())
    assert "step 2" in warning and "corrupt" in warning
    assert ("_METADATA" if damage == "metadata" else "state") in warning
    # The bad step is kept aside, not deleted, and orbax no longer lists it.
    assert (directory / "corrupt" / "2" / "state").is_dir()
    assert _checkpointer(directory).latest_step() == 1


def test_every_step_damaged_is_one_error_naming_each(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory)
    _truncate(directory / "2" / "state" / "_METADATA")
    _truncate(_largest_array_file(directory / "1"))
    checkpointer = _checkpointer(directory)
    with pytest.raises(
        CheckpointError, match=r"no checkpoint in .* restores \(step 2: .*_METADATA"
    ):
        checkpointer.restore_latest(_abstract(_optim())[1])
    assert sorted(os.listdir(directory / "corrupt")) == ["1", "2"]


def test_an_optimizer_change_is_refused_naming_the_field(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory)
    lamb = _optim("lamb")
    with pytest.raises(
        CheckpointError, match="config.optim.name: checkpoint='adamw' config='lamb'"
    ):
        _checkpointer(directory, lamb).restore_latest(_abstract(lamb)[1])
    # Same name, another state layout (no clipping drops a chain element).
    unclipped = _optim(grad_clip_norm=0.0)
    with pytest.raises(CheckpointError, match="different optimizer.*optimizer state layout"):
        _checkpointer(directory, unclipped).restore_latest(_abstract(unclipped)[1])
    assert sorted(os.listdir(directory)) == ["1", "2"]  # a mismatch is not damage: nothing moved


def test_an_old_checkpoint_without_optimizer_item_restores_or_is_refused_clearly(tmp_path):
    directory = tmp_path / "checkpoints"
    saved = _save_steps(directory, record_optimizer=False)
    restored, step = _checkpointer(directory).restore_latest(_abstract(_optim())[1])
    assert step == 2
    _assert_params_equal(restored.params, saved[2].params)
    lamb = _optim("lamb")
    with pytest.raises(CheckpointError, match="optimizer state of another layout.*config.optim"):
        _checkpointer(directory, lamb).restore_latest(_abstract(lamb)[1])
    assert sorted(os.listdir(directory)) == ["1", "2"]


def test_restore_params_equals_the_full_restore(tmp_path):
    directory = tmp_path / "checkpoints"
    saved = _save_steps(directory)
    checkpointer = Checkpointer(directory, keep=None, model_config=CONFIG)  # no optimizer needed
    _, abstract_params = registry.abstract_params(registry.model_spec(CONFIG).create_model)
    params, step = checkpointer.restore_params(abstract_params)
    assert step == 2
    full, _ = _checkpointer(directory).restore_latest(_abstract(_optim())[1])
    _assert_params_equal(params, full.params)
    _assert_params_equal(params, saved[2].params)
    older, step = checkpointer.restore_params(abstract_params, step=1)
    assert step == 1
    _assert_params_equal(older, saved[1].params)
    _truncate(_largest_array_file(directory / "2"))
    params, step = checkpointer.restore_params(abstract_params)  # falls back too
    assert step == 1
    _assert_params_equal(params, saved[1].params)


def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, vocab_path, corpus_dir):
    workdir = str(tmp_path)
    config = tiny_bert_config()  # checkpoints at steps 2 and 4
    loop.train_and_evaluate(config, workdir)
    _truncate(tmp_path / "checkpoints" / "4" / "state" / "_METADATA")
    resumed = loop.train_and_evaluate(config, workdir)
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    assert (tmp_path / "checkpoints" / "corrupt" / "4").is_dir()
