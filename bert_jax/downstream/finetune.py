"""Fine-tuning as a `bert_jax.objectives.Task` for the one train loop.

``run_finetune(config, workdir)`` (``bert-jax finetune``) reads the task's labelled
examples, builds a model with a task head (`classifier`), loads the encoder
(``config.finetune.init``: 'pretrained' from one of our pretraining workdirs, 'hf'
from a Hugging Face directory, or 'random'), trains with
`bert_jax.train.train_and_evaluate` (in-loop evaluation from additive statistics:
loss, accuracy, F1, Matthews, Pearson), then scores the final parameters on every
evaluation split with the official metrics (`metrics`), written to
``WORKDIR/finetune_results.json``. SQuAD lives in `squad_finetune`, T5's
text-to-text form (``config.finetune.model='t5'``) in `text_to_text`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import grain
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from bert_jax import objectives, sharding, train
from bert_jax.data import pipeline
from bert_jax.downstream import classifier, glue, metrics, rotten_tomatoes
from bert_jax.downstream.encoder_init import load_encoder_source

SQUAD_TASKS = ("squad_v1", "squad_v2")
TASKS = ("rotten_tomatoes", *glue.TASKS, *SQUAD_TASKS)


def task_spec(name: str) -> glue.GlueTask:
    """GLUE table entry of ``name``; Rotten Tomatoes is scored like SST-2."""
    if name == "rotten_tomatoes":
        return dataclasses.replace(glue.get_task("sst2"), name=name, folder="")
    return glue.get_task(name)


def read_splits(config: ml_collections.ConfigDict) -> dict[str, list[glue.LabelledExample]]:
    """Training and evaluation examples of ``config.finetune.task``, keyed by split.

    ``config.finetune.max_eval_examples`` > 0 keeps only that many (the first) of
    each evaluation split, for quick runs.
    """
    finetune = config.finetune
    if finetune.task == "rotten_tomatoes":
        splits = rotten_tomatoes.load_splits(finetune.download_dir)
    else:
        spec = glue.get_task(finetune.task)
        if not finetune.data_dir and finetune.source == "tsv":
            raise ValueError(f"config.finetune.data_dir: the GLUE TSV root for {finetune.task}")
        splits = {
            split: glue.read_examples(
                spec, split, finetune.data_dir, finetune.source, finetune.tfds_name
            )
            for split in ("train", *spec.eval_splits)
        }
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


class EncodeExample(grain.transforms.Map):
    """(example index, is real) -> model features; padding copies get weight 0."""

    def __init__(self, examples, tokenizer, max_seq_length: int, regression: bool):
        self._examples, self._tokenizer = examples, tokenizer
        self._max_seq_length, self._regression = max_seq_length, regression

    def map(self, element):
        index, real = element
        example = self._examples[index]
        features = encode_pair(
            self._tokenizer, example.text_a, example.text_b, self._max_seq_length
        )
        features["label"] = np.asarray(example.label, np.float32 if self._regression else np.int32)
        features["example_weight"] = np.float32(real)
        features["example_index"] = np.int32(index if real else -1)
        return features


def indexed_dataset(num_examples: int, split: str, global_batch_size: int, seed: int):
    """Per-host (example index, is real) pairs: shuffled forever for 'train'; otherwise one
    pass in order, padded to whole global batches, each host reading its part of each batch."""
    process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} not divisible by {process_count} hosts")
    if split == "train":
        indices = np.arange(num_examples)[process_index::process_count]
        ds = grain.MapDataset.source([(int(i), True) for i in indices])
        return ds.shuffle(seed=seed).repeat()  # a new permutation every epoch
    num_batches = -(-num_examples // global_batch_size)
    padded = np.arange(num_batches * global_batch_size).reshape(num_batches, process_count, -1)
    local = padded[:, process_index].reshape(-1)
    return grain.MapDataset.source(
        [(int(min(i, num_examples - 1)), i < num_examples) for i in local]
    )


def make_dataset_fn(config, splits, tokenizer, regression: bool):
    def dataset_fn(split: str, global_batch_size: int) -> grain.IterDataset:
        name = "train" if split == "train" else eval_split_name(splits, split)
        examples = splits[name]
        ds = indexed_dataset(len(examples), split, global_batch_size, config.seed)
        ds = ds.map(EncodeExample(examples, tokenizer, config.data.max_seq_length, regression))
        per_host = global_batch_size // jax.process_count()
        return ds.to_iter_dataset().batch(per_host, drop_remainder=split == "train")

    return dataset_fn


def eval_split_name(splits: dict, split: str) -> str:
    """'eval' is the first evaluation split (MNLI: validation_matched)."""
    if split != "eval":
        return split
    return next(name for name in splits if name != "train")


def official_scores(spec: glue.GlueTask, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """The task's official metrics (and accuracy) from model outputs of one split."""
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


def create_task(config: ml_collections.ConfigDict) -> tuple[objectives.Task, dict]:
    """The classification / regression task and its examples by split."""
    spec = task_spec(config.finetune.task)
    source = load_encoder_source(config)
    model_config = classifier.FinetuneModelConfig(
        source.encoder_config,
        "regression" if spec.is_regression else "classification",
        spec.num_labels,
    )
    splits = read_splits(config)
    regression = spec.is_regression
    task = objectives.Task(
        tokenizer=source.tokenizer,
        examples=None,
        model_config=model_config,
        create_model=lambda rngs: classifier.BertForSequenceClassification(model_config, rngs=rngs),
        loss_fn=classifier.make_loss_fn(regression),
        eval_fn=classifier.make_eval_fn(spec.num_labels, regression),
        finish_eval=classifier.make_finish_eval(spec.num_labels, regression),
        eval_baselines=classifier.make_eval_baselines(regression),
        tokens_per_example=config.data.max_seq_length,
        dataset_fn=make_dataset_fn(config, splits, source.tokenizer, regression),
        initial_params=source.initial_params,
    )
    return task, splits


def predict(
    config, task: objectives.Task, params, split: str, output_fn=classifier.encoder_logits
) -> dict[str, np.ndarray]:
    """``output_fn(model, batch)`` for every example of ``split`` (all hosts), in example order.

    Returns:
      ``outputs`` (the model's output, or a dict of them, batch axis first) and
      ``example_index``, both without the padding examples.
    """
    mesh = sharding.create_mesh(config.mesh.shape)
    rules = sharding.validate_rules(config.mesh.axis_rules)
    outputs, indices = [], []
    with sharding.use_mesh(mesh, rules):
        graphdef, _, _ = train.abstract_train_state(task, optax.identity(), config.seed)
        data_sharding = sharding.data_sharding(mesh, rules)

        @jax.jit
        def forward(params, batch):
            return output_fn(nnx.merge(graphdef, params), batch)

        for batch in task.dataset_fn(split, config.train.batch_size):
            output = forward(params, pipeline.global_batch(batch, data_sharding))
            outputs.append(
                jax.tree.map(np.asarray, multihost_utils.process_allgather(output, tiled=True))
            )
            # Host-local indices, concatenated in process order = the global batch order.
            indices.append(
                np.asarray(multihost_utils.process_allgather(batch["example_index"], tiled=True))
            )
    index = np.concatenate(indices)
    real = index >= 0
    order = np.argsort(index[real], kind="stable")
    outputs = jax.tree.map(lambda *parts: np.concatenate(parts)[real][order], *outputs)
    return {"outputs": outputs, "example_index": index[real][order]}


def run_finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fine-tunes in ``workdir`` (resuming if a checkpoint exists); returns the metrics.

    Returns:
      ``train`` / ``eval`` (the train loop's last metrics), ``step``, and ``final``:
      official metrics of the final parameters per evaluation split.
    """
    if config.finetune.task in SQUAD_TASKS:
        from bert_jax.downstream import squad_finetune

        return squad_finetune.run_squad_finetune(config, workdir)
    if config.finetune.model == "t5":
        from bert_jax.downstream import text_to_text

        task, splits, output_fn = text_to_text.create_task(config)
    else:
        (task, splits), output_fn = create_task(config), classifier.encoder_logits
    spec = task_spec(config.finetune.task)
    result = train.train_and_evaluate(config, workdir, task=task)
    final = {}
    for split in (name for name in splits if name != "train"):
        predicted = predict(config, task, result["state"].params, split, output_fn)
        labels = np.array([splits[split][i].label for i in predicted["example_index"]])
        final[split] = official_scores(spec, predicted["outputs"], labels)
        logging.info("%s %s at step %d: %s", spec.name, split, result["step"], final[split])
    return write_summary(config, workdir, result, final)


def write_summary(config, workdir: str, result: dict, final: dict) -> dict:
    """Writes ``WORKDIR/finetune_results.json``; returns it with the final ``state``."""
    summary = {
        "task": config.finetune.task,
        "init": config.finetune.init,
        "step": result["step"],
        "final": final,
        "train": result.get("train", {}),
        "eval": result.get("eval", {}),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "finetune_results.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return {**summary, "state": result["state"]}
