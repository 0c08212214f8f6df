"""SQuAD v1.1 / v2.0 fine-tuning: `SquadTask`, a `runner.FinetuneTask` of context windows.

Training rows are the context windows of `squad.create_features` (gold start/end
token, [CLS] when the answer is not in the window; training contexts are tokenized
with piece boundaries at the answer edges, evaluation contexts without looking at
the answers); the loss is the mean of the start and end cross-entropies (BERT's
run_squad). The train loop reports window accuracies; the final parameters are
then decoded with n-best span search over all windows of each question and scored
with the official EM / F1; the answers go to ``WORKDIR/predictions.json``.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bert_jax.downstream import batching, classifier, metrics, squad
from bert_jax.downstream.encoder_init import load_encoder_source
from bert_jax.downstream.runner import FinetuneTask, Scored
from bert_jax.models.bert import BertModel

VERSIONS = {"squad_v1": "v1.1", "squad_v2": "v2.0"}


class BertForQuestionAnswering(nnx.Module):
    """Start and end logits of an answer span at every position."""

    def __init__(self, config: classifier.FinetuneModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = BertModel(config.encoder, rngs=rngs)
        self.span = classifier.head_dense(config.encoder, 2, rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        input_mask: jax.Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Float32 ``(start_logits, end_logits)``, each ``[batch, length]``."""
        sequence, _ = self.encoder(
            input_ids, segment_ids, input_mask, deterministic=deterministic, rngs=rngs
        )  # [batch, length, H]
        logits = self.span(sequence).astype(jnp.float32)  # [batch, length, 2]
        return logits[..., 0], logits[..., 1]


def read_split(config: ml_collections.ConfigDict, split: str) -> list[squad.SquadExample]:
    version = VERSIONS[config.finetune.task]
    name = config.finetune.train_file if split == "train" else config.finetune.eval_file
    name = name or f"{'train' if split == 'train' else 'dev'}-{version}.json"
    path = name if os.path.isabs(name) else os.path.join(config.finetune.data_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: set config.finetune.data_dir / train_file")
    return squad.read_squad(path)


class WindowRow(batching.RowFeatures):
    """One window of `squad.create_features` -> its model inputs and gold span."""

    def __init__(self, features: squad.SquadFeatures):
        self._inputs = features.inputs

    def features(self, index: int) -> dict[str, np.ndarray]:
        return {name: values[index] for name, values in self._inputs.items()}


def _span_xent(model, batch, deterministic, rngs):
    start_logits, end_logits = model(
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        deterministic=deterministic,
        rngs=rngs,
    )  # [batch, length] each
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, batch["start_positions"])
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, batch["end_positions"])
    start_correct = jnp.argmax(start_logits, -1) == batch["start_positions"]
    end_correct = jnp.argmax(end_logits, -1) == batch["end_positions"]
    return (start + end) / 2, start_correct, end_correct  # [batch] each


class SquadTask(FinetuneTask):
    """The SQuAD task of ``config.finetune.task``: training and evaluation windows of the
    encoder of ``config.finetune.init`` with a span head, scored per question."""

    def __init__(self, config: ml_collections.ConfigDict):
        finetune_config = self.finetune_config = config.finetune
        source = load_encoder_source(config)
        self.model_config = classifier.FinetuneModelConfig(source.encoder_config, "span", 2)
        self.examples = {split: read_split(config, split) for split in ("train", "validation")}
        self.splits = {
            split: squad.create_features(
                split_examples,
                source.tokenizer,
                max_seq_length=config.data.max_seq_length,
                doc_stride=finetune_config.doc_stride,
                max_query_length=finetune_config.max_query_length,
                # Train labels are exact answers; evaluation tokenizes without the answers.
                exact_answer_boundaries=split == "train",
            )
            for split, split_examples in self.examples.items()
        }
        logging.info("SQuAD windows: %s", {split: len(f) for split, f in self.splits.items()})
        self.name, self.seed = finetune_config.task, config.seed
        self.tokenizer, self.initial_params = source.tokenizer, source.initial_params
        self.tokens_per_example = config.data.max_seq_length

    def create_model(self, rngs) -> BertForQuestionAnswering:
        return BertForQuestionAnswering(self.model_config, rngs=rngs)

    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        xent, start_correct, end_correct = _span_xent(model, batch, deterministic, rngs)
        return jnp.mean(xent), {
            "start_accuracy": jnp.mean(start_correct),
            "end_accuracy": jnp.mean(end_correct),
        }

    def eval_fn(self, model, batch):
        xent, start_correct, end_correct = _span_xent(model, batch, True, None)
        weight = batch["example_weight"]
        return {
            "xent": jnp.sum(weight * xent),
            "start_correct": jnp.sum(weight * start_correct),
            "end_correct": jnp.sum(weight * end_correct),
            "count": jnp.sum(weight),
        }

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        count = max(totals["count"], 1.0)
        return {
            "loss": totals["xent"] / count,
            "start_accuracy": totals["start_correct"] / count,
            "end_accuracy": totals["end_correct"] / count,
        }

    def eval_baselines(self, batches) -> dict[str, float]:
        """Start accuracy of always answering [CLS] (windows that hold no answer)."""
        weight = np.concatenate([b["example_weight"] for b in batches])
        at_cls = np.concatenate([b["start_positions"] for b in batches]) == 0
        return {"cls_start_accuracy": float(np.sum(weight * at_cls) / max(weight.sum(), 1.0))}

    def row_features(self, rows: squad.SquadFeatures) -> WindowRow:
        return WindowRow(rows)

    def predict_batch(self, model, batch):
        return classifier.encoder_logits(model, batch)  # (start_logits, end_logits)

    def score(self, split: str, outputs) -> Scored:
        """n-best span decoding per question of ``(start_logits, end_logits)`` of every
        window, the official EM / F1, and the answers."""
        version = VERSIONS[self.finetune_config.task]
        start_logits, end_logits = outputs
        examples = self.examples[split]
        predictions, _ = squad.decode_predictions(
            examples,
            self.splits[split],
            start_logits,
            end_logits,
            n_best_size=self.finetune_config.n_best_size,
            max_answer_length=self.finetune_config.max_answer_length,
            version=version,
            null_score_diff_threshold=self.finetune_config.null_score_diff_threshold,
        )
        golds = {example.question_id: example.answers for example in examples}
        return Scored(metrics.squad_scores(predictions, golds, version), predictions)
