"""BERT / ALBERT parameters <-> Hugging Face ``BertForPreTraining`` / ``AlbertForPreTraining``.

The name tables (`bert_names`, in the `convert.Entry` style T5 uses too) map our
unscanned state paths to Hugging Face keys; reading a directory is
`bert_jax.export.hf.import_hf`.
Linear kernels are stored ``[in, out]`` here and ``[out, in]`` in PyTorch, so those
entries are transposed; nothing is reshaped (attention kernels are 2-D on both
sides). A scanned state (``scan_layers``) is unstacked first, so both layouts export
the same tensors, and an import is stacked to the config's layout.

Sharing that Hugging Face cannot express (BERT kind with sharing, ALBERT with
``share_mode`` 'attention' or 'ffn') is exported unrolled: every layer gets its own
copy of the weights it uses, so outputs are identical but the sharing is not kept.
The MLM decoder is tied to the token embeddings on both sides; like
``save_pretrained`` we write only the source of a tied pair.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
from flax import nnx

from bert_jax.export import convert
from bert_jax.export.bert_names import (
    KINDS,
    TABLES,
    TIED,
    config_from_hf,
    hf_config,
    hf_config_dict,
)
from bert_jax.export.bert_names import check_kind as _check_kind
from bert_jax.export.convert import Entry
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

log = logging.getLogger(__name__)


def _layout(config: BertConfig, kind: str) -> list[tuple[int, int]]:
    """(attention set, feed-forward set) behind each Hugging Face layer / group."""
    _check_kind(kind)
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
