"""T5 text-to-text fine-tuning: input/target format, rank classification, a short run."""

from __future__ import annotations

import importlib.util
import math

import jax.numpy as jnp
import numpy as np
import optax
from conftest import REPO_ROOT
from flax import nnx

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import finetune, glue, text_to_text
from bert_jax.models import t5 as models_t5


def test_inputs_and_targets_follow_the_t5_format(vocab_path):
    rte = glue.get_task("rte")
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
    config = models_t5.t5_config(
        "tiny",
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
    )
    model = nnx.jit(lambda: models_t5.T5ForConditionalGeneration(config, rngs=nnx.Rngs(0)))()
    targets = text_to_text.label_targets(tokenizer, ("negative", "positive"))
    inputs = np.zeros((2, 12), np.int32)
    for row, text in enumerate(("sst2 sentence: great fun", "sst2 sentence: dull")):
        tokens = [*tokenizer.encode(text), tokenizer.eos_id]
        inputs[row, : len(tokens)] = tokens

    @nnx.jit
    def scores_and_reference(model, inputs):
        scores = text_to_text.make_label_scores(targets)(model, {"encoder_input_tokens": inputs})
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
    spec = importlib.util.spec_from_file_location("recipe", REPO_ROOT / "configs" / "finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = recipe.get_config("model=t5,init=random,runlocal")
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
