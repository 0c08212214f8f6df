"""The downstream suite: every pretrained model of a sweep scored the same way.

``config.suite.tasks`` (configs/compare.py), comma separated:

- ``rt_probe``: few-label Rotten Tomatoes, a logistic-regression probe on frozen
  mean-pooled features (``rt_probe_N`` per ``suite.probe_sizes``; probes.py).
- ``lee``: zero-shot Lee document similarity, Spearman of cosine similarity
  (``lee_spearman``; probes.py).
- ``pairs``: encoder cells only, ALBERT Table 5's cross-evaluation: the pretraining
  sentence-pair head scored on held-out NSP-style (``nsp_accuracy``) and SOP-style
  (``sop_accuracy``) pairs, and held-out masked-LM accuracy (``mlm_accuracy``).
- ``rt_finetune``: the whole model fine-tuned on ``suite.finetune_examples`` labelled
  Rotten Tomatoes snippets (``rt_finetune_N``; few_label.py): encoder cells with a
  classification head, encoder-decoder cells text-to-text. A training run per score.

GLUE tasks and SQuAD join by themselves when their data are present:
``suite.glue_dir`` (GLUE TSV root, or a TFDS data_dir with ``suite.glue_source=tfds``)
and ``suite.squad_dir`` (train-/dev-v1.1.json, v2.0); each adds its headline metric
(``cola``: Matthews, ``mrpc``: F1, ``stsb``: Pearson, ``squad_v1``: F1, ...), fine-tuned
with configs/finetune.py's recipe for the task.

Why these: docs/compare/README.md (the pretrained-vs-random separation table).
Encoder-decoder models are probed through their encoder.
"""

from __future__ import annotations

import copy
import logging
import math

import ml_collections

from bert_jax.cli import evaluate
from bert_jax.compare import features, few_label, probes
from bert_jax.runtime import sharding

TASKS = ("rt_probe", "lee", "pairs", "rt_finetune")
EVAL_SEED = 0


def _tasks(suite: ml_collections.ConfigDict) -> list[str]:
    names = [name.strip() for name in suite.tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ValueError(f"config.suite.tasks: unknown {unknown}; choose from {TASKS}")
    return names


def _sizes(suite: ml_collections.ConfigDict) -> list[int]:
    try:
        sizes = [int(size) for size in str(suite.probe_sizes).split(",") if size.strip()]
    except ValueError:
        raise ValueError(
            f"config.suite.probe_sizes={suite.probe_sizes!r}: integers, comma separated"
        ) from None
    if not sizes or min(sizes) < 2:
        raise ValueError(f"config.suite.probe_sizes={suite.probe_sizes!r}: each at least 2")
    return sizes


def check(suite: ml_collections.ConfigDict) -> None:
    """Fails on a misspelt suite before any cell trains."""
    _tasks(suite)
    _sizes(suite)


def pair_scores(encoder: features.Encoder, config, num_examples: int) -> dict[str, float]:
    """Sentence-pair accuracy on NSP-style and SOP-style held-out pairs; MLM accuracy.

    The same held-out pairs for every cell and seed (drawn with ``EVAL_SEED``), through
    `bert_jax.cli.evaluate.pair_cross_evaluation` (``bert-jax evaluate``'s own path).
    """
    pairs_config = copy.deepcopy(config)
    pairs_config.seed = EVAL_SEED
    num_batches = math.ceil(num_examples / config.train.batch_size)
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        data_sharding = sharding.data_sharding(mesh, rules)
        pairs = evaluate.pair_cross_evaluation(
            pairs_config, encoder.graphdef, encoder.params, data_sharding, num_batches
        )
    scores = {f"{kind}_accuracy": metrics["pair_accuracy"] for kind, (metrics, _) in pairs.items()}
    scores["mlm_accuracy"] = pairs["nsp"][0]["mlm_accuracy"]
    return scores


def score(suite, config, workdir: str | None, *, recipe: str, out_dir: str):
    """``(scores, score_runs)`` of the model in ``workdir`` (None: its random init).

    Args:
      suite: ``config.suite`` of the sweep.
      config: the cell's pretraining config (model, vocabulary, data, seed).
      workdir: the cell's pretraining workdir, or None for a no-pretraining cell.
      recipe: the family's recipe (the architecture of a random init to fine-tune).
      out_dir: where fine-tuning runs go (the cell's folder).
    """
    encoder = features.Encoder(config, workdir)
    scores: dict[str, float] = {}
    runs: dict[str, list[float]] = {}
    for name in _tasks(suite):
        if name == "rt_probe":
            found, found_runs = probes.rt_probe(
                encoder,
                _sizes(suite),
                suite.probe_seeds,
                suite.probe_l2,
                suite.max_length,
                suite.download_dir,
            )
            scores.update(found)
            runs.update(found_runs)
        elif name == "lee":
            scores["lee_spearman"] = probes.lee_spearman(
                encoder, suite.max_length, suite.download_dir
            )
        elif name == "pairs" and encoder.family != "t5":
            scores.update(pair_scores(encoder, config, suite.pair_examples))
        elif name == "rt_finetune":
            size = suite.finetune_examples
            scores[f"rt_finetune_{size}"] = few_label.rt_finetune(
                config, recipe, workdir, out_dir, size, config.seed, suite.finetune_epochs
            )
    # GLUE and SQuAD join when their data are present (config.suite.glue_dir / squad_dir).
    family = config.model.name
    present = few_label.present_tasks(suite.glue_dir, suite.glue_source, suite.squad_dir, family)
    for task in present:
        if task.startswith("squad"):
            fields = {"data_dir": suite.squad_dir}
        else:
            fields = {"data_dir": suite.glue_dir, "source": suite.glue_source}
        scores[task] = few_label.finetune_score(
            config, recipe, workdir, out_dir, task, config.seed, **fields
        )
    logging.info("suite scores of %s: %s", workdir or "random init", scores)
    return scores, runs
