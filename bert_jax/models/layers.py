"""Transformer building blocks shared by BERT, ALBERT and T5.

Every weight carries logical axis names (``embed``, ``joined_kv``, ``mlp``,
``vocab``; see `bert_jax.sharding`) and every block computes in the caller's
``dtype`` with float32 parameters. Softmax and layer-norm statistics are always
float32. Dropout modules hold no RNG state: randomness arrives at call time as
``rngs`` together with ``deterministic``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import sharding

Initializer = nnx.initializers.Initializer
Axes = tuple[str | None, ...]

# Added to attention logits of masked keys. Finite (not -inf) so that a fully
# padded row gives a uniform softmax instead of NaN.
MASK_LOGIT = -1e9

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Exact erf form: what Hugging Face calls "gelu" (BERT checkpoints).
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    # tanh approximation: Hugging Face "gelu_new" (ALBERT, T5 v1.1 gated-gelu).
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation function called ``name`` (Hugging Face spelling)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; know {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    kernel_init: Initializer,
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """An `nnx.Linear` whose kernel has logical ``axes`` and bias ``axes[-1:]``."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
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
    param_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Embed:
    """An `nnx.Embed` table ``[num_embeddings, features]`` with logical ``axes``.

    Lookups return the parameter dtype; callers cast after summing embeddings.
    """
    return nnx.Embed(
        num_embeddings,
        features,
        param_dtype=param_dtype,
        embedding_init=nnx.with_partitioning(embedding_init, axes),
        rngs=rngs,
    )


def tied_logits(x: jax.Array, embedding_table: jax.Array) -> jax.Array:
    """Float32 logits of ``x [..., embed]`` against a ``[vocab, embed]`` table."""
    table = embedding_table.astype(x.dtype)
    return jnp.einsum("...e,ve->...v", x, table, preferred_element_type=jnp.float32)


class LayerNorm(nnx.LayerNorm):
    """LayerNorm with float32 statistics that returns ``dtype`` activations.

    Parameters are ``scale`` and ``bias`` with logical axis ``(axis,)``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        axis: str | None = "embed",
        rngs: nnx.Rngs,
    ):
        super().__init__(
            num_features,
            epsilon=epsilon,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axis,)),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axis,)),
            # Two-pass variance, as in PyTorch: E[x^2] - E[x]^2 loses digits.
            use_fast_variance=False,
            rngs=rngs,
        )
        self.output_dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(self.output_dtype)


def mask_to_bias(mask: jax.Array) -> jax.Array:
    """Additive float32 attention bias: 0 where ``mask`` is true, very negative elsewhere.

    Args:
      mask: boolean, broadcastable to ``[batch, heads, q_length, kv_length]``; for a
        padding mask use ``key_mask[:, None, None, :]``.
    """
    return jnp.where(mask, 0.0, MASK_LOGIT).astype(jnp.float32)


class MultiHeadAttention(nnx.Module):
    """Multi-head dot-product attention with separate q/k/v/output projections.

    Kernels are 2-D (``[embed, heads * head_dim]``, logical ``('embed', 'joined_kv')``)
    so that they map one-to-one onto Hugging Face linear layers. Any head count
    works, odd ones included.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        *,
        dropout_rate: float = 0.0,
        use_bias: bool = True,
        scale_logits: bool = True,
        kernel_init: Initializer,
        query_kernel_init: Initializer | None = None,
        output_kernel_init: Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Builds the projections.

        Args:
          scale_logits: multiply logits by ``head_dim ** -0.5`` (BERT); T5 folds the
            scale into the query initialiser instead and passes False.
          query_kernel_init, output_kernel_init: default to ``kernel_init``.
        """
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale_logits = scale_logits
        joined = num_heads * head_dim
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        in_axes = ("embed", "joined_kv")
        self.query = dense(
            embed_dim, joined, in_axes, kernel_init=query_kernel_init or kernel_init, **common
        )
        self.key = dense(embed_dim, joined, in_axes, kernel_init=kernel_init, **common)
        self.value = dense(embed_dim, joined, in_axes, kernel_init=kernel_init, **common)
        self.output = dense(
            joined,
            embed_dim,
            ("joined_kv", "embed"),
            kernel_init=output_kernel_init or kernel_init,
            **common,
        )
        self.dropout = nnx.Dropout(dropout_rate)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        x = x.reshape(batch, length, self.num_heads, self.head_dim)  # [batch, length, heads, kv]
        return sharding.constrain(x, ("batch", "length", "heads", "kv"))

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array | None = None,
        *,
        bias: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Attends from ``inputs_q [batch, q_length, embed]`` to ``inputs_kv``.

        Args:
          inputs_kv: ``[batch, kv_length, embed]``; defaults to ``inputs_q`` (self-attention).
          bias: additive float32 logits bias broadcastable to
            ``[batch, heads, q_length, kv_length]`` (padding mask, causal mask,
            relative positions).
        """
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        query = self._split_heads(self.query(inputs_q))  # [batch, q_length, heads, kv]
        key = self._split_heads(self.key(inputs_kv))  # [batch, kv_length, heads, kv]
        value = self._split_heads(self.value(inputs_kv))  # [batch, kv_length, heads, kv]

        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32
        )  # [batch, heads, q_length, kv_length]
        if self.scale_logits:
            logits = logits * (self.head_dim**-0.5)
        if bias is not None:
            logits = logits + bias
        weights = jax.nn.softmax(logits, axis=-1)
        weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)

        context = jnp.einsum(
            "bhqk,bkhd->bqhd", weights.astype(value.dtype), value
        )  # [batch, q_length, heads, kv]
        batch, q_length = context.shape[:2]
        context = context.reshape(batch, q_length, self.num_heads * self.head_dim)
        return self.output(context)  # [batch, q_length, embed]


class FeedForward(nnx.Module):
    """Position-wise MLP: ``wo(act(wi(x)))``, or gated ``wo(act(wi_0(x)) * wi_1(x))``."""

    def __init__(
        self,
        embed_dim: int,
        mlp_dim: int,
        *,
        activation_name: str = "gelu",
        gated: bool = False,
        use_bias: bool = True,
        intermediate_dropout_rate: float = 0.0,
        kernel_init: Initializer,
        output_kernel_init: Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        activation(activation_name)  # fail at build time on a bad name
        self.activation_name = activation_name
        self.gated = gated
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if gated:
            self.wi_0 = dense(
                embed_dim, mlp_dim, ("embed", "mlp"), kernel_init=kernel_init, **common
            )
            self.wi_1 = dense(
                embed_dim, mlp_dim, ("embed", "mlp"), kernel_init=kernel_init, **common
            )
        else:
            self.wi = dense(embed_dim, mlp_dim, ("embed", "mlp"), kernel_init=kernel_init, **common)
        self.wo = dense(
            mlp_dim,
            embed_dim,
            ("mlp", "embed"),
            kernel_init=output_kernel_init or kernel_init,
            **common,
        )
        self.dropout = nnx.Dropout(intermediate_dropout_rate)

    def __call__(
        self, x: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        act = activation(self.activation_name)
        # [batch, length, mlp]
        hidden = act(self.wi_0(x)) * self.wi_1(x) if self.gated else act(self.wi(x))
        hidden = sharding.constrain(hidden, ("batch", "length", "mlp"))
        hidden = self.dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.wo(hidden)  # [batch, length, embed]
