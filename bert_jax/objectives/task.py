"""The task type every objective builds: what the train loop needs to know about it.

``Task.batches(split, global_batch_size)`` is the one way a task makes batches:
pretraining families pass ``pretraining_batches(...)`` (documents -> example
builder -> ``bert_jax.data.pipeline``); a fine-tuning task passes its own reader
(e.g. ``bert_jax.downstream.batching``), yielding dicts of NumPy arrays with leading
dimension ``global_batch_size // jax.process_count()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from bert_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the train loop needs to know about an objective.

    Attributes:
      tokenizer: the vocabulary (bert_jax.data.tokenizer.Tokenizer).
      model_config: the frozen model dataclass (also the checkpoint fingerprint).
      create_model: ``rngs -> nnx.Module``.
      loss_fn: ``(model, batch, *, deterministic, rngs) -> (loss, metrics)``.
      eval_fn: ``(model, batch) -> dict of sums`` over one held-out batch.
      finish_eval: totals of ``eval_fn`` -> metrics.
      eval_baselines: held-out NumPy batches -> context-free baseline metrics.
      tokens_per_example: tokens one example feeds the model (for tokens/s).
      batches: ``(split, global_batch_size) -> iterable of per-host batches`` (dicts
        of NumPy arrays, ``global_batch_size // process_count`` rows); ``split`` is
        ``"train"`` (endless, shuffled) or an eval split (one pass, same order each
        time). The one way the loop gets data.
      describe: optional ``(model, batch) -> dict of str`` logged at evaluation
        (T5: a corrupted input, the model's greedy span fill and the gold targets).
      initial_params: optional ``fresh params (nnx.State) -> params`` applied once
        at step 0 (``state.init_from``), e.g. loading a pretrained encoder for fine-tuning.
      mean_weights: optional ``batch -> {metric name: count}``, the count each metric of
        ``loss_fn`` is a mean over (e.g. masked positions for ``mlm_loss``). Gradient
        accumulation weights microbatches by it, so accumulating equals one large
        batch; a metric it leaves out is an equal-weight mean over microbatches.
      loss_terms: the metrics of ``loss_fn`` whose sum is the loss, each weighted by
        its ``mean_weights`` entry; ``("loss",)`` when one count normalises the loss.
      eval_draws: passes ``train.eval_batches`` may make over a held-out split that is
        shorter than the evaluation; pass ``d > 0`` is ``batches(split, size, draw=d)``,
        another fixed draw of the examples (pretraining: other windows and masks of the
        same documents, PRETRAINING_EVAL_DRAWS). 1 for a fixed split (fine-tuning).
      data_fingerprint: optional ``() -> dict``, what the train split's stream reads
        (``bert_jax.data.fingerprint``): saved with each checkpoint and compared on
        resume, so a saved position is never applied to other data. None: not checked.
    """

    tokenizer: Any
    model_config: Any
    create_model: Callable
    loss_fn: Callable
    eval_fn: Callable
    finish_eval: Callable
    eval_baselines: Callable
    tokens_per_example: int
    batches: Callable[[str, int], Iterable[dict[str, Any]]]
    describe: Callable | None = None
    initial_params: Callable | None = None
    mean_weights: Callable | None = None
    loss_terms: tuple[str, ...] = ("loss",)
    eval_draws: int = 1
    data_fingerprint: Callable[[], dict] | None = None


# Draws of a short held-out split a pretraining task allows (Task.eval_draws).
PRETRAINING_EVAL_DRAWS = 8


def pretraining_batches(
    config: ml_collections.ConfigDict, tokenizer, train_builder, eval_builder=None
) -> Callable:
    """``Task.batches`` of a pretraining family: ``config.data``'s documents through an
    example builder (``examples_from_documents`` + ``finalize``) and the grain pipeline.

    ``eval_builder`` (default: ``train_builder``) makes the held-out splits' examples,
    e.g. ALBERT's sentence-order pairs in both orders. ``draw`` d > 0 is another fixed
    draw of a held-out split's examples (Task.eval_draws).
    """

    def batches(split: str, global_batch_size: int, draw: int = 0):
        builder = train_builder if split == "train" or eval_builder is None else eval_builder
        return pipeline.create_dataset(
            config, builder, tokenizer, split=split, global_batch_size=global_batch_size, draw=draw
        )

    return batches
