"""The fine-tuning task type and its one runner: build -> train -> predict -> score -> write.

Every downstream task (classification and regression on BERT/ALBERT, SQuAD span
extraction, T5 text-to-text) is a `FinetuneTask` built by its own module; `run`
trains it with the pretraining loop, `bert_jax.training.loop.train_and_evaluate`, then
predicts every evaluation split with the final parameters, scores the outputs with
the official metrics and writes ``WORKDIR/finetune_results.json`` (and
``predictions.json`` for tasks whose scoring produces answers, SQuAD).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bert_jax import objectives
from bert_jax.checkpointing import lock
from bert_jax.data import pipeline
from bert_jax.models.registry import abstract_params
from bert_jax.runtime import sharding
from bert_jax.training import loop


@dataclasses.dataclass(frozen=True)
class Scored:
    """Official metrics of one split, and the predictions they were computed from
    when those are worth keeping (SQuAD's answer per question id), else None."""

    metrics: dict[str, float]
    predictions: dict | None = None


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """One fine-tuning task: what the model is, how a split becomes batches, how
    outputs are scored.

    Attributes:
      name: ``config.finetune.task`` (logged and written with the results).
      objective: model, loss and in-loop evaluation for the train loop; its
        ``batches`` is `batching.make_batches` over ``splits``.
      splits: the rows of every split (labelled examples, SQuAD windows); every
        split but 'train' is predicted and scored after training.
      outputs_fn: ``(model, batch) -> outputs`` (an array, or a tuple / dict of
        them, batch axis first): what ``score`` reads.
      score: ``(split, outputs of all its rows in row order) -> Scored``.
    """

    name: str
    objective: objectives.Task
    splits: Mapping[str, Sequence]
    outputs_fn: Callable
    score: Callable[[str, Any], Scored]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(name for name in self.splits if name != "train")


def predict(config: ml_collections.ConfigDict, task: FinetuneTask, params, split: str):
    """``task.outputs_fn`` on every row of ``split`` (all hosts), in row order.

    Raises:
      RuntimeError: the pass did not return each row exactly once (a padding or
        sharding bug would otherwise mis-align outputs and labels silently).
    """
    outputs, indices = [], []
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        graphdef, _ = abstract_params(task.objective.create_model)
        data_sharding = sharding.data_sharding(mesh, rules)

        @jax.jit
        def forward(params, batch):
            return task.outputs_fn(nnx.merge(graphdef, params), batch)

        for batch in task.objective.batches(split, config.train.batch_size):
            output = forward(params, pipeline.global_batch(batch, data_sharding))
            outputs.append(
                jax.tree.map(np.asarray, multihost_utils.process_allgather(output, tiled=True))
            )
            # Host-local indices, concatenated in process order = the global batch order.
            indices.append(
                np.asarray(multihost_utils.process_allgather(batch["example_index"], tiled=True))
            )
    index = np.concatenate(indices)
    real = index >= 0
    order = np.argsort(index[real], kind="stable")
    if not np.array_equal(index[real][order], np.arange(len(task.splits[split]))):
        raise RuntimeError(f"the prediction pass over {split} did not return each row once")
    return jax.tree.map(lambda *parts: np.concatenate(parts)[real][order], *outputs)


def run(config: ml_collections.ConfigDict, workdir: str, task: FinetuneTask) -> dict:
    """Trains ``task`` in ``workdir`` (resuming if a checkpoint exists), then scores it.

    Returns:
      ``train`` / ``eval`` (the train loop's last metrics), ``step``, ``final``
      (official metrics of the final parameters per evaluation split) and ``state``.
    """
    # Training, predictions and results are one writer of the workdir (lock.py).
    with lock.hold(workdir):
        result = loop.train_and_evaluate(config, workdir, task=task.objective)
        final = {}
        for split in task.eval_splits:
            scored = task.score(split, predict(config, task, result["state"].params, split))
            final[split] = scored.metrics
            logging.info("%s %s at step %d: %s", task.name, split, result["step"], scored.metrics)
            if scored.predictions is not None and jax.process_index() == 0:
                first = split == task.eval_splits[0]
                name = "predictions.json" if first else f"predictions_{split}.json"
                with open(os.path.join(workdir, name), "w") as f:
                    json.dump(scored.predictions, f, indent=2)
        return write_summary(config, workdir, result, final)


def write_summary(config, workdir: str, result: dict, final: dict) -> dict:
    """Writes ``WORKDIR/finetune_results.json``; returns it with the final ``state``."""
    summary = {
        "task": config.finetune.task,
        "init": config.finetune.init,
        "step": result["step"],
        "final": final,
        "train": result.get("train", {}),
        "eval": result.get("eval", {}),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "finetune_results.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return {**summary, "state": result["state"]}
