"""T5 text-to-text fine-tuning: input/target format, rank classification, STS-B as score
strings, short runs on Rotten Tomatoes and on real STS-B rows."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO_ROOT
from flax import nnx

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import finetune, glue, text_to_text
from bert_jax.models import t5
from bert_jax.runtime import run_config


def finetune_recipe(arg: str):
    """configs/finetune.py:ARG."""
    return run_config.load_recipe(f"configs/finetune.py:{arg}")


def test_inputs_and_targets_follow_the_t5_format(vocab_path):
    rte = glue.task_spec("rte")
    example = glue.LabelledExample("g", "A dog runs.", "An animal moves.", 0)
    assert text_to_text.input_text(rte, example) == (
        "rte sentence1: A dog runs. sentence2: An animal moves."
    )
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    targets = text_to_text.label_targets(tokenizer, ("entailment", "not_entailment"))
    for row, word in zip(targets, ("entailment", "not_entailment"), strict=True):
        tokens = row[row > 0]
        assert tokens[-1] == tokenizer.eos_id and tokenizer.decode(tokens[:-1]) == word
    encode = text_to_text.EncodeTextToText(rte, [example], tokenizer, 16, targets)
    features = encode.map((0, True))
    assert features["encoder_input_tokens"][features["encoder_input_tokens"] > 0][-1] == 1  # </s>
    np.testing.assert_array_equal(features["decoder_target_tokens"], targets[0])
    assert features["decoder_input_tokens"][0] == 0
    np.testing.assert_array_equal(features["decoder_input_tokens"][1:], targets[0][:-1])


def test_label_scores_are_teacher_forced_log_likelihoods(vocab_path):
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    config = t5.t5_config(
        "tiny",
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
    )
    model = nnx.jit(lambda: t5.T5ForConditionalGeneration(config, rngs=nnx.Rngs(0)))()
    targets = text_to_text.label_targets(tokenizer, ("negative", "positive"))
    inputs = np.zeros((2, 12), np.int32)
    for row, text in enumerate(("sst2 sentence: great fun", "sst2 sentence: dull")):
        tokens = [*tokenizer.encode(text), tokenizer.eos_id]
        inputs[row, : len(tokens)] = tokens

    @nnx.jit
    def scores_and_reference(model, inputs):
        scores = text_to_text.label_scores(model, {"encoder_input_tokens": inputs}, targets)
        reference = []
        for target in targets:  # the training loss's teacher-forced cross-entropy
            batch_target = jnp.tile(target, (2, 1))
            logits = model(inputs, jnp.pad(batch_target[:, :-1], ((0, 0), (1, 0))))
            xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch_target)
            reference.append(-jnp.sum(xent * (batch_target > 0), -1))
        return scores, jnp.stack(reference, -1)

    scores, reference = scores_and_reference(model, inputs)
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-5)


def test_t5_text_to_text_finetune_runs(tmp_path, vocab_path):
    config = finetune_recipe("model=t5,init=random,runlocal")
    config.data.vocab_path = vocab_path
    config.data.max_seq_length = 32
    config.train.batch_size = 64
    config.train.num_steps = 2
    config.finetune.max_eval_examples = 128
    small = dict(d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1, num_decoder_layers=1)
    for name, value in small.items():
        config.model[name] = value
    config.finetune.download_dir = str(REPO_ROOT / "data" / "downloads")
    result = finetune.run_finetune(config, str(tmp_path))
    assert 0.0 < result["final"]["validation"]["accuracy"] < 1.0
    assert all(math.isfinite(v) for v in {**result["train"], **result["eval"]}.values())
    assert result["eval"]["accuracy"] == result["final"]["validation"]["accuracy"]


# STS-B rows in the GLUE TSV layout: MSRvid-style caption pairs with scores on the
# 0-5 scale, written for this test (no GLUE download offline; not verified against it).
STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)
STSB_TRAIN = [
    ("0001", "A plane is taking off.", "An air plane is taking off.", "5.000"),
    ("0004", "A man is playing a large flute.", "A man is playing a flute.", "3.800"),
    (
        "0005",
        "A man is spreading shreded cheese on a pizza.",
        "A man is spreading shredded cheese on an uncooked pizza.",
        "3.800",
    ),
    ("0006", "Three men are playing chess.", "Two men are playing chess.", "2.600"),
    ("0009", "A man is playing the cello.", "A man seated is playing the cello.", "4.250"),
    ("0011", "Some men are fighting.", "Two men are fighting.", "4.250"),
    ("0012", "A man is smoking.", "A man is skating.", "0.500"),
    ("0013", "The man is playing the piano.", "The man is playing the guitar.", "1.600"),
    (
        "0014",
        "A man is playing on a guitar and singing.",
        "A woman is playing an acoustic guitar and singing.",
        "2.200",
    ),
    (
        "0016",
        "A person is throwing a cat on to the ceiling.",
        "A person throws a cat on the ceiling.",
        "5.000",
    ),
]
STSB_DEV = [
    ("0000", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000"),
    ("0002", "A young child is riding a horse.", "A child is riding a horse.", "4.750"),
    (
        "0003",
        "A man is feeding a mouse to a snake.",
        "The man is feeding a mouse to the snake.",
        "5.000",
    ),
    ("0007", "A woman is playing the guitar.", "A man is playing guitar.", "2.400"),
    ("0008", "A woman is playing the flute.", "A man is playing a flute.", "2.750"),
    ("0010", "A woman is cutting an onion.", "A man is cutting onions.", "2.615"),
    ("0015", "A man is erasing a chalk board.", "The man is erasing the chalk board.", "5.000"),
    ("0023", "A woman is carrying a boy.", "A woman is carrying her baby.", "2.333"),
    ("0027", "Three men are playing guitars.", "Three men are on stage playing guitars.", "3.750"),
    ("0030", "A woman peels a potato.", "A woman is peeling a potato.", "5.000"),
]


def write_stsb(root) -> str:
    """STS-B/train.tsv and STS-B/dev.tsv under ``root`` in the GLUE download layout."""
    folder = root / "STS-B"
    folder.mkdir(parents=True)
    for name, rows in (("train.tsv", STSB_TRAIN), ("dev.tsv", STSB_DEV)):
        lines = [STSB_HEADER]
        for index, (old_index, first, second, score) in enumerate(rows):
            meta = f"{index}\tmain-captions\tMSRvid\t2012test\t{old_index}\tnone\tnone"
            lines.append(f"{meta}\t{first}\t{second}\t{score}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return str(root)


@pytest.mark.parametrize(
    "score, word",
    [
        (0.0, "0.0"),
        (3.8, "3.8"),
        (3.87, "3.8"),
        (2.615, "2.6"),
        (2.333, "2.4"),
        (4.95, "5.0"),
        (5.0, "5.0"),
        # Halves of 0.2 round to the even multiple, as T5's tf.round(label * 5) / 5 does.
        (0.1, "0.0"),
        (0.3, "0.4"),
        (0.5, "0.4"),
        (0.7, "0.8"),
        (1.5, "1.6"),
        (4.9, "4.8"),
    ],
)
def test_stsb_scores_round_to_the_nearest_fifth_as_t5_does(score, word):
    assert text_to_text.STSB_WORDS[text_to_text.stsb_target_index(score)] == word


def test_stsb_has_26_score_strings_and_rejects_scores_outside_0_to_5():
    words = text_to_text.STSB_WORDS
    assert len(words) == len(set(words)) == 26
    assert (words[0], words[1], words[19], words[-1]) == ("0.0", "0.2", "3.8", "5.0")
    np.testing.assert_allclose(text_to_text.STSB_SCORES, np.arange(26) / 5, atol=1e-6)
    for bad in (-0.1, 5.01):
        with pytest.raises(ValueError, match="outside"):
            text_to_text.stsb_target_index(bad)


def test_finetune_recipe_takes_t5_on_stsb_but_not_squad():
    assert finetune_recipe("model=t5,task=stsb").finetune.task == "stsb"
    with pytest.raises(ValueError, match="model='t5' with task='squad_v1' is unsupported"):
        finetune_recipe("model=t5,task=squad_v1")


def test_stsb_targets_are_distinct_token_sequences(vocab_path):
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    targets = text_to_text.label_targets(tokenizer, text_to_text.STSB_WORDS)
    assert targets.shape[0] == 26 and len({tuple(row) for row in targets}) == 26
    for row, word in zip(targets, text_to_text.STSB_WORDS, strict=True):
        tokens = row[row > 0]
        assert tokens[-1] == tokenizer.eos_id and tokenizer.decode(tokens[:-1]) == word


def test_stsb_examples_train_on_the_rounded_string_and_keep_the_gold_score(tmp_path, vocab_path):
    spec = glue.task_spec("stsb")
    examples = glue.read_tsv(write_stsb(tmp_path), spec, "validation")
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    targets = text_to_text.label_targets(tokenizer, text_to_text.STSB_WORDS)
    gold = examples[5]  # "A woman is cutting an onion." ... 2.615
    assert text_to_text.input_text(spec, gold) == (
        "stsb sentence1: A woman is cutting an onion. sentence2: A man is cutting onions."
    )
    encode = text_to_text.EncodeTextToText(spec, examples, tokenizer, 32, targets)
    features = encode.map((5, True))
    target = features["decoder_target_tokens"]
    assert tokenizer.decode(target[target > 1]) == "2.6"
    assert features["label"].dtype == np.float32 and features["label"] == np.float32(2.615)


def test_stsb_prediction_is_the_best_ranked_score_string(vocab_path):
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    config = t5.t5_config(
        "tiny",
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
    )
    model = nnx.jit(lambda: t5.T5ForConditionalGeneration(config, rngs=nnx.Rngs(1)))()
    targets = text_to_text.label_targets(tokenizer, text_to_text.STSB_WORDS)
    inputs = np.zeros((3, 48), np.int32)
    for row, (_, first, second, _) in enumerate(STSB_DEV[:3]):
        tokens = [*tokenizer.encode(f"stsb sentence1: {first} sentence2: {second}"), 1]
        inputs[row, : len(tokens)] = tokens
    batch = {"encoder_input_tokens": inputs}

    @nnx.jit
    def scores_and_predictions(model, batch):
        predictions = text_to_text.stsb_predictions(model, batch, targets)
        return text_to_text.label_scores(model, batch, targets), predictions

    scores, predictions = scores_and_predictions(model, batch)  # [3, 26], [3, 2]
    best_words = [text_to_text.STSB_WORDS[i] for i in np.argmax(scores, -1)]
    np.testing.assert_allclose(predictions[:, 0], [float(word) for word in best_words])
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    expected = probabilities @ text_to_text.STSB_SCORES
    np.testing.assert_allclose(predictions[:, 1], expected, rtol=1e-5)
    assert ((predictions >= 0.0) & (predictions <= 5.0)).all()


def test_t5_text_to_text_stsb_finetune_reports_pearson_and_spearman(tmp_path, vocab_path):
    config = finetune_recipe("model=t5,task=stsb,init=random,runlocal")
    config.data.vocab_path = vocab_path
    config.data.max_seq_length = 32
    config.train.num_steps = 2
    config.finetune.data_dir = write_stsb(tmp_path / "glue")
    small = dict(d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1, num_decoder_layers=1)
    for name, value in small.items():
        config.model[name] = value
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = finetune.run_finetune(config, str(workdir))
    saved = json.loads((workdir / "finetune_results.json").read_text())
    validation = saved["final"]["validation"]
    assert set(validation) == {"pearson", "spearman"} and saved["task"] == "stsb"
    assert all(-1.0 <= validation[key] <= 1.0 for key in ("pearson", "spearman"))
    # The in-loop eval (sums over padded batches of 8) saw the same 10 predictions.
    assert result["eval"]["pearson"] == pytest.approx(validation["pearson"], abs=1e-4)
    for key in ("loss", "expected_score_mse", "expected_score_pearson", "mean_prediction_mse"):
        assert math.isfinite(result["eval"][key]), key
