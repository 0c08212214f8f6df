"""T5 fine-tuning in text-to-text form (Raffel et al. 2020): "sst2 sentence: ..." -> "positive".

Inputs are ``"<task> <field>: <text> [<field>: <text>]"`` (TFDS field names) plus
</s>; targets are the label word plus </s>. Training is the teacher-forced
cross-entropy on the target tokens (the loss of T5 pretraining). Evaluation is
rank classification: every label word is scored by its log-likelihood and the best
one is the prediction, so predictions are always valid labels and accuracy, F1 and
Matthews come from the same confusion matrix as the BERT classifier's.

STS-B is cast as T5 does (Raffel et al. 2020, section 2.4): the score rounded to the
nearest 0.2 and written with one decimal ("3.8"), 26 target strings "0.0" .. "5.0".
Rank classification over those 26 strings picks the prediction, which is parsed back
to a float; Pearson and Spearman are taken against the unrounded gold scores. SQuAD
is BERT-only here.

The model and its tokenizer come from ``config.finetune.init`` (`models.loading`):
'pretrained' (the latest checkpoint of a T5 pretraining workdir, hyperparameters and
vocabulary read from it),
'hf' (a Hugging Face T5 directory exported with our vocabulary) or 'random' (the
architecture of the recipe ``config.finetune.pretrain_config``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import objectives
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import batching, classification, classifier, glue
from bert_jax.downstream.encoder_init import pretrain_recipe
from bert_jax.downstream.runner import FinetuneTask
from bert_jax.models import t5
from bert_jax.models.loading import load_model
from bert_jax.objectives import t5_task

STSB_WORDS = tuple(f"{step / 5:.1f}" for step in range(26))  # "0.0", "0.2", ..., "5.0"
STSB_SCORES = np.array([float(word) for word in STSB_WORDS], np.float32)  # parsed back
LABEL_WORDS = {
    "rotten_tomatoes": ("negative", "positive"),  # T5's SST-2 words
    "sst2": ("negative", "positive"),
    "cola": ("unacceptable", "acceptable"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "stsb": STSB_WORDS,  # regression as 26 classes, see stsb_target_index
}


def stsb_target_index(score: float) -> int:
    """Index in `STSB_WORDS` of ``score`` rounded to the nearest 0.2, as T5 rounds.

    T5's preprocessor writes ``tf.round(label * 5) / 5`` of the float32 label:
    halves go to the even multiple (0.5 -> "0.4", 0.7 -> "0.8", 4.9 -> "4.8"). The
    same float32 arithmetic here gives the same strings.

    Raises:
      ValueError: ``score`` is outside STS-B's [0, 5].
    """
    if not 0.0 <= score <= 5.0:
        raise ValueError(f"STS-B score {score} is outside [0, 5]")
    return int(np.round(np.float32(score) * np.float32(5)))


def input_text(spec: glue.GlueTask, example: glue.LabelledExample) -> str:
    """``"sst2 sentence: ..."`` / ``"rte sentence1: ... sentence2: ..."``."""
    text = f"{spec.name} {spec.tfds_text_a}: {example.text_a}"
    if example.text_b is not None:
        text += f" {spec.tfds_text_b}: {example.text_b}"
    return text


def label_targets(tokenizer, words) -> np.ndarray:
    """int32 ``[num_labels, targets_length]``: each label word + </s>, zero padded."""
    encoded = [[*tokenizer.encode(word), tokenizer.eos_id] for word in words]
    targets = np.zeros((len(words), max(map(len, encoded))), np.int32)
    for row, tokens in enumerate(encoded):
        targets[row, : len(tokens)] = tokens
    return targets


class EncodeTextToText(batching.RowFeatures):
    """One labelled example -> T5 features (t5x names) and its label.

    ``targets`` holds one row per label word; STS-B (``spec.is_regression``) trains on
    the row of its rounded score and keeps the unrounded float score as ``label``.
    """

    def __init__(self, spec, examples, tokenizer, inputs_length: int, targets: np.ndarray):
        self._spec, self._examples, self._tokenizer = spec, examples, tokenizer
        self._inputs_length, self._targets = inputs_length, targets

    def features(self, index: int) -> dict[str, np.ndarray]:
        example = self._examples[index]
        tokens = self._tokenizer.encode(input_text(self._spec, example))
        tokens = [*tokens[: self._inputs_length - 1], self._tokenizer.eos_id]
        inputs = np.zeros(self._inputs_length, np.int32)
        inputs[: len(tokens)] = tokens
        if self._spec.is_regression:
            targets = self._targets[stsb_target_index(example.label)]
            label = np.float32(example.label)
        else:
            targets, label = self._targets[example.label], np.int32(example.label)
        return {
            "encoder_input_tokens": inputs,  # [inputs_length]
            "decoder_target_tokens": targets,  # [targets_length]
            "decoder_input_tokens": np.concatenate([[0], targets[:-1]]).astype(np.int32),
            "decoder_loss_weights": (targets > 0).astype(np.float32),
            "label": label,
        }


def make_label_scores(targets: np.ndarray):
    """``(model, batch) -> [batch, num_labels]`` log-likelihood of each label's target text."""

    def label_scores(model, batch) -> jax.Array:
        inputs = batch["encoder_input_tokens"]
        encoded = model.encode(inputs)  # [batch, inputs_length, embed]

        def score(label_target: jax.Array) -> jax.Array:  # [targets_length] -> [batch]
            target = jnp.broadcast_to(label_target, (inputs.shape[0], label_target.size))
            decoder_inputs = jnp.pad(target[:, :-1], ((0, 0), (1, 0)))  # shift right, 0 = start
            logits = model.decode(encoded, inputs, decoder_inputs)  # [batch, targets, vocab]
            log_probs = jax.nn.log_softmax(logits, -1)
            token_scores = jnp.take_along_axis(log_probs, target[..., None], -1)[..., 0]
            return jnp.sum(token_scores * (target > 0), -1)

        # One decoder pass per label, compiled once (STS-B has 26 labels).
        return jax.lax.map(score, jnp.asarray(targets)).T  # [batch, num_labels]

    return label_scores


def make_stsb_predictions(label_scores):
    """``(model, batch) -> [batch, 2]``: the best-ranked score string parsed to a float,
    then the expected score under the model's distribution over the 26 strings."""
    scores = jnp.asarray(STSB_SCORES)

    def stsb_predictions(model, batch) -> jax.Array:
        log_likelihoods = label_scores(model, batch)  # [batch, 26]
        best = scores[jnp.argmax(log_likelihoods, -1)]  # [batch]
        expected = jax.nn.softmax(log_likelihoods, -1) @ scores  # [batch]
        return jnp.stack([best, expected], -1)  # [batch, 2]

    return stsb_predictions


def make_stsb_eval_fn(stsb_predictions):
    """Regression sums (`classifier.make_eval_fn`) of the best score, and of the expected
    score with keys prefixed ``expected_``."""

    def eval_fn(model, batch):
        predictions = stsb_predictions(model, batch)  # [batch, 2]
        sums = {}
        for column, prefix in enumerate(("", "expected_")):
            column_eval = classifier.make_eval_fn(
                1, True, lambda *_, column=column: predictions[:, column : column + 1]
            )
            sums.update({prefix + key: value for key, value in column_eval(model, batch).items()})
        return sums

    return eval_fn


def stsb_finish_eval(totals: dict[str, float]) -> dict[str, float]:
    """``loss`` (squared error) and ``pearson`` of the best score, as BERT's STS-B
    reports them, plus ``expected_score_mse`` / ``expected_score_pearson``."""
    finish = classifier.make_finish_eval(1, True)
    best = finish({k: v for k, v in totals.items() if not k.startswith("expected_")})
    expected = finish(
        {k.removeprefix("expected_"): v for k, v in totals.items() if k.startswith("expected_")}
    )
    return {
        **best,
        "expected_score_mse": expected["loss"],
        "expected_score_pearson": expected["pearson"],
    }


def check_stsb_scores(splits: dict[str, list[glue.LabelledExample]]) -> None:
    """Raises ValueError naming the example whose score cannot be a T5 target."""
    for split, examples in splits.items():
        for example in examples:
            try:
                stsb_target_index(example.label)
            except ValueError as error:
                raise ValueError(f"{split} example {example.guid}: {error}") from None


def load_t5(config: ml_collections.ConfigDict):
    """(T5Config, tokenizer, initial_params) of ``config.finetune.init``."""
    dropout = {"dropout_rate": config.model.dropout_rate}
    init = config.finetune.init
    if init == "pretrained":
        loaded = load_model(
            "pretrained",
            config.finetune.init_workdir,
            mesh_config=config.mesh,
            expect=(t5.T5Config, "model=t5 fine-tunes T5 checkpoints"),
        )
        # The vocabulary the checkpoint records; the recipe's for checkpoints before the record.
        tokenizer = loaded.tokenizer or _recipe_tokenizer(config, pretrain_recipe(config))

        def initial_params(fresh):
            return loaded.load_params()  # the whole encoder-decoder: the LM head is the task head

        return dataclasses.replace(loaded.model_config, **dropout), tokenizer, initial_params
    pretrain = pretrain_recipe(config)
    tokenizer = _recipe_tokenizer(config, pretrain)
    if init == "random":
        for field in ("d_model", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers"):
            if config.model[field] is not None:
                pretrain.model[field] = config.model[field]
        loaded = load_model("random", run_config=pretrain, vocab_size=tokenizer.vocab_size)
        return dataclasses.replace(loaded.model_config, **dropout), tokenizer, None
    if init == "hf":
        loaded = load_model("hf", config.finetune.hf_dir, kinds=("t5",))
        params = loaded.load_params()
        return dataclasses.replace(loaded.model_config, **dropout), tokenizer, lambda fresh: params
    raise ValueError(f"config.finetune.init={init!r}; choose pretrained, hf or random")


def _recipe_tokenizer(config, pretrain) -> Tokenizer:
    """``config.data.vocab_path`` with the sentinels of the pretraining recipe."""
    return Tokenizer(config.data.vocab_path, extra_ids=pretrain.objective.extra_ids)


def build_task(config: ml_collections.ConfigDict) -> FinetuneTask:
    """The text-to-text task of ``config.finetune.task``. Its outputs are the label
    scores ``[batch, num_labels]`` for classification; for STS-B ``[batch, 2]`` (best
    score, expected score) whose first column `classification.official_scores` reads
    as the prediction."""
    name = config.finetune.task
    if name not in LABEL_WORDS:
        raise ValueError(f"text-to-text fine-tuning covers {sorted(LABEL_WORDS)}, not {name!r}")
    spec = glue.task_spec(name)
    model_config, tokenizer, initial_params = load_t5(config)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(
            f"vocabulary {config.data.vocab_path} has {tokenizer.vocab_size} ids, the T5 model "
            f"{model_config.vocab_size}"
        )
    splits = classification.read_splits(config)
    targets = label_targets(tokenizer, LABEL_WORDS[name])
    label_scores = make_label_scores(targets)
    if spec.is_regression:
        check_stsb_scores(splits)
        outputs_fn = make_stsb_predictions(label_scores)
        eval_fn, finish_eval = make_stsb_eval_fn(outputs_fn), stsb_finish_eval
    else:
        outputs_fn = label_scores
        eval_fn = classifier.make_eval_fn(spec.num_labels, False, label_scores)
        finish_eval = classifier.make_finish_eval(spec.num_labels, False)
    inputs_length = config.data.max_seq_length
    objective = objectives.Task(
        tokenizer=tokenizer,
        model_config=model_config,
        create_model=lambda rngs: t5.T5ForConditionalGeneration(model_config, rngs=rngs),
        loss_fn=t5_task.make_loss_fn(0.0),
        eval_fn=eval_fn,
        finish_eval=finish_eval,
        eval_baselines=classifier.make_eval_baselines(spec.is_regression),
        tokens_per_example=inputs_length + targets.shape[1],
        batches=batching.make_batches(
            splits,
            lambda rows: EncodeTextToText(spec, rows, tokenizer, inputs_length, targets),
            config.seed,
        ),
        initial_params=initial_params,
    )
    return FinetuneTask(
        name, objective, splits, outputs_fn, classification.make_score(spec, splits)
    )
