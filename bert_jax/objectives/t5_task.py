"""T5 pretraining task: model config, loss, evaluation and decoding (the JAX half).

The examples come from `t5_data` (presets of the paper's objective family, documents ->
denoised and packed t5x features); `T5PretrainingTask` joins them with the encoder-decoder
(the `objectives.task.Task` contract). `target_token_loss` also trains T5 text-to-text fine-tuning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.models import registry
from bert_jax.objectives.logit_metrics import label_logit_stats
from bert_jax.objectives.t5_data import ALIASES, PRESETS, T5DataConfig, T5Objective
from bert_jax.objectives.task import PretrainingTask

__all__ = [
    "ALIASES",
    "PRESETS",
    "T5DataConfig",
    "T5Objective",
    "T5PretrainingTask",
    "target_token_loss",
]


# Packed rows' *_positions are not passed (t5x's way): positions restart at each
# segment, so wherever the segment mask lets a query see a key, key - query equals
# that of the row's own arange, and the model computes one [1, heads, q, k] bias
# instead of one per row (tests/models/test_t5.py checks the logits are the same).
_FEATURE_ARGS = ("encoder_segment_ids", "decoder_segment_ids")


def _logits(model, batch, *, deterministic, rngs):
    extra = {name: batch[name] for name in _FEATURE_ARGS if name in batch}
    return model(
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        deterministic=deterministic,
        rngs=rngs,
        **extra,
    )  # [batch, targets_length, vocab]


def target_token_loss(model, batch, *, z_loss: float, deterministic: bool, rngs=None):
    """Token-mean cross-entropy over the target tokens, plus T5's optional z-loss.

    ``target_accuracy`` counts a token correct when its logit is >= the row max
    (ties correct; `logit_metrics`). Returns ``(loss, metrics)``.
    """
    logits = _logits(model, batch, deterministic=deterministic, rngs=rngs)
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    # One max / logsumexp over the vocabulary serves the loss, z-loss and accuracy.
    xent, log_z, correct = label_logit_stats(logits, targets)  # [batch, targets_length]
    denominator = jnp.maximum(jnp.sum(weights), 1.0)
    target_loss = jnp.sum(xent * weights) / denominator
    loss = target_loss + z_loss * jnp.sum(jnp.square(log_z) * weights) / denominator
    accuracy = jnp.sum(correct * weights) / denominator
    metrics = {"target_loss": target_loss, "target_accuracy": accuracy}
    return loss, metrics


def target_mean_weights(batch) -> dict[str, jax.Array]:
    """Every loss metric is a mean over the target tokens (gradient accumulation weights)."""
    tokens = jnp.sum(batch["decoder_loss_weights"])
    return {"loss": tokens, "target_loss": tokens, "target_accuracy": tokens}


def eval_sums(model, batch) -> dict[str, jax.Array]:
    logits = _logits(model, batch, deterministic=True, rngs=None)
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    xent, _, correct = label_logit_stats(logits, targets)  # [batch, targets_length]
    return {
        "xent": jnp.sum(xent * weights),
        "correct": jnp.sum(correct * weights),
        "count": jnp.sum(weights),
    }


def eval_metrics(totals: dict[str, float]) -> dict[str, float]:
    count = max(totals["count"], 1.0)
    return {"target_loss": totals["xent"] / count, "target_accuracy": totals["correct"] / count}


def eval_baselines(batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Entropy and majority accuracy of the held-out target tokens (context-free baselines)."""
    targets = np.concatenate(
        [b["decoder_target_tokens"][b["decoder_loss_weights"] > 0] for b in batches]
    )
    counts = np.bincount(targets)
    probs = counts[counts > 0] / targets.size
    return {
        "unigram_xent": float(-(probs * np.log(probs)).sum()),
        "majority_accuracy": float(probs.max()),
    }


def decode_example(model, batch, tokenizer, *, max_length: int) -> dict[str, str]:
    """Greedy span fill of the first held-out example: input, model output and gold targets."""
    row = {k: np.asarray(v)[:1] for k, v in batch.items()}
    segment = row.get("encoder_segment_ids")
    inputs = row["encoder_input_tokens"]
    if segment is not None:  # a packed row: keep its first example only
        inputs = np.where(segment == 1, inputs, 0)
        targets = np.where(row["decoder_segment_ids"] == 1, row["decoder_target_tokens"], 0)
    else:
        targets = row["decoder_target_tokens"]
    generated = np.asarray(model.greedy_decode(jnp.asarray(inputs), max_length))
    return {
        "input": tokenizer.decode(inputs[0]),
        "prediction": tokenizer.decode(generated[0]),
        "target": tokenizer.decode(targets[0]),
    }


class T5PretrainingTask(PretrainingTask):
    """An encoder-decoder T5 trained on one of the paper's denoising objectives."""

    def __init__(self, config: ml_collections.ConfigDict):
        tokenizer = Tokenizer(config.data.vocab_path, extra_ids=config.objective.extra_ids)
        model_cfg = registry.model_config(config, tokenizer.vocab_size)
        examples = T5Objective(T5DataConfig.from_config(config), tokenizer)
        super().__init__(config, tokenizer, examples, examples)
        self.model_config = model_cfg
        self.z_loss = float(config.objective.z_loss)
        self.targets_length = examples.targets_length
        self.tokens_per_example = examples.inputs_length + examples.targets_length

    def create_model(self, rngs):
        return registry.model_spec(self.model_config).create_model(rngs)

    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        return target_token_loss(
            model, batch, z_loss=self.z_loss, deterministic=deterministic, rngs=rngs
        )

    def mean_weights(self, batch) -> dict[str, jax.Array]:
        return target_mean_weights(batch)

    def eval_fn(self, model, batch) -> dict[str, jax.Array]:
        return eval_sums(model, batch)

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return eval_metrics(totals)

    def eval_baselines(self, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
        return eval_baselines(batches)

    def describe(self, model, batch) -> dict[str, str]:
        return decode_example(model, batch, self.tokenizer, max_length=self.targets_length)
