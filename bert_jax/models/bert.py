"""BERT and ALBERT encoders with their pretraining heads.

One post-LN Transformer encoder serves both models (Devlin et al. 2019; Lan et al.
2020). ALBERT differs only by configuration:

- ``embedding_size`` (E) below ``hidden_size`` (H): embeddings of size E, projected
  to H before the first layer; the MLM head maps back to E and is tied to the
  E-sized token table.
- cross-layer sharing (``share_mode``): the encoder holds only as many attention /
  feed-forward parameter sets as the mode needs and applies the same module at
  several depths. The parameter tree stays a plain tree: nothing is referenced twice.

``scan_layers``: sublayers stacked on a ``layers`` axis and run by a scan (`layer_stack`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models import layer_stack, layers, projections
from bert_jax.models.bert_config import (
    ALBERT_SIZES,
    BERT_SIZES,
    SHARE_MODES,
    BertConfig,
    sized_config,
)
from bert_jax.runtime import sharding

__all__ = [
    "ALBERT_SIZES",
    "BERT_SIZES",
    "SHARE_MODES",
    "BertConfig",
    "BertForPreTraining",
    "BertModel",
    "sized_config",
    "stack_layers",
    "unstack_layers",
]

# Where the per-layer sublayers live in a `BertForPreTraining` state.
LAYER_PREFIXES = (("encoder", "attention_sublayers"), ("encoder", "ffn_sublayers"))


def _dense(
    config: BertConfig, in_features: int, out_features: int, axes, rngs
) -> projections.Dense:
    return projections.dense(
        in_features,
        out_features,
        axes,
        kernel_init=nnx.initializers.truncated_normal(stddev=config.initializer_range),
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


def _norm(config: BertConfig, features: int, rngs: nnx.Rngs) -> layers.LayerNorm:
    return layers.LayerNorm(
        features,
        epsilon=config.layer_norm_eps,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        rngs=rngs,
    )


class BertEmbeddings(nnx.Module):
    """Token + position + segment embeddings of width E, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(stddev=config.initializer_range)
        common = dict(embedding_init=init, param_dtype=config.param_dtype, rngs=rngs)
        e = config.embedding_dim
        self.token = projections.embed(config.vocab_size, e, ("vocab", "embed"), **common)
        self.position = projections.embed(
            config.max_position_embeddings, e, (None, "embed"), **common
        )
        self.segment = projections.embed(config.type_vocab_size, e, (None, "embed"), **common)
        self.norm = _norm(config, e, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, input_ids, segment_ids, *, deterministic, rngs) -> jax.Array:
        length = input_ids.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings "
                f"{self.position.num_embeddings}"
            )
        x = self.token(input_ids) + self.segment(segment_ids)  # [batch, length, E]
        x = x + self.position.embedding[:length][None]
        x = self.norm(x)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class AttentionSublayer(nnx.Module):
    """Post-LN self-attention: ``norm(x + dropout(attention(x)))``."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = layers.MultiHeadAttention(
            config.hidden_size,
            config.num_heads,
            config.head_dim,
            attention=config.attention,
            dropout_rate=config.attention_dropout_rate,
            kernel_init=nnx.initializers.truncated_normal(stddev=config.initializer_range),
            dtype=config.dtype,
            param_dtype=config.param_dtype,
            rngs=rngs,
        )
        self.norm = _norm(config, config.hidden_size, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, mask, *, deterministic, rngs) -> jax.Array:
        y = self.attention(x, mask=mask, deterministic=deterministic, rngs=rngs)
        return self.norm(x + self.dropout(y, deterministic=deterministic, rngs=rngs))


class FeedForwardSublayer(nnx.Module):
    """Post-LN feed-forward: ``norm(x + dropout(wo(act(wi(x)))))``."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.mlp = layers.FeedForward(
            config.hidden_size,
            config.intermediate_size,
            activation_name=config.hidden_act,
            kernel_init=nnx.initializers.truncated_normal(stddev=config.initializer_range),
            dtype=config.dtype,
            param_dtype=config.param_dtype,
            rngs=rngs,
        )
        self.norm = _norm(config, config.hidden_size, rngs)
        self.dropout = nnx.Dropout(config.dropout_rate)

    def __call__(self, x, *, deterministic, rngs) -> jax.Array:
        y = self.mlp(x, deterministic=deterministic, rngs=rngs)
        return self.norm(x + self.dropout(y, deterministic=deterministic, rngs=rngs))


class BertModel(nnx.Module):
    """The encoder and pooler without pretraining heads (like Hugging Face ``BertModel``)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.embedding_projection = nnx.data(None)  # E = H: nothing to project
        if config.embedding_size is not None:
            self.embedding_projection = _dense(
                config, config.embedding_size, config.hidden_size, (None, "embed"), rngs
            )
        if config.layer_mode == "stacked":
            stack = lambda cls: layer_stack.create_stacked(  # noqa: E731
                lambda r: cls(config, rngs=r), config.num_layers, rngs
            )
            self.attention_sublayers = stack(AttentionSublayer)
            self.ffn_sublayers = stack(FeedForwardSublayer)
        else:
            self.attention_sublayers = nnx.List(
                [AttentionSublayer(config, rngs=rngs) for _ in range(config.num_attention_sets)]
            )
            self.ffn_sublayers = nnx.List(
                [FeedForwardSublayer(config, rngs=rngs) for _ in range(config.num_ffn_sets)]
            )
        self.pooler = _dense(config, config.hidden_size, config.hidden_size, ("embed", "mlp"), rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        input_mask: jax.Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes int ``[batch, length]`` inputs (``input_mask``: 1 real, 0 padding).

        Returns:
          ``(sequence_output [batch, length, H], pooled [batch, H])``; pooled is
          ``tanh(dense(sequence_output[:, 0]))``, the [CLS] position.
        """
        config = self.config
        dropout = config.dropout_rate > 0 or config.attention_dropout_rate > 0
        if not deterministic and rngs is None and dropout:
            raise ValueError("deterministic=False needs rngs=nnx.Rngs(dropout=key)")
        x = self.embeddings(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
        if self.embedding_projection is not None:
            x = self.embedding_projection(x)  # [batch, length, H]
        x = sharding.constrain(x, ("batch", "length", "embed"))
        # Padding keys are never attended; padded queries still attend (as BERT).
        mask = input_mask[:, None, None, :] > 0  # [batch, 1, 1, length]

        def layer_fn(sublayers, x, layer_rngs):
            attention, ffn = sublayers
            x = attention(x, mask, deterministic=deterministic, rngs=layer_rngs)
            x = sharding.constrain(x, ("batch", "length", "embed"))
            x = ffn(x, deterministic=deterministic, rngs=layer_rngs)
            return sharding.constrain(x, ("batch", "length", "embed"))

        if config.layer_mode == "loop":
            sublayers = [
                (self.attention_sublayers[config.attention_index(i)],
                 self.ffn_sublayers[config.ffn_index(i)])
                for i in range(config.num_layers)
            ]  # fmt: skip
        elif config.layer_mode == "shared":
            sublayers = (self.attention_sublayers[0], self.ffn_sublayers[0])
        else:
            sublayers = (self.attention_sublayers, self.ffn_sublayers)
        x = layer_stack.apply_layers(
            layer_fn,
            x,
            sublayers,
            num_layers=config.num_layers,
            stacked=config.layer_mode == "stacked",
            remat_policy=config.remat_policy,
            dropout_key=None if deterministic or rngs is None else rngs.dropout(),
        )
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [batch, H]
        return x, pooled


class BertForPreTraining(nnx.Module):
    """BERT / ALBERT with the masked-LM head and the NSP / SOP sentence-pair head."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = BertModel(config, rngs=rngs)
        e = config.embedding_dim
        self.mlm_transform = _dense(config, config.hidden_size, e, ("embed", None), rngs)
        self.mlm_norm = _norm(config, e, rngs)
        zeros = nnx.with_partitioning(nnx.initializers.zeros_init(), ("vocab",))
        self.mlm_bias = nnx.Param(zeros(rngs.params(), (config.vocab_size,), config.param_dtype))
        self.pair_classifier = _dense(config, config.hidden_size, 2, ("embed", None), rngs)

    def encode(self, input_ids, segment_ids, input_mask, *, deterministic=True, rngs=None):
        """``(sequence_output [batch, length, H], pooled [batch, H])``; see `BertModel`."""
        return self.encoder(
            input_ids, segment_ids, input_mask, deterministic=deterministic, rngs=rngs
        )

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        input_mask: jax.Array,
        masked_lm_positions: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Pretraining logits.

        Args:
          input_ids, segment_ids, input_mask: int ``[batch, length]``.
          masked_lm_positions: int ``[batch, predictions]``; when given, only these
            positions go through the MLM head.
          deterministic: False enables dropout, which then needs ``rngs``.
          rngs: ``nnx.Rngs(dropout=key)``.

        Returns:
          Float32 ``(mlm_logits [batch, predictions or length, vocab], pair_logits
          [batch, 2])``.
        """
        sequence, pooled = self.encode(
            input_ids, segment_ids, input_mask, deterministic=deterministic, rngs=rngs
        )
        if masked_lm_positions is not None:
            index = masked_lm_positions[:, :, None].astype(jnp.int32)
            sequence = jnp.take_along_axis(sequence, index, axis=1)  # [batch, predictions, H]
        hidden = layers.activation(self.config.hidden_act)(self.mlm_transform(sequence))
        hidden = self.mlm_norm(hidden)  # [batch, predictions, E]
        table = self.encoder.embeddings.token.embedding[...]
        mlm_logits = projections.tied_logits(hidden, table) + self.mlm_bias[...].astype(jnp.float32)
        pair_logits = self.pair_classifier(pooled).astype(jnp.float32)  # [batch, 2]
        return mlm_logits, pair_logits


def stack_layers(state: nnx.State, config: BertConfig) -> nnx.State:
    """An unscanned state (of any model with an ``encoder``) in ``config``'s layout."""
    if config.layer_mode != "stacked":  # only then do the layouts differ
        return state
    return layer_stack.stack_layers(state, LAYER_PREFIXES)


def unstack_layers(state: nnx.State, config: BertConfig) -> nnx.State:
    """The unscanned layout of a state of ``config``'s model (inverse of `stack_layers`)."""
    if config.layer_mode != "stacked":
        return state
    return layer_stack.unstack_layers(state, LAYER_PREFIXES)
