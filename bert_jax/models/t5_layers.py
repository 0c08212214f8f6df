"""T5 building blocks: RMSNorm, relative position bias, attention, MLP, layers.

Semantics follow Hugging Face ``modeling_t5.py`` (the parity reference) and the
t5x example layers: pre-norm RMSNorm without bias or mean subtraction, dense
layers without biases, no ``1/sqrt(d_kv)`` attention scaling (it is folded into
the query initialiser), and bucketed relative position biases.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax import sharding

if TYPE_CHECKING:
    from bert_jax.models.t5 import T5Config

# Added to the logits of masked attention pairs: finite, so a fully masked row
# (padding queries) gives a uniform softmax instead of NaN.
MASKED_LOGIT = -1e10


def _fan_in_normal(scale: float = 1.0):
    return jax.nn.initializers.variance_scaling(scale, "fan_in", "normal")


def _fan_in_truncated_normal():
    return jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class RMSNorm(nnx.Module):
    """T5 layer norm: ``x / rms(x) * scale``, statistics in float32."""

    def __init__(self, features: int, config: T5Config, *, rngs: nnx.Rngs):
        self.epsilon = config.layer_norm_eps
        self.dtype = jnp.dtype(config.dtype)
        init = nnx.with_partitioning(jax.nn.initializers.ones, ("embed",))
        self.scale = nnx.Param(init(rngs.params(), (features,), jnp.dtype(config.param_dtype)))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        normed = (x * jax.lax.rsqrt(mean_square + self.epsilon)).astype(self.dtype)
        return normed * self.scale[...].astype(self.dtype)


@functools.lru_cache(maxsize=32)
def _distance_to_bucket(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every one-sided distance in ``[0, max_distance]`` (int32).

    Half the buckets are exact distances, the rest are log-spaced up to
    ``max_distance``; farther distances share the last bucket. Computed once in
    NumPy float32 with Hugging Face's operation order, so bucket boundaries match
    its PyTorch implementation exactly, and looked up by integer index in JAX.
    """
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 1)
    # Clamp below at max_exact so the log is finite; those entries are replaced.
    log_ratio = np.log(np.maximum(distance, max_exact).astype(np.float32) / np.float32(max_exact))
    scaled = log_ratio / np.float32(math.log(max_distance / max_exact))
    scaled = scaled * np.float32(num_buckets - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int32), num_buckets - 1)
    return np.where(distance < max_exact, distance, large).astype(np.int32)


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """Maps ``key_position - query_position`` to a bucket id in ``[0, num_buckets)``.

    Args:
      relative_position: int array of memory minus query positions.
      bidirectional: encoder (True) gives later keys their own half of the
        buckets; decoder (False) maps every later key to bucket 0 (they are
        masked by causality anyway).
      num_buckets: total number of buckets.
      max_distance: distances at or beyond this share the last bucket.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    offset = 0
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(relative_position > 0, num_buckets, 0)
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    table = jnp.asarray(_distance_to_bucket(num_buckets, max_distance))
    return offset + table[jnp.minimum(distance, max_distance)]


class RelativePositionBias(nnx.Module):
    """Learned per-head scalar bias for each relative-position bucket."""

    def __init__(self, config: T5Config, *, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        init = nnx.with_partitioning(
            jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), (None, "heads")
        )
        # [buckets, heads]: Hugging Face's nn.Embedding layout.
        shape = (self.num_buckets, config.num_heads)
        self.embedding = nnx.Param(init(rngs.params(), shape, jnp.dtype(config.param_dtype)))

    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """Bias for ``[b, q]`` query and ``[b, k]`` key positions (b may be 1).

        Returns:
          float32 ``[b, heads, q, k]``.
        """
        relative = key_positions[:, None, :] - query_positions[:, :, None]  # [b, q, k]
        buckets = relative_position_bucket(
            relative,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        values = self.embedding[...].astype(jnp.float32)[buckets]  # [b, q, k, heads]
        return jnp.transpose(values, (0, 3, 1, 2))  # [b, heads, q, k]


class MultiHeadAttention(nnx.Module):
    """Unscaled dot-product attention with optional additive bias and boolean mask."""

    def __init__(self, config: T5Config, *, relative_bias: str | None = None, rngs: nnx.Rngs):
        """Builds q/k/v/o projections.

        Args:
          config: model hyperparameters.
          relative_bias: None, or 'bidirectional' / 'causal' to own the stack's
            relative position bias table (first layer only, as in Hugging Face).
          rngs: parameter initialisation.
        """
        self.num_heads = config.num_heads
        self.head_dim = config.d_kv
        inner = config.num_heads * config.d_kv
        dtype = jnp.dtype(config.dtype)
        param_dtype = jnp.dtype(config.param_dtype)

        def query_init(key, shape, dtype=jnp.float32):
            # T5 does not scale q.k by 1/sqrt(d_kv); the query init absorbs it.
            return _fan_in_normal()(key, shape, dtype) / math.sqrt(config.d_kv)

        def projection(in_features, out_features, init, axes):
            return nnx.Linear(
                in_features,
                out_features,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=nnx.with_partitioning(init, axes),
                rngs=rngs,
            )

        self.query = projection(config.d_model, inner, query_init, ("embed", "joined_kv"))
        self.key = projection(config.d_model, inner, _fan_in_normal(), ("embed", "joined_kv"))
        self.value = projection(config.d_model, inner, _fan_in_normal(), ("embed", "joined_kv"))
        self.out = projection(inner, config.d_model, _fan_in_normal(), ("joined_kv", "embed"))
        self.relative_position_bias = (
            None
            if relative_bias is None
            else RelativePositionBias(
                config, bidirectional=relative_bias == "bidirectional", rngs=rngs
            )
        )
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        *,
        mask: jax.Array,
        bias: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Attends ``[b, q, embed]`` queries to ``[b, k, embed]`` keys/values.

        Args:
          mask: bool ``[b, 1, q, k]``; False pairs are never attended.
          bias: float32 ``[b or 1, heads, q, k]`` added to the logits.
        """
        batch, q_len, _ = inputs_q.shape
        k_len = inputs_kv.shape[1]
        query = self.query(inputs_q).reshape(batch, q_len, self.num_heads, self.head_dim)
        key = self.key(inputs_kv).reshape(batch, k_len, self.num_heads, self.head_dim)
        value = self.value(inputs_kv).reshape(batch, k_len, self.num_heads, self.head_dim)
        # [batch, length, heads, kv]
        query = sharding.constrain(query, ("batch", "length", "heads", "kv"))
        key = sharding.constrain(key, ("batch", "length", "heads", "kv"))
        value = sharding.constrain(value, ("batch", "length", "heads", "kv"))

        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32
        )  # [batch, heads, q, k]
        if bias is not None:
            logits = logits + bias
        logits = jnp.where(mask, logits, MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
        weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)  # [batch, q, heads, kv]
        return self.out(context.reshape(batch, q_len, self.num_heads * self.head_dim))


class MlpBlock(nnx.Module):
    """Feed-forward block: ``relu`` (T5 v1.0) or gated tanh-GELU (v1.1)."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.gated = config.feed_forward == "gated-gelu"

        def dense(in_features, out_features, axes):
            return nnx.Linear(
                in_features,
                out_features,
                use_bias=False,
                dtype=jnp.dtype(config.dtype),
                param_dtype=jnp.dtype(config.param_dtype),
                kernel_init=nnx.with_partitioning(_fan_in_truncated_normal(), axes),
                rngs=rngs,
            )

        if self.gated:
            self.wi_0 = dense(config.d_model, config.d_ff, ("embed", "mlp"))
            self.wi_1 = dense(config.d_model, config.d_ff, ("embed", "mlp"))
        else:
            self.wi = dense(config.d_model, config.d_ff, ("embed", "mlp"))
        self.wo = dense(config.d_ff, config.d_model, ("mlp", "embed"))
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(
        self, x: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        if self.gated:
            # Hugging Face 'gelu_new' is the tanh approximation.
            hidden = jax.nn.gelu(self.wi_0(x), approximate=True) * self.wi_1(x)
        else:
            hidden = jax.nn.relu(self.wi(x))
        # [batch, length, mlp]
        hidden = sharding.constrain(hidden, ("batch", "length", "mlp"))
        hidden = self.dropout(hidden, deterministic=deterministic, rngs=rngs)
        return self.wo(hidden)


def attention_mask(query_ids: jax.Array, key_ids: jax.Array, pairwise=jnp.equal) -> jax.Array:
    """``pairwise(query_ids[b, q], key_ids[b, k])`` as a bool ``[b, 1, q, k]`` mask."""
    return pairwise(query_ids[:, None, :, None], key_ids[:, None, None, :])


def causal_mask(length: int) -> jax.Array:
    """Bool ``[1, 1, length, length]``: query i sees keys j <= i."""
    positions = jnp.arange(length)[None]
    return attention_mask(positions, positions, jnp.greater_equal)


class EncoderLayer(nnx.Module):
    """Pre-norm self-attention + MLP; the first layer owns the bias table."""

    def __init__(self, config: T5Config, *, owns_bias: bool, rngs: nnx.Rngs):
        self.pre_attention_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.self_attention = MultiHeadAttention(
            config, relative_bias="bidirectional" if owns_bias else None, rngs=rngs
        )
        self.pre_mlp_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.mlp = MlpBlock(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, mask, bias, deterministic, rngs):
        dropout = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        y = self.pre_attention_norm(x)
        y = self.self_attention(y, y, mask=mask, bias=bias, deterministic=deterministic, rngs=rngs)
        x = x + dropout(y)
        y = self.mlp(self.pre_mlp_norm(x), deterministic=deterministic, rngs=rngs)
        x = x + dropout(y)
        return sharding.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nnx.Module):
    """Pre-norm causal self-attention + cross-attention + MLP."""

    def __init__(self, config: T5Config, *, owns_bias: bool, rngs: nnx.Rngs):
        self.pre_self_attention_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.self_attention = MultiHeadAttention(
            config, relative_bias="causal" if owns_bias else None, rngs=rngs
        )
        self.pre_cross_attention_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.cross_attention = MultiHeadAttention(config, rngs=rngs)
        self.pre_mlp_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.mlp = MlpBlock(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, encoded, self_mask, cross_mask, bias, deterministic, rngs):
        dropout = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        y = self.pre_self_attention_norm(x)
        y = self.self_attention(
            y, y, mask=self_mask, bias=bias, deterministic=deterministic, rngs=rngs
        )
        x = x + dropout(y)
        y = self.pre_cross_attention_norm(x)
        y = self.cross_attention(
            y, encoded, mask=cross_mask, deterministic=deterministic, rngs=rngs
        )
        x = x + dropout(y)
        y = self.mlp(self.pre_mlp_norm(x), deterministic=deterministic, rngs=rngs)
        x = x + dropout(y)
        return sharding.constrain(x, ("batch", "length", "embed"))


class Stack(nnx.Module):
    """Encoder or decoder stack; layer 0's bias table is computed once per call."""

    def __init__(self, config: T5Config, *, decoder: bool, rngs: nnx.Rngs):
        layer_cls, count = (
            (DecoderLayer, config.num_decoder_layers)
            if decoder
            else (EncoderLayer, config.num_encoder_layers)
        )
        self.layers = nnx.List(
            [layer_cls(config, owns_bias=i == 0, rngs=rngs) for i in range(count)]
        )
        self.final_norm = RMSNorm(config.d_model, config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, positions, deterministic, rngs, **layer_kwargs):
        """Runs ``x`` [batch, length, embed]; positions are [batch or 1, length]."""
        # One table for the whole stack (Hugging Face shares layer 0's bias).
        bias = self.layers[0].self_attention.relative_position_bias(positions, positions)
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        for layer in self.layers:
            x = layer(x, bias=bias, deterministic=deterministic, rngs=rngs, **layer_kwargs)
        x = self.final_norm(x)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)
