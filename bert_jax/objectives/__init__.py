"""Pretraining objectives: each family pairs a NumPy example builder with its loss.

``get_task(config)`` is the registry the train loop uses: ``config.model.name``
selects the family (``bert`` and ``albert`` share one, ``t5`` the other), whose task
class (``BertPretrainingTask``, ``T5PretrainingTask``) builds the tokenizer, example
builder, model and loss from the run config. Commands that only need weights use the
model alone, ``models.registry.model_spec(model_config)`` (no tokenizer, example builder or
baselines).

The task contract, ``Task``, lives in ``objectives/task.py`` (re-exported here): the
methods the train loop calls (``create_model``, ``loss_fn``, ``eval_fn``,
``eval_metrics``, ``eval_baselines``, ``batches``, ...), which fine-tuning tasks
(``bert_jax.downstream.runner.FinetuneTask``) implement too.
"""

from __future__ import annotations

import ml_collections

from bert_jax.objectives.task import PretrainingTask, Task

__all__ = ["FAMILIES", "PretrainingTask", "Task", "get_task"]

FAMILIES = ("bert", "albert", "t5")


def get_task(config: ml_collections.ConfigDict) -> PretrainingTask:
    """The pretraining task named by ``config.model.name``."""
    name = config.model.name
    if name in ("bert", "albert"):
        from bert_jax.objectives import bert_task

        return bert_task.BertPretrainingTask(config)
    if name == "t5":  # every T5 objective: config.objective.name picks the preset
        from bert_jax.objectives import t5_task

        return t5_task.T5PretrainingTask(config)
    raise ValueError(f"config.model.name={name!r}; choose one of {FAMILIES}")
