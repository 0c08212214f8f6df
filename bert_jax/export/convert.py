"""The one conversion style every model family uses: name tables and their tensor helpers.

A table is a list of `Entry`: our '/'-joined path in the unscanned ``nnx.State`` and
the Hugging Face state_dict key. Linear kernels are ``[in, out]`` here and
``[out, in]`` in PyTorch, so their entries are transposed in both directions; nothing
is reshaped. Templates with ``{i}`` (the Hugging Face layer) and other fields are
filled by `expand`. `read_state_dict` and `write_hf_dir` are the only readers and
writers of Hugging Face weight files; `new_directory` makes a whole export appear at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
      ValueError: naming the file: an index that is not JSON, lacks ``weight_map`` or
        names a shard outside ``directory``; a safetensors file whose header does not
        match its data (naming the tensor where the header says which).
    """
    directory = os.fspath(directory)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        shards = _index_shards(index)
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
    from safetensors import SafetensorError

    state_dict = {}
    for shard in shards:
        path = os.path.join(directory, shard)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found (listed in {index})")
        try:
            state_dict.update(safetensors.flax.load_file(path))
        except SafetensorError as error:
            fault = _header_fault(path) or error
            raise ValueError(f"{path}: not a valid safetensors file: {fault}") from None
    return state_dict


def _index_shards(index: str) -> list[str]:
    """The shard files of a ``model.safetensors.index.json``, each inside its folder."""
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{index}: not JSON ({error})") from None
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{index}: no 'weight_map' object of tensor -> shard file") from None
    for shard in shards:
        # A name leading out of the folder (``../x``, ``/etc/x``) would load whatever file
        # it names. Symlinks are followed, as in the Hugging Face cache's snapshots.
        name = os.path.normpath(shard) if isinstance(shard, str) and shard else os.pardir
        if os.path.isabs(name) or name.split(os.sep)[0] == os.pardir:
            raise ValueError(
                f"{index}: weight_map names shard {shard!r}, outside the model directory; "
                "shards are files in it"
            )
    return shards


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
                "F64": 8}  # fmt: skip


def _header_fault(path: str) -> str | None:
    """What in a safetensors header contradicts the file, naming the tensor; None if unsure.

    The format: an 8-byte little-endian header length, the JSON header ``{name: {dtype,
    shape, data_offsets: [begin, end]}}`` (offsets into the data after the header).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        length = int.from_bytes(prefix, "little")
        if length > size - 8:
            return f"header length {length} exceeds the file ({size} bytes)"
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return f"header is not JSON ({error})"
    data_bytes = size - 8 - length
    for name, info in header.items() if isinstance(header, dict) else ():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        begin, end = (list(info.get("data_offsets") or []) + [None, None])[:2]
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            return f"tensor {name!r}: data_offsets {info.get('data_offsets')!r} are not a range"
        if end > data_bytes:
            return (
                f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data "
                f"({data_bytes} bytes): truncated or edited file"
            )
        item, shape = _DTYPE_BYTES.get(info.get("dtype")), info.get("shape")
        if not (item and isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            continue
        if item * int(np.prod(shape)) != end - begin:
            return (
                f"tensor {name!r}: dtype {info['dtype']} shape {shape} needs "
                f"{item * int(np.prod(shape))} bytes, data_offsets give {end - begin}"
            )
    return None


def write_hf_dir(out_dir: str | os.PathLike, config_json: dict, tensors: dict[str, np.ndarray]):
    """Writes ``config.json`` and ``model.safetensors`` as ``save_pretrained`` does.

    Both get the mode of a file written with ``open()`` (0666 less the umask): safetensors
    creates its file 0600.
    """
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "config.json")
    with open(config_path, "w") as f:
        f.write(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    weights_path = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, weights_path, metadata={"format": "pt"})
    shutil.copymode(config_path, weights_path)


def check_new_directory(out_dir: str) -> None:
    """Raises ValueError unless ``out_dir`` is absent or an empty directory (`new_directory`)."""
    if not os.path.lexists(out_dir) or (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        return
    kind = "is not empty" if os.path.isdir(out_dir) else "is a file"
    raise ValueError(
        f"export directory {out_dir!r} {kind}: an export writes a new directory and replaces "
        "nothing; remove it or choose another --out"
    )


@contextlib.contextmanager
def new_directory(out_dir: str | os.PathLike) -> Iterator[str]:
    """A temporary directory beside ``out_dir``, renamed to ``out_dir`` when the block ends.

    A reader, or a rerun after Ctrl-C, a crash or a bad input, sees the whole directory or
    none: if the block raises (KeyboardInterrupt included) the temporary directory is
    removed. ``out_dir`` may exist only as an empty directory (rename replaces it
    atomically); anything else there is refused, never deleted.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    check_new_directory(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".{name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed process with our pid
    os.mkdir(partial)  # mode 0777 less the umask, as os.makedirs(out_dir) would give
    try:
        yield partial
        check_new_directory(out_dir)  # nothing appeared there meanwhile
        os.rename(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
