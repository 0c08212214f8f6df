"""`bert-jax report`: hidden-position figures beside the baselines, in every output."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys

import pytest
from conftest import tiny_bert_config
from PIL import Image
from tensorboardX.proto import event_pb2

from bert_jax.cli import report
from bert_jax.telemetry.metric_writer import MetricWriter
from bert_jax.training import loop

KIND_KEYS = [
    f"mlm_{kind}_{what}"
    for kind in ("mask", "random", "kept")
    for what in ("loss", "accuracy", "count")
]


def tensorboard_tags(directory) -> set[str]:
    """Scalar tags of the TFRecord event files (length, crc, event, crc per record)."""
    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            offset += 12 + length + 4
    return tags


@pytest.fixture(scope="module")
def bert_workdir(tmp_path_factory, vocab_path, corpus_dir):
    workdir = tmp_path_factory.mktemp("bert_report")
    loop.train_and_evaluate(tiny_bert_config(**{"train.eval_every": 2}), str(workdir))
    return workdir


def test_eval_records_and_tensorboard_hold_the_hidden_position_figures(bert_workdir):
    evals = [r for r in report.read_metrics(str(bert_workdir)) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for key in [*KIND_KEYS, "mlm_count", "mask_unigram_xent", "mask_majority_accuracy"]:
        assert key in evals[-1], key
    last = evals[-1]
    counts = [last[f"mlm_{kind}_count"] for kind in ("mask", "random", "kept")]
    assert sum(counts) == last["mlm_count"] and counts[0] > counts[1] + counts[2]
    tags = tensorboard_tags(bert_workdir / "tensorboard")
    assert {"eval/mlm_mask_loss", "eval/mlm_kept_accuracy", "eval/mask_unigram_xent"} <= tags


def test_report_compares_mask_positions_with_the_baselines(bert_workdir, capsys):
    summary = report.print_report(str(bert_workdir))
    last = summary["last_eval"]
    assert summary["mask_nats_below_unigram"] == last["mask_unigram_xent"] - last["mlm_mask_loss"]
    assert summary["mask_accuracy_over_majority"] == (
        last["mlm_mask_accuracy"] - last["mask_majority_accuracy"]
    )
    out = capsys.readouterr().out
    mask_row = next(line for line in out.splitlines() if line.startswith("[MASK] positions: loss"))
    assert f"{last['mlm_mask_loss']:.3f}" in mask_row
    assert f"training unigram {last['mask_unigram_xent']:.3f}" in mask_row
    gap = summary["mask_nats_below_unigram"]  # a 4-step model is still above the baseline
    assert f"{abs(gap):.3f} nats {'below' if gap >= 0 else 'ABOVE'} the training-unigram" in out
    assert report.ALL_POSITIONS_NOTE in out and report.T5_NOTE not in out
    with Image.open(bert_workdir / "learning_curve.png") as image:
        assert image.size[0] > 1500  # three panels: loss, accuracy, loss by input kind


def write_records(workdir, records):
    with open(workdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)


def test_report_of_runs_without_kind_figures(tmp_path, capsys):
    # A metrics.jsonl written before the hidden-position figures existed (e.g. docs/).
    old = tmp_path / "old"
    old.mkdir()
    eval_record = {"split": "eval", "mlm_loss": 6.0, "mlm_accuracy": 0.1, "unigram_xent": 6.8}
    write_records(old, [{"step": 1, "split": "train", "mlm_loss": 9.0}, {"step": 1, **eval_record}])
    summary = report.print_report(str(old))
    assert "mask_nats_below_unigram" not in summary
    assert summary["nats_below_unigram"] == pytest.approx(0.8)
    assert "all selected positions: 0.800 nats below" in capsys.readouterr().out

    t5 = tmp_path / "t5"
    t5.mkdir()
    t5_eval = {"split": "eval", "target_loss": 5.0, "target_accuracy": 0.2, "unigram_xent": 6.5}
    write_records(t5, [{"step": 2, **t5_eval}, {"step": 4, **t5_eval, "target_loss": 4.5}])
    summary = report.print_report(str(t5))
    assert summary["nats_below_unigram"] == pytest.approx(2.0)
    out = capsys.readouterr().out
    assert report.T5_NOTE in out and "targets: 2.000 nats below" in out
    assert "[MASK]" not in out.split(report.T5_NOTE)[0]


def test_a_cut_last_line_is_skipped_by_report_and_set_aside_by_the_next_run(tmp_path, caplog):
    # A run killed mid-write leaves the last record cut (no newline).
    first = {"step": 2, "split": "eval", "mlm_loss": 6.0, "unigram_xent": 6.8}
    write_records(tmp_path, [first])
    path = tmp_path / "metrics.jsonl"
    cut = '{"step": 3, "split": "train", "lo'
    with open(path, "a") as f:
        f.write(cut)
    with caplog.at_level(logging.WARNING):
        assert report.read_metrics(str(tmp_path)) == [first]
    assert f"{path}:2: skipped a cut last line" in caplog.text
    # The resumed run's writer moves the cut line aside and starts on a fresh line.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        writer = MetricWriter(str(tmp_path), total_steps=4, tokens_per_step=1)
    writer.write(4, "eval", {"mlm_loss": 5.0, "unigram_xent": 6.8})
    writer.close()
    (aside,) = tmp_path.glob("metrics.jsonl.partial-*")
    assert aside.read_text() == cut + "\n"  # kept, named in the warning
    assert str(aside) in caplog.text and "cut line" in caplog.text
    records = report.read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [2, 4]
    assert report.summarize(str(tmp_path))["last_eval"]["mlm_loss"] == 5.0


def test_a_last_line_that_lost_only_its_newline_is_kept(tmp_path):
    record = {"step": 2, "split": "eval", "mlm_loss": 6.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(record))
    writer = MetricWriter(str(tmp_path), total_steps=4, tokens_per_step=1)
    writer.write(4, "eval", {"mlm_loss": 5.0})
    writer.close()
    assert [r["step"] for r in report.read_metrics(str(tmp_path))] == [2, 4]
    assert not list(tmp_path.glob("metrics.jsonl.partial-*"))


def test_the_metric_writer_does_not_load_torch(tmp_path):
    """tensorboardX imports torch when it can (3.4 s of a training process's 6 s of
    imports); the writer imports it without, and its event files still hold the scalars."""
    script = f"""
import sys
from bert_jax.telemetry.metric_writer import MetricWriter
writer = MetricWriter({str(tmp_path)!r}, total_steps=4, tokens_per_step=1)
writer.write(1, "train", {{"loss": 2.5}})
writer.close()
assert "torch" not in sys.modules, "torch was imported"
import torch  # still importable afterwards
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert tensorboard_tags(tmp_path / "tensorboard") == {"train/loss"}
