"""The one pretraining loop: every objective, any mesh, resumable.

Reads top to bottom: mesh -> task (tokenizer, example builder, model, loss) ->
optimizer -> abstract state and its shardings -> init or restore -> jitted
steps (train_step.py, with gradient accumulation) -> loop with logging (speed,
MFU), evaluation and checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bert_jax import flops, objectives, optim, sharding
from bert_jax.checkpoint import Checkpointer
from bert_jax.data import pipeline
from bert_jax.metric_writer import MetricWriter
from bert_jax.train_step import TrainState, check_batch_divides, make_eval_step, make_train_step

__all__ = ["TrainState", "make_eval_step", "make_train_step", "train_and_evaluate"]


def abstract_train_state(task: objectives.Task, tx: optax.GradientTransformation, seed: int):
    """Graph definition, abstract state and the function that initialises it."""
    abs_model = nnx.eval_shape(lambda: task.create_model(nnx.Rngs(params=seed)))
    graphdef, _ = nnx.split(abs_model, nnx.Param)

    def init() -> TrainState:
        model = task.create_model(nnx.Rngs(params=seed))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError(f"{type(model).__name__} holds non-parameter state: {rest}")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return graphdef, jax.eval_shape(init), init


def state_shardings(abs_state: TrainState, mesh: jax.sharding.Mesh, rules) -> TrainState:
    """NamedShardings of every leaf from the logical axis annotations."""
    return sharding.state_shardings(abs_state, mesh, rules)


def with_shardings(abs_state, shardings):
    """ShapeDtypeStructs that carry shardings: the target of a sharded restore."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_state, shardings
    )


def task_dataset(config, task: objectives.Task, split: str):
    """Per-host batches for ``split``: the task's own reader, else the pretraining pipeline."""
    if task.dataset_fn is not None:
        return task.dataset_fn(split, config.train.batch_size)
    examples = task.examples
    if split != "train" and task.eval_examples is not None:
        examples = task.eval_examples
    return pipeline.create_dataset(
        config,
        examples,
        task.tokenizer,
        split=split,
        global_batch_size=config.train.batch_size,
    )


def eval_batches(config, task, num_batches: int) -> list[dict[str, np.ndarray]]:
    """The fixed held-out batches, identical at every evaluation."""
    dataset = task_dataset(config, task, "eval")
    batches = []
    for batch in dataset:
        batches.append(batch)
        if len(batches) == num_batches:
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
    return task.finish_eval({k: float(v) for k, v in jax.device_get(totals).items()})


class _Preemption:
    """Turns SIGTERM into a checkpoint at the next step instead of lost work."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread (tests); nothing to install
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _mean_metrics(sums: dict[str, jax.Array], count: int) -> dict[str, float]:
    return {k: float(v) / count for k, v in jax.device_get(sums).items()}


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
        existing checkpoint is resumed.
      stop_at: stop (with a checkpoint) after this step, as a preemption
        would; the schedule still spans ``config.train.num_steps``.
      task: defaults to ``objectives.get_task(config)``; fine-tuning passes its own.
    """
    train = config.train
    mesh, rules = sharding.mesh_from_config(config.mesh)
    accumulation = train.get("gradient_accumulation_steps", 1)
    check_batch_divides(train.batch_size, accumulation, mesh)
    task = task or objectives.get_task(config)
    tx, schedule = optim.create_optimizer(config.optim, train.num_steps)
    logging.info("Mesh %s; model %s", dict(mesh.shape), task.model_config)

    with sharding.use_mesh(mesh, rules):
        graphdef, abs_state, init = abstract_train_state(task, tx, config.seed)
        shardings = state_shardings(abs_state, mesh, rules)
        data_sharding = sharding.data_sharding(mesh, rules)
        train_iter: Iterator = iter(task_dataset(config, task, "train"))
        checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            keep=train.keep_checkpoints,
            model_config=task.model_config,
        )
        start_step = checkpointer.latest_step()
        if start_step is None:
            state = jax.jit(init, out_shardings=shardings)()
            if task.initial_params is not None:  # fine-tuning: start from pretrained weights
                params = jax.device_put(task.initial_params(state.params), shardings.params)
                state = state.replace(params=params)
            start_step = 0
        else:
            state = checkpointer.restore(
                start_step, with_shardings(abs_state, shardings), train_iter
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
        baselines = task.eval_baselines(held_out)
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
        with _Preemption() as preemption:
            while step < train.num_steps:
                host_batch = next(train_iter)
                if step == start_step:  # the model FLOPs follow from the batch shapes
                    writer.set_flops_per_step(_flops_per_step(task, host_batch, train.batch_size))
                batch = pipeline.global_batch(host_batch, data_sharding)
                state, metrics = train_step(state, batch, key)
                step += 1
                sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
                count += 1
                if step == start_step + 1:
                    writer.start(step)  # exclude compilation from the speed figures
                last = step == train.num_steps
                if step % train.log_every == 0 or last or preemption.requested or step == stop_at:
                    result["train"] = _mean_metrics(sums, count)
                    _check_finite(result["train"], step, checkpointer)
                    # This host's skipped-record counts (bert_jax/data/faults.py), if any.
                    skips = pipeline.skip_metrics(train_iter)
                    writer.report_train(step, {**result["train"], **skips})
                    sums, count = None, 0
                if step % train.eval_every == 0 or last:
                    result["eval"] = {
                        **evaluate(eval_step, state.params, held_out, data_sharding, task),
                        **baselines,
                    }
                    writer.report_eval(step, result["eval"])
                    if task.describe is not None:
                        model = nnx.merge(graphdef, state.params)
                        result["example"] = task.describe(model, held_out[0])
                        logging.info("decoded example at step %d: %s", step, result["example"])
                stopping = preemption.requested or step == stop_at
                if step % train.checkpoint_every == 0 or last or stopping:
                    if sums is not None:  # metrics not yet checked since the last report
                        _check_finite(_mean_metrics(sums, count), step, checkpointer)
                    checkpointer.save(step, state, train_iter)
                if stopping:
                    break
        checkpointer.close()
        writer.close()
    result["step"] = step
    result["state"] = state
    return result


def _flops_per_step(task, host_batch, global_batch_size: int) -> float | None:
    """Model FLOPs of one step from a host batch's shapes (None for an unknown model)."""
    shapes = {name: (global_batch_size, *np.shape(x)[1:]) for name, x in host_batch.items()}
    step_flops = flops.train_flops_per_step(task.model_config, shapes)
    if step_flops is not None:
        logging.info("%.4g model TFLOPs per step (bert_jax/flops.py)", step_flops / 1e12)
    return step_flops


def _check_finite(metrics: dict[str, float], step: int, checkpointer: Checkpointer) -> None:
    loss = metrics.get("loss", 0.0)
    if not math.isfinite(loss):
        checkpointer.wait()
        raise FloatingPointError(
            f"training loss is {loss} at step {step}; nothing was saved after it. The last good "
            f"checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}: lower "
            "config.optim.learning_rate or check the data, then rerun to resume from it."
        )
