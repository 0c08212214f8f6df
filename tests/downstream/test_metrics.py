"""Downstream metrics against hand-checked cases of the official scripts' semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bert_jax.downstream import metrics


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("an apple a day", "apple day"),
        ("Theatre of Anna", "theatre of anna"),  # articles only as whole words
        ("Denver's U.S. office", "denvers us office"),  # punctuation inside words too
        ("  A\tthe\nAN ", ""),
    ],
)
def test_normalize_answer_follows_the_official_order(text, normalised):
    assert metrics.normalize_answer(text) == normalised


def test_exact_match_and_f1_take_the_best_gold():
    golds = {"q": ["Broncos", "the Denver Broncos"]}
    scores = metrics.squad_scores({"q": "Denver Broncos!"}, golds, "v1.1")
    assert scores["exact"] == 100.0 and scores["f1"] == 100.0
    scores = metrics.squad_scores({"q": "Denver"}, golds, "v1.1")
    # vs 'broncos': no overlap; vs 'denver broncos': precision 1, recall 1/2 -> 2/3.
    assert scores["exact"] == 0.0 and scores["f1"] == pytest.approx(100 * 2 / 3)


def test_f1_counts_repeated_tokens_by_their_common_multiplicity():
    # pred tokens [cat, cat, sat], gold [cat, sat, on, mat]: common = cat x1 + sat x1 = 2.
    f1 = metrics.squad_f1("the cat the cat sat", "cat sat on the mat")
    precision, recall = 2 / 3, 2 / 4
    assert f1 == pytest.approx(2 * precision * recall / (precision + recall))  # 4/7
    assert metrics.squad_f1("cat cat", "cat cat") == 1.0
    assert metrics.squad_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_v2_unanswerable_questions_and_empty_predictions():
    golds = {"no_answer": [], "only_article": ["The"], "answerable": ["Paris"]}
    predictions = {"no_answer": "", "only_article": "", "answerable": ""}
    scores = metrics.squad_scores(predictions, golds, "v2.0")
    # A gold that normalises to nothing is dropped, leaving the gold "" to score against,
    # but the question stays answerable (official qid_to_has_ans = bool(answers)).
    assert scores["NoAns_exact"] == 100.0 and scores["NoAns_total"] == 1.0
    assert scores["HasAns_exact"] == 50.0 and scores["HasAns_f1"] == 50.0
    assert scores["HasAns_total"] == 2.0
    assert scores["exact"] == pytest.approx(200 / 3) and scores["f1"] == pytest.approx(200 / 3)
    wrong = metrics.squad_scores({"no_answer": "Paris"}, {"no_answer": []}, "v2.0")
    assert wrong["exact"] == 0.0 and wrong["f1"] == 0.0
    # v1.1: an empty prediction against an empty gold has no overlap: F1 0 (v2.0: 1).
    assert metrics.squad_f1("", "", version="v1.1") == 0.0
    assert metrics.squad_f1("", "", version="v2.0") == 1.0


def test_v2_gold_that_normalises_to_nothing_is_still_answerable():
    # evaluate-v2.0.py: qid_to_has_ans = bool(qa["answers"]); before, "An" made this NoAns.
    scores = metrics.squad_scores({"q": "", "r": "x"}, {"q": ["An"], "r": []}, "v2.0")
    assert scores["HasAns_total"] == 1.0 and scores["HasAns_exact"] == 100.0
    assert scores["NoAns_total"] == 1.0 and scores["NoAns_exact"] == 0.0


def test_missing_predictions_score_zero():
    scores = metrics.squad_scores({"a": "x"}, {"a": ["x"], "b": ["y"]}, "v1.1")
    assert scores == {"exact": 50.0, "f1": 50.0, "total": 2.0}


def test_matthews_f1_and_accuracy_by_hand():
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    predictions = np.array([1, 1, 1, 0, 0, 0, 1])  # tp 3, fn 1, tn 2, fp 1
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(5 / 12)
    assert metrics.f1_score(predictions, labels) == pytest.approx(6 / 8)
    assert metrics.accuracy(predictions, labels) == pytest.approx(5 / 7)
    # scikit-learn's docstring example: [+1, +1, +1, -1] vs [+1, -1, +1, +1] -> -1/3.
    assert metrics.matthews_corrcoef([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(-1 / 3)
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant prediction
    assert metrics.f1_score([0, 0], [0, 0]) == 0.0  # no positives at all


def test_multiclass_matthews_matches_the_confusion_formula():
    labels = np.array([0, 1, 2, 0, 1, 2, 2])
    predictions = np.array([0, 2, 2, 0, 1, 1, 2])
    confusion = metrics.confusion_matrix(predictions, labels, 3)
    assert confusion.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 2]]
    # t = (2,2,3), p = (2,2,3), correct 5, n 7: (5*7 - 17) / (49 - 17) = 18/32.
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(18 / 32)


def test_ranks_average_ties():
    np.testing.assert_array_equal(metrics.rank_with_ties([3, 1, 4, 1, 5]), [3, 1.5, 4, 1.5, 5])
    np.testing.assert_array_equal(metrics.rank_with_ties([2, 2, 2]), [2, 2, 2])


def test_pearson_and_spearman_with_ties():
    assert metrics.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]: cov 4.5, var 4.5 and 5.
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_sums_and_confusion_give_the_same_metrics_as_arrays():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    sums = (50, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    assert metrics.pearson_from_sums(*sums) == pytest.approx(metrics.pearson(x, y))
    labels, predictions = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    confusion = metrics.confusion_matrix(predictions, labels, 2)
    assert metrics.f1_from_confusion(confusion) == metrics.f1_score(predictions, labels)
    assert metrics.accuracy_from_confusion(confusion) == metrics.accuracy(predictions, labels)


def test_correlations_equal_scipy_including_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 200).astype(np.float64)  # many ties
    y = x + rng.normal(size=200)
    for a, b in ((x, y), (x, np.round(y)), (rng.normal(size=50), rng.normal(size=50))):
        assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
        assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    np.testing.assert_array_equal(metrics.rank_with_ties(x), stats.rankdata(x))
    # float32 scores (what an eval step returns) are correlated in float64.
    assert metrics.pearson(x.astype(np.float32), y) == pytest.approx(metrics.pearson(x, y))


@pytest.mark.parametrize(
    "x, y",
    [
        ([0.1, 0.1, 0.1], [1.0, 2.0, 3.5]),  # constant, and its mean is not exactly 0.1
        ([1.0, 2.0, 3.0], [7.0, 7.0, 7.0]),
        ([2.0], [3.0]),  # one pair: scipy raises
        ([], []),
    ],
)
def test_undefined_correlations_are_zero_where_scipy_gives_nan(x, y):
    """A constant prediction (a collapsed regression head) scores 0, as from running sums."""
    assert metrics.pearson(x, y) == 0.0 and metrics.spearman(x, y) == 0.0
    if len(x) >= 2:
        with pytest.warns(stats.ConstantInputWarning):
            assert math.isnan(stats.pearsonr(x, y).statistic)


def test_a_nan_input_gives_nan_correlations():
    # Before scipy, Spearman ranked nan above every number and returned a finite value.
    assert math.isnan(metrics.pearson([1.0, np.nan, 2.0], [1.0, 2.0, 3.0]))
    assert math.isnan(metrics.spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0]))
