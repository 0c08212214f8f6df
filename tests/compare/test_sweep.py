"""`bert-jax compare` on a tiny budget: two cells, SIGTERM mid-cell, resume, report.

The real CLI in a subprocess (real pretraining, real suite, real signals): the first
cell (BERT MLM + NSP) finishes, the second (T5 prefix LM) is interrupted with SIGTERM
after its first checkpoint, exits 75; the rerun of the same command does not redo the
first cell (its result.json is untouched), resumes the second from its checkpoint and
writes results.json, results.md and the plots.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import ml_collections
import pytest
from conftest import REPO_ROOT
from test_preemption import STOPPED, start, wait_for

from bert_jax.compare import cells, sweep
from bert_jax.runtime import run_config
from bert_jax.training.preemption import EXIT_PREEMPTED

CELLS = "bert_mlm_nsp+t5_prefix_lm"


def compare_command(workdir) -> list[str]:
    return [
        sys.executable, "-m", "bert_jax", "compare", f"--workdir={workdir}",
        f"--config=configs/compare.py:runlocal,seeds=1,cells={CELLS}",
        "--config.compare.budget.train.num_steps=12",
        "--config.compare.budget.train.checkpoint_every=2",
        "--config.compare.budget.train.eval_every=12",
    ]  # fmt: skip


@pytest.mark.slow
def test_sweep_interrupted_mid_cell_resumes_without_redoing_finished_cells(tmp_path):
    workdir = tmp_path / "sweep"
    first = workdir / "cells" / "bert_mlm_nsp" / "seed0" / "result.json"
    second = workdir / "cells" / "t5_prefix_lm" / "seed0"
    log1 = tmp_path / "run1.log"
    proc = start(compare_command(workdir), log1)
    # The second cell's first checkpoint is durable once step 3 has started.
    wait_for(proc, log1, r"t5_prefix_lm seed 0[\s\S]*step 3/12", timeout=600)
    assert first.exists(), "the first cell finished before the second started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_PREEMPTED, pathlib.Path(log1).read_text()[-3000:]
    text = pathlib.Path(log1).read_text()
    stopped = int(STOPPED.search(text).group(1))
    assert 3 <= stopped < 12
    assert "Traceback" not in text
    assert not (second / "result.json").exists()
    before = (first.stat().st_mtime_ns, first.read_text())

    log2 = tmp_path / "run2.log"
    rerun = subprocess.run(
        compare_command(workdir),
        cwd=REPO_ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    log2.write_text(rerun.stdout + rerun.stderr)
    assert rerun.returncode == 0, log2.read_text()[-3000:]
    text = log2.read_text()
    assert "bert_mlm_nsp seed 0: done" in text  # skipped, not retrained
    assert (first.stat().st_mtime_ns, first.read_text()) == before
    assert re.search(rf"starting at step {stopped}\b", text), text[-3000:]
    result = json.loads((second / "result.json").read_text())
    assert result["pretrain"]["steps"] == 12
    assert [step for step, _ in result["curve"]] == list(range(1, 13))  # each step once
    assert {"rt_probe_64", "lee_spearman"} <= set(result["scores"])

    summary = json.loads((workdir / "results.json").read_text())
    assert json.dumps(summary).count("t5_prefix_lm") >= 1
    report = (workdir / "results.md").read_text()
    for table in ("t5_table4", "albert_table5"):
        assert cells.TABLES[table][0] in report
    plots = sorted(workdir.glob("*.png"))
    assert plots and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_cell_configs_share_the_budget_and_differ_only_in_the_objective():
    sweep_config = run_config.load_recipe("configs/compare.py:cells=all")
    configs = {name: cells.cell_config(sweep_config, cells.CELLS[name], 1) for name in cells.CELLS}
    budget = cells.flatten(sweep_config.compare.budget)
    for name, config in configs.items():
        flat = cells.flatten(config)
        assert all(flat[key] == value for key, value in budget.items()), name
        assert config.seed == 1
    t5_base = cells.flatten(configs["t5_iid_replace_spans"])
    for name in ("t5_prefix_lm", "t5_span_5", "t5_no_pretraining"):
        differing = {k for k, v in cells.flatten(configs[name]).items() if t5_base[k] != v}
        assert differing <= {"objective.name"}, (name, differing)
    bert_base = cells.flatten(configs["bert_mlm_nsp"])
    differing = {k for k, v in cells.flatten(configs["bert_mlm_sop"]).items() if bert_base[k] != v}
    assert differing == {"objective.sentence_pair_task"}
    # Tokens per cell: the same for every objective of the sweep.
    tokens = {
        c.train.num_steps * c.train.batch_size * c.data.max_seq_length for c in configs.values()
    }
    assert len(tokens) == 1


def test_selection_and_config_errors_name_the_field():
    assert cells.select("t5_table6") == [
        "t5_iid_10",
        "t5_iid_replace_spans",
        "t5_iid_25",
        "t5_iid_50",
    ]
    assert cells.select("t5_table7,t5_span_2,bert_mlm_sop")[-1] == "bert_mlm_sop"
    assert len(cells.select("all")) == len(cells.CELLS) >= 17
    with pytest.raises(ValueError, match="config.compare.cells: unknown cell or table 't5_tabel4'"):
        cells.select("t5_tabel4")
    with pytest.raises(ValueError, match="unknown scale='huge'"):
        run_config.load_recipe("configs/compare.py:scale=huge")
    sweep_config = run_config.load_recipe("configs/compare.py")
    sweep_config.suite.tasks = "rt_probe,glue"
    with pytest.raises(ValueError, match="config.suite.tasks: unknown"):
        sweep.run(sweep_config, "/nonexistent/never-created")
    broken = run_config.load_recipe("configs/compare.py")
    broken.compare.budget.train = ml_collections.ConfigDict({"num_stepz": 3})
    unknown = "config.compare.budget sets unknown field 'train.num_stepz'"
    with pytest.raises(ValueError, match=unknown):
        cells.cell_config(broken, cells.CELLS["bert_mlm_nsp"], 0)
    assert not os.path.exists("/nonexistent/never-created")


def test_paper_scale_is_t5_base_with_2_to_the_35_tokens_per_cell():
    sweep_config = run_config.load_recipe("configs/compare.py:scale=paper")
    config = cells.cell_config(sweep_config, cells.CELLS["t5_iid_replace_spans"], 0)
    assert config.model.size == "base"
    tokens = config.train.num_steps * config.train.batch_size * config.data.max_seq_length
    assert tokens == 2**35


def test_a_workdir_refuses_another_budget_and_runs_seed_major(tmp_path, monkeypatch):
    """A rerun may change the cells or seeds, not the budget; seed 0 of every cell first."""
    sweep_config = run_config.load_recipe("configs/compare.py:cells=albert_table5,seeds=2")
    order = []
    monkeypatch.setattr(sweep, "run_cell", lambda _s, _w, name, seed: order.append((name, seed)))
    sweep.run(sweep_config, str(tmp_path), only_cell="albert_table5")
    names = cells.select("albert_table5")
    assert order == [(name, seed) for seed in (0, 1) for name in names]

    more = run_config.load_recipe("configs/compare.py:cells=t5_table4,seeds=3")
    sweep.run(more, str(tmp_path), only_cell="t5_prefix_lm")  # other cells, seeds: fine
    other = run_config.load_recipe("configs/compare.py:cells=albert_table5,seeds=2")
    other.compare.budget.train.num_steps = 7
    order.clear()
    with pytest.raises(ValueError, match=r"sweep\.json: .*compare\.budget\.train\.num_steps: "):
        sweep.run(other, str(tmp_path), only_cell="bert_mlm_nsp")
    assert order == []  # refused before any cell ran
