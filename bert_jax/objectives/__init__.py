"""Pretraining objectives: each family pairs a NumPy example builder with its loss.

``get_task(config)`` is the registry the train loop uses: ``config.model.name``
selects the family (``bert`` and ``albert`` share one, ``t5`` the other) and
the family's ``create_task`` builds the tokenizer, example builder, model and
loss from the run config. Commands that only need weights use the model alone,
``models.registry.model_spec(model_config)`` (no tokenizer, example builder or baselines).

The task type, ``Task``, lives in ``objectives/task.py`` (re-exported here); every
task makes its batches one way, ``Task.batches(split, global_batch_size)``.
"""

from __future__ import annotations

import ml_collections

from bert_jax.objectives.task import Task, pretraining_batches

__all__ = ["FAMILIES", "Task", "get_task", "pretraining_batches"]

FAMILIES = ("bert", "albert", "t5")


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by ``config.model.name``."""
    name = config.model.name
    if name in ("bert", "albert"):
        from bert_jax.objectives import bert_task

        return bert_task.create_task(config)
    if name == "t5":  # every T5 objective: config.objective.name picks the preset
        from bert_jax.objectives import t5_task

        return t5_task.create_task(config)
    raise ValueError(f"config.model.name={name!r}; choose one of {FAMILIES}")
