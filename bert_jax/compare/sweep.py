"""Runs a sweep: every (cell, seed) pretrained under one budget, then scored by the suite.

Layout of the sweep workdir::

    DIR/sweep.json                   the sweep config (flattened) and the command
    DIR/cells/<cell>/seed<k>/        the cell's pretraining workdir (checkpoints, logs)
    DIR/cells/<cell>/seed<k>/result.json   written last, atomically: the cell is done
    DIR/results.json, results.md, *.png     bert_jax/compare/results.py

Resumable and parallel-safe: a (cell, seed) with a result.json is never redone; one
without resumes from its newest checkpoint (the train loop's own resume); SIGTERM or
Ctrl-C during pretraining stops with a durable checkpoint and exit 75
(bert_jax/training/preemption.py), like ``bert-jax pretrain``. Different cells write different
folders, so ``--cell NAME`` runs can share DIR from many machines (a job array);
``bert-jax compare --report DIR`` then collects them; ``--import_results FILE`` brings
the finished runs of another workdir's results.json in first (`import_runs`).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time

import ml_collections

from bert_jax.cli import report
from bert_jax.compare import cells, results, suite
from bert_jax.training import loop

RESULT = "result.json"


def cell_dir(workdir: str, cell: str, seed: int) -> str:
    return os.path.join(workdir, "cells", cell, f"seed{seed}")


def _write_json(path: str, value) -> None:
    """Atomic: a reader (or a rerun after a kill) sees the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _records(directory: str, split: str) -> list[dict]:
    """metrics.jsonl records of ``split``, one per step (a resumed run's repeats: the last)."""
    by_step = {r["step"]: r for r in report.read_metrics(directory) if r.get("split") == split}
    return [by_step[step] for step in sorted(by_step)]


def _loss_key(record: dict) -> str:
    """The objective's loss: the train loss, or the held-out target / masked-LM loss."""
    for key in ("loss", "target_loss", "mlm_loss"):
        if key in record:
            return key
    raise ValueError(f"metrics.jsonl step {record['step']}: no loss among {sorted(record)}")


def _pretrain(config: ml_collections.ConfigDict, directory: str) -> dict:
    """Pretrains (or resumes, or finds finished) the cell; its budget, time and curves."""
    timing_path = os.path.join(directory, "timing.json")
    spent = 0.0
    if os.path.exists(timing_path):
        timing = results.load(timing_path)
        spent = timing.get("wall_s") if isinstance(timing, dict) else None
        if not isinstance(spent, (int, float)):
            raise ValueError(f"{timing_path}: no number 'wall_s'; delete it to count from 0")
    start = time.monotonic()
    try:
        out = loop.train_and_evaluate(config, directory)
    finally:  # a preempted segment's time counts too
        _write_json(timing_path, {"wall_s": spent + time.monotonic() - start})
    train_records, eval_records = _records(directory, "train"), _records(directory, "eval")
    return {
        "pretrain": {
            "steps": int(out["step"]),
            "tokens": int(out["step"]) * config.train.batch_size * config.data.max_seq_length,
            "wall_s": spent + time.monotonic() - start,
            "eval": eval_records[-1] if eval_records else {},
        },
        "curve": [[r["step"], r[_loss_key(r)]] for r in train_records],
        "eval_curve": [[r["step"], r[_loss_key(r)]] for r in eval_records],
    }


# Fields a rerun into the same workdir may change: which cells, how many seeds, and
# the device mesh (the global batch, hence the budget, does not depend on it).
_FREE_FIELDS = ("compare.cells", "compare.seeds")
_FREE_PREFIXES = ("mesh.",)


def check_same_budget(workdir: str, flat: dict) -> None:
    """Refuses to mix budgets: a workdir's cells must all share the sweep's config.

    Raises:
      ValueError: naming DIR/sweep.json and each field whose value differs.
    """
    path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(path):
        return
    before = results.load(path)
    before = before.get("config") if isinstance(before, dict) else None
    if not isinstance(before, dict):
        raise ValueError(f"{path}: no 'config' object; not a sweep's sweep.json")
    keys = sorted(
        k for k in (set(before) | set(flat)) - set(_FREE_FIELDS) if not k.startswith(_FREE_PREFIXES)
    )
    changed = [k for k in keys if before.get(k) != _jsonable(flat.get(k))]
    if changed:
        diffs = "; ".join(f"{k}: {before.get(k)!r} -> {flat.get(k)!r}" for k in changed[:8])
        raise ValueError(
            f"{path}: this workdir's cells ran under another config ({diffs}); "
            "rerun with the same config or use a fresh --workdir"
        )


def _jsonable(value):
    return json.loads(json.dumps(value))


def command_line() -> str:
    return " ".join(shlex.quote(arg) for arg in ["bert-jax", *sys.argv[1:]])


def run_cell(sweep: ml_collections.ConfigDict, workdir: str, name: str, seed: int) -> dict:
    """Runs one (cell, seed) unless its result.json exists; returns the result."""
    directory = cell_dir(workdir, name, seed)
    path = os.path.join(directory, RESULT)
    if os.path.exists(path):
        logging.info("%s seed %d: done (%s), not redone", name, seed, path)
        try:
            return results.validate(results.load(path), path)
        except ValueError as error:
            raise ValueError(f"{error}; delete it to run {name} seed {seed} again") from None
    os.makedirs(directory, exist_ok=True)
    cell = cells.CELLS[name]
    config = cells.cell_config(sweep, cell, seed)
    logging.info("%s seed %d: %s in %s", name, seed, cell.label, directory)
    if cell.pretrain:
        result = _pretrain(config, directory)
    else:
        result = {"pretrain": None, "curve": [], "eval_curve": []}
    start = time.monotonic()
    scores, runs = suite.score(
        sweep.suite,
        config,
        directory if cell.pretrain else None,
        recipe=sweep.compare[f"{cell.family}_recipe"],
        out_dir=directory,
    )
    result.update(
        cell=name,
        seed=seed,
        family=cell.family,
        label=cell.label,
        command=command_line(),
        scores=scores,
        score_runs=runs,
        suite_wall_s=time.monotonic() - start,
    )
    _write_json(path, result)
    return result


def import_runs(results_path: str, workdir: str) -> int:
    """Writes each finished run of a sweep's ``results.json`` into ``workdir`` as its result.json.

    For a sweep whose workdir is gone (another machine, an earlier session, the committed
    docs/compare/sweep): the imported runs count as done and are not redone, so the same
    command goes on with the cells and seeds still missing. A run that already has a
    result.json in ``workdir`` keeps it. The budget check applies: the results' config
    must match ``workdir``'s sweep.json, and becomes it when there is none.

    Every run is checked (`results.validate`) before anything is written: one bad entry
    writes nothing, so it cannot poison later reruns.

    Returns:
      the number of runs written.
    Raises:
      ValueError: naming ``results_path`` if it is not a sweep's results.json (and the
        entry, ``cells.NAME.runs[i]``, that is not a valid run), or ``workdir``'s
        sweep.json if the configs differ.
    """
    summary = results.load(results_path)
    if not isinstance(summary, dict) or not all(
        isinstance(summary.get(key), dict) for key in ("cells", "config")
    ):
        raise ValueError(f"{results_path}: not a sweep's results.json (needs 'cells' and 'config')")
    check_same_budget(workdir, summary["config"])
    runs = []
    for name, cell in summary["cells"].items():
        if not isinstance(cell, dict) or not isinstance(cell.get("runs", []), list):
            raise ValueError(f"{results_path}: cells.{name} has no 'runs' list")
        for i, run in enumerate(cell.get("runs", [])):
            where = f"{results_path}: cells.{name}.runs[{i}]"
            results.validate(run, where)
            if run["cell"] != name:
                raise ValueError(f"{where}: says cell {run['cell']!r}, not {name!r}")
            runs.append(run)
    os.makedirs(workdir, exist_ok=True)
    sweep_path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(sweep_path):
        _write_json(sweep_path, {"config": summary["config"], "command": summary.get("command")})
    written = 0
    for run in runs:
        directory = cell_dir(workdir, run["cell"], run["seed"])
        if not os.path.exists(os.path.join(directory, RESULT)):
            os.makedirs(directory, exist_ok=True)
            _write_json(os.path.join(directory, RESULT), run)
            written += 1
    return written


def run(sweep: ml_collections.ConfigDict, workdir: str, only_cell: str | None = None) -> None:
    """Every (cell, seed) of ``sweep`` not yet done, then the report (see module docstring).

    Args:
      only_cell: run just this cell's seeds and write no report (``--cell NAME``).
    """
    names = cells.select(only_cell or sweep.compare.cells)
    suite.check(sweep.suite)
    if sweep.compare.seeds < 1:
        raise ValueError(f"config.compare.seeds must be at least 1, got {sweep.compare.seeds}")
    os.makedirs(workdir, exist_ok=True)
    flat = cells.flatten(sweep)
    check_same_budget(workdir, flat)
    _write_json(os.path.join(workdir, "sweep.json"), {"config": flat, "command": command_line()})
    total = len(names) * sweep.compare.seeds
    done = 0
    # Seed-major: a sweep stopped part-way has one seed of every cell before a second.
    for seed in range(sweep.compare.seeds):
        for name in names:
            run_cell(sweep, workdir, name, seed)
            done += 1
            logging.info("sweep: %d of %d (cell, seed) runs done", done, total)
    if only_cell is None:
        paths = results.write(workdir)
        logging.info("sweep report: %s", ", ".join(paths))
