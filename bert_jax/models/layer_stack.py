"""Running a stack of Transformer layers: a Python loop or a scan, each layer rematerialised.

Two parameter layouts hold the same weights:

- unscanned: one module per layer (``.../layers/0/...``, ``.../layers/1/...``);
- scanned (``scan_layers=True``): one module whose parameters carry a leading
  ``[layers]`` axis (logical name ``layers``), created by `nnx.vmap` and applied by
  `jax.lax.scan`, so XLA compiles one layer body instead of ``num_layers`` copies.

`stack_layers` / `unstack_layers` convert a state between the two (checkpoints, HF
export). ``remat_policy`` wraps each layer call in `jax.checkpoint` with a
`jax.checkpoint_policies` policy, named as MaxText names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models import layers

# What the backward pass may keep from each layer's forward pass instead of recomputing.
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,  # no rematerialisation: every activation is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the layer inputs
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep every matmul output
    # MaxText's 'minimal': keep matmuls without batch dimensions (the projections), but
    # recompute the attention logits / context einsums, whose batch dims are batch x heads.
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Model config fields that change how a step computes, never the parameters: a
# checkpoint may be resumed, evaluated or exported with other values of these.
COMPUTE_ONLY_FIELDS = ("dtype", "attention", "remat_policy")


def check_compute_fields(config: Any) -> None:
    """Validates the precision, attention, remat and scan fields BertConfig and T5Config share.

    Raises:
      ValueError: naming ``<ConfigClass>.<field>``, the bad value and the choices.
    """
    name = type(config).__name__
    choices = {
        "dtype": layers.DTYPES,
        "param_dtype": layers.DTYPES,
        "attention": layers.ATTENTION_KINDS,
        "remat_policy": tuple(REMAT_POLICIES),
    }
    for field, allowed in choices.items():
        if getattr(config, field) not in allowed:
            raise ValueError(f"{name}.{field} {getattr(config, field)!r} not in {allowed}")
    if not isinstance(config.scan_layers, bool):
        raise ValueError(f"{name}.scan_layers must be a bool, got {config.scan_layers!r}")


# `nnx.vmap` adds this logical axis name to stacked parameters.
_LAYERS_AXIS = {nnx.PARTITION_NAME: "layers"}


def create_stacked(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs):
    """One module whose parameters are ``num_layers`` independent inits stacked on axis 0."""
    keys = jax.random.split(rngs.params(), num_layers)

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata=_LAYERS_AXIS)
    def create(key):
        return make_layer(nnx.Rngs(params=key))

    return create(keys)


def apply_layers(
    layer_fn: Callable[[Any, jax.Array, nnx.Rngs], jax.Array],
    x: jax.Array,
    layers: Sequence[Any] | Any,
    *,
    num_layers: int,
    stacked: bool,
    remat_policy: str,
    dropout_key: jax.Array | None,
) -> jax.Array:
    """Applies ``layer_fn(layer, x, rngs) -> x`` once per layer.

    Args:
      layer_fn: one layer's computation; ``rngs`` holds that layer's dropout key.
      layers: a sequence of ``num_layers`` per-layer modules (or tuples of modules,
        looped in Python), or one module / tuple applied by `jax.lax.scan`: with
        ``stacked`` its parameters have a leading layer axis, without it the same
        parameters serve every layer (ALBERT's shared layer).
      remat_policy: a key of ``REMAT_POLICIES``.
      dropout_key: split into one key per layer (identical in both layouts); None
        when dropout is off.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"remat_policy {remat_policy!r} not in {tuple(REMAT_POLICIES)}")
    # Both layouts draw the same per-layer keys, so they also agree under dropout.
    key = jax.random.key(0) if dropout_key is None else dropout_key
    keys = jax.random.split(key, num_layers)

    # Plain JAX transforms over each layer's state (split from its graph, merged back
    # inside), not nnx.remat / nnx.scan: those refuse a module that an enclosing trace
    # closed over (a greedy decode's while_loop, text-to-text's lax.map over labels) with
    # flax's TraceContextError. Layers hold no state that a call changes.
    def one_layer(graphdef, layer_state, x, key):
        return layer_fn(nnx.merge(graphdef, layer_state), x, nnx.Rngs(dropout=key))

    if remat_policy != "none":
        # prevent_cse only matters outside scan (a loop body is never CSE'd across steps).
        one_layer = jax.checkpoint(
            one_layer,
            policy=REMAT_POLICIES[remat_policy],
            prevent_cse=isinstance(layers, list),
            static_argnums=(0,),
        )
    if isinstance(layers, list):
        if len(layers) != num_layers:
            raise ValueError(f"got {len(layers)} layers, expected num_layers={num_layers}")
        for layer, layer_key in zip(layers, keys, strict=True):
            x = one_layer(*nnx.split(layer), x, layer_key)
        return x

    graphdef, state = nnx.split(layers)

    def scan_body(x, step):
        layer_state, key = step
        return one_layer(graphdef, layer_state, x, key), None

    if stacked:
        x, _ = jax.lax.scan(scan_body, x, (state, keys))
    else:  # ALBERT's shared layer: the same state at every step
        x, _ = jax.lax.scan(lambda x, key: scan_body(x, (state, key)), x, keys)
    return x


def _is_under(path: tuple, prefix: tuple) -> bool:
    return path[: len(prefix)] == prefix


def stack_layers(state: nnx.State, prefixes: Sequence[tuple]) -> nnx.State:
    """The scanned layout of an unscanned ``state``.

    Under each prefix, e.g. ``('encoder', 'layers')``, the children ``0 .. n-1``
    become one subtree whose leaves are stacked on a new axis 0 (logical ``layers``).
    """
    flat = list(nnx.to_flat_state(state))
    out = [(path, var) for path, var in flat if not any(_is_under(path, p) for p in prefixes)]
    for prefix in prefixes:
        under = [(path, var) for path, var in flat if _is_under(path, prefix)]
        if not under:
            raise KeyError(f"state has no parameters under {'/'.join(map(str, prefix))}")
        count = 1 + max(path[len(prefix)] for path, _ in under)
        groups: dict[tuple, list] = {}
        for path, var in under:
            groups.setdefault(path[len(prefix) + 1 :], [None] * count)[path[len(prefix)]] = var
        for rest, variables in groups.items():
            if any(v is None for v in variables):
                raise KeyError(f"{'/'.join(map(str, prefix + rest))} is missing for some layers")
            value = jnp.stack([_value(v) for v in variables])  # [layers, ...]
            out.append((prefix + rest, _with_axis(variables[0], value, add=True)))
    return nnx.from_flat_state(out)


def unstack_layers(state: nnx.State, prefixes: Sequence[tuple]) -> nnx.State:
    """The unscanned layout of a scanned ``state`` (inverse of `stack_layers`)."""
    out = []
    for path, var in nnx.to_flat_state(state):
        prefix = next((p for p in prefixes if _is_under(path, p)), None)
        if prefix is None:
            out.append((path, var))
            continue
        value = _value(var)
        for i in range(value.shape[0]):
            layer_path = (*prefix, i, *path[len(prefix) :])
            out.append((layer_path, _with_axis(var, value[i], add=False)))
    return nnx.from_flat_state(out)


def _value(leaf):
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def _with_axis(variable, value, *, add: bool):
    """``variable`` holding ``value``, its logical axes gaining / losing 'layers' in front.

    Plain array leaves (a state of values) are replaced by ``value`` itself.
    """
    if not isinstance(variable, nnx.Variable):
        return value
    axes = variable.get_metadata().get("out_sharding")
    if axes is None:
        return variable.replace(value)
    axes = ("layers", *axes) if add else tuple(axes[1:])
    return variable.replace(value, out_sharding=axes)
