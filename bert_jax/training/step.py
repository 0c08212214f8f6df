"""The jitted steps of the train loop: one optimizer update per global batch.

``make_train_step`` differentiates the task's loss on the whole batch, or, with
``gradient_accumulation_steps`` = M > 1, on M microbatches inside one
``jax.lax.scan`` (MaxText's ``gradient_accumulation``, t5x's
``accumulate_grads_microbatched``): gradients are summed on device and the
optimizer runs once, so a batch M times larger than fits in memory trains as if
it were one batch. Each microbatch's loss and metrics are means over their own
counts (masked positions, target tokens, examples); weighting microbatch m by
``count_m / count_total`` (``Task.mean_weights``) makes the accumulated loss,
gradients and metrics those of the one large batch, not merely close to them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax import objectives
from bert_jax.runtime import sharding
from bert_jax.training import finite_guard
from bert_jax.training.state import TrainState


def split_microbatches(batch: dict[str, jax.Array], num_microbatches: int):
    """``[batch, ...]`` leaves -> ``[microbatches, batch / microbatches, ...]``.

    Microbatch m takes examples m, m + M, m + 2M, ...: every device's contiguous
    shard of the batch splits evenly over the microbatches, so no example moves
    between devices (the layout MaxText uses).
    """

    def split(x):
        x = x.reshape((x.shape[0] // num_microbatches, num_microbatches) + x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)  # [microbatches, microbatch, ...]
        return sharding.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))

    return jax.tree.map(split, batch)


def accumulate_gradients(task, loss_of, params, batch, dropout_key, num_microbatches: int):
    """Loss, metrics and gradients of ``batch``, summed over microbatches in a scan.

    Args:
      task: supplies ``mean_weights`` and ``loss_terms``.
      loss_of: ``(params, microbatch, key) -> (loss, metrics)``.
      params: the parameters (gradients are taken with respect to them).
      batch: the global batch, ``[batch, ...]`` leaves.
      dropout_key: microbatch m uses ``fold_in(dropout_key, m)``.
      num_microbatches: M; the batch size divides by it.

    Returns:
      ``(loss, metrics, grads)``: the large batch's loss, its metrics (each a
      weighted mean over microbatches) and the gradient of that loss.
    """
    totals = task.mean_weights(batch)
    equal = 1.0 / num_microbatches  # the share of a metric without a count
    microbatches = split_microbatches(batch, num_microbatches)

    def weighted_loss(params, microbatch, key):
        loss, metrics = loss_of(params, microbatch, key)
        metrics = {**metrics, "loss": loss}
        shares = {
            name: count / jnp.maximum(totals[name], 1.0)
            for name, count in task.mean_weights(microbatch).items()
        }
        # The large batch's loss is the sum over loss terms of (sum over microbatches
        # of count_m * term_m) / count_total: differentiate exactly that.
        objective = sum(metrics[term] * shares.get(term, equal) for term in task.loss_terms)
        weighted = {name: value * shares.get(name, equal) for name, value in metrics.items()}
        return objective, weighted

    grad_fn = jax.value_and_grad(weighted_loss, has_aux=True)

    def body(carry, inputs):
        index, microbatch = inputs
        (objective, weighted), grads = grad_fn(
            params, microbatch, jax.random.fold_in(dropout_key, index)
        )
        loss_sum, metric_sums, grad_sums = carry
        carry = (
            loss_sum + objective,
            jax.tree.map(jnp.add, metric_sums, weighted),
            jax.tree.map(jnp.add, grad_sums, grads),
        )
        return carry, None

    first = jax.tree.map(lambda x: x[0], microbatches)
    metric_shapes = jax.eval_shape(weighted_loss, params, first, dropout_key)[1]
    init = (
        jnp.zeros((), jnp.float32),
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
        jax.tree.map(jnp.zeros_like, params),
    )
    indices = jnp.arange(num_microbatches)
    (loss, metrics, grads), _ = jax.lax.scan(body, init, (indices, microbatches))
    metrics["loss"] = loss
    return loss, metrics, grads


def make_train_step(task: objectives.Task, graphdef, tx, schedule, gradient_accumulation_steps=1):
    """A pure step: (state, batch, key) -> (state, metrics).

    Args:
      task: the objective (its ``loss_fn``, and for accumulation its ``mean_weights``).
      graphdef: the model's graph definition (``nnx.split``).
      tx: the optax optimizer.
      schedule: step -> learning rate (logged).
      gradient_accumulation_steps: microbatches per step; 1 differentiates the
        whole batch at once.
    """

    def loss_of(params, batch, key):
        model = nnx.merge(graphdef, params)
        return task.loss_fn(model, batch, deterministic=False, rngs=nnx.Rngs(dropout=key))

    vocab_size = getattr(task.model_config, "vocab_size", None)

    def train_step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array):
        dropout_key = jax.random.fold_in(key, state.step)
        if gradient_accumulation_steps == 1:
            (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(
                state.params, batch, dropout_key
            )
        else:
            loss, metrics, grads = accumulate_gradients(
                task, loss_of, state.params, batch, dropout_key, gradient_accumulation_steps
            )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        # A non-finite step keeps the previous params and optimizer state, so nothing
        # non-finite is ever held or saved (finite_guard.py; the loop applies the policy).
        finite = finite_guard.all_finite((loss, grad_norm, params, opt_state))
        params, opt_state = finite_guard.keep_if_finite(
            finite, (params, opt_state), (state.params, state.opt_state)
        )
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "nonfinite_skipped": 1.0 - finite.astype(jnp.float32),
            # Where a non-finite step came from (finite_guard.NonfiniteGuard; not logged).
            f"{finite_guard.DIAGNOSTIC}nonfinite_loss": 1.0
            - jnp.isfinite(loss).astype(jnp.float32),
            **finite_guard.input_faults(batch, vocab_size),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(task: objectives.Task, graphdef):
    """``(params, batch) -> the task's per-batch sums`` (``Task.eval_fn``)."""

    def eval_step(params: nnx.State, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return task.eval_fn(nnx.merge(graphdef, params), batch)

    return eval_step


def check_batch_divides(batch_size: int, gradient_accumulation_steps: int, mesh) -> None:
    """Each microbatch must split evenly over the data-parallel devices.

    Raises:
      ValueError: naming config.train.batch_size and gradient_accumulation_steps.
    """
    steps = gradient_accumulation_steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"config.train.gradient_accumulation_steps must be a positive int, got {steps!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:  # grain's error names no field
        raise ValueError(f"config.train.batch_size must be a positive int, got {batch_size!r}")
    replicas = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % (steps * replicas):
        raise ValueError(
            f"config.train.batch_size={batch_size} must be divisible by "
            f"config.train.gradient_accumulation_steps={steps} times the data*fsdp mesh "
            f"size {replicas} (= {steps * replicas}), so every microbatch splits evenly"
        )
