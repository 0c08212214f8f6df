"""Analytic model FLOPs against XLA's count, the peak table and the MFU in the log."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest
from conftest import load_recipe

from benchmarks.scale_figures import abstract_batch
from bert_jax import objectives
from bert_jax.models.bert_config import sized_config
from bert_jax.telemetry import flops
from bert_jax.telemetry.metric_writer import MetricWriter
from bert_jax.training import loop, optim
from bert_jax.training.state import abstract_train_state


# The recipes' tiny sizes (H = 128) at sequence 128: there the matmuls are ~95% of what
# XLA counts. Shorter or narrower, the softmax, GELU, layer norms and the optimizer's
# elementwise update (which XLA counts and MaxText's formula does not) weigh more.
# Dropout is off because XLA counts its random-bit generation as FLOPs too.
@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "albert", "t5"])
def test_analytic_flops_are_within_ten_percent_of_xla(family, vocab_path):
    config = load_recipe(family, "size=tiny")
    config.model.dropout_rate = 0.0
    if family != "t5":
        config.model.attention_dropout_rate = 0.0
    task = objectives.get_task(config)
    tx, schedule = optim.create_optimizer(config.optim, config.train.num_steps)
    graphdef, abs_state, _ = abstract_train_state(task.create_model, tx, config.seed)
    batch = abstract_batch(family, batch=8, length=128)
    step = jax.jit(loop.make_train_step(task, graphdef, tx, schedule))
    compiled = step.lower(abs_state, batch, jax.random.key(0)).compile()
    xla_flops = compiled.cost_analysis()["flops"]
    shapes = {name: spec.shape for name, spec in batch.items()}
    ours = flops.train_flops_per_step(task.model_config, shapes)
    assert 0.9 < ours / xla_flops < 1.1, (ours, xla_flops)


def test_albert_pays_per_layer_and_for_its_projection():
    albert = sized_config("albert", "tiny", vocab_size=8000)
    unshared = dataclasses.replace(albert, share_mode="none")
    args = dict(batch=8, length=128, predictions=20)
    assert flops.bert_forward_flops(albert, **args) == flops.bert_forward_flops(unshared, **args)
    no_projection = dataclasses.replace(albert, embedding_size=None)
    # E = 64 -> H = 128 projection on every token, against a wider (H) MLM head.
    projection = 2 * 8 * 128 * 64 * 128
    head_difference = 2 * 8 * 20 * (128 - 64) * (128 + 8000)
    assert flops.bert_forward_flops(albert, **args) == pytest.approx(
        flops.bert_forward_flops(no_projection, **args) + projection - head_difference
    )


def test_train_flops_are_three_forwards_and_unknown_batches_give_none():
    config = sized_config("bert", "base", vocab_size=30522)
    shapes = {"input_ids": (8, 512), "masked_lm_positions": (8, 76)}
    forward = flops.bert_forward_flops(config, 8, 512, 76)
    assert flops.train_flops_per_step(config, shapes) == 3 * forward
    # 6 x parameters x tokens is the usual estimate of the layers' part; attention adds.
    layer_params = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert 6 * layer_params * 8 * 512 < 3 * forward < 1.5 * 6 * layer_params * 8 * 512
    assert flops.train_flops_per_step(config, {"input_ids": (8, 512)}) is None


@pytest.mark.parametrize(
    ("kind", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H200", "float32", 494.5e12),
        ("NVIDIA A100-SXM4-40GB", "bfloat16", 312e12),
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v5p", "bfloat16", 459e12),
        ("TPU v6 lite", "bfloat16", 918e12),
        ("cpu", "float32", None),
    ],
)
def test_peak_flops_by_device_kind(kind, dtype, peak):
    assert flops.peak_flops_per_device(kind, dtype) == peak


def test_writer_logs_tflops_and_mfu(tmp_path):
    writer = MetricWriter(
        str(tmp_path), total_steps=10, tokens_per_step=100, num_devices=4, peak_flops=1e12
    )
    writer.set_flops_per_step(8e12)
    writer.start(0)
    writer.report_train(2, {"loss": 1.0})
    writer.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    per_device = record["steps_per_sec"] * 8e12 / 4
    assert record["tflops_per_device"] == pytest.approx(per_device / 1e12)
    assert record["mfu"] == pytest.approx(per_device / 1e12)
