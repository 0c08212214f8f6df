"""What a checkpoint must match to be restored: the model's fields and the optimizer.

The ``model`` item holds ``model_fingerprint(model_config)``, the ``optimizer`` item
``optimizer_fingerprint(...)``; ``Checkpointer.check_model`` compares them with the
run's and names each difference, instead of orbax's tree-structure mismatch.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax

from bert_jax.models import layer_stack


def model_fingerprint(model_config: Any) -> dict[str, Any]:
    """JSON-able description of a model config dataclass (plus its class name)."""
    fields = dataclasses.asdict(model_config)
    return {"class": type(model_config).__name__, **json.loads(json.dumps(fields, default=str))}


def model_defaults(model_config: Any) -> dict[str, Any]:
    """The JSON form of each field's default."""
    return {
        field.name: json.loads(json.dumps(field.default, default=str))
        for field in dataclasses.fields(model_config)
        if field.default is not dataclasses.MISSING
    }


def model_differences(saved: dict, current: dict, defaults: dict) -> list[str]:
    """``field: checkpoint=.. config=..`` for each field that changes the weights.

    Fields added after a checkpoint was written are absent from its JSON; they match
    when the run keeps the field's default (the behaviour the checkpoint had).
    """
    # dtype / attention / remat_policy change how a step computes, not the weights.
    compute_only = set(layer_stack.COMPUTE_ONLY_FIELDS)
    diffs = [
        f"{key}: checkpoint={saved.get(key)!r} config={value!r}"
        for key, value in current.items()
        if saved.get(key) != value
        and key not in compute_only
        and not (key not in saved and defaults.get(key, object()) == value)
    ]
    diffs += [
        f"{key}: only in checkpoint"
        for key in saved
        if key not in current and key not in compute_only
    ]
    return diffs


def optimizer_fingerprint(name: str, abstract_opt_state: Any) -> dict[str, Any]:
    """``config.optim.name`` and the optimizer state's layout (key path, shape, dtype).

    The layout also catches what changes the state without changing the name
    (``grad_clip_norm`` on or off, Adafactor's factored moments).
    """
    leaves = jax.tree_util.tree_flatten_with_path(abstract_opt_state)[0]
    layout = [[jax.tree_util.keystr(path), list(x.shape), str(x.dtype)] for path, x in leaves]
    return {"name": name, "layout": layout}


def optimizer_differences(saved: dict, current: dict) -> list[str]:
    """The optimizer name if it differs, else the first difference of the state layout."""
    if saved.get("name") != current["name"]:
        return [f"config.optim.name: checkpoint={saved.get('name')!r} config={current['name']!r}"]
    old, new = saved.get("layout", []), current["layout"]
    for a, b in zip(old, new, strict=False):
        if a != b:
            return [f"optimizer state layout: checkpoint has {a}, config has {b}"]
    if len(old) != len(new):
        return [f"optimizer state layout: {len(old)} leaves in checkpoint, {len(new)} in config"]
    return []
