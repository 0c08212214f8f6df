"""The train state in one place: its type, abstract form and shardings.

API (the loop and the benchmarks use these):

- ``TrainState(step, params, opt_state)``: the functional struct the loop steps and saves.
- ``abstract_train_state(create_model, tx, seed)``: shapes only, and the function that
  initialises the state. ``create_model`` is ``rngs -> nnx.Module``: a task's
  (``Task.create_model``) or a model's (``models.registry.ModelSpec.create_model``).
- ``state_shardings(abstract, mesh, rules)`` and ``with_shardings(abstract, shardings)``.
- ``init_from(state, params_source, shardings)``: the step-0 state of a run whose
  ``Task.initial_params`` (``fresh params -> params``) loads weights, e.g. a
  pretrained encoder; loop.py calls it once, before the first step.

Reading a checkpoint's parameters without a train state (export, evaluate,
fine-tuning) is ``bert_jax.checkpointing.inference``; model configs and specs are
``bert_jax.models.registry``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax.models.registry import abstract_params
from bert_jax.runtime import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


def abstract_train_state(create_model: Callable, tx: optax.GradientTransformation, seed: int):
    """Graph definition, abstract state and the function that initialises it.

    Args:
      create_model: ``rngs -> nnx.Module``, the model the state holds the parameters of.
      tx: the optimizer, whose state the train state holds.
      seed: the parameter initialisation seed.
    """
    graphdef, _ = abstract_params(create_model)

    def init() -> TrainState:
        module = create_model(nnx.Rngs(params=seed))
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
