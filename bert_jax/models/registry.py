"""The model families and everything the rest of the code asks about a model.

One table, `FAMILIES`, from the family name a run config gives (``config.model.name``:
bert, albert, t5) to its config class, its pretraining model class, its Hugging Face
names (``model_type`` and the architecture ``save_pretrained`` writes) and its layer
layout (``stack_layers``: per-layer parameters -> the config's layout, scanned or not).

- ``model_config(run_config, vocab_size)``: the one place a model config is built from
  a run config (size preset, then every set ``config.model`` field).
- ``tokenizer(run_config)``: the vocabulary a run of that config reads.
- ``ModelSpec`` / ``model_spec(model_config)``: a model without its task (the
  pretraining model of a BertConfig / T5Config).
- ``config_from_record(fields)``: a model config from its checkpoint record (the
  ``model`` item: the dataclass fields plus ``class``).
- ``abstract_params(create_model)``: graph definition and parameter shapes only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
from flax import nnx

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.models import bert, t5


@dataclasses.dataclass(frozen=True)
class Family:
    """What the code knows about one model family.

    Attributes:
      name: ``config.model.name`` (also Hugging Face's ``model_type``).
      config_class: the frozen hyperparameter dataclass.
      model_class: the pretraining model, ``model_class(config, rngs=...)``.
      hf_architecture: the Hugging Face class an export is loaded as.
      stack_layers: ``(per-layer params, config) -> params`` in the config's layout.
    """

    name: str
    config_class: type
    model_class: type
    hf_architecture: str
    stack_layers: Callable

    @property
    def hf_model_type(self) -> str:
        return self.name


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert", bert.BertConfig, bert.BertForPreTraining, "BertForPreTraining", bert.stack_layers
    ),
    "albert": Family(
        "albert",
        bert.BertConfig,
        bert.BertForPreTraining,
        "AlbertForPreTraining",
        bert.stack_layers,
    ),
    "t5": Family(
        "t5",
        t5.T5Config,
        t5.T5ForConditionalGeneration,
        "T5ForConditionalGeneration",
        t5.stack_layers,
    ),
}
# Config class name (as the checkpoint's ``model`` item records it) -> config, model class.
_BY_CONFIG_CLASS = {f.config_class.__name__: f for f in FAMILIES.values()}


def family(name: str) -> Family:
    """The family of ``config.model.name``; ValueError naming the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"config.model.name={name!r}; choose one of {tuple(FAMILIES)}")
    return FAMILIES[name]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model without its task.

    Attributes:
      model_config: the frozen model dataclass (also the checkpoint fingerprint).
      create_model: ``rngs -> nnx.Module``.
    """

    model_config: Any
    create_model: Callable


def model_spec(model_config) -> ModelSpec:
    """The pretraining model (BertForPreTraining / T5ForConditionalGeneration) of a config."""
    name = type(model_config).__name__
    if name not in _BY_CONFIG_CLASS:
        raise ValueError(f"no pretraining model for {name}; know {sorted(_BY_CONFIG_CLASS)}")
    model_class = _BY_CONFIG_CLASS[name].model_class
    return ModelSpec(model_config, lambda rngs: model_class(model_config, rngs=rngs))


def config_from_record(fields: dict, where: str):
    """The model config of a checkpoint's ``model`` record (``class`` plus the fields).

    Raises:
      ValueError: the record names a config class this project does not know.
    """
    fields = dict(fields)
    name = fields.pop("class", None)
    if name not in _BY_CONFIG_CLASS:
        raise ValueError(f"{where} holds a {name} model; know {sorted(_BY_CONFIG_CLASS)}")
    return _BY_CONFIG_CLASS[name].config_class(**fields)


def model_config(config: ml_collections.ConfigDict, vocab_size: int):
    """The one place a model config is built from the run config.

    BERT / ALBERT start from the size preset (``BERT_SIZES`` or ``ALBERT_SIZES`` by
    ``config.model.name``; ``max_position_embeddings`` at least 512 and the sequence
    length), T5 from its size and variant preset; every ``config.model`` field that is a
    field of the config class and not None then applies.
    """
    config_class = family(config.model.name).config_class
    fields = {f.name for f in dataclasses.fields(config_class)} - {"vocab_size"}
    overrides = {k: v for k, v in config.model.items() if k in fields and v is not None}
    try:
        if config_class is t5.T5Config:
            return t5.t5_config(
                config.model.size, config.model.variant, vocab_size=vocab_size, **overrides
            )
        overrides.setdefault("max_position_embeddings", max(512, config.data.max_seq_length))
        return bert.sized_config(
            config.model.name, config.model.size, vocab_size=vocab_size, **overrides
        )
    except ValueError as error:
        raise ValueError(f"config.model: {error}") from None


def tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
    """The vocabulary of a run: ``config.data.vocab_path`` (plus T5's sentinel ids)."""
    if family(config.model.name).config_class is t5.T5Config:
        return Tokenizer(config.data.vocab_path, extra_ids=config.objective.extra_ids)
    return Tokenizer(config.data.vocab_path)


def abstract_params(create_model: Callable) -> tuple[nnx.GraphDef, nnx.State]:
    """Graph definition and abstract parameters of ``create_model(rngs)``'s model."""
    abs_model = nnx.eval_shape(lambda: create_model(nnx.Rngs(params=0)))
    graphdef, params = nnx.split(abs_model, nnx.Param)
    return graphdef, params
