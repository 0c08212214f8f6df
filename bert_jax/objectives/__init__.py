"""Pretraining objectives: each family pairs a NumPy example builder with its loss.

``get_task(config)`` is the registry the train loop uses: ``config.model.name``
selects the family (``bert`` and ``albert`` share one, ``t5`` the other) and
the family's ``create_task`` builds the tokenizer, example builder, model and
loss from the run config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the train loop needs to know about an objective.

    Attributes:
      tokenizer: the vocabulary (bert_jax.data.tokenizer.Tokenizer).
      examples: NumPy example builder: ``examples_from_documents`` and ``finalize``.
      model_config: the frozen model dataclass (also the checkpoint fingerprint).
      create_model: ``rngs -> nnx.Module``.
      loss_fn: ``(model, batch, *, deterministic, rngs) -> (loss, metrics)``.
      eval_fn: ``(model, batch) -> dict of sums`` over one held-out batch.
      finish_eval: totals of ``eval_fn`` -> metrics.
      eval_baselines: held-out NumPy batches -> context-free baseline metrics.
      tokens_per_example: tokens one example feeds the model (for tokens/s).
      describe: optional ``(model, batch) -> dict of str`` logged at evaluation
        (T5: a corrupted input, the model's greedy span fill and the gold targets).
      dataset_fn: optional ``(split, global_batch_size) -> grain.IterDataset`` of
        per-host batches, for tasks that do not read documents (fine-tuning);
        None uses ``bert_jax.data.pipeline.create_dataset``.
      eval_examples: optional example builder for held-out splits (None: ``examples``),
        e.g. ALBERT's sentence-order pairs in both orders.
      initial_params: optional ``fresh params (nnx.State) -> params`` applied once
        at step 0, e.g. loading a pretrained encoder for fine-tuning.
      mean_weights: optional ``batch -> {metric name: count}``, the count each metric of
        ``loss_fn`` is a mean over (e.g. masked positions for ``mlm_loss``). Gradient
        accumulation weights microbatches by it, so accumulating equals one large
        batch; a metric it leaves out is an equal-weight mean over microbatches.
      loss_terms: the metrics of ``loss_fn`` whose sum is the loss, each weighted by
        its ``mean_weights`` entry; ``("loss",)`` when one count normalises the loss.
    """

    tokenizer: Any
    examples: Any
    model_config: Any
    create_model: Callable
    loss_fn: Callable
    eval_fn: Callable
    finish_eval: Callable
    eval_baselines: Callable
    tokens_per_example: int
    describe: Callable | None = None
    dataset_fn: Callable | None = None
    initial_params: Callable | None = None
    eval_examples: Any = None
    mean_weights: Callable | None = None
    loss_terms: tuple[str, ...] = ("loss",)


FAMILIES = ("bert", "albert", "t5")


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by ``config.model.name``."""
    name = config.model.name
    if name in ("bert", "albert"):
        from bert_jax.objectives import bert

        return bert.create_task(config)
    if name == "t5":  # every T5 objective: config.objective.name picks the preset
        from bert_jax.objectives import t5

        return t5.create_task(config)
    raise ValueError(f"config.model.name={name!r}; choose one of {FAMILIES}")
