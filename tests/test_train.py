"""End-to-end tests of the pretraining loop on the embedded corpus (tiny model)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, result_json, run_with_devices, tiny_bert_config

from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.telemetry import flops
from bert_jax.training import loop


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_runlocal_trains_evaluates_and_checkpoints(tmp_path, vocab_path, corpus_dir):
    result = loop.train_and_evaluate(tiny_bert_config(), str(tmp_path))
    assert result["step"] == 4
    for key in ("mlm_loss", "mlm_accuracy", "pair_accuracy", "unigram_xent", "majority_accuracy"):
        assert np.isfinite(result["eval"][key]), key
    records = _metrics(tmp_path)
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4]
    timed = [r for r in records if r["split"] == "train" and r["step"] > 1]
    assert all(r["tokens_per_sec"] > 0 and r["tflops_per_device"] > 0 for r in timed)
    if flops.peak_flops_per_device(jax.devices()[0].device_kind, "float32") is None:
        assert not any("mfu" in r for r in records)  # an unknown device (CPU) logs no MFU
    else:
        assert all(0 < r["mfu"] < 1 for r in timed)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "2",
        "4",
    ]


def test_resume_gives_bit_identical_parameters(tmp_path, vocab_path, corpus_dir):
    config = tiny_bert_config(
        **{
            "train.num_steps": 6,
            "train.checkpoint_every": 100,
            "model.dropout_rate": 0.1,  # dropout keys must follow the step too
        }
    )
    straight = loop.train_and_evaluate(config, str(tmp_path / "straight"))
    first = loop.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at=3)
    assert first["step"] == 3
    resumed = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["start_step"] == 3 and resumed["step"] == 6
    leaves_a = jax.tree.leaves(jax.device_get(straight["state"].params))
    leaves_b = jax.tree.leaves(jax.device_get(resumed["state"].params))
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(a, b)
    losses_straight = [r["loss"] for r in _metrics(tmp_path / "straight") if r["split"] == "train"]
    losses_resumed = [r["loss"] for r in _metrics(tmp_path / "resumed") if r["split"] == "train"]
    assert losses_straight == losses_resumed


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, vocab_path, corpus_dir):
    workdir = str(tmp_path)
    loop.train_and_evaluate(tiny_bert_config(**{"train.num_steps": 2}), workdir)
    exploding = tiny_bert_config(**{"optim.learning_rate": float("inf"), "optim.warmup_steps": 0})
    with pytest.raises(FloatingPointError, match="last good checkpoint is step 2"):
        loop.train_and_evaluate(exploding, workdir)
    config = tiny_bert_config()
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=2, model_config=_model_config(config)
    )
    assert checkpointer.latest_step() == 2


def _model_config(config):
    from bert_jax import objectives

    return objectives.get_task(config).model_config


def test_checkpoint_of_another_model_is_refused(tmp_path, vocab_path, corpus_dir):
    loop.train_and_evaluate(tiny_bert_config(**{"train.num_steps": 2}), str(tmp_path))
    other = tiny_bert_config(**{"model.hidden_size": 64})
    with pytest.raises(ValueError, match="different model.*hidden_size"):
        loop.train_and_evaluate(other, str(tmp_path))


def test_cli_reports_config_typo_by_name(tmp_path, vocab_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax",
            "pretrain",
            "--config",
            "configs/bert.py:runlocal",
            "--config.optim.learnin_rate=1e-3",
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "learnin_rate" in proc.stderr
    assert not any(pathlib.Path(tmp_path).iterdir())


SHARDED_SCRIPT = r"""
import json, sys
sys.path.insert(0, {tests_dir!r})
import jax
from conftest import tiny_bert_config
from bert_jax.runtime import sharding
from bert_jax.training import loop

mesh_shape = tuple({mesh_shape})
config = tiny_bert_config(**{{"mesh.shape": mesh_shape, "train.checkpoint_every": 100}})
result = loop.train_and_evaluate(config, {workdir!r})
out = {{"devices": jax.device_count(), "losses": [], "specs_ok": True, "bad": []}}
with open({workdir!r} + "/metrics.jsonl") as f:
    out["losses"] = [json.loads(l)["loss"] for l in f if '"train"' in l]
from flax import nnx
rules = sharding.validate_rules(config.mesh.axis_rules)
params = result["state"].params
def check(path, var):
    expected = sharding.logical_to_mesh(var.get_metadata()["out_sharding"], rules)
    if var[...].sharding.spec != expected:
        out["specs_ok"] = False
        out["bad"].append((jax.tree_util.keystr(path), str(var[...].sharding.spec), str(expected)))
jax.tree_util.tree_map_with_path(check, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
if {restore_shape}:
    # Restore the same checkpoint onto another mesh and train one more step.
    config2 = tiny_bert_config(**{{"mesh.shape": tuple({restore_shape}), "train.num_steps": 5}})
    result2 = loop.train_and_evaluate(config2, {workdir!r})
    leaf = jax.tree.leaves(result2["state"].params)[0]
    out["restored_mesh"] = dict(leaf.sharding.mesh.shape)
    out["restored_start"] = result2["start_step"]
print("RESULT" + json.dumps(out))
"""


def _run_devices(tmp_path, count, mesh_shape, restore_shape=None):
    workdir = str(tmp_path / f"devices{count}")
    script = SHARDED_SCRIPT.format(
        tests_dir=str(REPO_ROOT / "tests"),
        mesh_shape=mesh_shape,
        workdir=workdir,
        restore_shape=restore_shape,
    )
    return result_json(run_with_devices(script, count))


@pytest.mark.slow
def test_eight_device_mesh_matches_one_device(tmp_path, vocab_path, corpus_dir):
    single = _run_devices(tmp_path, 1, (1, 1, 1))
    sharded = _run_devices(tmp_path, 8, (2, 2, 2), restore_shape=(8, 1, 1))
    assert single["devices"] == 1 and sharded["devices"] == 8
    assert len(single["losses"]) == len(sharded["losses"]) == 4
    np.testing.assert_allclose(sharded["losses"], single["losses"], atol=1e-5, rtol=0)
    assert sharded["specs_ok"], sharded["bad"]
    assert sharded["restored_start"] == 4
    assert sharded["restored_mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}


def test_relative_workdir_checkpoints_are_committed(tmp_path, monkeypatch, vocab_path, corpus_dir):
    # Regression: orbax's async commit failed on a relative path and the next save hung.
    monkeypatch.chdir(tmp_path)
    result = loop.train_and_evaluate(tiny_bert_config(), "relative_workdir")
    assert result["step"] == 4
    names = sorted(p.name for p in (tmp_path / "relative_workdir" / "checkpoints").iterdir())
    assert "2" in names and "4" in names
    assert not [name for name in names if "tmp" in name]


@pytest.mark.slow
def test_bfloat16_compute_trains_like_float32(tmp_path, vocab_path, corpus_dir):
    """300 steps of bfloat16 activations (float32 weights) end within 3% of float32."""
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_bert_config(
            **{
                "model.dtype": dtype,
                "data.max_seq_length": 32,
                "objective.max_predictions_per_seq": 5,
                "train.batch_size": 8,
                "train.num_steps": 300,
                "train.log_every": 50,
                "train.eval_every": 300,
                "train.checkpoint_every": 300,
                "optim.warmup_steps": 30,
            }
        )
        results[dtype] = loop.train_and_evaluate(config, str(tmp_path / dtype))
    state = results["bfloat16"]["state"]
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {np.dtype("float32")}
    losses = {
        dtype: [r["loss"] for r in _metrics(tmp_path / dtype) if r["split"] == "train"]
        for dtype in results
    }
    assert losses["float32"][-1] < losses["float32"][0] - 0.5  # it did learn something
    assert losses["bfloat16"] != losses["float32"]  # the compute dtype did change
    # The last 50 steps' mean training loss.
    assert abs(losses["bfloat16"][-1] / losses["float32"][-1] - 1) < 0.03, losses
