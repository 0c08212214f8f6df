"""Where a workdir keeps its checkpoints, and what a checkpoint records about its run.

- ``checkpoint_dir(workdir)``: ``WORKDIR/checkpoints`` (the one spelling of the name).
- ``saved_model_config(workdir)``: the model config the latest checkpoint was written
  for, from its ``model`` item (no recipe needed).
- ``run_record(config)`` / ``saved_run_config(workdir)``: the run config saved with each
  checkpoint (the ``run_config`` item, as JSON; ``data.vocab_path`` made absolute), so
  export, evaluate and fine-tuning need no ``--config``. Checkpoints written before the
  item existed give None: those commands then need the run config given.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from bert_jax.models import registry

CHECKPOINT_DIR = "checkpoints"
RUN_CONFIG_ITEM = "run_config"


def checkpoint_dir(workdir: str) -> str:
    """``WORKDIR/checkpoints``."""
    return os.path.join(workdir, CHECKPOINT_DIR)


def check_exists(workdir: str) -> str:
    """``checkpoint_dir(workdir)``; FileNotFoundError naming it when it does not exist."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory} does not exist: run `bert-jax pretrain` with that --workdir first"
        )
    return directory


def run_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The JSON the ``run_config`` item holds: ``config`` with an absolute vocab path."""
    record = json.loads(config.to_json_best_effort())
    data = record.get("data")
    if isinstance(data, dict) and data.get("vocab_path"):
        data["vocab_path"] = os.path.abspath(data["vocab_path"])
    return record


def _tuples(value):
    """JSON lists back to the tuples the recipes write (mesh shape, axis rules)."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _latest_items(workdir: str, items: tuple[str, ...]) -> tuple[str, int, dict[str, Any]]:
    """``(directory, step, {item: JSON})`` of the latest checkpoint; absent items are left out."""
    directory = check_exists(workdir)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    manager = ocp.CheckpointManager(directory, options=options, item_names=items)
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}: run `bert-jax pretrain` first")
        step_dir = os.path.join(directory, str(step))
        present = [item for item in items if os.path.isdir(os.path.join(step_dir, item))]
        args = ocp.args.Composite(**{item: ocp.args.JsonRestore() for item in present})
        restored = manager.restore(step, args=args) if present else {}
    finally:
        manager.close()
    return directory, step, {item: restored[item] for item in present}


def saved_model_config(workdir: str, expect: tuple[type, str] | None = None):
    """The model config (BertConfig / T5Config) saved with the latest checkpoint of ``workdir``.

    ``expect``: (config class, what the caller needs, for the message) to refuse another family.

    Raises:
      FileNotFoundError: ``workdir`` holds no checkpoint.
      ValueError: the checkpoint records a model class this project does not know, or
        not the ``expect``-ed one.
    """
    directory, step, items = _latest_items(workdir, ("model",))
    saved = registry.config_from_record(items["model"], f"{directory}/{step}")
    if expect is not None and not isinstance(saved, expect[0]):
        raise ValueError(f"{workdir} holds a {type(saved).__name__} model; {expect[1]}")
    return saved


def saved_run_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The run config saved with the latest checkpoint; None when it predates the record.

    Raises:
      FileNotFoundError: ``workdir`` holds no checkpoint.
    """
    _, _, items = _latest_items(workdir, (RUN_CONFIG_ITEM,))
    if RUN_CONFIG_ITEM not in items:
        return None
    return ml_collections.ConfigDict(_tuples(dict(items[RUN_CONFIG_ITEM])))
