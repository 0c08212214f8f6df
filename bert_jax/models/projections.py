"""Parameterised projections shared by BERT, ALBERT and T5: dense layers over rows,
embedding tables and logits against a tied embedding.

Kernels and tables carry logical axis names (`bert_jax.runtime.sharding`). Matmuls take their
input as 2-D rows ``[rows, features]`` whatever its leading axes, so autodiff's kernel
gradients contract one axis and XLA keeps every activation gradient row-major
(`Dense`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = nnx.initializers.Initializer


class Dense(nnx.Linear):
    """`nnx.Linear` over rows: ``x [..., in]`` is multiplied as a 2-D ``[rows, in]`` matrix.

    The same parameters and arithmetic as `nnx.Linear` (its einsum over the leading axes);
    only the HLO differs. From a 3-D activation, autodiff's kernel gradient contracts two
    axes and XLA:CPU then writes the activation gradient transposed (``[features, rows]``)
    inside its elementwise fusion, a strided store that cost T5 tiny's gated MLP
    forward + backward 80 ms against 34 ms for this 2-D form (benchmarks/README.md).
    Merging the leading axes is a bitcast for row-major layouts (CPU, GPU) and on TPU
    whenever the length is a multiple of its 8-row tile (every recipe's is).
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        leading = inputs.shape[:-1]
        outputs = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return outputs.reshape(*leading, outputs.shape[-1])


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    kernel_init: Initializer,
    use_bias: bool = True,
    dtype: str = "float32",
    param_dtype: str = "float32",
    rngs: nnx.Rngs,
) -> Dense:
    """A `Dense` whose kernel has logical ``axes`` and bias ``axes[-1:]``."""
    return Dense(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=jnp.dtype(dtype),
        param_dtype=jnp.dtype(param_dtype),
        kernel_init=nnx.with_partitioning(kernel_init, axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), axes[-1:]),
        rngs=rngs,
    )


def embed(
    num_embeddings: int,
    features: int,
    axes: tuple[str | None, str | None],
    *,
    embedding_init: Initializer,
    param_dtype: str = "float32",
    rngs: nnx.Rngs,
) -> nnx.Embed:
    """An `nnx.Embed` table ``[num_embeddings, features]`` with logical ``axes``.

    Lookups return the parameter dtype; callers cast after summing embeddings.
    """
    return nnx.Embed(
        num_embeddings,
        features,
        param_dtype=jnp.dtype(param_dtype),
        embedding_init=nnx.with_partitioning(embedding_init, axes),
        rngs=rngs,
    )


def tied_logits(x: jax.Array, embedding_table: jax.Array) -> jax.Array:
    """Float32 logits of ``x [..., embed]`` against a ``[vocab, embed]`` table."""
    table = embedding_table.astype(x.dtype)
    rows = x.reshape(-1, x.shape[-1])  # 2-D, as in `Dense`
    logits = jnp.einsum("re,ve->rv", rows, table, preferred_element_type=jnp.float32)
    return logits.reshape(*x.shape[:-1], table.shape[0])
