"""The train state in one place: its type, abstract form, shardings and a params-only restore.

API (every command uses these; the downstream code too):

- ``TrainState(step, params, opt_state)``: the functional struct the loop steps and saves.
- ``ModelSpec(model_config, create_model)``: what a model is, nothing else (no tokenizer,
  no example builder, no optimizer). ``model_spec(model_config)`` gives the pretraining
  model of a BertConfig / T5Config; an ``objectives.Task`` also has ``model_config`` and
  ``create_model``, so it can stand wherever a ModelSpec is asked for.
- ``abstract_params(model)`` / ``abstract_train_state(model, tx, seed)``: shapes only.
- ``state_shardings(abstract, mesh, rules)`` and ``with_shardings(abstract, shardings)``.
- ``saved_model_config(workdir)``: the model config a pretraining workdir's latest
  checkpoint was written for (read from its ``model`` item, no recipe needed).
- ``restore_params(workdir, model, mesh, rules) -> RestoredParams(graphdef, params, step)``:
  the parameters only of the newest checkpoint that restores (orbax partial restore of
  the ``state`` item; a damaged step is set aside by the Checkpointer), placed on
  ``mesh`` by ``rules``. Fine-tuning from a pretrained workdir::

      with sharding.mesh_context(config.mesh) as (mesh, rules):
          model = state.model_spec(state.saved_model_config(workdir))
          graphdef, params, step = state.restore_params(workdir, model, mesh, rules)

- ``init_from(state, params_source, shardings)``: the step-0 state of a run whose
  ``Task.initial_params`` (``fresh params -> params``) loads weights, e.g. a
  pretrained encoder; loop.py calls it once, before the first step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import nnx

from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.models import bert, t5
from bert_jax.runtime import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model without its task.

    Attributes:
      model_config: the frozen model dataclass (also the checkpoint fingerprint).
      create_model: ``rngs -> nnx.Module``.
    """

    model_config: Any
    create_model: Callable


# The pretraining model of each model config class, by the class name checkpoints record.
_PRETRAINING_MODELS = {
    "BertConfig": (bert.BertConfig, bert.BertForPreTraining),
    "T5Config": (t5.T5Config, t5.T5ForConditionalGeneration),
}


def model_spec(model_config) -> ModelSpec:
    """The pretraining model (BertForPreTraining / T5ForConditionalGeneration) of a config."""
    name = type(model_config).__name__
    if name not in _PRETRAINING_MODELS:
        raise ValueError(f"no pretraining model for {name}; know {sorted(_PRETRAINING_MODELS)}")
    model_class = _PRETRAINING_MODELS[name][1]
    return ModelSpec(model_config, lambda rngs: model_class(model_config, rngs=rngs))


def _checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


def _check_exists(directory: str) -> None:
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory} does not exist: run `bert-jax pretrain` with that --workdir first"
        )


def saved_model_config(workdir: str, expect: tuple[type, str] | None = None):
    """The model config (BertConfig / T5Config) saved with the latest checkpoint of ``workdir``.

    ``expect``: (config class, what the caller needs, for the message) to refuse another family.

    Raises:
      FileNotFoundError: ``workdir`` holds no checkpoint.
      ValueError: the checkpoint records a model class this project does not know, or
        not the ``expect``-ed one.
    """
    directory = _checkpoint_dir(workdir)
    _check_exists(directory)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    manager = ocp.CheckpointManager(directory, options=options, item_names=("model",))
    step = manager.latest_step()
    if step is None:
        manager.close()
        raise FileNotFoundError(f"no checkpoint in {directory}: run `bert-jax pretrain` first")
    restored = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
    manager.close()
    fields = dict(restored["model"])
    name = fields.pop("class", None)
    if name not in _PRETRAINING_MODELS:
        raise ValueError(
            f"{directory}/{step} holds a {name} model; know {sorted(_PRETRAINING_MODELS)}"
        )
    saved = _PRETRAINING_MODELS[name][0](**fields)
    if expect is not None and not isinstance(saved, expect[0]):
        raise ValueError(f"{workdir} holds a {name} model; {expect[1]}")
    return saved


def abstract_params(model) -> tuple[nnx.GraphDef, nnx.State]:
    """Graph definition and abstract parameters of ``model`` (a ModelSpec or Task)."""
    abs_model = nnx.eval_shape(lambda: model.create_model(nnx.Rngs(params=0)))
    graphdef, params = nnx.split(abs_model, nnx.Param)
    return graphdef, params


def abstract_train_state(model, tx: optax.GradientTransformation, seed: int):
    """Graph definition, abstract state and the function that initialises it.

    Args:
      model: a ModelSpec or Task (its ``create_model``).
      tx: the optimizer, whose state the train state holds.
      seed: the parameter initialisation seed.
    """
    graphdef, _ = abstract_params(model)

    def init() -> TrainState:
        module = model.create_model(nnx.Rngs(params=seed))
        _, params, rest = nnx.split(module, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError(f"{type(module).__name__} holds non-parameter state: {rest}")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return graphdef, jax.eval_shape(init), init


def state_shardings(abstract, mesh: jax.sharding.Mesh, rules):
    """NamedShardings of every leaf of a state (or params) tree from its logical axes."""
    return sharding.state_shardings(abstract, mesh, rules)


def with_shardings(abstract, shardings):
    """ShapeDtypeStructs that carry shardings: the target of a sharded restore."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


class RestoredParams(NamedTuple):
    graphdef: nnx.GraphDef
    params: nnx.State
    step: int


def restore_params(workdir: str, model, mesh: jax.sharding.Mesh, rules) -> RestoredParams:
    """The parameters of the newest checkpoint in ``workdir`` that restores, nothing else.

    Only the ``params`` subtree of the ``state`` item is read (no optimizer state, so
    no optimizer, tokenizer or recipe is needed), onto the shardings ``rules`` give on
    ``mesh``.

    Args:
      workdir: a pretraining (or fine-tuning) workdir.
      model: a ModelSpec or Task; the checkpoint's model fingerprint is checked against
        its ``model_config``.
      mesh: the device mesh the parameters are placed on.
      rules: logical axis rules.

    Raises:
      FileNotFoundError: ``workdir`` has no checkpoint.
      ValueError: the checkpoint was written for another model, or every step is
        damaged (``CheckpointError`` naming each).
    """
    directory = _checkpoint_dir(workdir)
    _check_exists(directory)  # else the Checkpointer would create it
    graphdef, abs_params = abstract_params(model)
    target = with_shardings(abs_params, state_shardings(abs_params, mesh, rules))
    # keep=None: reading must never make orbax drop a step.
    checkpointer = Checkpointer(directory, keep=None, model_config=model.model_config)
    try:  # the newest step that restores (an older one if the newest is damaged)
        params, step = checkpointer.restore_params(target)
    finally:
        checkpointer.close()
    return RestoredParams(graphdef, params, step)


def init_from(state: TrainState, params_source: Callable | None, shardings: TrainState):
    """``state`` with its parameters replaced by ``params_source(state.params)``.

    Args:
      state: the freshly initialised step-0 state.
      params_source: ``fresh params -> params`` (``Task.initial_params``), e.g. a
        pretrained encoder put into a fresh classifier; None keeps ``state``.
      shardings: the state's shardings; the new parameters are placed on them.
    """
    if params_source is None:
        return state
    params = jax.device_put(params_source(state.params), shardings.params)
    return state.replace(params=params)
