"""Transformer building blocks shared by BERT, ALBERT and T5: one attention, one MLP, norms.

Every weight carries logical axis names (``embed``, ``joined_kv``, ``mlp``, ``vocab``;
see `bert_jax.runtime.sharding`). Mixed precision is a policy of two dtypes: ``dtype`` for
activations and matmuls, ``param_dtype`` for storage (float32 by default). Softmax,
LayerNorm / RMSNorm statistics and logits are always float32. Dropout modules hold no
RNG state: randomness arrives at call time as ``rngs`` together with ``deterministic``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models.projections import Initializer, dense
from bert_jax.runtime import sharding

# The one list of float dtypes a model config accepts for `dtype` and `param_dtype`.
DTYPES = ("float32", "bfloat16", "float16")
# 'dot_product': jax.nn.dot_product_attention (fused kernels); 'explicit': our einsums,
# the numerical reference and the path that applies attention-probability dropout.
ATTENTION_KINDS = ("dot_product", "explicit")
# Finite, so a fully masked row gives a uniform softmax (as dot_product_attention), not NaN.
MASK_LOGIT = -1e10

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


class LayerNorm(nnx.LayerNorm):
    """LayerNorm (BERT): float32 statistics, ``dtype`` output, ``scale`` / ``bias`` on 'embed'."""

    def __init__(self, num_features: int, *, epsilon: float, dtype, param_dtype, rngs):
        axes = ("embed",)
        super().__init__(
            num_features,
            epsilon=epsilon,
            dtype=jnp.float32,
            param_dtype=jnp.dtype(param_dtype),
            scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), axes),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), axes),
            # Two-pass variance, as in PyTorch: E[x^2] - E[x]^2 loses digits.
            use_fast_variance=False,
            rngs=rngs,
        )
        self.output_dtype = jnp.dtype(dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(self.output_dtype)


class RMSNorm(nnx.Module):
    """T5 layer norm: ``x / rms(x) * scale``, no mean, no bias; statistics in float32."""

    def __init__(self, features: int, *, epsilon: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.epsilon = epsilon
        self.dtype = jnp.dtype(dtype)
        init = nnx.with_partitioning(jax.nn.initializers.ones, ("embed",))
        self.scale = nnx.Param(init(rngs.params(), (features,), jnp.dtype(param_dtype)))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        normed = (x * jax.lax.rsqrt(mean_square + self.epsilon)).astype(self.dtype)
        return normed * self.scale[...].astype(self.dtype)


def attention_mask(query_ids: jax.Array, key_ids: jax.Array, pairwise=jnp.equal) -> jax.Array:
    """``pairwise(query_ids[b, q], key_ids[b, k])`` as a bool ``[b, 1, q, k]`` mask."""
    return pairwise(query_ids[:, None, :, None], key_ids[:, None, None, :])


def causal_mask(length: int) -> jax.Array:
    """Bool ``[1, 1, length, length]``: query i sees keys j <= i."""
    positions = jnp.arange(length)[None]
    return attention_mask(positions, positions, jnp.greater_equal)


class MultiHeadAttention(nnx.Module):
    """Multi-head attention with q/k/v/output projections (BERT, ALBERT, T5).

    2-D kernels (``[embed, heads * head_dim]``, logical ``('embed', 'joined_kv')``) map
    one-to-one onto Hugging Face linear layers; any head count works. Masks are boolean,
    extra logits (T5's relative positions) an additive float32 bias: the two forms
    `jax.nn.dot_product_attention` accepts.

    ``attention='dot_product'`` calls `jax.nn.dot_product_attention(implementation=None)`
    (jax 0.10 resolves None to its XLA kernel; once jax picks cuDNN flash attention by
    itself this path gets it). It has no dropout, so while attention-probability dropout
    is active (rate > 0, not deterministic) the explicit path runs instead: MaxText
    applies attention dropout only in a kernel that implements it (TransformerEngine).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        *,
        attention: str = "dot_product",
        dropout_rate: float = 0.0,
        use_bias: bool = True,
        scale_logits: bool = True,
        kernel_init: Initializer,
        query_kernel_init: Initializer | None = None,
        dtype: str = "float32",
        param_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        """Builds the projections.

        Args:
          attention: one of ``ATTENTION_KINDS``.
          scale_logits: multiply logits by ``head_dim ** -0.5`` (BERT); T5 folds the
            scale into the query initialiser instead and passes False.
          query_kernel_init: defaults to ``kernel_init``.
        """
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention {attention!r} not in {ATTENTION_KINDS}")
        self.attention = attention
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5 if scale_logits else 1.0
        self.dropout_rate = dropout_rate
        joined = num_heads * head_dim
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        in_axes = ("embed", "joined_kv")
        self.query = dense(
            embed_dim, joined, in_axes, kernel_init=query_kernel_init or kernel_init, **common
        )
        self.key = dense(embed_dim, joined, in_axes, kernel_init=kernel_init, **common)
        self.value = dense(embed_dim, joined, in_axes, kernel_init=kernel_init, **common)
        self.output = dense(
            joined, embed_dim, ("joined_kv", "embed"), kernel_init=kernel_init, **common
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
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Attends from ``inputs_q [batch, q_length, embed]`` to ``inputs_kv``.

        Args:
          inputs_kv: ``[batch, kv_length, embed]``; defaults to ``inputs_q`` (self-attention).
          mask: bool, broadcastable to ``[batch, heads, q_length, kv_length]``; False
            pairs are never attended (padding, causality, packing segments).
          bias: float32 logits bias broadcastable to the same shape (relative positions).
        """
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        query = self._split_heads(self.query(inputs_q))  # [batch, q_length, heads, kv]
        key = self._split_heads(self.key(inputs_kv))  # [batch, kv_length, heads, kv]
        value = self._split_heads(self.value(inputs_kv))  # [batch, kv_length, heads, kv]
        dropout_active = self.dropout_rate > 0 and not deterministic
        if self.attention == "dot_product" and not dropout_active:
            context = jax.nn.dot_product_attention(
                query, key, value, bias=bias, mask=mask, scale=self.scale, implementation=None
            )  # [batch, q_length, heads, kv]
        else:
            context = self._explicit(query, key, value, mask, bias, deterministic, rngs)
        batch, q_length = context.shape[:2]
        context = context.reshape(batch, q_length, self.num_heads * self.head_dim)
        return self.output(context)  # [batch, q_length, embed]

    def _explicit(self, query, key, value, mask, bias, deterministic, rngs) -> jax.Array:
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32
        )  # [batch, heads, q_length, kv_length]
        if self.scale != 1.0:
            logits = logits * self.scale
        if bias is not None:
            logits = logits + bias
        if mask is not None:
            logits = jnp.where(mask, logits, MASK_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)
        return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)


class FeedForward(nnx.Module):
    """Position-wise MLP: ``wo(act(wi(x)))``, or gated ``wo(act(wi_0(x)) * wi_1(x))``."""

    def __init__(
        self,
        embed_dim: int,
        mlp_dim: int,
        *,
        activation_name: str,
        gated: bool = False,
        use_bias: bool = True,
        intermediate_dropout_rate: float = 0.0,
        kernel_init: Initializer,
        dtype: str = "float32",
        param_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        activation(activation_name)  # fail at build time on a bad name
        self.activation_name = activation_name
        self.gated = gated
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        common["kernel_init"] = kernel_init
        if gated:
            self.wi_0 = dense(embed_dim, mlp_dim, ("embed", "mlp"), **common)
            self.wi_1 = dense(embed_dim, mlp_dim, ("embed", "mlp"), **common)
        else:
            self.wi = dense(embed_dim, mlp_dim, ("embed", "mlp"), **common)
        self.wo = dense(mlp_dim, embed_dim, ("mlp", "embed"), **common)
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
