"""Logical axis rules: mesh construction, spec mapping and validation."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, result_json, run_with_devices
from jax.sharding import PartitionSpec

from bert_jax.runtime import run_config, sharding


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


def test_presets_fill_shape_and_rules():
    assert sharding.preset_layout("", 4) is None
    shape, rules = sharding.preset_layout("fsdp_tp", 4)
    assert shape == (1, -1, 4) and dict(rules)["mlp"] == "tensor"
    assert sharding.preset_layout("dp")[0] == (-1, 1, 1)
    assert sharding.preset_layout("fsdp")[0] == (1, -1, 1)
    with pytest.raises(ValueError, match=r"config\.mesh\.preset='zero3'"):
        sharding.preset_layout("zero3")
    with pytest.raises(ValueError, match=r"config\.mesh\.tensor_parallelism"):
        sharding.preset_layout("fsdp_tp", 0)


def test_mesh_context_enters_the_configs_mesh_and_rules_and_leaves_them():
    from flax.core import spmd

    config = run_config.base_config()
    config.mesh.preset = "fsdp"
    assert jax.sharding.get_abstract_mesh().empty
    with sharding.mesh_context(config.mesh) as (mesh, rules):
        assert rules == sharding.PRESET_RULES["fsdp"]  # the preset wins over shape + rules
        assert dict(mesh.shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
        assert tuple(spmd.get_logical_axis_rules()) == rules
        assert dict(jax.sharding.get_abstract_mesh().shape) == dict(mesh.shape)
    assert jax.sharding.get_abstract_mesh().empty and not spmd.get_logical_axis_rules()


PRESET_SCRIPT = r"""
import json, sys
sys.path.insert(0, {tests_dir!r})
import jax
from flax import nnx
from conftest import tiny_bert_config
from bert_jax import objectives
from bert_jax.training import optim
from bert_jax.runtime import sharding
from bert_jax.training import loop
from bert_jax.training.state import abstract_train_state, state_shardings
from bert_jax.data import pipeline

BATCH = 16
base = tiny_bert_config(**{{"train.batch_size": BATCH}})
task = objectives.get_task(base)
dataset = task.batches("train", BATCH)
host_batches = [batch for batch, _ in zip(dataset, range(2))]
out = {{}}
for name, preset, tensor, accumulation in (
    ("dp", "dp", 1, 1),
    ("fsdp", "fsdp", 1, 1),
    ("fsdp_tp", "fsdp_tp", 2, 1),
    ("fsdp_accumulated", "fsdp", 1, 2),
):
    config = tiny_bert_config(**{{
        "train.batch_size": BATCH, "mesh.preset": preset, "mesh.tensor_parallelism": tensor,
    }})
    mesh, rules = sharding.mesh_from_config(config.mesh)
    tx, schedule = optim.create_optimizer(config.optim, config.train.num_steps)
    with sharding.use_mesh(mesh, rules):
        graphdef, abs_state, init = abstract_train_state(task.create_model, tx, config.seed)
        shardings = state_shardings(abs_state, mesh, rules)
        data_sharding = sharding.data_sharding(mesh, rules)
        state = jax.jit(init, out_shardings=shardings)()
        step = jax.jit(
            loop.make_train_step(task, graphdef, tx, schedule, accumulation),
            in_shardings=(shardings, data_sharding, None),
            out_shardings=(shardings, None),
        )
        losses = []
        for host_batch in host_batches:
            batch = pipeline.global_batch(host_batch, data_sharding)
            state, metrics = step(state, batch, jax.random.key(0))
            losses.append(float(metrics["loss"]))
    params = []
    def record(path, var):
        array = var[...]
        spec = list(array.sharding.spec) + [None] * (array.ndim - len(array.sharding.spec))
        params.append({{
            "path": jax.tree_util.keystr(path),
            "axes": list(var.get_metadata()["out_sharding"]),
            "spec": [list(s) if isinstance(s, tuple) else s for s in spec],
            "shape": list(array.shape),
            "shard": list(array.addressable_shards[0].data.shape),
        }})
    jax.tree_util.tree_map_with_path(
        record, state.params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    opt_leaves = jax.tree.leaves(state.opt_state)
    out[name] = {{
        "mesh": dict(mesh.shape),
        "losses": losses,
        "params": params,
        "opt_bytes": sum(x.nbytes for x in opt_leaves),
        "opt_bytes_device0": sum(x.addressable_shards[0].data.nbytes for x in opt_leaves),
    }}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_presets_shard_the_state_and_train_alike_on_eight_devices(vocab_path, corpus_dir):
    script = PRESET_SCRIPT.format(tests_dir=str(REPO_ROOT / "tests"))
    runs = result_json(run_with_devices(script, 8))
    assert runs["dp"]["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert runs["fsdp"]["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert runs["fsdp_tp"]["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    for param in runs["dp"]["params"]:  # data parallelism: every device holds every weight
        assert param["spec"] == [None] * len(param["shape"]), param
        assert param["shard"] == param["shape"], param
    tensor_axes = {"vocab", "mlp", "heads", "joined_kv"}
    for run, sizes in (("fsdp", {"fsdp": 8}), ("fsdp_tp", {"fsdp": 4, "tensor": 2})):
        for param in runs[run]["params"]:
            for axis, spec, dim, shard in zip(
                param["axes"], param["spec"], param["shape"], param["shard"], strict=True
            ):
                mesh_axis = "fsdp" if axis == "embed" else None
                if run == "fsdp_tp" and axis in tensor_axes:
                    mesh_axis = "tensor"
                assert spec == mesh_axis, (run, param)
                assert shard == (dim // sizes[mesh_axis] if mesh_axis else dim), (run, param)
    # FSDP keeps an eighth of the optimizer state on each device (up to replicated biases).
    fsdp = runs["fsdp"]
    assert fsdp["opt_bytes_device0"] < 0.2 * fsdp["opt_bytes"]
    assert runs["dp"]["opt_bytes_device0"] == runs["dp"]["opt_bytes"]
    # Same first and second losses (the second follows the first update) on every layout,
    # and with two accumulated microbatches.
    for run in ("fsdp", "fsdp_tp", "fsdp_accumulated"):
        np.testing.assert_allclose(runs[run]["losses"], runs["dp"]["losses"], atol=1e-5, rtol=0)
