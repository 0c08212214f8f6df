"""Few-label Rotten Tomatoes fine-tuning of a cell's model: the suite's ``rt_finetune``.

The whole model is fine-tuned on N labelled snippets (``configs/finetune.py`` with
``train_examples=N``, drawn with the seed) through the one downstream pipeline
(`bert_jax.downstream.finetune`): encoder models with a classification head,
encoder-decoder models text-to-text, as the T5 paper fine-tunes. Accuracy on the full
validation split. Costlier than the probes (a training run per score).
"""

from __future__ import annotations

import os

import ml_collections

from bert_jax import run_config
from bert_jax.downstream import finetune

_MODEL_FIELDS = {
    "bert": ("size", "num_layers", "hidden_size", "num_heads", "intermediate_size"),
    "t5": ("size", "variant", "d_model", "num_heads", "d_ff", "num_encoder_layers",
           "num_decoder_layers"),
}  # fmt: skip


def finetune_config(
    pretrain: ml_collections.ConfigDict,
    pretrain_recipe: str,
    workdir: str | None,
    size: int,
    seed: int,
    epochs: int,
) -> ml_collections.ConfigDict:
    """The fine-tuning config for the model pretrained with ``pretrain`` in ``workdir``.

    ``workdir=None`` fine-tunes the model's random initialisation (no pretraining).
    """
    family = pretrain.model.name
    model = "t5" if family == "t5" else "bert"
    init = "random" if workdir is None else "pretrained"
    config = run_config.load_recipe(
        f"configs/finetune.py:task=rotten_tomatoes,init={init},model={model},"
        f"train_examples={size},epochs={epochs}"
    )
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


def rt_finetune(
    pretrain: ml_collections.ConfigDict,
    pretrain_recipe: str,
    workdir: str | None,
    out_dir: str,
    size: int,
    seed: int,
    epochs: int = 10,
) -> float:
    """Validation accuracy after fine-tuning on ``size`` labelled snippets (seed ``seed``)."""
    config = finetune_config(pretrain, pretrain_recipe, workdir, size, seed, epochs)
    directory = os.path.join(out_dir, f"rt_finetune_{size}_seed{seed}")
    summary = finetune.run_finetune(config, directory)
    return float(summary["final"]["validation"]["accuracy"])
