"""A params-only restore that needs nothing but the workdir and a mesh (checkpointing.inference)."""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
import pytest
from conftest import load_recipe, tiny_bert_config

from bert_jax import objectives
from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.checkpointing.inference import restore_params
from bert_jax.checkpointing.workdir import saved_model_config
from bert_jax.downstream import encoder_init, text_to_text
from bert_jax.models import loading, registry
from bert_jax.runtime import run_config, sharding
from bert_jax.training import loop, optim, state


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, vocab_path, corpus_dir):
    """A two-step tiny BERT pretraining workdir and its config."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    config = tiny_bert_config(**{"train.num_steps": 2})
    loop.train_and_evaluate(config, workdir)
    return config, workdir


def _full_restore(config, workdir):
    """The whole train state (optimizer included), restored the way the loop resumes."""
    task = objectives.get_task(config)
    tx, _ = optim.create_optimizer(config.optim, config.train.num_steps)
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        _, abs_state, _ = state.abstract_train_state(task.create_model, tx, config.seed)
        target = state.with_shardings(abs_state, state.state_shardings(abs_state, mesh, rules))
        checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=2, model_config=task.model_config
        )
        restored = checkpointer.restore_state(checkpointer.latest_step(), target)
        checkpointer.close()
    return restored


def _broken(config):
    """``config`` with an optimizer that does not exist and data paths that do not either."""
    broken = ml_collections.ConfigDict(config.to_dict())
    broken.optim.name = "no_such_optimizer"
    broken.data.vocab_path = "/nonexistent/vocab.model"
    broken.data.train_pattern = "/nonexistent/train-*.json.gz"
    broken.data.eval_pattern = "/nonexistent/eval-*.json.gz"
    with broken.unlocked():  # the second recipe fine-tuning used to load
        broken.finetune = ml_collections.ConfigDict({"pretrain_config": "/nonexistent.py"})
    return broken


def _assert_same_params(actual, expected):
    flat_actual = dict(jax.tree_util.tree_leaves_with_path(actual))
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    assert flat_actual.keys() == flat_expected.keys()
    for path, value in flat_expected.items():
        got = flat_actual[path]
        assert got.dtype == value.dtype and got.shape == value.shape, path
        np.testing.assert_array_equal(np.asarray(got), np.asarray(value), err_msg=str(path))


def test_restore_params_equals_the_full_restore_without_optimizer_tokenizer_or_data(pretrained):
    config, workdir = pretrained
    full = _full_restore(config, workdir)
    broken = _broken(config)
    with pytest.raises(ValueError, match="config.optim.name"):  # it cannot build one
        optim.create_optimizer(broken.optim, broken.train.num_steps)
    saved = saved_model_config(workdir)  # from the checkpoint alone, no recipe
    assert saved == objectives.get_task(config).model_config
    with sharding.mesh_context(broken.mesh) as (mesh, rules):
        graphdef, params, step = restore_params(workdir, registry.model_spec(saved), mesh, rules)
        expected = state.state_shardings(params, mesh, rules)
    assert step == config.train.num_steps == int(full.step)
    _assert_same_params(params, full.params)
    for leaf, sharding_ in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        assert leaf.sharding == sharding_
    # The graph definition rebuilds the pretraining model around the restored weights.
    assert type(jax.tree.leaves(params)[0]) is type(jax.tree.leaves(full.params)[0])
    assert graphdef == registry.abstract_params(registry.model_spec(saved).create_model)[0]


def test_fine_tuning_reads_the_encoder_without_the_pretraining_recipe(pretrained):
    config, workdir = pretrained
    full = _full_restore(config, workdir)
    loaded = loading.load_model("pretrained", workdir, mesh_config=_broken(config).mesh)
    encoder = loaded.load_params()["encoder"]
    _assert_same_params(encoder, full.params["encoder"])
    # The fine-tuning config needs neither the vocabulary path nor the recipe: the
    # checkpoint records them (older checkpoints: config.data.vocab_path).
    finetune = run_config.load_recipe("configs/finetune.py:init=pretrained,runlocal")
    finetune.finetune.init_workdir = workdir
    finetune.finetune.pretrain_config = "/nonexistent.py"
    finetune.data.vocab_path = "/nonexistent/vocab.model"
    source = encoder_init.load_encoder_source(finetune)
    assert source.tokenizer.model_path == os.path.abspath(config.data.vocab_path)
    saved = loaded.model_config
    dropout = dict(
        dropout_rate=saved.dropout_rate, attention_dropout_rate=saved.attention_dropout_rate
    )
    assert dataclasses.replace(source.encoder_config, **dropout) == saved


def test_restore_params_checks_the_model_and_names_a_missing_checkpoint(pretrained, tmp_path):
    config, workdir = pretrained
    saved = saved_model_config(workdir)
    wider = registry.model_spec(dataclasses.replace(saved, hidden_size=64))
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        with pytest.raises(ValueError, match="hidden_size: checkpoint=32 config=64"):
            restore_params(workdir, wider, mesh, rules)
        empty = str(tmp_path / "empty")
        with pytest.raises(FileNotFoundError, match=r"empty/checkpoints does not exist"):
            restore_params(empty, registry.model_spec(saved), mesh, rules)
    assert not os.path.exists(os.path.join(empty, "checkpoints"))  # reading creates nothing
    with pytest.raises(FileNotFoundError, match="empty/checkpoints does not exist"):
        saved_model_config(empty)


def test_init_from_replaces_and_places_the_parameters(pretrained):
    config, _ = pretrained
    task = objectives.get_task(config)
    tx, _ = optim.create_optimizer(config.optim, config.train.num_steps)
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        _, abs_state, init = state.abstract_train_state(task.create_model, tx, config.seed)
        shardings = state.state_shardings(abs_state, mesh, rules)
        fresh = jax.jit(init, out_shardings=shardings)()
        assert state.init_from(fresh, None, shardings) is fresh
        ones = state.init_from(fresh, lambda p: jax.tree.map(np.ones_like, p), shardings)
    pairs = zip(jax.tree.leaves(ones.params), jax.tree.leaves(shardings.params), strict=True)
    for leaf, placed in pairs:
        assert leaf.sharding == placed and np.all(np.asarray(leaf) == 1)
    assert int(ones.step) == 0 and ones.opt_state is fresh.opt_state


def test_t5_fine_tuning_starts_from_the_whole_pretrained_encoder_decoder(tmp_path, vocab_path):
    pretrain = load_recipe("t5")
    pretrain.model.update(
        d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1, num_decoder_layers=1
    )
    pretrain.train.num_steps = 1
    workdir = str(tmp_path / "t5")
    loop.train_and_evaluate(pretrain, workdir)
    config = run_config.load_recipe("configs/finetune.py:model=t5,init=pretrained,runlocal")
    config.data.vocab_path = vocab_path
    config.finetune.init_workdir = workdir
    model_config, _, initial_params = text_to_text.load_t5(config)
    assert dataclasses.replace(model_config, dropout_rate=0.0) == dataclasses.replace(
        objectives.get_task(pretrain).model_config, dropout_rate=0.0
    )
    _assert_same_params(initial_params(None), _full_restore(pretrain, workdir).params)
    # The vocabulary and its sentinels come from the checkpoint: no recipe is read.
    config.data.vocab_path = "/nonexistent/vocab.model"
    config.finetune.pretrain_config = "/nonexistent.py"
    again, tokenizer, _ = text_to_text.load_t5(config)
    assert again == model_config and tokenizer.vocab_size == model_config.vocab_size
