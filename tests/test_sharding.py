"""Logical axis rules: mesh construction, spec mapping and validation."""

from __future__ import annotations

import pytest
from jax.sharding import PartitionSpec

from bert_jax import sharding


def test_a_mesh_axis_is_used_once_per_spec():
    rules = sharding.DEFAULT_RULES
    assert sharding.logical_to_mesh(("batch", "length", "embed"), rules) == PartitionSpec(
        ("data", "fsdp"), None, None
    )
    assert sharding.logical_to_mesh(("embed", "mlp"), rules) == PartitionSpec("fsdp", "tensor")
    assert sharding.logical_to_mesh(("vocab", "embed"), rules) == PartitionSpec("tensor", "fsdp")


def test_rules_with_unknown_names_are_rejected_by_name():
    with pytest.raises(ValueError, match="'embedding'"):
        sharding.validate_rules([("embedding", "fsdp")])
    with pytest.raises(ValueError, match="'model'"):
        sharding.validate_rules([("embed", "model")])


def test_mesh_shape_errors_are_clear():
    with pytest.raises(ValueError, match="needs 3 entries"):
        sharding.create_mesh((1, 1))
    with pytest.raises(ValueError, match="needs 4 devices"):
        sharding.create_mesh((2, 2, 1))
    assert dict(sharding.create_mesh((-1, 1, 1)).shape) == {"data": 1, "fsdp": 1, "tensor": 1}
