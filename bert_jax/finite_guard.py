"""Non-finite steps: never applied, never saved; the run stops or skips them by policy.

The loss of a step is computed before its update, so checking the loss alone lets an
update that overflows (``learning_rate=1e39``) poison the parameters that are saved
next. The jitted step therefore checks the loss, the gradient norm and the updated
parameters and optimizer state (``all_finite``), and keeps the previous ones when
any is non-finite (``keep_if_finite``): the state the loop holds, and so every
checkpoint, is finite by construction. The step counter still advances: the batch
was consumed, and the schedule and the checkpoint's step stay those of the loop.

``config.train.nonfinite_policy`` decides what the loop does next (``NonfiniteGuard``):
  * ``stop``: raise at the next report or save, naming the newest checkpoint (all are
    finite) or saying that none was written yet;
  * ``skip``: carry on, counting skipped updates in the ``nonfinite_skipped`` metric,
    and stop after ``config.train.max_nonfinite_steps`` in a row.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp

POLICIES = ("stop", "skip")
# Metrics the loop reports as sums over the logging interval rather than means.
SUMMED_METRICS = ("nonfinite_skipped",)


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every (float) leaf of ``tree`` is finite."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``finite``, else ``old`` (leaf by leaf, same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


class NonfiniteGuard:
    """Applies ``config.train.nonfinite_policy`` to the steps the jitted step flagged.

    Args:
      train: ``config.train`` (``nonfinite_policy``, ``max_nonfinite_steps``).
      checkpointer: names the newest checkpoint in the error.

    Raises:
      ValueError: a policy or a limit that is not allowed, naming the key.
    """

    def __init__(self, train, checkpointer):
        self.policy = train.nonfinite_policy
        self.max_steps = train.max_nonfinite_steps
        if self.policy not in POLICIES:
            raise ValueError(
                f"config.train.nonfinite_policy={self.policy!r}; choose one of {POLICIES}"
            )
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(
                f"config.train.max_nonfinite_steps must be a positive int, got {self.max_steps!r}"
            )
        self.checkpointer = checkpointer
        self.skipped_total = 0
        # On device, so a step never waits for the host: updated after each step.
        self._streak = jnp.zeros((), jnp.int32)
        self._longest = jnp.zeros((), jnp.int32)

    def update(self, metrics: dict[str, jax.Array]) -> None:
        """Counts the step's flag into the run of consecutive non-finite steps."""
        bad = metrics["nonfinite_skipped"] > 0
        self._streak = jnp.where(bad, self._streak + 1, 0)
        self._longest = jnp.maximum(self._longest, self._streak)

    def check(self, step: int, metrics: dict[str, float]) -> None:
        """At a report or before a save: ``metrics`` of the steps since the last check.

        Raises:
          FloatingPointError: the policy says stop; names the checkpoint to resume from.
        """
        skipped = int(metrics.get("nonfinite_skipped", 0))
        if not skipped:
            return
        self.skipped_total += skipped
        longest = int(self._longest)
        if self.policy == "skip" and longest < self.max_steps:
            logging.warning(
                "skipped %d non-finite update(s) up to step %d (%d in total, %d in a row at "
                "most; config.train.max_nonfinite_steps=%d stops the run)",
                skipped, step, self.skipped_total, longest, self.max_steps,
            )  # fmt: skip
            return
        self.checkpointer.wait()  # a save in flight is finite: let it land, then name it
        latest = self.checkpointer.latest_step()
        directory = self.checkpointer.directory
        where = (
            f"The last good checkpoint is step {latest} in {directory}"
            if latest is not None
            else f"No checkpoint was written yet in {directory}"
        )
        if self.policy == "skip":
            what = f"{longest} steps in a row (config.train.max_nonfinite_steps={self.max_steps})"
        else:
            what = f"{skipped} of the steps up to {step} (config.train.nonfinite_policy=stop)"
        raise FloatingPointError(
            f"training loss {metrics.get('loss')} at step {step}: the loss, gradients or "
            f"update were non-finite at {what}; those updates were not applied and nothing "
            f"was saved after them. {where}: lower config.optim.learning_rate or check the "
            "data (or set config.train.nonfinite_policy=skip), then rerun to resume from it."
        )
