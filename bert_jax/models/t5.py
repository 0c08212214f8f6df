"""T5 encoder-decoder (v1.0 and v1.1) in Flax NNX.

Matches Hugging Face ``T5ForConditionalGeneration`` numerically (see
``bert_jax/export/t5_weights.py`` and its parity test) and t5x's initialisation and
logical axis names. Packed rows are supported: attention never crosses segment
boundaries and relative positions come from ``*_positions`` when given.
With ``scan_layers`` each stack's layers are stacked on a leading ``layers`` axis
(`stack_layers` / `unstack_layers` convert a state between the layouts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models import layer_stack, projections
from bert_jax.models.layers import attention_mask, causal_mask
from bert_jax.models.t5_config import FEED_FORWARDS, T5_SIZES, T5Config, t5_config
from bert_jax.models.t5_layers import Stack
from bert_jax.runtime import sharding

__all__ = [
    "FEED_FORWARDS",
    "T5_SIZES",
    "T5Config",
    "T5ForConditionalGeneration",
    "stack_layers",
    "t5_config",
    "unstack_layers",
]

# Where the per-layer modules live in a `T5ForConditionalGeneration` state.
LAYER_PREFIXES = (("encoder", "layers"), ("decoder", "layers"))


def _positions(tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
    return jnp.arange(tokens.shape[1])[None] if positions is None else positions


class T5ForConditionalGeneration(nnx.Module):
    """T5 encoder-decoder returning float32 LM logits ``[batch, target_length, vocab]``.

    Token id 0 is padding (and the decoder start token); encoder padding is
    masked from the tokens, decoder padding only needs the causal mask.
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedder = projections.embed(
            config.vocab_size,
            config.d_model,
            ("vocab", "embed"),
            embedding_init=jax.nn.initializers.normal(stddev=1.0),
            param_dtype=config.param_dtype,
            rngs=rngs,
        )
        self.encoder = Stack(config, decoder=False, rngs=rngs)
        self.decoder = Stack(config, decoder=True, rngs=rngs)
        if not config.tie_word_embeddings:
            # float32 logits for stability (t5x); t5x fan-in init, not HF's std 1.
            self.lm_head = projections.dense(
                config.d_model,
                config.vocab_size,
                ("embed", "vocab"),
                kernel_init=jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                use_bias=False,
                dtype="float32",
                param_dtype=config.param_dtype,
                rngs=rngs,
            )

    def _embed(self, tokens: jax.Array) -> jax.Array:
        embedded = self.token_embedder(tokens).astype(self.config.dtype)  # [batch, length, embed]
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
            logits = projections.tied_logits(decoded, self.token_embedder.embedding[...])
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


def stack_layers(state: nnx.State, config: T5Config) -> nnx.State:
    """An unscanned `T5ForConditionalGeneration` state in ``config``'s layout (scanned or not)."""
    return layer_stack.stack_layers(state, LAYER_PREFIXES) if config.scan_layers else state


def unstack_layers(state: nnx.State, config: T5Config) -> nnx.State:
    """The unscanned layout of a state of ``config``'s model (inverse of `stack_layers`)."""
    return layer_stack.unstack_layers(state, LAYER_PREFIXES) if config.scan_layers else state
