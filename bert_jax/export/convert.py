"""The one conversion style every model family uses: name tables and their tensor helpers.

A table is a list of `Entry`: our '/'-joined path in the unscanned ``nnx.State`` and
the Hugging Face state_dict key. Linear kernels are ``[in, out]`` here and
``[out, in]`` in PyTorch, so their entries are transposed in both directions; nothing
is reshaped. Templates with ``{i}`` (the Hugging Face layer) and other fields are
filled by `expand`. `read_state_dict` and `write_hf_dir` are the only readers and
writers of Hugging Face weight files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: our state path, the Hugging Face key, and how they relate.

    Attributes:
      part: 'encoder' entries must exist on import; other parts (BERT's 'pooler',
        'mlm' and 'pair' heads) may be missing and then keep a fresh initialisation.
    """

    ours: str
    hf: str
    transpose: bool = False
    part: str = "encoder"


def kernel(ours: str, hf: str, part: str = "encoder") -> Entry:
    # kernel [in, out] <-> weight [out, in]
    return Entry(f"{ours}/kernel", f"{hf}.weight", True, part)


def linear(ours: str, hf: str, part: str = "encoder") -> tuple[Entry, Entry]:
    return kernel(ours, hf, part), Entry(f"{ours}/bias", f"{hf}.bias", False, part)


def norm(ours: str, hf: str, part: str = "encoder") -> tuple[Entry, Entry]:
    return Entry(f"{ours}/scale", f"{hf}.weight", False, part), Entry(
        f"{ours}/bias", f"{hf}.bias", False, part
    )


def expand(table: Iterable[Entry], layers: Sequence[Mapping[str, int]]) -> list[Entry]:
    """The table with every template (an ``{i}`` in its Hugging Face key) filled per layer.

    Args:
      layers: the template fields of each Hugging Face layer, e.g. ``{"i": 3, "a": 0}``;
        both sides of an entry are formatted with them.
    """
    entries = []
    for entry in table:
        if "{i}" not in entry.hf:
            entries.append(entry)
            continue
        for fields in layers:
            ours, hf = entry.ours.format(**fields), entry.hf.format(**fields)
            entries.append(dataclasses.replace(entry, ours=ours, hf=hf))
    return entries


def flat_variables(state: nnx.State) -> dict[str, nnx.Variable]:
    """``{'encoder/layers/0/...': variable}`` of a state (abstract or concrete)."""
    return {"/".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def to_numpy(value: Any) -> np.ndarray:
    """A float32 NumPy copy of a torch tensor (possibly bfloat16), jax or NumPy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(jax.device_get(value), dtype=np.float32)


def export_tensor(entry: Entry, value: Any) -> np.ndarray:
    """Our parameter as the contiguous float32 tensor Hugging Face stores under ``entry.hf``."""
    value = to_numpy(value)
    return np.ascontiguousarray(value.T if entry.transpose else value)


def import_tensor(entry: Entry, value: Any, target: nnx.Variable, key: str | None = None):
    """A Hugging Face tensor as the value of our (possibly abstract) ``target`` variable.

    Raises:
      ValueError: naming both sides when the shapes differ after the transpose.
    """
    value = to_numpy(value)
    value = value.T if entry.transpose else value
    expected = target.get_value()
    if value.shape != expected.shape:
        raise ValueError(
            f"HF {key or entry.hf!r} has shape {value.shape} after transpose={entry.transpose}, "
            f"expected {expected.shape} for {entry.ours!r}; check the config"
        )
    return jax.numpy.asarray(value, dtype=expected.dtype)


def read_state_dict(directory: str | os.PathLike) -> dict[str, Any]:
    """The weights of a Hugging Face directory, as NumPy / jax arrays or torch tensors.

    Reads ``model.safetensors``, a sharded ``model.safetensors.index.json`` or, failing
    those, ``pytorch_model.bin`` (which needs torch).

    Raises:
      FileNotFoundError: naming the files looked for.
    """
    directory = os.fspath(directory)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(directory, "model.safetensors")):
        shards = ["model.safetensors"]
    elif os.path.exists(os.path.join(directory, "pytorch_model.bin")):
        import torch

        path = os.path.join(directory, "pytorch_model.bin")
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        raise FileNotFoundError(
            f"no weights in {directory}: looked for model.safetensors(.index.json) and "
            "pytorch_model.bin"
        )
    # The flax reader also handles bfloat16 checkpoints (NumPy has no bfloat16).
    import safetensors.flax

    state_dict = {}
    for shard in shards:
        path = os.path.join(directory, shard)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found (listed in {index})")
        state_dict.update(safetensors.flax.load_file(path))
    return state_dict


def write_hf_dir(out_dir: str | os.PathLike, config_json: dict, tensors: dict[str, np.ndarray]):
    """Writes ``config.json`` and ``model.safetensors`` as ``save_pretrained`` does."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
