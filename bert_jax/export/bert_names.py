"""Hugging Face's side of BERT / ALBERT: the parameter-name tables and ``config.json``.

One explicit table per model maps a path in our (unscanned) `BertForPreTraining`
state to a Hugging Face state_dict key. In the templates ``{a}`` / ``{f}`` are our
attention / feed-forward parameter sets and ``{i}`` the Hugging Face layer (BERT) or
layer group (ALBERT, whose groups hold one layer each here).

Layout-only and compute-only fields (``scan_layers``, ``attention``, ``remat_policy``,
dtypes) have no Hugging Face counterpart: a config read from ``config.json`` gets
their defaults.
"""

from __future__ import annotations

from bert_jax.export.convert import Entry, linear, norm
from bert_jax.models.bert import BertConfig

KINDS = ("bert", "albert")
ARCHITECTURES = {"bert": "BertForPreTraining", "albert": "AlbertForPreTraining"}


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} not in {KINDS}")


_ATTENTION = "encoder/attention_sublayers/{a}"
_FFN = "encoder/ffn_sublayers/{f}"
_BERT_LAYER = "bert.encoder.layer.{i}"
_ALBERT_LAYER = "albert.encoder.albert_layer_groups.{i}.albert_layers.0"

BERT_TABLE: tuple[Entry, ...] = (
    Entry("encoder/embeddings/token/embedding", "bert.embeddings.word_embeddings.weight"),
    Entry("encoder/embeddings/position/embedding", "bert.embeddings.position_embeddings.weight"),
    Entry("encoder/embeddings/segment/embedding", "bert.embeddings.token_type_embeddings.weight"),
    *norm("encoder/embeddings/norm", "bert.embeddings.LayerNorm"),
    *linear(f"{_ATTENTION}/attention/query", f"{_BERT_LAYER}.attention.self.query"),
    *linear(f"{_ATTENTION}/attention/key", f"{_BERT_LAYER}.attention.self.key"),
    *linear(f"{_ATTENTION}/attention/value", f"{_BERT_LAYER}.attention.self.value"),
    *linear(f"{_ATTENTION}/attention/output", f"{_BERT_LAYER}.attention.output.dense"),
    *norm(f"{_ATTENTION}/norm", f"{_BERT_LAYER}.attention.output.LayerNorm"),
    *linear(f"{_FFN}/mlp/wi", f"{_BERT_LAYER}.intermediate.dense"),
    *linear(f"{_FFN}/mlp/wo", f"{_BERT_LAYER}.output.dense"),
    *norm(f"{_FFN}/norm", f"{_BERT_LAYER}.output.LayerNorm"),
    *linear("encoder/pooler", "bert.pooler.dense", "pooler"),
    *linear("mlm_transform", "cls.predictions.transform.dense", "mlm"),
    *norm("mlm_norm", "cls.predictions.transform.LayerNorm", "mlm"),
    Entry("mlm_bias", "cls.predictions.bias", part="mlm"),
    *linear("pair_classifier", "cls.seq_relationship", "pair"),
)

ALBERT_TABLE: tuple[Entry, ...] = (
    Entry("encoder/embeddings/token/embedding", "albert.embeddings.word_embeddings.weight"),
    Entry("encoder/embeddings/position/embedding", "albert.embeddings.position_embeddings.weight"),
    Entry("encoder/embeddings/segment/embedding", "albert.embeddings.token_type_embeddings.weight"),
    *norm("encoder/embeddings/norm", "albert.embeddings.LayerNorm"),
    *linear("encoder/embedding_projection", "albert.encoder.embedding_hidden_mapping_in"),
    *linear(f"{_ATTENTION}/attention/query", f"{_ALBERT_LAYER}.attention.query"),
    *linear(f"{_ATTENTION}/attention/key", f"{_ALBERT_LAYER}.attention.key"),
    *linear(f"{_ATTENTION}/attention/value", f"{_ALBERT_LAYER}.attention.value"),
    *linear(f"{_ATTENTION}/attention/output", f"{_ALBERT_LAYER}.attention.dense"),
    *norm(f"{_ATTENTION}/norm", f"{_ALBERT_LAYER}.attention.LayerNorm"),
    *linear(f"{_FFN}/mlp/wi", f"{_ALBERT_LAYER}.ffn"),
    *linear(f"{_FFN}/mlp/wo", f"{_ALBERT_LAYER}.ffn_output"),
    *norm(f"{_FFN}/norm", f"{_ALBERT_LAYER}.full_layer_layer_norm"),
    *linear("encoder/pooler", "albert.pooler", "pooler"),
    *linear("mlm_transform", "predictions.dense", "mlm"),
    *norm("mlm_norm", "predictions.LayerNorm", "mlm"),
    Entry("mlm_bias", "predictions.bias", part="mlm"),
    *linear("pair_classifier", "sop_classifier.classifier", "pair"),
)

TABLES = {"bert": BERT_TABLE, "albert": ALBERT_TABLE}
# Tied Hugging Face keys (not written) and the key each one copies.
TIED = {
    "bert": {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    "albert": {
        "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
        "predictions.decoder.bias": "predictions.bias",
    },
}


def hf_config_dict(config: BertConfig, kind: str = "bert", **overrides) -> dict:
    """The ``config.json`` contents of the Hugging Face model `to_hf_state_dict` fills."""
    check_kind(kind)
    out = dict(
        architectures=[ARCHITECTURES[kind]],
        model_type=kind,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.dropout_rate,
        attention_probs_dropout_prob=config.attention_dropout_rate,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    if kind == "albert":
        out.update(
            embedding_size=config.embedding_dim,
            # Sharing Hugging Face cannot express is exported unrolled (one group per layer).
            num_hidden_groups=config.num_groups
            if config.share_mode == "all"
            else config.num_layers,
            inner_group_num=1,
            classifier_dropout_prob=config.dropout_rate,
        )
    return {**out, **overrides}


def hf_config(config: BertConfig, kind: str = "bert", **overrides):
    """A ``transformers.BertConfig`` / ``AlbertConfig`` (needs ``transformers``)."""
    import transformers

    cls = transformers.BertConfig if kind == "bert" else transformers.AlbertConfig
    fields = hf_config_dict(config, kind, **overrides)
    fields.pop("model_type")
    return cls(**fields)


def config_from_hf(hf_config_dict: dict, kind: str | None = None) -> BertConfig:
    """Our `BertConfig` from a Hugging Face config dict (``kind`` defaults to its model_type)."""
    fields = dict(hf_config_dict)
    kind = kind or fields.get("model_type")
    check_kind(kind)
    for field, supported in (
        ("inner_group_num", 1),
        ("position_embedding_type", "absolute"),
        ("is_decoder", False),
        ("add_cross_attention", False),
    ):
        if fields.get(field, supported) != supported:
            raise ValueError(f"HF config {field}={fields[field]!r} is unsupported ({supported!r})")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")  # fmt: skip
    missing = [field for field in required if field not in fields]
    if missing:
        raise ValueError(f"HF {kind} config lacks field(s) {missing}")
    mapped = dict(
        vocab_size=fields["vocab_size"],
        hidden_size=fields["hidden_size"],
        num_layers=fields["num_hidden_layers"],
        num_heads=fields["num_attention_heads"],
        intermediate_size=fields["intermediate_size"],
        max_position_embeddings=fields.get("max_position_embeddings", 512),
        type_vocab_size=fields.get("type_vocab_size", 2),
        hidden_act=fields.get("hidden_act", "gelu_new" if kind == "albert" else "gelu"),
        dropout_rate=fields.get("hidden_dropout_prob", 0.0 if kind == "albert" else 0.1),
        attention_dropout_rate=fields.get(
            "attention_probs_dropout_prob", 0.0 if kind == "albert" else 0.1
        ),
        layer_norm_eps=fields.get("layer_norm_eps", 1e-12),
        initializer_range=fields.get("initializer_range", 0.02),
    )
    if kind == "albert":
        mapped.update(
            embedding_size=fields.get("embedding_size", 128),
            share_mode="all",
            num_groups=fields.get("num_hidden_groups", 1),
        )
    return BertConfig(**mapped)
