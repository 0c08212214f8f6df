"""`T5Config`: the hyperparameters of the T5 encoder-decoder, and the published sizes.

`t5_config` applies a size / variant preset (t5x / Mesh TensorFlow shapes) and
overrides; the dataclass validates every field.
"""

from __future__ import annotations

import dataclasses

from bert_jax.models import layer_stack

FEED_FORWARDS = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 hyperparameters (Hugging Face names where they exist).

    Attributes:
      dtype: activation / compute dtype; softmax, RMSNorm statistics and logits stay float32.
      param_dtype: storage dtype of the parameters.
      attention: 'dot_product' (jax.nn.dot_product_attention) or 'explicit' (einsums).
      remat_policy: what each layer's backward pass recomputes (layer_stack.REMAT_POLICIES).
      scan_layers: stack each stack's layers on a leading 'layers' axis and run them with
        a scan; the relative position bias table stays outside (shared by the stack).
    """

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
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention: str = "dot_product"
    remat_policy: str = "none"
    scan_layers: bool = False

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
        layer_stack.check_compute_fields(self)


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
