"""Context-free baselines for held-out token predictions.

A model that ignores context can at best predict the training corpus's token
frequencies. Its cross-entropy on the held-out targets (``unigram_xent``) and
the accuracy of always predicting the most frequent training token
(``majority_accuracy``) are the bars a pretrained model must clear.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

from bert_jax.data import sources

# Documents read to estimate the training unigram distribution (all of the
# embedded corpus; a sample of real C4).
MAX_DOCUMENTS = 20_000


def training_unigram_counts(
    data_config, tokenizer, max_documents: int = MAX_DOCUMENTS
) -> np.ndarray:
    """Token counts ``[vocab_size]`` over (up to) ``max_documents`` training documents."""
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
