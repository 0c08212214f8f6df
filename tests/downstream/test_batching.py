"""The one fine-tuning batching helper and the one predict pass (`batching`, `runner.predict`)."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_with_devices
from flax import nnx

from bert_jax.downstream import batching, runner


class ValueRow(batching.RowFeatures):
    """Row ``i`` of a list of floats -> ``{"value": rows[i]}``."""

    def __init__(self, rows):
        self._rows = rows

    def features(self, index):
        return {"value": np.float32(self._rows[index])}


class Scale(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.full((), 2.0))


class ToyTask(runner.FinetuneTask):
    """Predicts ``value * scale``; only what `runner.predict` calls is real."""

    tokenizer = model_config = None
    tokens_per_example = 1

    def __init__(self, splits, batches=None):
        self.name, self.splits, self.seed = "toy", splits, 0
        self._batches = batches

    def create_model(self, rngs):
        return Scale(rngs)

    def loss_fn(self, model, batch, *, deterministic, rngs=None):
        raise NotImplementedError

    def eval_fn(self, model, batch):
        raise NotImplementedError

    def eval_metrics(self, totals):
        raise NotImplementedError

    def eval_baselines(self, batches):
        raise NotImplementedError

    def row_features(self, rows):
        return ValueRow(rows)

    def batches(self, split, global_batch_size, draw=0):
        if self._batches is not None:
            return self._batches(split, global_batch_size)
        return super().batches(split, global_batch_size, draw)

    def predict_batch(self, model, batch):
        return batch["value"] * model.scale

    def score(self, split, outputs):
        raise NotImplementedError


def _task(splits, batches=None) -> runner.FinetuneTask:
    return ToyTask(splits, batches)


def _config(batch_size: int) -> ml_collections.ConfigDict:
    from bert_jax.runtime.run_config import base_config

    config = base_config()
    config.train.batch_size = batch_size
    return config


def test_eval_pass_pads_whole_batches_with_weightless_copies():
    pairs = list(batching.indexed_dataset(10, "validation", 4, seed=0))
    assert pairs == [(i, True) for i in range(10)] + [(9, False), (9, False)]
    batches = list(
        batching.make_batches({"train": [], "dev": list(range(10))}, ValueRow, 0)("dev", 4)
    )
    assert [len(b["value"]) for b in batches] == [4, 4, 4]  # the last batch is kept whole
    np.testing.assert_array_equal(batches[-1]["example_weight"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batches[-1]["example_index"], [8, 9, -1, -1])


def test_train_pass_shuffles_every_row_each_epoch_and_drops_the_remainder():
    rows = [float(i) for i in range(10)]
    dataset = batching.make_batches({"train": rows, "validation": rows[:2]}, ValueRow, 0)
    iterator = iter(dataset("train", 5))
    epoch = np.concatenate([next(iterator)["value"] for _ in range(2)])
    assert sorted(epoch.tolist()) == rows and epoch.tolist() != rows
    assert all(next(iterator)["example_weight"].tolist() == [1.0] * 5 for _ in range(3))


def test_eval_reads_the_first_evaluation_split():
    splits = {"train": [0.0], "validation_matched": [1.0, 2.0], "validation_mismatched": [3.0]}
    assert batching.split_name(splits, "eval") == "validation_matched"
    assert batching.split_name(splits, "validation_mismatched") == "validation_mismatched"
    (batch,) = list(batching.make_batches(splits, ValueRow, 0)("eval", 2))
    np.testing.assert_array_equal(batch["value"], [1.0, 2.0])


def test_predict_returns_every_row_once_in_row_order():
    splits = {"train": [0.0], "validation": [float(i) for i in range(10)]}
    task = _task(splits)
    params = nnx.split(Scale(nnx.Rngs(0)), nnx.Param)[1]
    outputs = runner.predict(_config(4), task, params, "validation")
    np.testing.assert_array_equal(outputs, 2.0 * np.arange(10))


def test_predict_refuses_a_pass_that_loses_rows():
    splits = {"train": [0.0], "validation": [float(i) for i in range(10)]}
    whole = batching.make_batches(splits, ValueRow, seed=0)

    def lossy(split, global_batch_size):  # drops the padded last batch: rows 8 and 9
        return whole(split, global_batch_size).filter(lambda b: b["example_weight"].all())

    params = nnx.split(Scale(nnx.Rngs(0)), nnx.Param)[1]
    with pytest.raises(RuntimeError, match="validation did not return each row once"):
        runner.predict(_config(4), _task(splits, lossy), params, "validation")


def test_predict_on_four_devices_keeps_row_order():
    # The padded eval batches are sharded over 4 devices and gathered back; the order
    # (and the weightless padding rows) must survive the sharding.
    run_with_devices(
        """
import numpy as np
from flax import nnx
import test_batching as t
from bert_jax.downstream import runner
splits = {"train": [0.0], "validation": [float(i) for i in range(13)]}
params = nnx.split(t.Scale(nnx.Rngs(0)), nnx.Param)[1]
config = t._config(8)
config.mesh.shape = (4, 1, 1)
outputs = runner.predict(config, t._task(splits), params, "validation")
np.testing.assert_array_equal(outputs, 2.0 * np.arange(13))
""",
        4,
        PYTHONPATH="tests:tests/downstream",
    )
