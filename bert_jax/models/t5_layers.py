"""T5 layers on the shared block library: relative position bias, encoder / decoder layers, stacks.

Semantics follow Hugging Face ``modeling_t5.py`` (the parity reference) and the t5x
example layers: pre-norm RMSNorm without bias or mean subtraction, dense layers without
biases, no ``1/sqrt(d_kv)`` attention scaling (it is folded into the query
initialiser), and bucketed relative position biases, added to the attention logits
as a float32 bias that one table per stack computes once per call.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.models import layer_stack, layers
from bert_jax.models.t5_config import T5Config
from bert_jax.runtime import sharding


def _fan_in_normal(scale: float = 1.0):
    return jax.nn.initializers.variance_scaling(scale, "fan_in", "normal")


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
        # t5x's one-hot contraction instead of a gather: its gradient is a matmul, not a
        # scatter-add into the few buckets (exact: one non-zero term per output).
        one_hot = jax.nn.one_hot(buckets, self.num_buckets, dtype=jnp.float32)
        table = self.embedding[...].astype(jnp.float32)
        return jnp.einsum("bqkn,nh->bhqk", one_hot, table)  # [b, heads, q, k]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_batch(bias: jax.Array, rows: int) -> jax.Array:
    """``[1, ...]`` bias broadcast to ``[rows, ...]``.

    The same values as broadcasting inside the attention, but the backward pass sums
    the rows with a matmul: XLA:CPU's reduce over a leading batch axis was ~10x
    slower (measured, benchmarks/README.md) and was 6% of a T5 tiny step's op time.
    """
    return jnp.broadcast_to(bias, (rows, *bias.shape[1:]))


def _broadcast_batch_fwd(bias, rows):
    return broadcast_batch(bias, rows), None


def _broadcast_batch_bwd(rows, _, grad):
    ones = jnp.ones((rows,), grad.dtype)
    summed = jnp.einsum("b,bx->x", ones, grad.reshape(rows, -1))
    return (summed.reshape((1, *grad.shape[1:])),)


broadcast_batch.defvjp(_broadcast_batch_fwd, _broadcast_batch_bwd)


def _norm(config: T5Config, rngs: nnx.Rngs) -> layers.RMSNorm:
    return layers.RMSNorm(
        config.d_model,
        epsilon=config.layer_norm_eps,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


def _attention(config: T5Config, rngs: nnx.Rngs) -> layers.MultiHeadAttention:
    def query_init(key, shape, dtype=jnp.float32):
        # T5 does not scale q.k by 1/sqrt(d_kv); the query init absorbs it.
        return _fan_in_normal()(key, shape, dtype) / math.sqrt(config.d_kv)

    return layers.MultiHeadAttention(
        config.d_model,
        config.num_heads,
        config.d_kv,
        attention=config.attention,
        dropout_rate=config.dropout_rate,
        use_bias=False,
        scale_logits=False,
        kernel_init=_fan_in_normal(),
        query_kernel_init=query_init,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


def _mlp(config: T5Config, rngs: nnx.Rngs) -> layers.FeedForward:
    gated = config.feed_forward == "gated-gelu"
    return layers.FeedForward(
        config.d_model,
        config.d_ff,
        # Hugging Face 'gelu_new' (tanh approximation) for v1.1's gated GELU.
        activation_name="gelu_new" if gated else "relu",
        gated=gated,
        use_bias=False,
        intermediate_dropout_rate=config.dropout_rate,
        kernel_init=jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


class EncoderLayer(nnx.Module):
    """Pre-norm self-attention + MLP."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.pre_attention_norm = _norm(config, rngs)
        self.self_attention = _attention(config, rngs)
        self.pre_mlp_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, mask, bias, deterministic, rngs):
        dropout = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        y = self.pre_attention_norm(x)
        y = self.self_attention(y, mask=mask, bias=bias, deterministic=deterministic, rngs=rngs)
        x = x + dropout(y)
        y = self.mlp(self.pre_mlp_norm(x), deterministic=deterministic, rngs=rngs)
        x = x + dropout(y)
        return sharding.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nnx.Module):
    """Pre-norm causal self-attention + cross-attention + MLP."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.pre_self_attention_norm = _norm(config, rngs)
        self.self_attention = _attention(config, rngs)
        self.pre_cross_attention_norm = _norm(config, rngs)
        self.cross_attention = _attention(config, rngs)
        self.pre_mlp_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, encoded, self_mask, cross_mask, bias, deterministic, rngs):
        dropout = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        y = self.pre_self_attention_norm(x)
        y = self.self_attention(
            y, mask=self_mask, bias=bias, deterministic=deterministic, rngs=rngs
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
    """Encoder or decoder stack with one relative position bias table for all its layers.

    Hugging Face keeps that table in layer 0 and shares it; here it belongs to the
    stack, so the (possibly scanned) layers are identical modules.
    """

    def __init__(self, config: T5Config, *, decoder: bool, rngs: nnx.Rngs):
        self.config = config
        layer_cls, self.num_layers = (
            (DecoderLayer, config.num_decoder_layers)
            if decoder
            else (EncoderLayer, config.num_encoder_layers)
        )
        self.relative_position_bias = RelativePositionBias(
            config, bidirectional=not decoder, rngs=rngs
        )
        if config.scan_layers:
            self.layers = layer_stack.create_stacked(
                lambda r: layer_cls(config, rngs=r), self.num_layers, rngs
            )
        else:
            self.layers = nnx.List([layer_cls(config, rngs=rngs) for _ in range(self.num_layers)])
        self.final_norm = _norm(config, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, positions, deterministic, rngs, **layer_kwargs):
        """Runs ``x`` [batch, length, embed]; positions are [batch or 1, length]."""
        bias = self.relative_position_bias(positions, positions)  # [b or 1, heads, q, k]
        if bias.shape[0] == 1 < x.shape[0]:
            bias = broadcast_batch(bias, x.shape[0])  # [b, heads, q, k]
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)

        def layer_fn(layer, x, layer_rngs):
            return layer(x, bias=bias, deterministic=deterministic, rngs=layer_rngs, **layer_kwargs)

        x = layer_stack.apply_layers(
            layer_fn,
            x,
            self.layers if self.config.scan_layers else list(self.layers),
            num_layers=self.num_layers,
            stacked=True,
            remat_policy=self.config.remat_policy,
            dropout_key=None if deterministic or rngs is None else rngs.dropout(),
        )
        x = self.final_norm(x)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)
