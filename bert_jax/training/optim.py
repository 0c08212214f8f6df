"""Optimizers and learning-rate schedules, built from ``config.optim``.

Recipes:
  * BERT: AdamW (b1 0.9, b2 0.999, eps 1e-6, wd 0.01 on weights only), linear
    warmup then linear decay to zero, global-norm clipping at 1.0.
  * ALBERT: LAMB with the same schedule shape.
  * T5: Adafactor with an inverse square-root schedule (1/sqrt(max(step, warmup))).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw", "lamb", "adafactor")
SCHEDULES = ("linear", "cosine", "rsqrt", "constant")


def create_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step.

    Args:
      optim: ``config.optim`` with ``learning_rate``, ``schedule`` and
        ``warmup_steps``.
      num_steps: total training steps (the decay horizon).
    """
    peak = optim.learning_rate
    warmup = int(optim.warmup_steps)
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={optim.schedule!r}; choose one of {SCHEDULES}")
    if optim.schedule == "rsqrt":
        # T5: lr = peak * sqrt(warmup) / sqrt(max(step, warmup)); flat for the warmup steps.
        def rsqrt(step):
            return peak * jnp.sqrt(max(warmup, 1) / jnp.maximum(step, max(warmup, 1)))

        return rsqrt
    warmup_fn = optax.linear_schedule(0.0, peak, max(warmup, 1))
    decay_steps = max(num_steps - warmup, 1)
    if optim.schedule == "linear":
        decay_fn = optax.linear_schedule(peak, 0.0, decay_steps)
    elif optim.schedule == "cosine":
        decay_fn = optax.cosine_decay_schedule(peak, decay_steps)
    else:
        decay_fn = optax.constant_schedule(peak)
    return optax.join_schedules([warmup_fn, decay_fn], [warmup])


def _decay_mask(params):
    # BERT and ALBERT exclude biases and LayerNorm parameters from weight decay:
    # only tensors of rank >= 2 are decayed.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def create_optimizer(
    optim: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain named by ``config.optim.name`` with clipping."""
    schedule = create_schedule(optim, num_steps)
    if optim.name in ("adamw", "lamb"):
        # LAMB is AdamW with a per-layer trust ratio; both take the same arguments.
        make = optax.adamw if optim.name == "adamw" else optax.lamb
        tx = make(
            schedule,
            b1=optim.b1,
            b2=optim.b2,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            mask=_decay_mask,
        )
    elif optim.name == "adafactor":
        # T5 settings: factored second moments, no momentum, update clipping
        # at RMS 1, parameter-scale-relative steps off (the schedule sets lr).
        tx = optax.adafactor(
            schedule,
            multiply_by_parameter_scale=False,
            clipping_threshold=1.0,
            decay_rate=0.8,
            weight_decay_rate=optim.weight_decay or None,
        )
    else:
        raise ValueError(f"config.optim.name={optim.name!r}; choose one of {OPTIMIZERS}")
    if optim.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
    return tx, schedule
