"""The one pretraining loop: every objective, any mesh, resumable.

Reads top to bottom: mesh -> task (tokenizer, example builder, model, loss) ->
optimizer -> abstract state and its shardings -> init or restore -> jitted
steps (step.py, with gradient accumulation) -> loop with logging (speed,
MFU), evaluation and checkpoints.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bert_jax import objectives
from bert_jax.checkpointing import lock
from bert_jax.checkpointing.checkpointer import Checkpointer, optimizer_fingerprint
from bert_jax.checkpointing.workdir import checkpoint_dir
from bert_jax.data import pipeline
from bert_jax.runtime import sharding
from bert_jax.telemetry import flops
from bert_jax.telemetry.metric_writer import MetricWriter
from bert_jax.training import finite_guard, optim
from bert_jax.training.preemption import Preemption
from bert_jax.training.state import (
    TrainState,
    abstract_train_state,
    init_from,
    state_shardings,
    with_shardings,
)
from bert_jax.training.step import check_batch_divides, make_eval_step, make_train_step

__all__ = ["TrainState", "make_eval_step", "make_train_step", "train_and_evaluate"]


def task_dataset(config, task: objectives.Task, split: str):
    """Per-host batches for ``split`` (``Task.batches``) at ``config.train.batch_size``."""
    return task.batches(split, config.train.batch_size)


def eval_batches(config, task, num_batches: int) -> list[dict[str, np.ndarray]]:
    """The fixed held-out batches, identical at every evaluation.

    A pretraining split that runs out before ``num_batches`` is read again as other fixed
    draws (``Task.eval_draws`` passes; ``Task.batches(..., draw=d)``: the same documents,
    other windows and masks), so a small validation set (the embedded sample's 35
    documents give 8 batches of 32) still fills the evaluation and its figures do not rest
    on one draw of the masks (five single draws of those 35 documents put one checkpoint's
    hidden-position loss anywhere in 5.98-6.13 nats).
    """
    batches = []
    for draw in range(task.eval_draws):
        before = len(batches)
        size = config.train.batch_size
        passes = task.batches("eval", size, draw=draw) if draw else task.batches("eval", size)
        for batch in passes:
            batches.append(batch)
            if len(batches) == num_batches:
                return batches
        if len(batches) == before:  # an empty split gives nothing on any draw
            break
    if not batches:
        raise ValueError(
            f"the eval split ({config.data.eval_pattern or config.data.eval_split}) gave no batch "
            f"of {config.train.batch_size} examples"
        )
    return batches


def evaluate(eval_step, params, batches, data_sharding, task) -> dict[str, float]:
    """Sums per-batch statistics on device, then lets the task turn them into metrics."""
    totals = None
    for batch in batches:
        sums = eval_step(params, pipeline.global_batch(batch, data_sharding))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return task.eval_metrics({k: float(v) for k, v in jax.device_get(totals).items()})


def _mean_metrics(sums: dict[str, jax.Array], count: int) -> dict[str, float]:
    # Counts (skipped non-finite updates) are reported as sums over the interval.
    return {
        k: float(v) if k in finite_guard.SUMMED_METRICS else float(v) / count
        for k, v in jax.device_get(sums).items()
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_at: int | None = None,
    task: objectives.Task | None = None,
) -> dict[str, Any]:
    """Pretrains (or resumes) in ``workdir``; returns the last train and eval metrics.

    Args:
      config: the run config (configs/*.py).
      workdir: checkpoints, TensorBoard logs and metrics.jsonl go here; an
        existing checkpoint is resumed. Held locked while the run lasts
        (lock.py): another run on it raises WorkdirLockedError at once.
      stop_at: stop (with a checkpoint) after this step, as a preemption
        would; the schedule still spans ``config.train.num_steps``.
      task: defaults to ``objectives.get_task(config)``; fine-tuning passes its own.
    """
    train = config.train
    # Signals are handled from here on: a run blocked before its first step (data,
    # restore, compilation) still stops within config.train.stop_grace_s.
    stop_grace_s = train.stop_grace_s
    with (
        lock.hold(workdir),  # one writing run per workdir: a second is refused
        sharding.mesh_context(config.mesh) as (mesh, rules),
        Preemption(stop_grace_s, agree_every=train.log_every) as preemption,
    ):
        accumulation = train.gradient_accumulation_steps
        check_batch_divides(train.batch_size, accumulation, mesh)
        task = task or objectives.get_task(config)
        tx, schedule = optim.create_optimizer(config.optim, train.num_steps)
        logging.info("Mesh %s; model %s", dict(mesh.shape), task.model_config)
        graphdef, abs_state, init = abstract_train_state(task.create_model, tx, config.seed)
        shardings = state_shardings(abs_state, mesh, rules)
        data_sharding = sharding.data_sharding(mesh, rules)
        train_iter: Iterator = iter(task_dataset(config, task, "train"))
        checkpointer = Checkpointer(
            checkpoint_dir(workdir),
            keep=train.keep_checkpoints,
            model_config=task.model_config,
            optimizer=optimizer_fingerprint(config.optim.name, abs_state.opt_state),
            # What the train stream reads: a resume on other data is refused (or restarts it).
            data_spec=task.data_fingerprint(),
            allow_new_data=bool(config.data.get("allow_new_data", False)),
            run_config=config,  # export, evaluate and fine-tuning read it back
        )
        vocab_size = getattr(task.model_config, "vocab_size", None)
        guard = finite_guard.NonfiniteGuard(train, checkpointer, vocab_size)
        # The newest step that restores: damaged ones are moved aside (checkpointer.py).
        state, start_step = checkpointer.restore_latest(
            with_shardings(abs_state, shardings), train_iter
        )
        restored = start_step is not None
        if not restored:
            state = jax.jit(init, out_shardings=shardings)()
            state = init_from(state, task.initial_params, shardings)  # e.g. a pretrained encoder
            start_step = 0
        # Non-finite weights would pass for a learning rate problem at the first step.
        finite_guard.check_params(
            state.params, *_params_origin(checkpointer, start_step, restored, task)
        )
        num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abs_state.params))
        logging.info("%s parameters; starting at step %d", f"{num_params:,}", start_step)

        train_step = jax.jit(
            make_train_step(task, graphdef, tx, schedule, accumulation),
            in_shardings=(shardings, data_sharding, None),
            out_shardings=(shardings, None),
            donate_argnums=(0,),
        )
        eval_step = jax.jit(
            make_eval_step(task, graphdef), in_shardings=(shardings.params, data_sharding)
        )
        held_out = eval_batches(config, task, train.eval_batches)
        # At the first evaluation, not before step 1: a BERT run counts the training
        # unigrams for its baseline (1.4-3 s), wasted on a run stopped before it evaluates.
        baselines = functools.cache(lambda: task.eval_baselines(held_out))
        writer = MetricWriter(
            workdir,
            total_steps=train.num_steps,
            tokens_per_step=train.batch_size * task.tokens_per_example,
            num_devices=mesh.size,
            peak_flops=flops.device_peak(
                jax.devices(), getattr(task.model_config, "dtype", "float32")
            ),
        )
        key = jax.random.key(config.seed)
        result: dict[str, Any] = {"start_step": start_step}
        sums, count = None, 0
        step = start_step
        while step < train.num_steps:
            host_batch = next(train_iter)
            if step == start_step:  # the model FLOPs follow from the batch shapes
                writer.set_flops_per_step(_flops_per_step(task, host_batch, train.batch_size))
            batch = pipeline.global_batch(host_batch, data_sharding)
            state, metrics = train_step(state, batch, key)
            metrics = guard.update(metrics, step + 1)  # drops the guard's diagnostics
            checkpointer.check()  # a failed background save stops the run here, at once
            step += 1
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            count += 1
            if step == start_step + 1:
                writer.start(step)  # exclude compilation from the speed figures
            last = step == train.num_steps
            # Every host agrees on the stop step (preemption.py); a signal stops after a step.
            stopping = preemption.should_stop(step) or step == stop_at
            if step % train.log_every == 0 or last or stopping:
                result["train"] = _mean_metrics(sums, count)
                # This host's skipped-record counts (bert_jax/data/faults.py), if any.
                skips = pipeline.skip_metrics(train_iter)
                writer.report_train(step, {**result["train"], **skips})
                sums, count = None, 0
                guard.check(step, result["train"])  # after the report: the metrics show why
            if step % train.eval_every == 0 or last:
                result["eval"] = {
                    **evaluate(eval_step, state.params, held_out, data_sharding, task),
                    **baselines(),
                }
                writer.report_eval(step, result["eval"])
                example = task.describe(nnx.merge(graphdef, state.params), held_out[0])
                if example:  # e.g. T5's greedy span fill of the first held-out example
                    result["example"] = example
                    logging.info("decoded example at step %d: %s", step, example)
            if step % train.checkpoint_every == 0 or last or stopping:
                if sums is not None:  # metrics not yet checked since the last report
                    guard.check(step, _mean_metrics(sums, count))
                checkpointer.save(step, state, train_iter)
            if stopping:
                break
        checkpointer.close()
        writer.close()
        if preemption.stopping:  # the stop step's checkpoint is durable: say so, exit 75
            preemption.finish(step, train.num_steps, checkpointer.directory)
    result["step"] = step
    result["state"] = state
    return result


def _params_origin(checkpointer, step: int, restored: bool, task) -> tuple[str, str]:
    """Where the starting parameters came from, and the remedy if they are not finite."""
    if restored:
        return (
            f"the parameters restored from checkpoint {checkpointer.directory}/{step}",
            "that step is damaged: move it out of the directory to resume from the one "
            "before, or start afresh with another --workdir",
        )
    if task.initial_params is not None:
        return (
            "the imported initial parameters (the task's initial_params, e.g. "
            "config.finetune.init)",
            "the weights they come from are damaged: convert or export them again",
        )
    return "the freshly initialised parameters", "check config.model (initialiser, dtype)"


def _flops_per_step(task, host_batch, global_batch_size: int) -> float | None:
    """Model FLOPs of one step from a host batch's shapes (None for an unknown model)."""
    shapes = {name: (global_batch_size, *np.shape(x)[1:]) for name, x in host_batch.items()}
    step_flops = flops.train_flops_per_step(task.model_config, shapes)
    if step_flops is not None:
        logging.info("%.4g model TFLOPs per step (bert_jax/telemetry/flops.py)", step_flops / 1e12)
    return step_flops
