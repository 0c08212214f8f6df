"""Reading a checkpoint's parameters for inference: export, evaluate, fine-tuning, probes.

- ``restore_params(workdir, spec, mesh, rules) -> RestoredParams(graphdef, params, step)``:
  the parameters only of the newest checkpoint that restores (orbax partial restore of
  the ``state`` item; a damaged step is set aside by the Checkpointer), placed on
  ``mesh`` by ``rules``.
- ``restore_for_inference(workdir, mesh_config)``: the one sequence every command that
  reads a checkpoint runs: the model (recorded in the checkpoint, or the one given),
  the mesh, the parameters on it and the run config the checkpoint records::

      with restore_for_inference(workdir, config.mesh) as restored:
          model = nnx.merge(restored.graphdef, restored.params)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import ml_collections
from flax import nnx

from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.checkpointing.workdir import check_exists, saved_model_config, saved_run_config
from bert_jax.models import registry
from bert_jax.runtime import sharding


class RestoredParams(NamedTuple):
    graphdef: nnx.GraphDef
    params: nnx.State
    step: int


def restore_params(
    workdir: str, spec: registry.ModelSpec, mesh: jax.sharding.Mesh, rules
) -> RestoredParams:
    """The parameters of the newest checkpoint in ``workdir`` that restores, nothing else.

    Only the ``params`` subtree of the ``state`` item is read (no optimizer state, so
    no optimizer, tokenizer or recipe is needed), onto the shardings ``rules`` give on
    ``mesh``.

    Args:
      workdir: a pretraining (or fine-tuning) workdir.
      spec: the model; the checkpoint's model fingerprint is checked against its
        ``model_config``.
      mesh: the device mesh the parameters are placed on.
      rules: logical axis rules.

    Raises:
      FileNotFoundError: ``workdir`` has no checkpoint.
      ValueError: the checkpoint was written for another model, or every step is
        damaged (``CheckpointError`` naming each).
    """
    directory = check_exists(workdir)  # else the Checkpointer would create it
    graphdef, abs_params = registry.abstract_params(spec.create_model)
    shardings = sharding.state_shardings(abs_params, mesh, rules)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_params, shardings
    )
    # keep=None: reading must never make orbax drop a step.
    checkpointer = Checkpointer(directory, keep=None, model_config=spec.model_config)
    try:  # the newest step that restores (an older one if the newest is damaged)
        params, step = checkpointer.restore_params(target)
    finally:
        checkpointer.close()
    return RestoredParams(graphdef, params, step)


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint ready for inference, on the mesh it was restored to.

    Attributes:
      spec: the model (its config is the checkpoint's, or the one asked for).
      graphdef, params, step: as ``restore_params`` gives them.
      run_config: the run config the checkpoint records; None for a checkpoint written
        before it was recorded.
      mesh, rules: the mesh the parameters live on, and its logical axis rules.
    """

    spec: registry.ModelSpec
    graphdef: nnx.GraphDef
    params: nnx.State
    step: int
    run_config: ml_collections.ConfigDict | None
    mesh: jax.sharding.Mesh
    rules: Any

    @property
    def model_config(self):
        return self.spec.model_config


def older_checkpoint_message(workdir: str) -> str:
    return (
        f"the checkpoint in {workdir} records no run config (written before checkpoints "
        "recorded it): give the run config it was trained with, --config FILE"
    )


@contextlib.contextmanager
def restore_for_inference(
    workdir: str,
    mesh_config: ml_collections.ConfigDict | None = None,
    *,
    model_config: Any = None,
    expect: tuple[type, str] | None = None,
) -> Iterator[Restored]:
    """The latest checkpoint of ``workdir`` that restores, inside its mesh.

    Args:
      workdir: a pretraining (or fine-tuning) workdir.
      mesh_config: ``config.mesh`` to restore onto; None takes the recorded run config's.
      model_config: the model the checkpoint must hold (every field that changes the
        weights is checked); None takes the one the checkpoint records.
      expect: (config class, what the caller needs) to refuse another model family.

    Raises:
      FileNotFoundError: ``workdir`` has no checkpoint.
      ValueError: another model, or no mesh given for a checkpoint that records no
        run config.
    """
    run_config = saved_run_config(workdir)
    if model_config is None:
        model_config = saved_model_config(workdir, expect)
    if mesh_config is None:
        if run_config is None:
            raise ValueError(older_checkpoint_message(workdir))
        mesh_config = run_config.mesh
    spec = registry.model_spec(model_config)
    with sharding.mesh_context(mesh_config) as (mesh, rules):
        graphdef, params, step = restore_params(workdir, spec, mesh, rules)
        yield Restored(spec, graphdef, params, step, run_config, mesh, rules)
