"""The suite's measurements: the logistic probe, the Lee ratings, frozen features, pairs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_bert_config

from bert_jax.compare import features, few_label, probes, suite
from bert_jax.runtime import run_config


def test_logistic_probe_fits_a_separable_rule_and_matches_the_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) * np.array([1.0, 10.0, 0.1, 1.0, 1.0])  # unequal scales
    y = (x[:, 0] - 0.05 * x[:, 1] > 0).astype(int)
    fit = probes.fit_logistic(x, y, l2=1e-3)
    assert probes.logistic_accuracy(fit, x, y) > 0.97
    held_out = rng.normal(size=(400, 5)) * np.array([1.0, 10.0, 0.1, 1.0, 1.0])
    assert probes.logistic_accuracy(fit, held_out, held_out[:, 0] - 0.05 * held_out[:, 1] > 0) > 0.9
    # The returned point is a minimum of the regularised loss: the gradient vanishes.
    weights, bias, (mean, std) = fit
    z = (x - mean) / std
    p = 1 / (1 + np.exp(-(z @ weights + bias)))
    gradient = z.T @ (p - y) / len(y) + 1e-3 * weights
    assert np.abs(gradient).max() < 1e-4
    # Labels carrying no signal: chance accuracy on fresh data.
    noise = rng.integers(0, 2, 400)
    assert (
        abs(probes.logistic_accuracy(probes.fit_logistic(x, noise, 1.0), held_out, noise) - 0.5)
        < 0.1
    )


def test_lee_data_are_50_articles_with_1225_rated_pairs():
    articles, ratings = probes.load_lee("data/downloads")
    assert len(articles) == 50 and all(len(a.split()) > 40 for a in articles)
    assert ratings.shape == (50, 50) and np.allclose(np.diag(ratings), 1.0)
    upper = ratings[np.triu_indices(50, k=1)]
    assert upper.size == 1225 and upper.min() > 0 and upper.max() <= 1.0
    assert "£" in " ".join(articles)  # read as Latin-1, not split at \x85


@pytest.fixture(scope="module")
def bert_config(vocab_path):
    config = tiny_bert_config()
    config.data.vocab_path = vocab_path
    return config


def test_features_do_not_depend_on_the_batch_they_are_computed_in(bert_config):
    encoder = features.Encoder(bert_config, None, batch_size=4)
    texts = ["a fine film.", "the worst two hours of my life, and longer than that.", "ok"]
    together = encoder.embed(texts, 32)
    alone = np.concatenate([encoder.embed([text], 32) for text in texts])
    assert together.shape == (3, 32)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])
    # Another initialisation seed is another model.
    bert_config.seed = 1
    other = features.Encoder(bert_config, None, batch_size=4).embed(texts, 32)
    bert_config.seed = 0
    assert not np.allclose(other, together)


def test_document_features_are_the_weighted_mean_of_each_texts_windows(bert_config):
    """All texts' windows share batches (before: one padded batch per text); each text's
    feature is still the word-weighted mean of its own windows' features."""
    encoder = features.Encoder(bert_config, None, batch_size=4)
    texts = ["one two three four five six seven", "alpha beta", "x " * 20]
    together = probes.document_features(encoder, texts, 8)  # windows of 4 words
    for text, feature in zip(texts, together, strict=True):
        words = text.split()
        windows = [words[i : i + 4] for i in range(0, len(words), 4)]
        window_features = encoder.embed([" ".join(w) for w in windows], 8)
        expected = np.average(window_features, axis=0, weights=[len(w) for w in windows])
        np.testing.assert_allclose(feature, expected, atol=1e-5)
    assert together.shape == (3, 32)


def test_t5_models_are_probed_through_their_encoder(vocab_path):
    config = run_config.load_recipe("configs/t5.py:runlocal")
    config.data.vocab_path = vocab_path
    config.model.d_model, config.model.d_ff, config.model.num_heads = 32, 64, 2
    config.model.num_encoder_layers = config.model.num_decoder_layers = 1
    encoder = features.Encoder(config, None, batch_size=2)
    assert encoder.encode_ids("hello there", 8)[-1] == encoder.tokenizer.eos_id
    assert encoder.embed(["hello there", "a movie"], 8).shape == (2, 32)


def test_untrained_pair_head_is_at_chance_on_both_pair_kinds(bert_config):
    encoder = features.Encoder(bert_config, None)
    scores = suite.pair_scores(encoder, bert_config, 64)
    assert set(scores) == {"nsp_accuracy", "sop_accuracy", "mlm_accuracy"}
    assert 0.3 < scores["nsp_accuracy"] < 0.7 and 0.3 < scores["sop_accuracy"] < 0.7
    assert scores["mlm_accuracy"] < 0.05


def test_glue_and_squad_join_the_suite_when_their_data_are_present(tmp_path):
    glue_dir, squad_dir = tmp_path / "glue", tmp_path / "squad"
    for folder in ("SST-2", "MRPC", "CoLA"):
        (glue_dir / folder).mkdir(parents=True)
    (glue_dir / "SST-2" / "train.tsv").write_text("sentence\tlabel\n")
    (glue_dir / "MRPC" / "train.tsv").write_text("x\n")  # CoLA: a folder without train.tsv
    squad_dir.mkdir()
    for name in ("train-v1.1.json", "dev-v1.1.json", "train-v2.0.json"):  # no dev-v2.0
        (squad_dir / name).write_text("{}")
    assert few_label.present_tasks(str(glue_dir), "tsv", str(squad_dir), "bert") == [
        "sst2",
        "mrpc",
        "squad_v1",
    ]
    assert few_label.present_tasks(str(glue_dir), "tsv", str(squad_dir), "t5") == ["sst2", "mrpc"]
    assert few_label.present_tasks("", "tsv", "", "bert") == []
    assert few_label.headline("mrpc", {"validation": {"f1": 81.0, "accuracy": 70.0}}) == 81.0
    assert few_label.headline("squad_v1", {"validation": {"exact": 60.0, "f1": 71.0}}) == 71.0
