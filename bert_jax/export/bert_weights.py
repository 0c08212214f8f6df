"""BERT / ALBERT parameters <-> Hugging Face ``BertForPreTraining`` / ``AlbertForPreTraining``.

One file, over 300 lines, as `t5_weights` is for T5: the name tables, the
``config.json`` mapping and the weight conversion are one mapping, read together.

One explicit table per model (in the `convert.Entry` style T5 uses too) maps a path in
our (unscanned) `BertForPreTraining` state to a Hugging Face state_dict key. In the
templates ``{a}`` / ``{f}`` are our attention / feed-forward parameter sets and ``{i}``
the Hugging Face layer (BERT) or layer group (ALBERT, whose groups hold one layer each
here). Reading a directory is `bert_jax.export.hf.import_hf`.

Linear kernels are stored ``[in, out]`` here and ``[out, in]`` in PyTorch, so those
entries are transposed; nothing is reshaped (attention kernels are 2-D on both
sides). A scanned state (``scan_layers``) is unstacked first, so both layouts export
the same tensors, and an import is stacked to the config's layout.

Sharing that Hugging Face cannot express (BERT kind with sharing, ALBERT with
``share_mode`` 'attention' or 'ffn') is exported unrolled: every layer gets its own
copy of the weights it uses, so outputs are identical but the sharing is not kept.
The MLM decoder is tied to the token embeddings on both sides; like
``save_pretrained`` we write only the source of a tied pair.

Layout-only and compute-only fields (``scan_layers``, ``attention``, ``remat_policy``,
dtypes) have no Hugging Face counterpart: a config read from ``config.json`` gets
their defaults.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
from flax import nnx

from bert_jax.export import convert
from bert_jax.export.convert import Entry, linear, norm
from bert_jax.models import bert
from bert_jax.models.bert import BertConfig, BertForPreTraining

__all__ = [
    "KINDS",
    "config_from_hf",
    "from_hf_state_dict",
    "hf_config",
    "hf_config_dict",
    "save_hf",
    "to_hf_state_dict",
]

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


log = logging.getLogger(__name__)


def _layout(config: BertConfig, kind: str) -> list[tuple[int, int]]:
    """(attention set, feed-forward set) behind each Hugging Face layer / group."""
    check_kind(kind)
    if kind == "bert" and config.embedding_size is not None:
        raise ValueError(
            "BERT has no embedding projection: a config with embedding_size set exports only "
            "as kind='albert'"
        )
    if kind == "albert" and config.share_mode == "all":
        return [(g, g) for g in range(config.num_groups)]
    return [(config.attention_index(i), config.ffn_index(i)) for i in range(config.num_layers)]


def _expand(config: BertConfig, kind: str) -> list[Entry]:
    """The table with every layer template filled in."""
    layers = [dict(i=i, a=a, f=f) for i, (a, f) in enumerate(_layout(config, kind))]
    return convert.expand(TABLES[kind], layers)


def to_hf_state_dict(
    state: nnx.State | BertForPreTraining,
    config: BertConfig,
    kind: str = "bert",
    *,
    include_tied: bool = False,
) -> dict[str, np.ndarray]:
    """Hugging Face ``{Bert,Albert}ForPreTraining`` state_dict (float32 NumPy) of our params.

    Args:
      state: params of a `BertForPreTraining` (or the model itself).
      include_tied: also write the tied decoder keys, as ``model.state_dict()`` has them.
    """
    if isinstance(state, nnx.Module):
        state = nnx.state(state, nnx.Param)
    state = bert.unstack_layers(state, config)
    layout = _layout(config, kind)
    if len(set(layout)) < len(layout):
        log.warning(
            "share_mode %r has no %s equivalent: exported unrolled", config.share_mode, kind
        )
    flat = convert.flat_variables(state)
    out = {}
    for entry in _expand(config, kind):
        if entry.ours.startswith("encoder/embedding_projection") and entry.ours not in flat:
            # ALBERT always projects E -> H; without our projection (E = H) it is the identity.
            h = config.hidden_size
            out[entry.hf] = np.eye(h, dtype=np.float32) if entry.transpose else np.zeros(h, "f4")
            continue
        out[entry.hf] = convert.export_tensor(entry, flat[entry.ours][...])
    if include_tied:
        out.update({tied: out[source] for tied, source in TIED[kind].items()})
    return out


def _canonical_keys(state_dict, kind: str) -> dict[str, np.ndarray]:
    """Adds the ``bert.`` / ``albert.`` prefix to bare base-model keys; renames gamma/beta."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".gamma") or key.endswith(".beta"):
            key = key.rsplit(".", 1)[0] + (".weight" if key.endswith(".gamma") else ".bias")
        if key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = f"{kind}.{key}"
        out[key] = value
    return out


def from_hf_state_dict(
    state_dict, config: BertConfig, kind: str = "bert", *, rngs: nnx.Rngs | None = None
) -> nnx.State:
    """Our `BertForPreTraining` params from a Hugging Face state_dict.

    Accepts ``{Bert,Albert}ForPreTraining`` keys, other task models' keys (their
    extra heads are ignored and logged) and bare ``BertModel`` / ``AlbertModel`` keys.
    Missing pooler / MLM / pair-head weights keep a fresh initialisation (logged).
    Apply the result with ``nnx.update(model, state)``; it has ``config``'s layout.

    Raises:
      KeyError: an encoder weight is missing. ValueError: a shape does not match.
    """
    target, config = config, dataclasses.replace(config, scan_layers=False)
    layout = _layout(config, kind)
    if layout != [(j, j) for j in range(config.num_attention_sets)] or len(layout) != (
        config.num_ffn_sets
    ):
        raise ValueError(
            f"cannot import {kind} weights into share_mode={config.share_mode!r}: use "
            f"config_from_hf(...) ('none' for BERT, 'all' for ALBERT)"
        )
    if kind == "albert" and config.embedding_size is None:
        raise ValueError("ALBERT checkpoints have an embedding projection: set embedding_size")
    sd = _canonical_keys(state_dict, kind)
    # Shapes only: a real (slow) initialisation happens only if heads are missing.
    abstract = nnx.eval_shape(lambda: BertForPreTraining(config, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    flat = convert.flat_variables(state)
    missing_heads, missing_encoder, used = [], [], set()
    for entry in _expand(config, kind):
        key = entry.hf
        if key not in sd:  # an untied checkpoint may carry only the decoder bias
            key = {v: k for k, v in TIED[kind].items()}.get(key, key)
        if key not in sd:
            (missing_encoder if entry.part == "encoder" else missing_heads).append(entry)
            continue
        used.add(key)
        var = flat[entry.ours]
        var.set_value(convert.import_tensor(entry, sd[key], var, key))
    if missing_encoder:
        names = [entry.hf for entry in missing_encoder]
        raise KeyError(f"{kind} checkpoint lacks encoder weights: {names[:8]}")
    if missing_heads:
        log.warning(
            "kept fresh initialisation for missing head weights: %s",
            [entry.hf for entry in missing_heads],
        )
        fresh = BertForPreTraining(config, rngs=rngs or nnx.Rngs(0))
        fresh = convert.flat_variables(nnx.state(fresh, nnx.Param))
        for entry in missing_heads:
            flat[entry.ours].set_value(fresh[entry.ours][...])
    unfilled = [
        path for path, var in flat.items() if isinstance(var.get_value(), jax.ShapeDtypeStruct)
    ]
    if unfilled:  # the table lost an entry
        raise RuntimeError(f"{kind} mapping table does not cover {unfilled}")
    ignored = {"position_ids", "token_type_ids"}  # HF buffers
    unused = [
        k for k in sd if k not in used and k not in TIED[kind] and k.split(".")[-1] not in ignored
    ]
    if unused:
        log.warning("ignored %d checkpoint keys: %s", len(unused), unused[:8])
    return bert.stack_layers(state, target)


def save_hf(state, config: BertConfig, kind: str, out_dir: str, **config_overrides) -> None:
    """Writes ``config.json`` and ``model.safetensors`` loadable by ``from_pretrained``.

    ``config_overrides`` go into config.json (e.g. ``bos_token_id``, ``eos_token_id``).
    """
    tensors = to_hf_state_dict(state, config, kind)
    convert.write_hf_dir(out_dir, hf_config_dict(config, kind, **config_overrides), tensors)
