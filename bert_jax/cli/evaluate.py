"""``bert-jax evaluate``: score the latest checkpoint of a workdir on held-out data.

For the BERT family this is the ALBERT paper's intrinsic cross-evaluation
(Lan et al., Table 5): the one sentence-pair head of the checkpoint is scored
on next-sentence pairs (random next segment from another document) *and* on
sentence-order pairs (two consecutive segments, in both orders; a checkpoint trained
with masked LM only has an untrained head, scored as Table 5's "None" row), beside the
masked-LM figures on each: all selected positions, each input kind (``[MASK]``,
random token, kept; see objectives/bert_eval.py) and the training-unigram
baselines of the ``[MASK]`` targets. T5 checkpoints report target loss and accuracy.
Results are printed and written to ``WORKDIR/evaluate.json``. Without ``--config`` the
run config the checkpoint records is used (its held-out data, vocabulary and mesh).
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections

from bert_jax import objectives
from bert_jax.checkpointing.inference import older_checkpoint_message, restore_for_inference
from bert_jax.checkpointing.workdir import saved_run_config
from bert_jax.objectives import bert_eval
from bert_jax.runtime import sharding
from bert_jax.training import loop

PAIR_TASKS = ("nsp", "sop")


def _variant(config: ml_collections.ConfigDict, pair_task: str) -> ml_collections.ConfigDict:
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.objective.sentence_pair_task = pair_task
    return variant


def pair_cross_evaluation(config, graphdef, params, data_sharding, num_batches: int):
    """``{pair task: (metrics, batches)}``: the one pair head on NSP- and SOP-style pairs.

    The head is scored whatever the checkpoint trained it on, also with
    ``sentence_pair_task=none`` (masked LM only: an untrained head, ALBERT Table 5's
    "None" row), so the step is built from the pair variants' task, never ``config``'s.

    Args:
      config: a BERT-family run config; its ``seed`` fixes which held-out pairs are drawn.
      graphdef: the checkpoint's model graph (``checkpointing.inference``).
      params: the checkpoint's parameters.
      data_sharding: the batch sharding on the mesh the parameters live on.
      num_batches: held-out batches of ``config.train.batch_size`` pairs per task.
    """
    out, eval_step = {}, None
    for pair_task in PAIR_TASKS:
        variant = _variant(config, pair_task)
        variant_task = objectives.get_task(variant)
        if eval_step is None:  # both variants have a pair task: one step serves both
            eval_step = jax.jit(loop.make_eval_step(variant_task, graphdef))
        batches = loop.eval_batches(variant, variant_task, num_batches)
        metrics = loop.evaluate(eval_step, params, batches, data_sharding, variant_task)
        out[pair_task] = (metrics, batches)
    return out


def evaluate_checkpoint(config: ml_collections.ConfigDict | None, workdir: str) -> dict[str, float]:
    """Scores the latest checkpoint; see the module docstring.

    Args:
      config: the run config (held-out data, batch size, mesh); None takes the one the
        checkpoint records (checkpoints written before it was recorded need it given).
      workdir: the pretraining workdir.
    """
    if config is None:
        config = saved_run_config(workdir)
        if config is None:
            raise ValueError(older_checkpoint_message(workdir))
    task = objectives.get_task(config)
    # The task's model must be the checkpoint's (every field that changes the weights).
    with restore_for_inference(workdir, config.mesh, model_config=task.model_config) as restored:
        graphdef, params, step = restored.graphdef, restored.params, restored.step
        data_sharding = sharding.data_sharding(restored.mesh, restored.rules)
        results: dict[str, float] = {"step": step}
        if config.model.name in ("bert", "albert"):
            train_counts = bert_eval.training_unigram_counts(config.data, task.tokenizer)
            pairs = pair_cross_evaluation(
                config, graphdef, params, data_sharding, config.train.eval_batches
            )
            for pair_task, (metrics, batches) in pairs.items():
                figures = bert_eval.held_out_baselines(train_counts, batches, task.tokenizer)
                results[f"{pair_task}_accuracy"] = metrics["pair_accuracy"]
                results[f"{pair_task}_majority_accuracy"] = figures["pair_majority_accuracy"]
                results[f"{pair_task}_pairs"] = sum(len(b["pair_labels"]) for b in batches)
                # Masked-LM figures on this variant's pairs: all selected positions, each input
                # kind ([MASK], random, kept) and the unigram baselines of the [MASK] targets.
                for key, value in {**metrics, **figures}.items():
                    if key.startswith(("mlm_", "mask_")):
                        results[f"{key}_on_{pair_task}_pairs"] = value
        else:
            eval_step = jax.jit(loop.make_eval_step(task, graphdef))
            batches = loop.eval_batches(config, task, config.train.eval_batches)
            results.update(loop.evaluate(eval_step, params, batches, data_sharding, task))
    logging.info("evaluation of %s at step %d: %s", workdir, step, results)
    if jax.process_index() == 0:
        path = os.path.join(workdir, "evaluate.json")
        with open(f"{path}.partial", "w") as f:  # renamed when whole: Ctrl-C leaves no half
            json.dump(results, f, indent=2)
        os.replace(f"{path}.partial", path)
        for key, value in results.items():
            print(
                f"{key:<40}{value:>10.4f}" if isinstance(value, float) else f"{key:<40}{value:>10}"
            )
    return results
