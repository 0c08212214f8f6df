"""Device mesh, logical axis rules and activation constraints.

This is the only module that names mesh axes. Models annotate weights and
activations with *logical* axis names (``batch``, ``length``, ``vocab``,
``embed``, ``mlp``, ``heads``, ``kv``, ``joined_kv``, ``layers``); the run
config maps those names to the mesh axes ``('data', 'fsdp', 'tensor')``, so
switching between data parallelism, FSDP and tensor parallelism is a config
edit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from flax.core import spmd
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_AXES = ("batch", "length", "vocab", "embed", "mlp", "heads", "kv", "joined_kv", "layers")

# t5x-style defaults: the batch is split over data and fsdp, weights are split
# over fsdp along `embed` and over tensor along the head / hidden dimensions.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("joined_kv", "tensor"),
    ("layers", None),
)

Rules = Sequence[tuple[str, str | Sequence[str] | None]]

# `config.mesh.preset`: the three layouts users pick from, as (mesh shape, rules).
# dp: every device holds every weight; fsdp: weights split along `embed` (ZeRO-3,
# gathered per layer); fsdp_tp: fsdp x tensor, heads and hidden units split over
# `tensor` as in Megatron / t5x's model parallelism.
_REPLICATED = tuple((name, None) for name in LOGICAL_AXES if name != "batch")
PRESETS = ("dp", "fsdp", "fsdp_tp")
PRESET_RULES: dict[str, tuple] = {
    "dp": (("batch", ("data", "fsdp")),) + _REPLICATED,
    "fsdp": (("batch", ("data", "fsdp")),)
    + tuple((name, "fsdp" if name == "embed" else None) for name, _ in _REPLICATED),
    "fsdp_tp": DEFAULT_RULES,
}

# Weights are placed by `jax.jit(init, out_shardings=...)`, never eagerly, so a
# model can also be built outside any mesh (tests, export, CPU tools).
nnx.use_eager_sharding(False)


def create_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ``('data', 'fsdp', 'tensor')`` mesh with Auto axes.

    Args:
      mesh_shape: sizes of the three mesh axes; one entry may be -1 to take the
        remaining devices.
      devices: defaults to all global devices.

    Raises:
      ValueError: if the shape does not match the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = [int(s) for s in mesh_shape]
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh_shape needs {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if len(devices) % known:
            raise ValueError(f"mesh_shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh_shape {shape} needs {int(np.prod(shape))} devices, have {len(devices)}"
        )
    return jax.make_mesh(
        tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def preset_layout(
    preset: str | None, tensor_parallelism: int = 1
) -> tuple[tuple[int, int, int], tuple] | None:
    """``(mesh shape, axis rules)`` of a ``config.mesh.preset``; None for no preset.

    Args:
      preset: ``dp`` | ``fsdp`` | ``fsdp_tp``, or empty / None to keep
        ``config.mesh.shape`` and ``config.mesh.axis_rules`` as given.
      tensor_parallelism: size of the ``tensor`` axis for ``fsdp_tp``.

    Raises:
      ValueError: naming ``config.mesh.preset`` or ``config.mesh.tensor_parallelism``.
    """
    if not preset:
        return None
    if preset not in PRESETS:
        raise ValueError(f"config.mesh.preset={preset!r}; choose one of {PRESETS} or ''")
    if preset != "fsdp_tp":
        return ((-1, 1, 1) if preset == "dp" else (1, -1, 1)), PRESET_RULES[preset]
    if not isinstance(tensor_parallelism, int) or tensor_parallelism < 1:
        raise ValueError(
            f"config.mesh.tensor_parallelism must be a positive int, got {tensor_parallelism!r}"
        )
    return (1, -1, tensor_parallelism), PRESET_RULES[preset]


def mesh_from_config(mesh_config) -> tuple[Mesh, tuple]:
    """The mesh and validated rules of ``config.mesh`` (its preset, else shape + rules)."""
    layout = preset_layout(mesh_config.preset, mesh_config.tensor_parallelism)
    shape, rules = layout or (mesh_config.shape, mesh_config.axis_rules)
    return create_mesh(shape), validate_rules(rules)


def validate_rules(rules: Rules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """Checks logical and mesh axis names, returning the rules as hashable tuples."""
    out = []
    for logical, physical in rules:
        if logical not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis {logical!r} in axis_rules; know {LOGICAL_AXES}")
        names = () if physical is None else (physical,) if isinstance(physical, str) else physical
        for name in names:
            if name not in MESH_AXES:
                raise ValueError(f"axis_rules maps {logical!r} to unknown mesh axis {name!r}")
        out.append(
            (
                logical,
                None
                if physical is None
                else physical
                if isinstance(physical, str)
                else tuple(physical),
            )
        )
    return tuple(out)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Context in which models are built, initialised and stepped."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(validate_rules(rules)):
        yield


@contextlib.contextmanager
def mesh_context(mesh_config) -> Iterator[tuple[Mesh, tuple]]:
    """Every command's mesh set-up: ``config.mesh``'s mesh and rules, entered.

    Usage: ``with sharding.mesh_context(config.mesh) as (mesh, rules): ...``
    """
    mesh, rules = mesh_from_config(mesh_config)
    with use_mesh(mesh, rules):
        yield mesh, rules


def logical_to_mesh(
    logical_axes: Sequence[str | None], rules: Rules | None = None
) -> PartitionSpec:
    """Maps logical axis names to a mesh ``PartitionSpec`` under ``rules``.

    As in flax's ``logical_to_mesh_axes``, a mesh axis is used at most once:
    an activation ``('batch', 'length', 'embed')`` with batch on
    ``('data', 'fsdp')`` keeps ``embed`` replicated, while the weight
    ``('embed', 'mlp')`` is split over ``fsdp``.
    """
    rules = spmd.get_logical_axis_rules() if rules is None else rules
    mapped = spmd.from_sharding_rules(tuple(logical_axes), tuple(rules))
    used: set[str] = set()
    spec = []
    for axes in mapped:
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        if any(name in used for name in names):
            names = ()
        used.update(names)
        spec.append(None if not names else names[0] if len(names) == 1 else names)
    return PartitionSpec(*spec)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Constrains an activation's sharding by logical axis names.

    A no-op outside a mesh context, so models also run unsharded. An axis too
    small to split (one decoded example on a 4-way batch axis) is left unconstrained.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not spmd.get_logical_axis_rules():
        return x
    spec = _divisible(logical_to_mesh(logical_axes), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def state_shardings(abstract_state, mesh: Mesh, rules: Rules):
    """NamedShardings for an (abstract) state tree from its logical annotations.

    Optimizer states inherit their parameters' annotations; where a state has
    another rank than its parameter (Adafactor's factored row/column moments)
    it is replicated.
    """
    with nnx.logical_axis_rules(validate_rules(rules)):
        specs = nnx.get_partition_spec(abstract_state)

    def to_sharding(spec, leaf):
        if len(spec) > len(leaf.shape):
            spec = PartitionSpec()
        # Adafactor keeps (1,)-shaped placeholder moments for unfactored 1-D parameters:
        # they inherit an `embed` annotation that cannot split a size-1 axis.
        return NamedSharding(mesh, _divisible(spec, leaf.shape, mesh))

    return jax.tree.map(to_sharding, specs, abstract_state)


def data_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input array: batch over the mapped axes."""
    return NamedSharding(mesh, logical_to_mesh(("batch",), validate_rules(rules)))


def _divisible(spec: PartitionSpec, shape: Sequence[int], mesh) -> PartitionSpec:
    """``spec`` without the mesh axes that do not evenly split their dimension."""

    def fits(axes, size: int) -> bool:
        names = (axes,) if isinstance(axes, str) else axes
        return size % int(np.prod([mesh.shape[name] for name in names])) == 0

    # A spec may be shorter than the shape (trailing axes replicated): strict=False.
    pairs = zip(spec, shape, strict=False)
    return PartitionSpec(*(axes if not axes or fits(axes, size) else None for axes, size in pairs))
