"""Sentence (pair) classification and regression on BERT / ALBERT: Rotten Tomatoes and GLUE.

``ClassificationTask(config)`` reads the task's labelled examples, builds the encoder with a
head (`classifier`) from ``config.finetune.init`` (`encoder_init`), and scores the
final parameters with the task's official metrics (accuracy, F1, Matthews; Pearson
and Spearman for STS-B). The in-loop evaluation comes from additive statistics
(`classifier.eval_sums`). `runner.run` does the rest.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from bert_jax.downstream import batching, classifier, glue, metrics, rotten_tomatoes
from bert_jax.downstream.encoder_init import load_encoder_source
from bert_jax.downstream.runner import FinetuneTask, Scored


def read_splits(config: ml_collections.ConfigDict) -> dict[str, list[glue.LabelledExample]]:
    """Training and evaluation examples of ``config.finetune.task``, keyed by split.

    ``config.finetune.max_eval_examples`` > 0 keeps only that many (the first) of
    each evaluation split, for quick runs; ``config.finetune.max_train_examples`` > 0
    a random that many of the training split (drawn with ``config.seed``: few labels).
    """
    finetune = config.finetune
    if finetune.task == "rotten_tomatoes":
        splits = rotten_tomatoes.load_splits(finetune.download_dir)
    else:
        spec = glue.task_spec(finetune.task)
        if not finetune.data_dir and finetune.source == "tsv":
            raise ValueError(f"config.finetune.data_dir: the GLUE TSV root for {finetune.task}")
        splits = {
            split: glue.read_examples(
                spec, split, finetune.data_dir, finetune.source, finetune.tfds_name
            )
            for split in ("train", *spec.eval_splits)
        }
    if finetune.max_train_examples > 0:
        train = splits["train"]
        if finetune.max_train_examples > len(train):
            raise ValueError(
                f"config.finetune.max_train_examples={finetune.max_train_examples} exceeds the "
                f"{len(train)} training examples of {finetune.task}"
            )
        chosen = np.random.default_rng(config.seed).choice(
            len(train), finetune.max_train_examples, replace=False
        )
        splits["train"] = [train[i] for i in sorted(chosen)]
    if finetune.max_eval_examples > 0:
        for split in splits:
            if split != "train":
                splits[split] = splits[split][: finetune.max_eval_examples]
    return splits


def encode_pair(tokenizer, text_a: str, text_b: str | None, max_seq_length: int) -> dict:
    """``[CLS] a [SEP] (b [SEP])`` padded to max_seq_length; the longer side is cut first."""
    tokens_a = list(tokenizer.encode(text_a))
    tokens_b = list(tokenizer.encode(text_b)) if text_b is not None else []
    budget = max_seq_length - (3 if text_b is not None else 2)
    while len(tokens_a) + len(tokens_b) > budget:  # BERT's _truncate_seq_pair
        (tokens_a if len(tokens_a) >= len(tokens_b) else tokens_b).pop()
    ids = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id]
    segments = [0] * len(ids)
    if text_b is not None:
        ids += [*tokens_b, tokenizer.sep_id]
        segments += [1] * (len(tokens_b) + 1)
    padding = max_seq_length - len(ids)
    return {
        "input_ids": np.array(ids + [tokenizer.pad_id] * padding, np.int32),  # [L]
        "input_mask": np.array([1] * len(ids) + [0] * padding, np.int32),
        "segment_ids": np.array(segments + [0] * padding, np.int32),
    }


class EncodeExample(batching.RowFeatures):
    """One labelled example -> encoder features and its label (float for regression)."""

    def __init__(self, examples, tokenizer, max_seq_length: int, regression: bool):
        self._examples, self._tokenizer = examples, tokenizer
        self._max_seq_length, self._regression = max_seq_length, regression

    def features(self, index: int) -> dict[str, np.ndarray]:
        example = self._examples[index]
        features = encode_pair(
            self._tokenizer, example.text_a, example.text_b, self._max_seq_length
        )
        features["label"] = np.asarray(example.label, np.float32 if self._regression else np.int32)
        return features


def official_scores(spec: glue.GlueTask, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """The task's official metrics (and accuracy) from model outputs of one split:
    class scores ``[N, num_labels]``, or for regression a predicted score in column 0."""
    if spec.is_regression:
        scores = outputs[:, 0]
        return {
            "pearson": metrics.pearson(scores, labels),
            "spearman": metrics.spearman(scores, labels),
        }
    predictions = np.argmax(outputs, -1)
    out = {"accuracy": metrics.accuracy(predictions, labels)}
    if "f1" in spec.metrics:
        out["f1"] = metrics.f1_score(predictions, labels)
    if "matthews_corr" in spec.metrics:
        out["matthews_corr"] = metrics.matthews_corrcoef(predictions, labels)
    return out


def score_split(spec: glue.GlueTask, examples: list[glue.LabelledExample], outputs) -> Scored:
    """`official_scores` of one split's outputs against its examples' gold labels."""
    labels = np.array([example.label for example in examples])
    return Scored(official_scores(spec, outputs, labels))


class ClassificationTask(FinetuneTask):
    """The classification / regression task of ``config.finetune.task``: the encoder of
    ``config.finetune.init`` with a head (`classifier.BertForSequenceClassification`)."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = glue.task_spec(config.finetune.task)
        self.regression = self.spec.is_regression
        source = load_encoder_source(config)
        self.model_config = classifier.FinetuneModelConfig(
            source.encoder_config,
            "regression" if self.regression else "classification",
            self.spec.num_labels,
        )
        self.splits = read_splits(config)
        self.name, self.seed = self.spec.name, config.seed
        self.tokenizer, self.initial_params = source.tokenizer, source.initial_params
        self.tokens_per_example = self.max_seq_length = config.data.max_seq_length

    def create_model(self, rngs) -> classifier.BertForSequenceClassification:
        return classifier.BertForSequenceClassification(self.model_config, rngs=rngs)

    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        return classifier.classification_loss(
            model, batch, regression=self.regression, deterministic=deterministic, rngs=rngs
        )

    def eval_fn(self, model, batch):
        logits = classifier.encoder_logits(model, batch)
        return classifier.eval_sums(logits, batch, self.spec.num_labels, self.regression)

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return classifier.eval_metrics(totals, self.spec.num_labels, self.regression)

    def eval_baselines(self, batches) -> dict[str, float]:
        return classifier.label_baselines(batches, self.regression)

    def row_features(self, rows) -> EncodeExample:
        return EncodeExample(rows, self.tokenizer, self.max_seq_length, self.regression)

    def predict_batch(self, model, batch):
        return classifier.encoder_logits(model, batch)

    def score(self, split: str, outputs: np.ndarray) -> Scored:
        return score_split(self.spec, self.splits[split], outputs)
