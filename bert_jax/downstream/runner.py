"""The fine-tuning task type and its one runner: build -> train -> predict -> score -> write.

Every downstream task (classification and regression on BERT/ALBERT, SQuAD span
extraction, T5 text-to-text) is a subclass of `FinetuneTask`, itself an
`objectives.Task` (the contract the train loop calls), in its own module; `run`
trains it with the pretraining loop, `bert_jax.training.loop.train_and_evaluate`, then
predicts every evaluation split with the final parameters, scores the outputs with
the official metrics and writes ``WORKDIR/finetune_results.json`` (and
``predictions.json`` for tasks whose scoring produces answers, SQuAD).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bert_jax import objectives
from bert_jax.checkpointing import lock
from bert_jax.data import pipeline
from bert_jax.downstream import batching
from bert_jax.models.registry import abstract_params
from bert_jax.runtime import sharding
from bert_jax.training import loop


@dataclasses.dataclass(frozen=True)
class Scored:
    """Official metrics of one split, and the predictions they were computed from
    when those are worth keeping (SQuAD's answer per question id), else None."""

    metrics: dict[str, float]
    predictions: dict | None = None


class FinetuneTask(objectives.Task):
    """One fine-tuning task: the `objectives.Task` the train loop trains, plus how its
    evaluation splits are predicted and scored after training.

    Attributes (set by each subclass, besides the `objectives.Task` ones):
      name: ``config.finetune.task`` (logged and written with the results).
      splits: the rows of every split (labelled examples, SQuAD windows); every
        split but 'train' is predicted and scored after training.
      seed: shuffling seed of the training split.
    """

    name: str
    splits: Mapping[str, Sequence]
    seed: int

    @abc.abstractmethod
    def row_features(self, rows: Sequence) -> batching.RowFeatures:
        """The map turning one row of ``rows`` (one split) into model features."""

    def batches(self, split: str, global_batch_size: int, draw: int = 0):
        """`batching.make_batches` over ``splits`` (a fixed split: one draw)."""
        del draw
        make = batching.make_batches(self.splits, self.row_features, self.seed)
        return make(split, global_batch_size)

    @abc.abstractmethod
    def predict_batch(self, model, batch):
        """``(model, batch) -> outputs`` (an array, or a tuple / dict of them, batch axis
        first), deterministic: what ``score`` reads."""

    @abc.abstractmethod
    def score(self, split: str, outputs) -> Scored:
        """Official metrics of ``split`` from the outputs of all its rows in row order."""

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(name for name in self.splits if name != "train")


def predict(config: ml_collections.ConfigDict, task: FinetuneTask, params, split: str):
    """``task.predict_batch`` on every row of ``split`` (all hosts), in row order.

    Raises:
      RuntimeError: the pass did not return each row exactly once (a padding or
        sharding bug would otherwise mis-align outputs and labels silently).
    """
    outputs, indices = [], []
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        graphdef, _ = abstract_params(task.create_model)
        data_sharding = sharding.data_sharding(mesh, rules)

        @jax.jit
        def forward(params, batch):
            return task.predict_batch(nnx.merge(graphdef, params), batch)

        for batch in task.batches(split, config.train.batch_size):
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
        result = loop.train_and_evaluate(config, workdir, task=task)
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
