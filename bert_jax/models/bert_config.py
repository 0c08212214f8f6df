"""`BertConfig`: the hyperparameters of the BERT / ALBERT encoder, and the size presets.

BERT sizes follow Devlin et al. / Turc et al. (tiny .. large); ALBERT sizes follow Lan et
al. (E = 128, all layers shared) plus a CPU-sized tiny. `sized_config` applies a preset and
overrides; the dataclass validates every field.
"""

from __future__ import annotations

import dataclasses

from bert_jax.models import layer_stack, layers

SHARE_MODES = ("none", "all", "attention", "ffn")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of a BERT or ALBERT model.

    Attributes:
      embedding_size: ALBERT's E; None means E = H and no E->H projection. A value
        (even E = H) adds the projection, as every Hugging Face ALBERT has one.
      share_mode: which parameters layers share: 'none' (BERT), 'all' (ALBERT),
        'attention' or 'ffn' (ALBERT paper ablations; the other half is per layer).
      num_groups: ALBERT ``num_hidden_groups``: with sharing, layer i uses
        parameter set ``int(i / (num_layers / num_groups))``.
      hidden_act: Hugging Face activation name; 'gelu' is the exact erf GELU.
      dtype: activation / compute dtype (e.g. 'bfloat16'); softmax, norms and logits
        stay float32.
      param_dtype: storage dtype of the parameters.
      attention: 'dot_product' (jax.nn.dot_product_attention) or 'explicit' (einsums).
      remat_policy: what each layer's backward pass recomputes (layer_stack.REMAT_POLICIES).
      scan_layers: stack per-layer parameters on a leading 'layers' axis and run them
        with a scan (share_mode 'none'); with share_mode 'all' and one group the
        shared layer is scanned with the same parameters at every step (no stack).
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    embedding_size: int | None = None
    share_mode: str = "none"
    num_groups: int = 1
    hidden_act: str = "gelu"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention: str = "dot_product"
    remat_policy: str = "none"
    scan_layers: bool = False

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        positive += ("max_position_embeddings", "type_vocab_size", "num_groups")
        for name in positive + (("embedding_size",) if self.embedding_size is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.share_mode not in SHARE_MODES:
            raise ValueError(f"BertConfig.share_mode {self.share_mode!r} not in {SHARE_MODES}")
        if self.share_mode == "none" and self.num_groups != 1:
            raise ValueError("BertConfig.num_groups must be 1 when share_mode is 'none'")
        if self.num_groups > self.num_layers:
            raise ValueError(
                f"BertConfig.num_groups ({self.num_groups}) exceeds num_layers ({self.num_layers})"
            )
        if self.hidden_act not in layers.ACTIVATIONS:
            raise ValueError(
                f"BertConfig.hidden_act {self.hidden_act!r} not in {sorted(layers.ACTIVATIONS)}"
            )
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BertConfig.{name} must be positive, got {getattr(self, name)}")
        layer_stack.check_compute_fields(self)
        if self.scan_layers and self.layer_mode == "loop":
            raise ValueError(
                "BertConfig.scan_layers needs share_mode 'none', or 'all' with num_groups=1; "
                f"got share_mode={self.share_mode!r}, num_groups={self.num_groups}"
            )

    @property
    def layer_mode(self) -> str:
        """'stacked' (scanned per-layer params), 'shared' (one scanned shared layer) or 'loop'."""
        if self.share_mode == "none":
            return "stacked" if self.scan_layers else "loop"
        one_shared = self.share_mode == "all" and self.num_groups == 1
        return "shared" if self.scan_layers and one_shared else "loop"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_dim(self) -> int:
        """E: the width of the embedding tables and of the MLM head."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    def group_index(self, layer: int) -> int:
        """Parameter group of ``layer``, exactly as Hugging Face ALBERT computes it.

        The float division matters: ``layer * G // L`` differs for some (L, G), e.g.
        L=18, G=14, layer 9, and exported checkpoints must run the same layers.
        """
        return int(layer / (self.num_layers / self.num_groups))

    @property
    def num_attention_sets(self) -> int:
        return self.num_groups if self.share_mode in ("all", "attention") else self.num_layers

    @property
    def num_ffn_sets(self) -> int:
        return self.num_groups if self.share_mode in ("all", "ffn") else self.num_layers

    def attention_index(self, layer: int) -> int:
        """Which attention parameter set ``layer`` applies."""
        return self.group_index(layer) if self.share_mode in ("all", "attention") else layer

    def ffn_index(self, layer: int) -> int:
        """Which feed-forward parameter set ``layer`` applies."""
        return self.group_index(layer) if self.share_mode in ("all", "ffn") else layer


_ARCH = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
BERT_SIZES: dict[str, dict] = {
    name: dict(zip(_ARCH, values, strict=True))
    for name, values in {
        "tiny": (2, 128, 2, 512),
        "mini": (4, 256, 4, 1024),
        "small": (4, 512, 8, 2048),
        "base": (12, 768, 12, 3072),
        "large": (24, 1024, 16, 4096),
    }.items()
}
# ALBERT uses E=128 at every published size; tiny (ours, for CPU runs) uses E=64 < H=128.
ALBERT_SIZES: dict[str, dict] = {
    name: dict(
        zip(_ARCH, values, strict=True),
        embedding_size=64 if name == "tiny" else 128,
        share_mode="all",
    )
    for name, values in {
        "tiny": (4, 128, 2, 512),
        "base": (12, 768, 12, 3072),
        "large": (24, 1024, 16, 4096),
        "xlarge": (24, 2048, 16, 8192),
    }.items()
}


def sized_config(kind: str, size: str, *, vocab_size: int, **overrides) -> BertConfig:
    """A `BertConfig` from ``BERT_SIZES`` / ``ALBERT_SIZES``; overrides win."""
    sizes = {"bert": BERT_SIZES, "albert": ALBERT_SIZES}.get(kind)
    if sizes is None:
        raise ValueError(f"model kind {kind!r} not in ('bert', 'albert')")
    if size not in sizes:
        raise ValueError(f"unknown {kind} size {size!r}; know {sorted(sizes)}")
    return BertConfig(vocab_size=vocab_size, **{**sizes[size], **overrides})
