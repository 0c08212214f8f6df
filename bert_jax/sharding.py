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

    A no-op outside a mesh context, so models also run unsharded.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not spmd.get_logical_axis_rules():
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_mesh(logical_axes))


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
        return NamedSharding(mesh, spec)

    return jax.tree.map(to_sharding, specs, abstract_state)


def data_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input array: batch over the mapped axes."""
    return NamedSharding(mesh, logical_to_mesh(("batch",), validate_rules(rules)))
