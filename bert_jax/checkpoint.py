"""Orbax checkpoints holding the train state, the data iterator and the model config.

One orbax step directory holds three items:
  * ``state``: parameters, optimizer state and step (sharded arrays, async save);
  * ``data``: the grain iterator state of every host, so a resumed run neither
    repeats nor skips examples;
  * ``model``: the model's hyperparameters as JSON, checked on restore so a
    checkpoint of another model gets a clear error instead of a shape trace.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath

from bert_jax.models import layer_stack


def model_fingerprint(model_config: Any) -> dict[str, Any]:
    """JSON-able description of a model config dataclass (plus its class name)."""
    fields = dataclasses.asdict(model_config)
    return {"class": type(model_config).__name__, **json.loads(json.dumps(fields, default=str))}


class Checkpointer:
    """Saves and restores train state, data iterator and model description."""

    def __init__(self, directory: str | epath.Path, *, keep: int, model_config: Any):
        # orbax's background commit thread rejects relative paths (and the next save
        # then waits on it forever), so `--workdir workdirs/x` is made absolute here.
        self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
        self.fingerprint = model_fingerprint(model_config)
        # Fields added after a checkpoint was written are absent from its JSON; they match
        # when the run keeps the field's default (the behaviour the checkpoint had).
        self._defaults = {
            field.name: json.loads(json.dumps(field.default, default=str))
            for field in dataclasses.fields(model_config)
            if field.default is not dataclasses.MISSING
        }
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True
            ),
            item_names=("state", "data", "model"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any) -> None:
        """Starts an async save of ``state`` and the iterator position at ``step``."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                model=ocp.args.JsonSave(self.fingerprint),
            ),
            force=True,
        )

    def check_model(self, step: int) -> None:
        """Raises ValueError naming each hyperparameter that differs from the checkpoint."""
        saved = self._manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
        saved = saved["model"]
        # dtype / attention / remat_policy change how a step computes, not the weights.
        compute_only = set(layer_stack.COMPUTE_ONLY_FIELDS)
        diffs = [
            f"{key}: checkpoint={saved.get(key)!r} config={value!r}"
            for key, value in self.fingerprint.items()
            if saved.get(key) != value
            and key not in compute_only
            and not (key not in saved and self._defaults.get(key, object()) == value)
        ]
        diffs += [
            f"{key}: only in checkpoint"
            for key in saved
            if key not in self.fingerprint and key not in compute_only
        ]
        if diffs:
            raise ValueError(
                f"checkpoint {self.directory}/{step} was written for a different model; "
                f"use another --workdir or the matching config. Differences: {'; '.join(diffs)}"
            )

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """Restores the state onto ``abstract_state``'s shardings and the iterator in place."""
        self.check_model(step)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iterator),
            ),
        )
        logging.info("Restored checkpoint %s/%d", self.directory, step)
        return restored["state"]

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Restores only the train state (evaluation and export need no iterator)."""
        self.check_model(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
