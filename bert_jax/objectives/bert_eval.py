"""Held-out evaluation of BERT / ALBERT: masked-LM figures by what the input shows, and
the context-free baselines beside them.

BERT's convention averages the masked-LM loss over every selected position, but 80/10/10
corruption leaves 10% of them showing their own token in the input, where a model can
copy the answer. So besides the all-positions figures (``mlm_loss``, ``mlm_accuracy``)
the evaluation splits the selected positions by the *kind* of input the model sees there:

- ``mask``: the input is ``[MASK]``; the answer is hidden (``mlm_mask_loss``, ...);
- ``random``: a random replacement token, also hiding the answer;
- ``kept``: the input is the original token, so the answer is visible.

The kind is read from the batch itself (the corrupted input at the position against the
label), so it needs nothing from the masking function and works on any batch. A random
replacement that happens to draw the original token (probability about 1 / vocab per
random position) shows the answer and counts as ``kept``: kinds describe what the model
sees, which is what the figures are meant to separate. ``[MASK]`` is never a random
replacement nor a target (it is a special id), so the ``mask`` kind is exactly the
selected positions whose input is the mask id.

The context-free baselines are the bars a pretrained model must clear: a model that
ignores context can at best predict the training corpus's token frequencies, so its
cross-entropy on the held-out targets (``unigram_xent``) and the accuracy of always
predicting the most frequent training token (``majority_accuracy``) are reported beside
the model's figures (`held_out_baselines`; `bert-jax evaluate` uses them too).
"""

from __future__ import annotations

import itertools
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.data import sources
from bert_jax.data.jsonl_source import expand_patterns
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.objectives.logit_metrics import label_logit_stats

# Index = the kind code of prediction_kinds.
PREDICTION_KINDS = ("mask", "random", "kept")

# Documents read to estimate the training unigram distribution (all of the
# embedded corpus; a sample of real C4).
MAX_DOCUMENTS = 20_000


def pretraining_logits(model, batch, *, deterministic, rngs):
    """Masked-LM logits at the prediction positions and the sentence-pair logits."""
    return model(
        batch["input_ids"],
        batch["segment_ids"],
        batch["input_mask"],
        batch["masked_lm_positions"],
        deterministic=deterministic,
        rngs=rngs,
    )  # [batch, predictions, vocab], [batch, 2]


def prediction_kinds(input_ids, masked_lm_positions, masked_lm_ids, mask_id: int):
    """Kind code (index into PREDICTION_KINDS) of every prediction slot.

    Args:
      input_ids: [batch, length] corrupted model input.
      masked_lm_positions: [batch, predictions] positions of the targets.
      masked_lm_ids: [batch, predictions] original tokens (the labels).
      mask_id: id of [MASK].

    Returns:
      [batch, predictions] int32: 0 mask, 1 random, 2 kept (padding slots get a code too;
      weight them out with masked_lm_weights). NumPy or JAX arrays, as given.
    """
    xp = jnp if isinstance(input_ids, jax.Array) else np
    shown = xp.take_along_axis(input_ids, masked_lm_positions, axis=1)  # [batch, predictions]
    kind = xp.where(shown == masked_lm_ids, 2, 1)
    return xp.where(shown == mask_id, 0, kind).astype(xp.int32)


def eval_sums(model, batch, mask_id: int, pairs: bool = True) -> dict[str, jax.Array]:
    """Sums over one held-out batch, all positions and by kind; `eval_metrics` of their
    totals gives the figures.

    ``pairs=False`` (sentence_pair_task 'none'): no sentence-pair sums, since the untrained
    pair head's accuracy on all-zero labels would read as a perfect score.
    """
    mlm_logits, pair_logits = pretraining_logits(model, batch, deterministic=True, rngs=None)
    labels, weights = batch["masked_lm_ids"], batch["masked_lm_weights"]
    # [batch, predictions]; correct = gold logit >= row max (ties correct, logit_metrics).
    xent, _, correct = label_logit_stats(mlm_logits, labels)
    kinds = prediction_kinds(
        batch["input_ids"], batch["masked_lm_positions"], labels, mask_id
    )  # [batch, predictions]
    sums = {
        "mlm_xent": jnp.sum(xent * weights),
        "mlm_correct": jnp.sum(correct * weights),
        "mlm_count": jnp.sum(weights),
    }
    if pairs:
        sums["pair_correct"] = jnp.sum(jnp.argmax(pair_logits, -1) == batch["pair_labels"])
        sums["pair_count"] = jnp.asarray(batch["pair_labels"].shape[0], jnp.float32)
    for code, kind in enumerate(PREDICTION_KINDS):
        kind_weights = weights * (kinds == code)
        sums[f"mlm_{kind}_xent"] = jnp.sum(xent * kind_weights)
        sums[f"mlm_{kind}_correct"] = jnp.sum(correct * kind_weights)
        sums[f"mlm_{kind}_count"] = jnp.sum(kind_weights)
    return sums


def eval_metrics(totals: dict[str, float]) -> dict[str, float]:
    """Totals -> metrics; a kind with no position gets NaN loss and accuracy, not 0."""
    metrics = {
        "mlm_loss": totals["mlm_xent"] / max(totals["mlm_count"], 1.0),
        "mlm_accuracy": totals["mlm_correct"] / max(totals["mlm_count"], 1.0),
        "mlm_count": totals["mlm_count"],
    }
    if "pair_count" in totals:
        metrics["pair_accuracy"] = totals["pair_correct"] / max(totals["pair_count"], 1.0)
    for kind in PREDICTION_KINDS:
        count = totals[f"mlm_{kind}_count"]
        metrics[f"mlm_{kind}_loss"] = totals[f"mlm_{kind}_xent"] / count if count else math.nan
        metrics[f"mlm_{kind}_accuracy"] = (
            totals[f"mlm_{kind}_correct"] / count if count else math.nan
        )
        metrics[f"mlm_{kind}_count"] = count
    return metrics


# Counts already made in this process (pretraining's evaluation, `evaluate`, a compare
# cell's scoring read the same training documents), by what they were counted from.
_COUNTS: dict[tuple, np.ndarray] = {}


def _counts_key(data_config, tokenizer, max_documents: int) -> tuple | None:
    """The inputs of a count: config.data, each train file's path, size and mtime and the
    vocabulary's; None (count anew) when the files cannot be listed (TFDS, a bad pattern)."""
    if data_config.get("source") not in ("jsonl", "text", "tokenized"):
        return None
    try:
        paths = [*expand_patterns(data_config.train_pattern), tokenizer.model_path]
        stats = [os.stat(path) for path in paths]
        files = tuple((p, st.st_size, st.st_mtime_ns) for p, st in zip(paths, stats, strict=True))
    except (ValueError, OSError, AttributeError):
        return None
    return (
        data_config.to_json_best_effort(sort_keys=True),
        files,
        tokenizer.vocab_size,
        max_documents,
    )


def training_unigram_counts(
    data_config, tokenizer, max_documents: int = MAX_DOCUMENTS
) -> np.ndarray:
    """Token counts ``[vocab_size]`` over (up to) ``max_documents`` training documents.

    Counted once per process for the same data and vocabulary (files unchanged)."""
    key = _counts_key(data_config, tokenizer, max_documents)
    if key is not None and key in _COUNTS:
        return _COUNTS[key].copy()
    stream = sources.documents(
        data_config, "train", tokenizer, seed=0, process_index=0, process_count=1, repeat=False
    )
    counts = np.zeros(tokenizer.vocab_size, np.int64)
    num_documents = 0
    for sentences in itertools.islice(stream, max_documents):
        for sentence in sentences:
            counts += np.bincount(sentence, minlength=tokenizer.vocab_size)
        num_documents += 1
    logging.info(
        "unigram baseline from %d training documents, %d tokens", num_documents, counts.sum()
    )
    if key is not None:
        _COUNTS[key] = counts.copy()
    return counts


def unigram_baselines(
    train_counts: np.ndarray, targets: np.ndarray, exclude: np.ndarray
) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of the training unigram model on ``targets``.

    Args:
      train_counts: ``[vocab]`` token counts of the training data.
      targets: int held-out target ids.
      exclude: ids that are never targets (special tokens), given probability 0.

    Returns:
      ``unigram_xent`` and ``majority_accuracy``; NaN for both when ``targets`` is empty.
    """
    targets = np.asarray(targets)
    if targets.size == 0:
        return {"unigram_xent": float("nan"), "majority_accuracy": float("nan")}
    counts = train_counts.astype(np.float64) + 0.5  # add-half smoothing: unseen ids stay finite
    counts[exclude] = 0.0
    with np.errstate(divide="ignore"):  # excluded ids get log(0) = -inf, never a target
        log_probs = np.log(counts / counts.sum())
    return {
        "unigram_xent": float(-log_probs[targets].mean()),
        "majority_accuracy": float(np.mean(targets == np.argmax(counts))),
    }


def held_out_baselines(
    train_counts: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    tokenizer: Tokenizer,
    pairs: bool = True,
) -> dict[str, float]:
    """Training-unigram baselines of all masked targets and of the [MASK] ones, pair majority.

    Args:
      train_counts: [vocab] token counts of the training data (training_unigram_counts).
      batches: held-out NumPy batches.
      tokenizer: for the mask and special ids.
      pairs: whether the run has a sentence-pair task (else no pair majority).
    """
    targets, mask_targets = [], []
    for batch in batches:
        selected = batch["masked_lm_weights"] > 0  # [batch, predictions]
        kinds = prediction_kinds(
            batch["input_ids"],
            batch["masked_lm_positions"],
            batch["masked_lm_ids"],
            tokenizer.mask_id,
        )
        targets.append(batch["masked_lm_ids"][selected])
        mask_targets.append(batch["masked_lm_ids"][selected & (kinds == 0)])
    exclude = tokenizer.special_ids
    mask_baselines = unigram_baselines(train_counts, np.concatenate(mask_targets), exclude)
    result = {
        **unigram_baselines(train_counts, np.concatenate(targets), exclude),
        **{f"mask_{name}": value for name, value in mask_baselines.items()},
    }
    if pairs:
        labels = np.concatenate([b["pair_labels"] for b in batches])
        result["pair_majority_accuracy"] = float(max(labels.mean(), 1 - labels.mean()))
    return result
