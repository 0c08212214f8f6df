"""Official downstream metrics: GLUE's and the SQuAD evaluation scripts'.

GLUE follows scikit-learn / scipy semantics (what the GLUE leaderboard and the
Hugging Face ``glue`` metric use): accuracy, binary F1 of the positive class 1,
Matthews correlation from the confusion matrix (0 when undefined), Pearson and
Spearman correlations by ``scipy.stats`` (Spearman ranks ties by their average rank;
0, not scipy's nan, when an input is constant or has fewer than two values).

SQuAD follows ``evaluate-v1.1.py`` / ``evaluate-v2.0.py``: answers are normalised
(lower case, punctuation removed, articles a/an/the removed, whitespace collapsed),
exact match and token-overlap F1 are maximised over the gold answers, and scores
are percentages. In v2.0 a question without answers has the gold answer ``""``,
an empty prediction means "no answer", and F1 is 1 only if both are empty. A
question counts as answerable (``HasAns_*``) when it has any gold answer, even one
that normalises to nothing (which then scores as ``""``), as the official script counts.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

# ---------------------------------------------------------------------------
# Classification and regression (GLUE).
# ---------------------------------------------------------------------------


def confusion_matrix(predictions, labels, num_labels: int) -> np.ndarray:
    """Counts ``[true label, predicted label]`` as int64 ``[num_labels, num_labels]``."""
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    matrix = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def accuracy_from_confusion(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


def f1_from_confusion(confusion: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of class ``positive``: 2tp / (2tp + fp + fn); 0 when undefined."""
    tp = confusion[positive, positive]
    fp = confusion[:, positive].sum() - tp
    fn = confusion[positive, :].sum() - tp
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_from_confusion(confusion: np.ndarray) -> float:
    """Matthews correlation (multi-class form of scikit-learn); 0 when undefined."""
    confusion = np.asarray(confusion, np.float64)
    true_totals, predicted_totals = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, samples = np.trace(confusion), confusion.sum()
    covariance = correct * samples - true_totals @ predicted_totals
    variance_true = samples**2 - true_totals @ true_totals
    variance_predicted = samples**2 - predicted_totals @ predicted_totals
    denominator = np.sqrt(variance_true * variance_predicted)
    return float(covariance / denominator) if denominator else 0.0


def accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(predictions == labels)) if labels.size else 0.0


def f1_score(predictions, labels) -> float:
    """Binary F1 of the positive class 1 (MRPC, QQP)."""
    return f1_from_confusion(confusion_matrix(predictions, labels, 2))


def matthews_corrcoef(predictions, labels) -> float:
    num_labels = int(max(np.max(predictions, initial=0), np.max(labels, initial=0))) + 1
    return matthews_from_confusion(confusion_matrix(predictions, labels, num_labels))


def pearson_from_sums(n, sum_x, sum_y, sum_xx, sum_yy, sum_xy) -> float:
    """Pearson r from running sums (what a sharded eval can add up); 0 when undefined."""
    covariance = n * sum_xy - sum_x * sum_y
    variance_x, variance_y = n * sum_xx - sum_x**2, n * sum_yy - sum_y**2
    if variance_x <= 0 or variance_y <= 0:
        return 0.0
    return float(covariance / np.sqrt(variance_x * variance_y))


def _undefined_correlation(x: np.ndarray, y: np.ndarray) -> bool:
    """Fewer than two pairs, or a constant input: scipy raises or gives nan, we report 0."""
    return x.size < 2 or bool(np.all(x == x[0])) or bool(np.all(y == y[0]))


def pearson(x, y) -> float:
    """Pearson correlation (scipy.stats.pearsonr's r); 0 when undefined (as `pearson_from_sums`)."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    return 0.0 if _undefined_correlation(x, y) else float(stats.pearsonr(x, y).statistic)


def rank_with_ties(values) -> np.ndarray:
    """Ranks from 1 of the flattened ``values``; tied values share their average rank."""
    return stats.rankdata(values, method="average", axis=None)


def spearman(x, y) -> float:
    """Spearman correlation (scipy.stats.spearmanr, ties share average ranks); 0 when undefined."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    return 0.0 if _undefined_correlation(x, y) else float(stats.spearmanr(x, y).statistic)


# ---------------------------------------------------------------------------
# SQuAD.
# ---------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop articles, collapse whitespace (official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str, version: str = "v2.0") -> float:
    """Token-overlap F1 with multiplicity (a repeated token counts as often as it co-occurs).

    v2.0: if either side normalises to no tokens, F1 is 1 when both do and else 0.
    v1.1: no overlap gives 0, including two empty answers.
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version == "v2.0" and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Iterable[str], version: str = "v2.0") -> list[str]:
    """The golds a prediction is scored against; v2.0 unanswerable questions get ``[""]``."""
    answers = list(answers)
    if version == "v2.0":
        answers = [a for a in answers if normalize_answer(a)] or [""]
    return answers


def squad_scores(
    predictions: Mapping[str, str],
    golds: Mapping[str, Sequence[str]],
    version: str = "v2.0",
) -> dict[str, float]:
    """Official EM / F1 (percentages) of ``predictions`` (question id -> text).

    Args:
      predictions: predicted answer per question id ("" = no answer in v2.0).
      golds: gold answer texts per question id (empty for unanswerable v2.0 questions).
      version: 'v1.1' or 'v2.0' (see `squad_f1`, `gold_answers`).

    Returns:
      ``exact`` and ``f1`` over all questions (a missing prediction scores 0), and for
      v2.0 also ``HasAns_*`` / ``NoAns_*`` over answerable / unanswerable questions.
    """
    if version not in ("v1.1", "v2.0"):
        raise ValueError(f"SQuAD version must be 'v1.1' or 'v2.0', got {version!r}")
    exact, f1, has_answer = {}, {}, {}
    for question_id, answers in golds.items():
        answers = list(answers)
        # The official script's qid_to_has_ans: any gold text, before normalisation.
        has_answer[question_id] = bool(answers)
        answers = gold_answers(answers, version)
        prediction = predictions.get(question_id)
        if prediction is None:
            exact[question_id] = f1[question_id] = 0.0
            continue
        exact[question_id] = max(squad_exact_match(prediction, a) for a in answers)
        f1[question_id] = max(squad_f1(prediction, a, version) for a in answers)
    scores = _percentages(exact, f1, list(golds))
    if version == "v2.0":
        for prefix, wanted in (("HasAns_", True), ("NoAns_", False)):
            ids = [q for q in golds if has_answer[q] == wanted]
            if ids:
                subset = _percentages(exact, f1, ids)
                scores.update({prefix + k: v for k, v in subset.items()})
    return scores


def _percentages(exact, f1, ids) -> dict[str, float]:
    count = max(len(ids), 1)
    return {
        "exact": 100.0 * sum(exact[q] for q in ids) / count,
        "f1": 100.0 * sum(f1[q] for q in ids) / count,
        "total": float(len(ids)),
    }
