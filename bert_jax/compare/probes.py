"""Probe tasks on frozen features: few-label Rotten Tomatoes and Lee document similarity.

- ``rt_probe_N``: logistic regression (L2, standardised features, L-BFGS: a convex fit,
  so the only randomness is which N labelled training snippets it sees) on mean-pooled
  encoder features of N Rotten Tomatoes training snippets, accuracy on the fixed 1,275
  validation snippets. The seed's setting, "a little bit of labelled data".
- ``lee_spearman``: zero-shot Spearman correlation between the cosine similarity of two
  news articles' features and the mean human rating of the pair (Lee et al. 2005, the
  50 articles of gensim's ``lee.cor`` and ``similarities0-1.txt``: 1,225 pairs).
  The articles' text (not the ratings) is part of the embedded pretraining corpus.
"""

from __future__ import annotations

import zipfile

import numpy as np
from scipy import optimize, stats

from bert_jax.data.downloads import GENSIM, GENSIM_DATA, GENSIM_WHEEL_ARGS, fetch_archive
from bert_jax.downstream import rotten_tomatoes


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float, tuple]:
    """L2-regularised binary logistic regression; returns (weights, bias, standardiser)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    n, dim = z.shape
    target = y.astype(np.float64)

    def loss_and_grad(theta):
        w, b = theta[:dim], theta[dim]
        logits = z @ w + b
        # mean log-loss, stable: log(1 + e^l) - y l
        loss = np.mean(np.logaddexp(0.0, logits) - target * logits) + 0.5 * l2 * w @ w
        residual = (1.0 / (1.0 + np.exp(-logits)) - target) / n
        return loss, np.concatenate([z.T @ residual + l2 * w, [residual.sum()]])

    result = optimize.minimize(
        loss_and_grad, np.zeros(dim + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}
    )
    return result.x[:dim], float(result.x[dim]), (mean, std)


def logistic_accuracy(fit, x: np.ndarray, y: np.ndarray) -> float:
    weights, bias, (mean, std) = fit
    predicted = ((x - mean) / std) @ weights + bias > 0
    return float(np.mean(predicted == y.astype(bool)))


def rt_probe(encoder, sizes, seeds: int, l2: float, max_length: int, download_dir: str):
    """``{"rt_probe_N": mean accuracy over the seeds' labelled subsets, ...}`` and the runs."""
    splits = rotten_tomatoes.load_splits(download_dir)
    train, validation = splits["train"], splits["validation"]
    draws = {
        (size, seed): np.random.default_rng((seed, size)).choice(len(train), size, replace=False)
        for size in sizes
        for seed in range(seeds)
    }
    needed = sorted(set(np.concatenate(list(draws.values())).tolist()))
    features = dict(
        zip(needed, encoder.embed([train[i].text_a for i in needed], max_length), strict=True)
    )
    labels = np.array([example.label for example in train])
    val_x = encoder.embed([example.text_a for example in validation], max_length)
    val_y = np.array([example.label for example in validation])
    scores, runs = {}, {}
    for size in sizes:
        accuracies = []
        for seed in range(seeds):
            chosen = draws[(size, seed)]
            fit = fit_logistic(np.stack([features[i] for i in chosen]), labels[chosen], l2)
            accuracies.append(logistic_accuracy(fit, val_x, val_y))
        scores[f"rt_probe_{size}"] = float(np.mean(accuracies))
        runs[f"rt_probe_{size}"] = accuracies
    return scores, runs


def load_lee(download_dir: str) -> tuple[list[str], np.ndarray]:
    """The 50 articles and the ``[50, 50]`` mean human ratings (upper triangle)."""
    with zipfile.ZipFile(fetch_archive(GENSIM, download_dir, GENSIM_WHEEL_ARGS)) as wheel:
        # One article a line, in Latin-1 (a pound sign); not splitlines(): \x85 breaks lines there.
        articles = wheel.read(GENSIM_DATA + "lee.cor").decode("latin-1").split("\n")
        ratings_text = wheel.read(GENSIM_DATA + "similarities0-1.txt").decode("utf-8")
    articles = [line.strip() for line in articles if line.strip()]
    ratings = np.array([[float(v) for v in row.split()] for row in ratings_text.splitlines()])
    if ratings.shape != (len(articles), len(articles)):
        raise ValueError(
            f"{GENSIM}!{GENSIM_DATA}similarities0-1.txt: ratings {ratings.shape} for "
            f"{len(articles)} articles in lee.cor"
        )
    return articles, ratings


def document_features(encoder, texts, max_length: int) -> np.ndarray:
    """Token-weighted mean of the features of consecutive windows covering each text.

    The windows of all texts go through the encoder together, in full batches (one call
    per text padded each to a whole batch: 50 Lee articles, ~5 windows each, took ten
    times the forward passes).
    """
    windows, owners, weights = [], [], []
    for index, text in enumerate(texts):
        words = text.split()
        step = max(max_length // 2, 1)  # about max_length pieces per window of words
        for start in range(0, len(words), step):
            windows.append(" ".join(words[start : start + step]))
            weights.append(len(words[start : start + step]))
            owners.append(index)
    features = encoder.embed(windows, max_length)
    owners, weights = np.asarray(owners), np.asarray(weights, np.float64)
    return np.stack(
        [
            np.average(features[owners == i], axis=0, weights=weights[owners == i])
            for i in range(len(texts))
        ]
    )


def lee_spearman(encoder, max_length: int, download_dir: str) -> float:
    articles, ratings = load_lee(download_dir)
    features = document_features(encoder, articles, max_length)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    i, j = np.triu_indices(len(articles), k=1)
    cosine = np.sum(unit[i] * unit[j], axis=1)
    return float(stats.spearmanr(cosine, ratings[i, j]).statistic)
