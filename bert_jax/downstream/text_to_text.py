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

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import batching, classification, classifier, glue
from bert_jax.downstream.encoder_init import pretrain_recipe
from bert_jax.downstream.runner import FinetuneTask, Scored
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


def label_scores(model, batch, targets: np.ndarray) -> jax.Array:
    """``[batch, num_labels]`` log-likelihood of each label's target text (``targets``,
    `label_targets`)."""
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


def stsb_predictions(model, batch, targets: np.ndarray) -> jax.Array:
    """``[batch, 2]``: the best-ranked score string parsed to a float, then the expected
    score under the model's distribution over the 26 strings."""
    scores = jnp.asarray(STSB_SCORES)
    log_likelihoods = label_scores(model, batch, targets)  # [batch, 26]
    best = scores[jnp.argmax(log_likelihoods, -1)]  # [batch]
    expected = jax.nn.softmax(log_likelihoods, -1) @ scores  # [batch]
    return jnp.stack([best, expected], -1)  # [batch, 2]


def stsb_eval_sums(predictions: jax.Array, batch) -> dict[str, jax.Array]:
    """Regression sums (`classifier.eval_sums`) of the best score of ``predictions``
    (`stsb_predictions`), and of the expected score with keys prefixed ``expected_``."""
    sums = {}
    for column, prefix in enumerate(("", "expected_")):
        column_sums = classifier.eval_sums(predictions[:, column : column + 1], batch, 1, True)
        sums.update({prefix + key: value for key, value in column_sums.items()})
    return sums


def stsb_eval_metrics(totals: dict[str, float]) -> dict[str, float]:
    """``loss`` (squared error) and ``pearson`` of the best score, as BERT's STS-B
    reports them, plus ``expected_score_mse`` / ``expected_score_pearson``."""
    best = classifier.eval_metrics(
        {k: v for k, v in totals.items() if not k.startswith("expected_")}, 1, True
    )
    expected = classifier.eval_metrics(
        {k.removeprefix("expected_"): v for k, v in totals.items() if k.startswith("expected_")},
        1,
        True,
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


class TextToTextTask(FinetuneTask):
    """The text-to-text task of ``config.finetune.task`` on the T5 of
    ``config.finetune.init``. Its outputs are the label scores ``[batch, num_labels]``
    for classification; for STS-B ``[batch, 2]`` (best score, expected score) whose first
    column `classification.official_scores` reads as the prediction."""

    def __init__(self, config: ml_collections.ConfigDict):
        name = config.finetune.task
        if name not in LABEL_WORDS:
            raise ValueError(f"text-to-text fine-tuning covers {sorted(LABEL_WORDS)}, not {name!r}")
        self.spec = glue.task_spec(name)
        self.model_config, self.tokenizer, self.initial_params = load_t5(config)
        if self.tokenizer.vocab_size != self.model_config.vocab_size:
            raise ValueError(
                f"vocabulary {config.data.vocab_path} has {self.tokenizer.vocab_size} ids, the "
                f"T5 model {self.model_config.vocab_size}"
            )
        self.splits = classification.read_splits(config)
        self.targets = label_targets(self.tokenizer, LABEL_WORDS[name])
        if self.spec.is_regression:
            check_stsb_scores(self.splits)
        self.name, self.seed = name, config.seed
        self.inputs_length = config.data.max_seq_length
        self.tokens_per_example = self.inputs_length + self.targets.shape[1]

    def create_model(self, rngs) -> t5.T5ForConditionalGeneration:
        return t5.T5ForConditionalGeneration(self.model_config, rngs=rngs)

    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        return t5_task.target_token_loss(
            model, batch, z_loss=0.0, deterministic=deterministic, rngs=rngs
        )

    def eval_fn(self, model, batch):
        if self.spec.is_regression:
            return stsb_eval_sums(self.predict_batch(model, batch), batch)
        scores = label_scores(model, batch, self.targets)
        return classifier.eval_sums(scores, batch, self.spec.num_labels, False)

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        if self.spec.is_regression:
            return stsb_eval_metrics(totals)
        return classifier.eval_metrics(totals, self.spec.num_labels, False)

    def eval_baselines(self, batches) -> dict[str, float]:
        return classifier.label_baselines(batches, self.spec.is_regression)

    def row_features(self, rows) -> EncodeTextToText:
        return EncodeTextToText(self.spec, rows, self.tokenizer, self.inputs_length, self.targets)

    def predict_batch(self, model, batch) -> jax.Array:
        if self.spec.is_regression:
            return stsb_predictions(model, batch, self.targets)
        return label_scores(model, batch, self.targets)

    def score(self, split: str, outputs: np.ndarray) -> Scored:
        return classification.score_split(self.spec, self.splits[split], outputs)
