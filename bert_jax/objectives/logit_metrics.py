"""Cross-entropy and top-1 accuracy of integer labels from one pass over the logits.

Both the BERT and the T5 loss need, per row of ``[..., vocab]`` float32 logits, the
log-partition ``log Z``, the gold logit and whether the gold token is the model's top
choice. `jnp.argmax` over the vocabulary is slow on XLA:CPU (a variadic reduce over
value and index, 35-50 ms for T5 tiny's [32, 32, 8100] logits, ~8 % of its train
step), while the row max is needed for a stable ``log Z`` anyway. So accuracy is read
from that max: the prediction is correct when the gold logit is **>= the row max**.

Tie convention: when the gold logit ties the largest logit, the prediction counts as
correct, whichever index `argmax` would have returned (argmax picks the first of tied
indices, so it can disagree only on exact float ties, which trained float32 logits
essentially never have). Without ties the two definitions are identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_logit_stats(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
    """``(xent, log_z, correct)`` of integer ``labels`` under ``logits``.

    Args:
      logits: float ``[..., vocab]``.
      labels: int ``[...]``, each in ``[0, vocab)``.

    Returns:
      ``xent = log_z - logits[label]`` (float32 ``[...]``), ``log_z`` (float32
      ``[...]``, the logsumexp over the vocabulary, for T5's z-loss) and ``correct``
      (float32 ``[...]``, 1 where ``logits[label] >= max(logits)``, ties correct).
    """
    logits = logits.astype(jnp.float32)
    # The max is a constant shift for log Z: no gradient flows through it (as in
    # jax.nn.logsumexp), and its value doubles as the top-1 score.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))  # [...]
    shifted = logits - row_max[..., None]  # [..., vocab]
    log_z = row_max + jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))  # [...]
    gold = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    correct = (jax.lax.stop_gradient(gold) >= row_max).astype(jnp.float32)
    return log_z - gold, log_z, correct
