"""Sequence classification / regression on the BERT / ALBERT encoder, and its loss.

pooled [CLS] -> dropout -> dense num_labels (Devlin et al. 2019, section 4.1);
regression (STS-B) has one output trained with mean squared error. The encoder
lives under the attribute ``encoder`` exactly as in `BertForPreTraining`, so a
pretrained encoder subtree drops in unchanged. Evaluation returns additive sums
(a confusion matrix, or moments for Pearson) so sharded batches simply add up.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax.downstream import metrics
from bert_jax.models import projections
from bert_jax.models.bert import BertConfig, BertModel

HEADS = ("classification", "regression", "span")


@dataclasses.dataclass(frozen=True)
class FinetuneModelConfig:
    """The encoder and the head on top (also the checkpoint fingerprint).

    Attributes:
      encoder: hyperparameters of the encoder.
      head: 'classification', 'regression' (one output, MSE) or 'span' (start/end).
      num_labels: classes of the classification head (1 for regression, 2 for span).
    """

    encoder: BertConfig
    head: str
    num_labels: int

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"FinetuneModelConfig.head {self.head!r} not in {HEADS}")
        expected = {"regression": 1, "span": 2}.get(self.head)
        if expected is not None and self.num_labels != expected:
            raise ValueError(f"a {self.head} head has {expected} outputs, got {self.num_labels}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")


def head_dense(config: BertConfig, out_features: int, rngs: nnx.Rngs) -> projections.Dense:
    """A task head ``[H, out_features]``: logical axes (embed, None), BERT initialisation."""
    return projections.dense(
        config.hidden_size,
        out_features,
        ("embed", None),
        kernel_init=nnx.initializers.truncated_normal(stddev=config.initializer_range),
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


class BertForSequenceClassification(nnx.Module):
    """Logits (or a regression score) from the pooled [CLS] representation."""

    def __init__(self, config: FinetuneModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = BertModel(config.encoder, rngs=rngs)
        self.dropout = nnx.Dropout(config.encoder.dropout_rate)
        self.classifier = head_dense(config.encoder, config.num_labels, rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        input_mask: jax.Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Float32 ``[batch, num_labels]`` from int ``[batch, length]`` inputs."""
        _, pooled = self.encoder(
            input_ids, segment_ids, input_mask, deterministic=deterministic, rngs=rngs
        )  # [batch, H]
        pooled = self.dropout(pooled, deterministic=deterministic, rngs=rngs)
        return self.classifier(pooled).astype(jnp.float32)  # [batch, num_labels]


def classification_loss(model, batch, *, regression: bool, deterministic: bool, rngs=None):
    """``(loss, metrics)``: cross-entropy and accuracy, or for regression the squared error."""
    logits = model(
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        deterministic=deterministic,
        rngs=rngs,
    )  # [batch, num_labels]
    if regression:
        loss = jnp.mean(jnp.square(logits[:, 0] - batch["label"]))
        return loss, {}
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return jnp.mean(xent), {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}


def encoder_logits(model, batch) -> jax.Array:
    """The deterministic output of a head on the encoder (class scores, a regression
    score, or SQuAD's ``(start_logits, end_logits)``) for a batch of encoder features."""
    return model(batch["input_ids"], batch["segment_ids"], batch["input_mask"])


def eval_sums(logits, batch, num_labels: int, regression: bool) -> dict[str, jax.Array]:
    """Weighted sums over one batch (padding examples weigh 0) of its class scores
    ``logits`` ``[batch, num_labels]`` (T5's rank classification passes its label
    log-likelihoods), or for regression a predicted score in column 0."""
    weight, label = batch["example_weight"], batch["label"]
    sums = {"count": jnp.sum(weight)}
    if regression:
        score = logits[:, 0]
        sums["squared_error"] = jnp.sum(weight * jnp.square(score - label))
        for name, value in (("x", score), ("y", label), ("xx", score * score)):
            sums[f"sum_{name}"] = jnp.sum(weight * value)
        sums["sum_yy"] = jnp.sum(weight * label * label)
        sums["sum_xy"] = jnp.sum(weight * score * label)
        return sums
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, label)
    sums["xent"] = jnp.sum(weight * xent)
    predicted = jnp.argmax(logits, -1)
    for true in range(num_labels):  # the confusion matrix, one scalar per cell
        for guess in range(num_labels):
            hits = (label == true) & (predicted == guess)
            sums[f"confusion_{true}_{guess}"] = jnp.sum(weight * hits)
    return sums


def eval_metrics(totals: dict[str, float], num_labels: int, regression: bool) -> dict:
    """The metrics of the totals of `eval_sums` over the held-out batches."""
    count = max(totals["count"], 1.0)
    if regression:
        sums = [totals[f"sum_{k}"] for k in ("x", "y", "xx", "yy", "xy")]
        return {
            "loss": totals["squared_error"] / count,
            "pearson": metrics.pearson_from_sums(totals["count"], *sums),
        }
    confusion = np.array(
        [[totals[f"confusion_{t}_{g}"] for g in range(num_labels)] for t in range(num_labels)]
    )
    out = {
        "loss": totals["xent"] / count,
        "accuracy": metrics.accuracy_from_confusion(confusion),
        "matthews_corr": metrics.matthews_from_confusion(confusion),
    }
    if num_labels == 2:
        out["f1"] = metrics.f1_from_confusion(confusion)
    return out


def label_baselines(batches, regression: bool) -> dict[str, float]:
    """What a model that ignores its input scores on the held-out batches."""
    weight = np.concatenate([b["example_weight"] for b in batches]) > 0
    labels = np.concatenate([b["label"] for b in batches])[weight]
    if regression:
        return {"mean_prediction_mse": float(np.var(labels))}
    return {"majority_accuracy": float(np.bincount(labels).max() / max(labels.size, 1))}
