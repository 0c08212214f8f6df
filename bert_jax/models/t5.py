"""T5 encoder-decoder (v1.0 and v1.1) in Flax NNX.

Matches Hugging Face ``T5ForConditionalGeneration`` numerically (see
``bert_jax/export/t5.py`` and its parity test) and t5x's initialisation and
logical axis names. Packed rows are supported: attention never crosses segment
boundaries and relative positions come from ``*_positions`` when given.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax import sharding
from bert_jax.models.t5_layers import Stack, attention_mask, causal_mask

FEED_FORWARDS = ("relu", "gated-gelu")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 hyperparameters (Hugging Face names where they exist)."""

    vocab_size: int
    d_model: int
    num_heads: int
    d_kv: int
    d_ff: int
    num_encoder_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-6
    feed_forward: str = "relu"  # 'relu' (v1.0) | 'gated-gelu' (v1.1, tanh GELU)
    tie_word_embeddings: bool = True  # v1.0; v1.1 has an untied, unscaled lm_head
    dtype: str = "float32"  # activations
    param_dtype: str = "float32"

    def __post_init__(self):
        positive = (
            "vocab_size",
            "d_model",
            "num_heads",
            "d_kv",
            "d_ff",
            "num_encoder_layers",
            "num_decoder_layers",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        if self.relative_attention_num_buckets < 4:
            raise ValueError(
                "T5Config.relative_attention_num_buckets must be >= 4, got "
                f"{self.relative_attention_num_buckets}"
            )
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 2:
            raise ValueError(
                "T5Config.relative_attention_max_distance must exceed "
                f"relative_attention_num_buckets // 2, got {self.relative_attention_max_distance}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"T5Config.layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.feed_forward not in FEED_FORWARDS:
            raise ValueError(
                f"T5Config.feed_forward must be one of {FEED_FORWARDS}, got {self.feed_forward!r}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(
                    f"T5Config.{name} must be one of {DTYPES}, got {getattr(self, name)!r}"
                )


_SHAPES = ("d_model", "num_heads", "d_kv", "d_ff", "num_encoder_layers", "num_decoder_layers")
# Published t5x / Mesh TensorFlow shapes, (d_model, heads, d_kv, d_ff, enc, dec) per variant.
T5_SIZES: dict[str, dict[str, dict[str, int]]] = {
    variant: {size: dict(zip(_SHAPES, shape, strict=True)) for size, shape in shapes.items()}
    for variant, shapes in {
        "v1_0": {
            "tiny": (128, 4, 32, 512, 2, 2),
            "small": (512, 8, 64, 2048, 6, 6),
            "base": (768, 12, 64, 3072, 12, 12),
            "large": (1024, 16, 64, 4096, 24, 24),
        },
        "v1_1": {
            "tiny": (128, 4, 32, 512, 2, 2),
            "small": (512, 6, 64, 1024, 8, 8),
            "base": (768, 12, 64, 2048, 12, 12),
            "large": (1024, 16, 64, 2816, 24, 24),
        },
    }.items()
}
_VARIANTS = {
    "v1_0": {"feed_forward": "relu", "tie_word_embeddings": True},
    "v1_1": {"feed_forward": "gated-gelu", "tie_word_embeddings": False},
}


def t5_config(size: str, variant: str = "v1_1", vocab_size: int = 32128, **overrides) -> T5Config:
    """A published T5 shape: ``size`` in tiny/small/base/large, ``variant`` v1_0/v1_1.

    ``overrides`` replace any T5Config field (dropout_rate, dtype, ...).
    """
    if variant not in T5_SIZES:
        raise ValueError(f"T5 variant must be one of {tuple(T5_SIZES)}, got {variant!r}")
    if size not in T5_SIZES[variant]:
        raise ValueError(f"T5 size must be one of {tuple(T5_SIZES[variant])}, got {size!r}")
    fields = {**T5_SIZES[variant][size], **_VARIANTS[variant], **overrides}
    return T5Config(vocab_size=vocab_size, **fields)


def _positions(tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
    return jnp.arange(tokens.shape[1])[None] if positions is None else positions


class T5ForConditionalGeneration(nnx.Module):
    """T5 encoder-decoder returning float32 LM logits ``[batch, target_length, vocab]``.

    Token id 0 is padding (and the decoder start token); encoder padding is
    masked from the tokens, decoder padding only needs the causal mask.
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        self.token_embedder = nnx.Embed(
            config.vocab_size,
            config.d_model,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.with_partitioning(
                jax.nn.initializers.normal(stddev=1.0), ("vocab", "embed")
            ),
            rngs=rngs,
        )
        self.encoder = Stack(config, decoder=False, rngs=rngs)
        self.decoder = Stack(config, decoder=True, rngs=rngs)
        if not config.tie_word_embeddings:
            # float32 logits for stability (t5x); t5x fan-in init, not HF's std 1.
            self.lm_head = nnx.Linear(
                config.d_model,
                config.vocab_size,
                use_bias=False,
                dtype=jnp.float32,
                param_dtype=param_dtype,
                kernel_init=nnx.with_partitioning(
                    jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                    ("embed", "vocab"),
                ),
                rngs=rngs,
            )

    def _embed(self, tokens: jax.Array) -> jax.Array:
        embedded = self.token_embedder(tokens)  # [batch, length, embed]
        return sharding.constrain(embedded, ("batch", "length", "embed"))

    def encode(
        self,
        encoder_input_tokens: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Encodes ``[batch, length]`` tokens to ``[batch, length, embed]``."""
        mask = attention_mask(encoder_input_tokens > 0, encoder_input_tokens > 0, jnp.logical_and)
        if encoder_segment_ids is not None:
            mask = mask & attention_mask(encoder_segment_ids, encoder_segment_ids)
        return self.encoder(
            self._embed(encoder_input_tokens),
            positions=_positions(encoder_input_tokens, encoder_positions),
            mask=mask,
            deterministic=deterministic,
            rngs=rngs,
        )

    def decode(
        self,
        encoded: jax.Array,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Logits for ``decoder_input_tokens`` given the encoder output.

        ``encoder_input_tokens`` is only used for the cross-attention padding mask.
        """
        if (encoder_segment_ids is None) != (decoder_segment_ids is None):
            raise ValueError("encoder_segment_ids and decoder_segment_ids must be given together")
        batch, target_length = decoder_input_tokens.shape
        self_mask = causal_mask(target_length)
        cross_mask = attention_mask(
            jnp.ones((batch, target_length), bool), encoder_input_tokens > 0, jnp.logical_and
        )
        if decoder_segment_ids is not None:
            self_mask = self_mask & attention_mask(decoder_segment_ids, decoder_segment_ids)
            cross_mask = cross_mask & attention_mask(decoder_segment_ids, encoder_segment_ids)
        decoded = self.decoder(
            self._embed(decoder_input_tokens),
            encoded=encoded,
            positions=_positions(decoder_input_tokens, decoder_positions),
            self_mask=self_mask,
            cross_mask=cross_mask,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self._logits(decoded)

    def _logits(self, decoded: jax.Array) -> jax.Array:
        decoded = decoded.astype(jnp.float32)
        if self.config.tie_word_embeddings:
            # Tied embeddings have std 1, so the output is rescaled (Mesh TF / HF).
            decoded = decoded * self.config.d_model**-0.5
            embedding = self.token_embedder.embedding[...].astype(jnp.float32)
            logits = jnp.einsum("ble,ve->blv", decoded, embedding)
        else:
            logits = self.lm_head(decoded)
        return sharding.constrain(logits, ("batch", "length", "vocab"))  # [batch, length, vocab]

    def __call__(
        self,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        *,
        encoder_segment_ids: jax.Array | None = None,
        decoder_segment_ids: jax.Array | None = None,
        encoder_positions: jax.Array | None = None,
        decoder_positions: jax.Array | None = None,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Teacher-forced logits, float32 ``[batch, target_length, vocab]``."""
        encoded = self.encode(
            encoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            deterministic=deterministic,
            rngs=rngs,
        )

    def greedy_decode(
        self,
        encoder_input_tokens: jax.Array,
        max_length: int,
        *,
        eos_id: int = 1,
        encoder_segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Greedy generation without a KV cache (the decoder reruns each step).

        Args:
          encoder_input_tokens: ``[batch, length]``, one example per row, 0 = pad.
          max_length: number of tokens to generate (static).
          eos_id: a row stops after emitting this id; later slots are 0.
          encoder_segment_ids: optional; positions with segment id 0 are treated
            as padding (packed rows are not supported here).

        Returns:
          int32 ``[batch, max_length]`` generated tokens (without the start token 0).
        """
        if encoder_segment_ids is not None:
            encoder_input_tokens = jnp.where(encoder_segment_ids > 0, encoder_input_tokens, 0)
        encoded = self.encode(encoder_input_tokens)
        batch = encoder_input_tokens.shape[0]

        def keep_going(carry):
            step, _, done = carry
            return (step < max_length) & ~jnp.all(done)

        def generate_one(carry):
            step, outputs, done = carry
            # Teacher-forced input is the output shifted right behind the start token 0;
            # causal masking makes the unfilled (zero) future slots irrelevant.
            decoder_inputs = jnp.pad(outputs[:, :-1], ((0, 0), (1, 0)))
            logits = self.decode(encoded, encoder_input_tokens, decoder_inputs)
            step_logits = jax.lax.dynamic_index_in_dim(logits, step, axis=1, keepdims=False)
            token = jnp.where(done, 0, jnp.argmax(step_logits, axis=-1).astype(jnp.int32))
            outputs = jax.lax.dynamic_update_index_in_dim(outputs, token, step, axis=1)
            return step + 1, outputs, done | (token == eos_id)

        init = (
            jnp.int32(0),
            jnp.zeros((batch, max_length), jnp.int32),
            jnp.zeros((batch,), bool),
        )
        _, outputs, _ = jax.lax.while_loop(keep_going, generate_one, init)
        return outputs
