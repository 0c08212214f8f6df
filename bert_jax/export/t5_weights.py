"""T5 <-> Hugging Face ``T5ForConditionalGeneration`` conversion.

One explicit table of `convert.Entry` (the style BERT / ALBERT use too) maps our
``nnx.State`` paths to Hugging Face state_dict keys; `name_table` fills its ``{i}``
layer templates. Reading a directory is `bert_jax.export.hf.import_hf`. Dense
kernels are stored ``[in, out]`` here and ``[out, in]`` in PyTorch, so every entry
marked ``transpose`` is transposed in both directions; embeddings, relative-bias
tables (``[buckets, heads]`` on both sides) and norm scales are not. Each of our
stacks owns one relative-bias table, which Hugging Face keeps in its block 0. A
scanned state (``scan_layers``) is unstacked first, so both layouts export the same
tensors, and an import is stacked to the config's layout.

``transformers`` is imported lazily (only ``hf_config`` needs it): exporting
writes ``config.json`` + ``model.safetensors`` with NumPy alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from bert_jax.export import convert
from bert_jax.export.convert import Entry, kernel
from bert_jax.models import t5
from bert_jax.models.t5 import T5Config, T5ForConditionalGeneration

HF_ATTENTION = {"query": "q", "key": "k", "value": "v", "output": "o"}
# HF keys that hold no extra information: tied copies of shared.weight, and a
# cross-attention bias table some old checkpoints carry but HF never uses.
_IGNORED_HF_KEYS = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)


def _mlp_names(config: T5Config) -> tuple[str, ...]:
    return ("wi_0", "wi_1", "wo") if config.feed_forward == "gated-gelu" else ("wi", "wo")


# (our attention, our norm before it, HF attention) in Hugging Face's sublayer order;
# the MLP sublayer follows them.
SUBLAYERS = {
    "encoder": (("self_attention", "pre_attention_norm", "SelfAttention"),),
    "decoder": (
        ("self_attention", "pre_self_attention_norm", "SelfAttention"),
        ("cross_attention", "pre_cross_attention_norm", "EncDecAttention"),
    ),
}


def _layer_template(stack: str, mlp_names: tuple[str, ...]) -> list[Entry]:
    """One ``{i}``-templated block of ``stack`` (see `convert.expand`)."""
    ours, theirs = f"{stack}/layers/{{i}}", f"{stack}.block.{{i}}.layer"
    table = []
    for index, (attention, norm, hf_attention) in enumerate(SUBLAYERS[stack]):
        table.append(Entry(f"{ours}/{norm}/scale", f"{theirs}.{index}.layer_norm.weight"))
        for name, hf_name in HF_ATTENTION.items():
            table.append(
                kernel(f"{ours}/{attention}/{name}", f"{theirs}.{index}.{hf_attention}.{hf_name}")
            )
    mlp = len(SUBLAYERS[stack])
    table.append(Entry(f"{ours}/pre_mlp_norm/scale", f"{theirs}.{mlp}.layer_norm.weight"))
    for name in mlp_names:
        table.append(kernel(f"{ours}/mlp/{name}", f"{theirs}.{mlp}.DenseReluDense.{name}"))
    return table


def name_table(config: T5Config) -> list[Entry]:
    """The `Entry` of every parameter of ``config``'s model (unscanned paths).

    Our paths are '/'-joined ``nnx.State`` paths, e.g.
    ``encoder/layers/0/self_attention/query/kernel``.
    """
    table = [Entry("token_embedder/embedding", "shared.weight")]
    for stack, num_layers in (
        ("encoder", config.num_encoder_layers),
        ("decoder", config.num_decoder_layers),
    ):
        layers = [dict(i=i) for i in range(num_layers)]
        table += convert.expand(_layer_template(stack, _mlp_names(config)), layers)
        if num_layers:  # each of our stacks owns one table, HF keeps it in block 0
            hf_bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            table.append(Entry(f"{stack}/relative_position_bias/embedding", hf_bias))
        table.append(Entry(f"{stack}/final_norm/scale", f"{stack}.final_layer_norm.weight"))
    if not config.tie_word_embeddings:
        table.append(kernel("lm_head", "lm_head"))
    return table


def to_hf_state_dict(state: nnx.State, config: T5Config) -> dict[str, np.ndarray]:
    """Our parameters (either layout) as a float32 HF state_dict (lm_head only if untied)."""
    values = convert.flat_variables(t5.unstack_layers(state, config))
    state_dict = {}
    for entry in name_table(config):
        if entry.ours not in values:
            raise KeyError(
                f"T5 state has no parameter {entry.ours!r} (needed for HF key {entry.hf!r})"
            )
        variable = values.pop(entry.ours)
        value = variable.get_value() if hasattr(variable, "get_value") else variable
        state_dict[entry.hf] = convert.export_tensor(entry, value)
    if values:
        raise KeyError(f"T5 state has parameters the HF table does not map: {sorted(values)}")
    return state_dict


def abstract_state(config: T5Config) -> nnx.State:
    """Shape-only state of ``config``'s model, with logical sharding metadata."""
    return nnx.state(nnx.eval_shape(lambda: T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))))


def from_hf_state_dict(state_dict: Mapping[str, Any], config: T5Config) -> nnx.State:
    """Builds our ``nnx.State`` (with logical sharding metadata) from an HF state_dict.

    Accepts torch tensors or NumPy arrays. With tied embeddings an ``lm_head.weight``
    is accepted if it equals ``shared.weight``; an untied config without one
    (HF ties it in that case) reuses ``shared.weight``.

    Raises:
      KeyError: a needed key is missing or an unknown key is present.
      ValueError: a shape does not match ``config``.
    """
    arrays = {key: convert.to_numpy(value) for key, value in state_dict.items()}
    if "shared.weight" not in arrays and "encoder.embed_tokens.weight" in arrays:
        arrays["shared.weight"] = arrays["encoder.embed_tokens.weight"]
    if config.tie_word_embeddings and "lm_head.weight" in arrays:
        lm_head = arrays.pop("lm_head.weight")
        if not np.array_equal(lm_head, arrays.get("shared.weight")):
            raise ValueError(
                "HF checkpoint has an lm_head.weight different from shared.weight, but the "
                "config ties word embeddings (v1.0); set tie_word_embeddings=False"
            )
    if not config.tie_word_embeddings and "lm_head.weight" not in arrays:
        logging.warning("HF checkpoint has no lm_head.weight; using shared.weight as in HF")
        arrays["lm_head.weight"] = arrays["shared.weight"]
    for key in _IGNORED_HF_KEYS:
        arrays.pop(key, None)

    unscanned = dataclasses.replace(config, scan_layers=False)
    abstract = nnx.to_flat_state(abstract_state(unscanned))
    flat = {"/".join(map(str, path)): (path, var) for path, var in abstract}
    leaves = []
    for entry in name_table(config):
        if entry.hf not in arrays:
            raise KeyError(f"HF state_dict is missing {entry.hf!r} (for {entry.ours!r})")
        path, variable = flat[entry.ours]
        value = convert.import_tensor(entry, arrays.pop(entry.hf), variable)
        leaves.append((path, variable.replace(value)))
    if arrays:
        raise KeyError(f"HF state_dict has keys the T5 table does not map: {sorted(arrays)}")
    return t5.stack_layers(nnx.from_flat_state(leaves), config)


def hf_config_dict(config: T5Config) -> dict[str, Any]:
    """``config.json`` contents for ``transformers.T5Config``.

    ``tie_word_embeddings`` keeps its historical meaning (v1.1 = False: untied
    lm_head, no output scaling), which every transformers version reads correctly.
    """
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_factor": 1.0,
        "feed_forward_proj": config.feed_forward,
        "tie_word_embeddings": config.tie_word_embeddings,
        "is_encoder_decoder": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "torch_dtype": "float32",
    }


def hf_config(config: T5Config):
    """The equivalent ``transformers.T5Config``."""
    import transformers

    fields = hf_config_dict(config)
    for key in ("architectures", "model_type"):
        fields.pop(key)
    return transformers.T5Config(**fields)


def config_from_hf(hf: Mapping[str, Any] | Any) -> T5Config:
    """T5Config from an HF config dict (or ``transformers.T5Config``).

    Raises:
      ValueError: unsupported ``feed_forward_proj`` or missing fields.
    """
    if not isinstance(hf, Mapping):
        hf = hf.to_dict()
    feed_forward = hf.get("feed_forward_proj", "relu")
    if feed_forward not in ("relu", "gated-gelu"):
        raise ValueError(f"HF config feed_forward_proj={feed_forward!r}: need relu or gated-gelu")
    # transformers >= 5 always writes tie_word_embeddings=True and records the
    # v1.1 'no output scaling' in scale_decoder_outputs instead.
    if "scale_decoder_outputs" in hf:
        tied = bool(hf["scale_decoder_outputs"])
    else:
        tied = bool(hf.get("tie_word_embeddings", True))
    try:
        return T5Config(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            num_heads=hf["num_heads"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_encoder_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            dropout_rate=hf.get("dropout_rate", 0.1),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward=feed_forward,
            tie_word_embeddings=tied,
        )
    except KeyError as missing:
        raise ValueError(f"HF T5 config lacks field {missing}") from None


def save_hf(state: nnx.State, config: T5Config, out_dir: str | os.PathLike) -> None:
    """Writes ``config.json`` and ``model.safetensors`` loadable by transformers."""
    convert.write_hf_dir(out_dir, hf_config_dict(config), to_hf_state_dict(state, config))
