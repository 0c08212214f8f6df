"""The exported checkpoint, scored by transformers alone, gives our hidden-position loss.

A tiny BERT is pretrained a few steps and exported. Both sides score the project's own
held-out batches with every selected position replaced by [MASK]: our evaluation's
``mlm_mask_loss`` and `benchmarks.hf_hidden_positions.score` on ``BertForPreTraining``
must agree well within the 0.05 nats the issue asks of the real recipe. Then the
script's own held-out windows are checked and the script run end to end.
"""

from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may be fetched

import jax
import numpy as np
import pytest
from conftest import tiny_bert_config
from flax import nnx

from bert_jax import objectives
from bert_jax.export import hf
from bert_jax.training import loop

transformers = pytest.importorskip("transformers")
hf_hidden_positions = pytest.importorskip("benchmarks.hf_hidden_positions")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vocab_path, corpus_dir):
    # A high constant learning rate: in 8 steps the model leaves the uniform prediction
    # (ln 8000 = 8.99 nats at every position), so the losses depend on the positions scored.
    config = tiny_bert_config(
        **{
            "train.num_steps": 8,
            "train.eval_every": 8,
            "optim.learning_rate": 1e-2,
            "optim.schedule": "constant",
            "optim.warmup_steps": 0,
        }
    )
    workdir = str(tmp_path_factory.mktemp("bert_workdir"))
    result = loop.train_and_evaluate(config, workdir)
    out_dir = hf.export_checkpoint(config, workdir, str(tmp_path_factory.mktemp("hf")))
    return config, workdir, result["state"].params, out_dir


def all_hidden(batch: dict[str, np.ndarray], mask_id: int) -> dict[str, np.ndarray]:
    batch = dict(batch, input_ids=batch["input_ids"].copy())
    rows, slots = np.nonzero(batch["masked_lm_weights"])
    batch["input_ids"][rows, batch["masked_lm_positions"][rows, slots]] = mask_id
    return batch


def test_transformers_gives_our_hidden_position_loss_on_the_same_batches(exported):
    config, _, params, out_dir = exported
    task = objectives.get_task(config)
    mask_id = task.tokenizer.mask_id
    batches = [all_hidden(b, mask_id) for b in loop.eval_batches(config, task, 4)]
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: task.create_model(nnx.Rngs(0))), nnx.Param)
    eval_step = jax.jit(loop.make_eval_step(task, graphdef))
    totals = None
    for batch in batches:
        sums = jax.device_get(eval_step(params, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    ours = task.eval_metrics({k: float(v) for k, v in totals.items()})
    assert ours["mlm_mask_count"] == ours["mlm_count"] > 200
    assert math.isnan(ours["mlm_random_loss"]) and math.isnan(ours["mlm_kept_loss"])

    hf_model = transformers.AutoModelForPreTraining.from_pretrained(out_dir)
    theirs = hf_hidden_positions.score(
        hf_model,
        {
            "input_ids": np.concatenate([b["input_ids"] for b in batches]),
            "token_type_ids": np.concatenate([b["segment_ids"] for b in batches]),
            "attention_mask": np.concatenate([b["input_mask"] for b in batches]),
            "positions": np.concatenate([b["masked_lm_positions"] for b in batches]),
            "labels": np.concatenate([b["masked_lm_ids"] for b in batches]),
            "weights": np.concatenate([b["masked_lm_weights"] for b in batches]),
        },
    )
    print(
        f"hidden-position loss: ours {ours['mlm_mask_loss']:.6f}, transformers {theirs['loss']:.6f}"
    )
    assert theirs["count"] == ours["mlm_mask_count"]
    assert ours["mlm_mask_loss"] < 8.5  # trained past the uniform prediction
    assert abs(theirs["loss"] - ours["mlm_mask_loss"]) < 1e-3  # float32 on both sides
    assert abs(theirs["accuracy"] - ours["mlm_mask_accuracy"]) < 1e-6 + 1 / theirs["count"]


def test_script_windows_hide_every_selected_token_and_run_end_to_end(exported, capsys):
    config, workdir, _, out_dir = exported
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    documents = hf_hidden_positions.read_documents(config.data.eval_pattern)
    windows = hf_hidden_positions.build_windows(hf_tokenizer, documents)
    width = hf_hidden_positions.WINDOW + 2
    assert windows["input_ids"].shape == (len(windows["positions"]), width)
    # Undo the masking: the windows are exactly the documents' tokens, 126 at a time.
    restored = windows["input_ids"].copy()
    for row, (positions, labels, weights) in enumerate(
        zip(windows["positions"], windows["labels"], windows["weights"], strict=True)
    ):
        selected = weights > 0
        assert (restored[row, positions[selected]] == hf_tokenizer.mask_token_id).all()
        restored[row, positions[selected]] = labels[selected]
    assert (windows["input_ids"] == hf_tokenizer.mask_token_id).sum() == windows["weights"].sum()
    lengths = windows["attention_mask"].sum(axis=1)
    tokens = [row[1 : length - 1] for row, length in zip(restored, lengths, strict=True)]
    expected = hf_tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
    assert np.concatenate(tokens).tolist() == [t for ids in expected for t in ids]
    # BERT's budget: 15% of a full window is 19 predictions.
    full = windows["attention_mask"].sum(axis=1) == width
    assert (windows["weights"][full].sum(axis=1) == 19).all()

    figures = hf_hidden_positions.main(
        ["--hf_dir", out_dir, "--eval_pattern", config.data.eval_pattern, "--workdir", workdir]
    )
    out = capsys.readouterr().out
    assert f"{figures['loss']:.4f} nats" in out and "difference (transformers - project)" in out
    assert figures["count"] == 3 * windows["weights"].sum()  # three draws pooled by default
    # Different windows and draws (and only 2 held-out batches here): two estimates of one
    # loss, not the same number; the 0.05-nat comparison is for the default recipe's export.
    assert abs(figures["difference"]) < 0.5
