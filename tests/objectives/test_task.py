"""The task contract: every task the train loop runs is an `objectives.Task`, complete."""

from __future__ import annotations

import pytest

from bert_jax import objectives
from bert_jax.downstream import runner
from bert_jax.downstream.classification import ClassificationTask
from bert_jax.downstream.squad_finetune import SquadTask
from bert_jax.downstream.text_to_text import TextToTextTask
from bert_jax.objectives.bert_task import BertPretrainingTask
from bert_jax.objectives.t5_task import T5PretrainingTask

PRETRAINING = (BertPretrainingTask, T5PretrainingTask)
FINETUNING = (ClassificationTask, SquadTask, TextToTextTask)


@pytest.mark.parametrize("task_class", PRETRAINING + FINETUNING)
def test_every_task_implements_the_whole_contract(task_class):
    assert issubclass(task_class, objectives.Task)
    assert not task_class.__abstractmethods__, task_class.__abstractmethods__


def test_pretraining_reads_short_held_out_splits_again_fine_tuning_once():
    assert all(cls.eval_draws == objectives.task.PRETRAINING_EVAL_DRAWS for cls in PRETRAINING)
    assert all(issubclass(cls, runner.FinetuneTask) for cls in FINETUNING)
    assert all(cls.eval_draws == 1 for cls in FINETUNING)


class _Toy(objectives.Task):
    """Every abstract method but ``loss_fn``."""

    def create_model(self, rngs):
        return None

    def eval_fn(self, model, batch):
        return {}

    def eval_metrics(self, totals):
        return {}

    def eval_baselines(self, batches):
        return {}

    def batches(self, split, global_batch_size, draw=0):
        return []


def test_a_task_missing_a_method_cannot_be_built():
    with pytest.raises(TypeError, match="loss_fn"):
        _Toy()


def test_the_optional_methods_default_to_nothing():
    class Complete(_Toy):
        def loss_fn(self, model, batch, *, deterministic, rngs=None):
            return 0.0, {}

    task = Complete()
    # No counts: microbatches weigh equally; no fingerprint: resume does not check the data.
    assert task.mean_weights({"x": 1}) == {}
    assert task.data_fingerprint() is None
    assert task.describe(None, {}) == {}  # the loop logs no example
    assert task.initial_params is None and task.loss_terms == ("loss",)
