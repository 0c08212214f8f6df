"""The task contract: what the train loop asks of every objective, pretraining or fine-tuning.

A task is a subclass of `Task` (the shape of t5x's ``BaseModel``: ``loss_fn``,
``eval_fn``, ...). The train loop (``bert_jax.training.loop`` and ``step``) calls only
the methods and attributes below:

- ``create_model(rngs)``: the ``nnx.Module`` the task trains;
- ``loss_fn(model, batch, *, deterministic, rngs)``: ``(loss, metrics)`` of one batch,
  and ``mean_weights(batch)`` / ``loss_terms``: what gradient accumulation weights by;
- ``eval_fn(model, batch)``: additive sums over one held-out batch, turned into metrics
  by ``eval_metrics(totals)``; ``eval_baselines(batches)``: what a context-free model
  scores on the same batches; ``describe(model, batch)``: text logged at evaluation;
- ``batches(split, global_batch_size, draw=0)``: the one way a task makes data;
- ``initial_params``, ``data_fingerprint()``, ``tokens_per_example``, ``eval_draws``.

Subclasses: ``bert_task.BertPretrainingTask`` (BERT and ALBERT),
``t5_task.T5PretrainingTask``, and the fine-tuning tasks of ``bert_jax.downstream``
(``runner.FinetuneTask``: classification, SQuAD, T5 text-to-text).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax.data import fingerprint, pipeline

# Draws of a short held-out split a pretraining task allows (Task.eval_draws).
PRETRAINING_EVAL_DRAWS = 8


class Task(abc.ABC):
    """Everything the train loop needs to know about an objective.

    Attributes (set by each subclass):
      tokenizer: the vocabulary (bert_jax.data.tokenizer.Tokenizer).
      model_config: the frozen model dataclass (also the checkpoint fingerprint).
      tokens_per_example: tokens one example feeds the model (for tokens/s).
      initial_params: None, or ``fresh params (nnx.State) -> params`` applied once at
        step 0 (``state.init_from``), e.g. loading a pretrained encoder for fine-tuning.
      loss_terms: the metrics of ``loss_fn`` whose sum is the loss, each weighted by
        its ``mean_weights`` entry; ``("loss",)`` when one count normalises the loss.
      eval_draws: passes ``train.eval_batches`` may make over a held-out split that is
        shorter than the evaluation; pass ``d > 0`` is ``batches(split, size, draw=d)``,
        another fixed draw of the examples (pretraining: other windows and masks of the
        same documents, PRETRAINING_EVAL_DRAWS). 1 for a fixed split (fine-tuning).
    """

    tokenizer: Any
    model_config: Any
    tokens_per_example: int
    initial_params: Callable | None = None
    loss_terms: tuple[str, ...] = ("loss",)
    eval_draws: int = 1

    @abc.abstractmethod
    def create_model(self, rngs):
        """``rngs -> nnx.Module``, the model this task trains."""

    @abc.abstractmethod
    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        """``(loss, metrics)`` of one batch (metrics: a dict of scalar means)."""

    def mean_weights(self, batch) -> dict[str, jax.Array]:
        """``{metric name: count}``, the count each metric of ``loss_fn`` is a mean over
        (e.g. masked positions for ``mlm_loss``). Gradient accumulation weights
        microbatches by it, so accumulating equals one large batch; a metric left out
        (by default all) is an equal-weight mean over microbatches."""
        del batch
        return {}

    @abc.abstractmethod
    def eval_fn(self, model, batch) -> dict[str, jax.Array]:
        """Additive sums over one held-out batch (sharded batches simply add up)."""

    @abc.abstractmethod
    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """The metrics of the totals of ``eval_fn`` over every held-out batch."""

    @abc.abstractmethod
    def eval_baselines(self, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
        """What a model that ignores the context scores on the held-out NumPy batches."""

    def describe(self, model, batch) -> dict[str, str]:
        """Text logged at evaluation (T5: a corrupted input, the model's greedy span fill
        and the gold targets); by default nothing."""
        del model, batch
        return {}

    @abc.abstractmethod
    def batches(
        self, split: str, global_batch_size: int, draw: int = 0
    ) -> Iterable[dict[str, Any]]:
        """Per-host batches (dicts of NumPy arrays, ``global_batch_size // process_count``
        rows) of ``split``: ``"train"`` (endless, shuffled) or an eval split (one pass,
        same order each time); ``draw`` d > 0 is another fixed draw (``eval_draws``)."""

    def data_fingerprint(self) -> dict | None:
        """What the train split's stream reads (``bert_jax.data.fingerprint``): saved with
        each checkpoint and compared on resume, so a saved position is never applied to
        other data. None (the default): not checked."""
        return None


class PretrainingTask(Task):
    """A pretraining family: ``config.data``'s documents through an example builder
    (``examples_from_documents`` + ``finalize``) and the grain pipeline.

    The held-out splits may use another builder (``eval_builder``, e.g. ALBERT's
    sentence-order pairs in both orders); a short held-out split is read as up to
    PRETRAINING_EVAL_DRAWS fixed draws.
    """

    eval_draws = PRETRAINING_EVAL_DRAWS

    def __init__(self, config: ml_collections.ConfigDict, tokenizer, train_builder, eval_builder):
        self.config = config
        self.tokenizer = tokenizer
        self.train_builder = train_builder
        self.eval_builder = eval_builder

    def batches(self, split: str, global_batch_size: int, draw: int = 0):
        builder = self.train_builder if split == "train" else self.eval_builder
        return pipeline.create_dataset(
            self.config,
            builder,
            self.tokenizer,
            split=split,
            global_batch_size=global_batch_size,
            draw=draw,
        )

    def data_fingerprint(self) -> dict:
        return fingerprint.data_fingerprint(self.config)
