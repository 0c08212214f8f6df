"""Fine-tuning a cell's model: few-label Rotten Tomatoes, and GLUE / SQuAD when present.

The whole model is fine-tuned through the one downstream pipeline
(`bert_jax.downstream.finetune`, configs/finetune.py): encoder models with a head,
encoder-decoder models text-to-text, as the T5 paper fine-tunes. ``rt_finetune``: N
labelled snippets (``train_examples=N``, drawn with the seed), accuracy on the full
validation split. ``present_tasks``: the GLUE tasks whose TSV folders (or TFDS
``glue/<task>`` directories) and the SQuAD versions whose json files are in the suite's
data directories; each is scored by its official headline metric. Costlier than the
probes: a training run per score.
"""

from __future__ import annotations

import os

import ml_collections

from bert_jax.downstream import finetune, glue
from bert_jax.runtime import run_config

_MODEL_FIELDS = {
    "bert": ("size", "num_layers", "hidden_size", "num_heads", "intermediate_size"),
    "t5": ("size", "variant", "d_model", "num_heads", "d_ff", "num_encoder_layers",
           "num_decoder_layers"),
}  # fmt: skip


def finetune_config(
    pretrain: ml_collections.ConfigDict,
    pretrain_recipe: str,
    workdir: str | None,
    seed: int,
    args: str,
) -> ml_collections.ConfigDict:
    """The fine-tuning config (configs/finetune.py:ARGS) for the model pretrained with
    ``pretrain`` in ``workdir``; ``workdir=None`` fine-tunes its random initialisation."""
    model = "t5" if pretrain.model.name == "t5" else "bert"
    init = "random" if workdir is None else "pretrained"
    config = run_config.load_recipe(f"configs/finetune.py:init={init},model={model},{args}")
    config.seed = seed
    config.data.vocab_path = pretrain.data.vocab_path
    config.mesh = pretrain.mesh
    config.finetune.pretrain_config = pretrain_recipe
    if workdir is not None:
        config.finetune.init_workdir = workdir
    for field in _MODEL_FIELDS[model]:  # init=random: the cell's architecture
        if field in config.model and field in pretrain.model:
            config.model[field] = pretrain.model[field]
    return config


def headline(task: str, final: dict) -> float:
    """The official headline metric of the first evaluation split."""
    split = next(iter(final))
    if task.startswith("squad"):
        return float(final[split]["f1"])
    return float(final[split][glue.task_spec(task).metrics[0]])


def finetune_score(
    pretrain, pretrain_recipe, workdir, out_dir, task, seed, args="", name=None, **finetune_fields
) -> float:
    """Fine-tunes on ``task`` (configs/finetune.py ``task=`` plus ``args``, ``config.finetune``
    fields such as ``data_dir`` from ``finetune_fields``) in ``out_dir/<name>_seed<seed>``
    (``name`` defaults to the task); returns its headline metric."""
    spec = f"task={task},{args}" if args else f"task={task}"
    config = finetune_config(pretrain, pretrain_recipe, workdir, seed, spec)
    for field, value in finetune_fields.items():
        config.finetune[field] = value
    directory = os.path.join(out_dir, f"{name or task}_seed{seed}")
    return headline(task, finetune.run_finetune(config, directory)["final"])


def rt_finetune(pretrain, pretrain_recipe, workdir, out_dir, size, seed, epochs=10) -> float:
    """Validation accuracy after fine-tuning on ``size`` labelled snippets (seed ``seed``)."""
    return finetune_score(
        pretrain, pretrain_recipe, workdir, out_dir, "rotten_tomatoes", seed,
        args=f"train_examples={size},epochs={epochs}", name=f"rt_finetune_{size}",
    )  # fmt: skip


def present_tasks(glue_dir: str, glue_source: str, squad_dir: str, family: str) -> list[str]:
    """GLUE tasks and SQuAD versions whose data are in these directories ('' : none)."""
    found = []
    if glue_dir:
        for name, spec in glue.TASKS.items():
            if glue_source == "tfds":
                present = os.path.isdir(os.path.join(glue_dir, "glue", name))
            else:
                present = os.path.exists(os.path.join(glue_dir, spec.folder, "train.tsv"))
            if present:
                found.append(name)
    if squad_dir and family != "t5":  # T5 fine-tunes text-to-text, not span extraction
        for task, version in (("squad_v1", "v1.1"), ("squad_v2", "v2.0")):
            files = (f"train-{version}.json", f"dev-{version}.json")
            if all(os.path.exists(os.path.join(squad_dir, name)) for name in files):
                found.append(task)
    return found
