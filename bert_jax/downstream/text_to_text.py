"""T5 fine-tuning in text-to-text form (Raffel et al. 2020): "sst2 sentence: ..." -> "positive".

Inputs are ``"<task> <field>: <text> [<field>: <text>]"`` (TFDS field names) plus
</s>; targets are the label word plus </s>. Training is the teacher-forced
cross-entropy on the target tokens (the loss of T5 pretraining). Evaluation is
rank classification: every label word is scored by its log-likelihood and the best
one is the prediction, so predictions are always valid labels and accuracy, F1 and
Matthews come from the same confusion matrix as the BERT classifier's.
Classification tasks only (STS-B regression and SQuAD are BERT-only here).

The model and its tokenizer come from ``config.finetune.init``: 'pretrained' (the
latest checkpoint of a T5 pretraining workdir, hyperparameters read from it),
'hf' (a Hugging Face T5 directory exported with our vocabulary) or 'random' (the
architecture of the recipe ``config.finetune.pretrain_config``).
"""

from __future__ import annotations

import dataclasses

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import evaluate, objectives, sharding
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.downstream import classifier, finetune, glue
from bert_jax.downstream.encoder_init import checkpoint_fingerprint, pretrain_recipe
from bert_jax.models import t5 as models_t5
from bert_jax.objectives import t5 as objectives_t5

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
}


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


class EncodeTextToText(grain.transforms.Map):
    """(example index, is real) -> T5 features (t5x names), label and weights."""

    def __init__(self, spec, examples, tokenizer, inputs_length: int, targets: np.ndarray):
        self._spec, self._examples, self._tokenizer = spec, examples, tokenizer
        self._inputs_length, self._targets = inputs_length, targets

    def map(self, element):
        index, real = element
        example = self._examples[index]
        tokens = self._tokenizer.encode(input_text(self._spec, example))
        tokens = [*tokens[: self._inputs_length - 1], self._tokenizer.eos_id]
        inputs = np.zeros(self._inputs_length, np.int32)
        inputs[: len(tokens)] = tokens
        targets = self._targets[example.label]
        return {
            "encoder_input_tokens": inputs,  # [inputs_length]
            "decoder_target_tokens": targets,  # [targets_length]
            "decoder_input_tokens": np.concatenate([[0], targets[:-1]]).astype(np.int32),
            "decoder_loss_weights": (targets > 0).astype(np.float32),
            "label": np.int32(example.label),
            "example_weight": np.float32(real),
            "example_index": np.int32(index if real else -1),
        }


def make_label_scores(targets: np.ndarray):
    """``(model, batch) -> [batch, num_labels]`` log-likelihood of each label's target text."""

    def label_scores(model, batch) -> jax.Array:
        inputs = batch["encoder_input_tokens"]
        encoded = model.encode(inputs)  # [batch, inputs_length, embed]
        scores = []
        for label_target in targets:  # a handful of labels: one decoder pass each
            target = jnp.broadcast_to(label_target, (inputs.shape[0], label_target.size))
            decoder_inputs = jnp.pad(target[:, :-1], ((0, 0), (1, 0)))  # shift right, 0 = start
            logits = model.decode(encoded, inputs, decoder_inputs)  # [batch, targets, vocab]
            log_probs = jax.nn.log_softmax(logits, -1)
            token_scores = jnp.take_along_axis(log_probs, target[..., None], -1)[..., 0]
            scores.append(jnp.sum(token_scores * (target > 0), -1))  # [batch]
        return jnp.stack(scores, -1)  # [batch, num_labels]

    return label_scores


def load_t5(config: ml_collections.ConfigDict):
    """(T5Config, tokenizer, initial_params) of ``config.finetune.init``."""
    pretrain = pretrain_recipe(config)
    tokenizer = Tokenizer(config.data.vocab_path, extra_ids=pretrain.objective.extra_ids)
    dropout = {"dropout_rate": config.model.dropout_rate}
    init = config.finetune.init
    if init == "random":
        for field in ("d_model", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers"):
            if config.model.get(field) is not None:
                pretrain.model[field] = config.model[field]
        model_config = objectives_t5.model_config(pretrain, tokenizer.vocab_size)
        return dataclasses.replace(model_config, **dropout), tokenizer, None
    if init == "hf":
        from bert_jax.export import t5 as export_t5

        model_config, state = export_t5.load_hf(config.finetune.hf_dir)
        return dataclasses.replace(model_config, **dropout), tokenizer, lambda fresh: state
    if init != "pretrained":
        raise ValueError(f"config.finetune.init={init!r}; choose pretrained, hf or random")
    workdir = config.finetune.init_workdir
    saved = checkpoint_t5_config(workdir)
    task = dataclasses.replace(
        objectives.get_task(pretrain),
        model_config=saved,
        create_model=lambda rngs: models_t5.T5ForConditionalGeneration(saved, rngs=rngs),
    )

    def initial_params(fresh):
        mesh = sharding.create_mesh(config.mesh.shape)
        with sharding.use_mesh(mesh, sharding.validate_rules(config.mesh.axis_rules)):
            _, params, _ = evaluate.restore_params(pretrain, workdir, task, mesh)
        return params  # the whole encoder-decoder: the LM head is the task head

    return dataclasses.replace(saved, **dropout), tokenizer, initial_params


def checkpoint_t5_config(workdir: str) -> models_t5.T5Config:
    """The T5Config saved with the latest checkpoint of a T5 pretraining workdir."""
    kind, fields, _ = checkpoint_fingerprint(workdir)
    if kind != "T5Config":
        raise ValueError(f"{workdir} holds a {kind} model; model=t5 fine-tunes T5 checkpoints")
    return models_t5.T5Config(**fields)


def create_task(config: ml_collections.ConfigDict):
    """The text-to-text task, its examples by split, and the label-scoring function."""
    name = config.finetune.task
    if name not in LABEL_WORDS:
        raise ValueError(f"text-to-text fine-tuning covers {sorted(LABEL_WORDS)}, not {name!r}")
    spec = finetune.task_spec(name)
    model_config, tokenizer, initial_params = load_t5(config)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(
            f"vocabulary {config.data.vocab_path} has {tokenizer.vocab_size} ids, the T5 model "
            f"{model_config.vocab_size}"
        )
    splits = finetune.read_splits(config)
    targets = label_targets(tokenizer, LABEL_WORDS[name])
    label_scores = make_label_scores(targets)

    def dataset_fn(split: str, global_batch_size: int) -> grain.IterDataset:
        examples = splits["train" if split == "train" else finetune.eval_split_name(splits, split)]
        ds = finetune.indexed_dataset(len(examples), split, global_batch_size, config.seed)
        encode = EncodeTextToText(spec, examples, tokenizer, config.data.max_seq_length, targets)
        per_host = global_batch_size // jax.process_count()
        return ds.map(encode).to_iter_dataset().batch(per_host, drop_remainder=split == "train")

    task = objectives.Task(
        tokenizer=tokenizer,
        examples=None,
        model_config=model_config,
        create_model=lambda rngs: models_t5.T5ForConditionalGeneration(model_config, rngs=rngs),
        loss_fn=objectives_t5.make_loss_fn(0.0),
        eval_fn=classifier.make_eval_fn(spec.num_labels, False, label_scores),
        finish_eval=classifier.make_finish_eval(spec.num_labels, False),
        eval_baselines=classifier.make_eval_baselines(False),
        tokens_per_example=config.data.max_seq_length + targets.shape[1],
        dataset_fn=dataset_fn,
        initial_params=initial_params,
    )
    return task, splits, label_scores
