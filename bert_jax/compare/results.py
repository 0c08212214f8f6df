"""A sweep's report: results.json, results.md beside the papers' numbers, and PNG plots.

``collect(DIR)`` reads every ``DIR/cells/<cell>/seed<k>/result.json`` (bert_jax/compare/
sweep.py writes them; a seed not yet run is simply absent) and summarises each cell over
its seeds: mean, sample standard deviation (ddof=1; 0 for one seed) and n of every score
and of the pretraining tokens and wall time. It lays the cells out as the paper tables of
`cells.TABLES`, ranks the rows by the sweep's ``suite.primary`` score (higher is better)
beside the paper's headline number (`paper.paper_score`), and measures each row's
distance from the table's baseline in pooled seed standard deviations: a difference
under 2 is within the seed spread, so a ranking on it would rank noise.

``write(DIR)`` writes ``DIR/results.json`` (every cell, seed, metric and command, and
the summary), ``DIR/results.md`` (rendered by `bert_jax.compare.markdown`) and the plots
of `bert_jax.compare.plots`, and returns their paths.
"""

from __future__ import annotations

import glob
import json
import math
import os

from bert_jax.compare import cells, markdown, paper, plots

DEFAULT_PRIMARY = "lee_spearman"  # configs/compare.py suite.primary
REQUIRED = {"cell": str, "seed": int, "scores": dict}
# The T5 tables' baseline (★) row; other tables compare against their first row.
BASELINE_CELL = {name: "t5_iid_replace_spans" for name in ("t5_table5", "t5_table6", "t5_table7")}
# Column order of our scores in a table (the primary first; scores not listed last).
METRICS = (
    "lee_spearman",
    "rt_probe_500",
    "rt_probe_2000",
    "mlm_accuracy",
    "nsp_accuracy",
    "sop_accuracy",
)
SPREAD = 2.0  # |difference| under this many pooled seed stds: within the seed spread


def stats(values: list[float]) -> dict[str, float]:
    """Mean, sample std (ddof=1; 0 for a single value) and n of ``values``."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def load(path: str):
    """The JSON value of a result.json (or results.json, sweep.json); ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None


def validate(result, where: str) -> dict:
    """A result's fields checked enough that a report never fails later on it.

    Args:
      result: a result.json's value, or one run of a results.json's ``cells.*.runs``.
      where: names it in the error (its path, or the results.json entry).
    """
    if not isinstance(result, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(result).__name__}")
    for key, kind in REQUIRED.items():
        if not isinstance(result.get(key), kind) or isinstance(result.get(key), bool):
            raise ValueError(f"{where}: field {key!r} missing or not a {kind.__name__}")
    for name, value in result["scores"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{where}: scores.{name} is not a number: {value!r}")
    pretrain = result.get("pretrain")
    if pretrain is not None and not isinstance(pretrain, dict):
        raise ValueError(f"{where}: field 'pretrain' is neither null nor an object")
    return result


def _read(path: str) -> dict:
    """One result.json, validated, in the folder of its cell and seed."""
    result = validate(load(path), path)
    cell, seed = path.split(os.sep)[-3:-1]
    if result["cell"] != cell or f"seed{result['seed']}" != seed:
        raise ValueError(f"{path}: says cell {result['cell']!r} seed {result['seed']}")
    return result


def _cell_summary(name: str, runs: list[dict]) -> dict:
    cell = cells.CELLS.get(name)
    metrics = sorted({metric for run in runs for metric in run["scores"]})
    pretrained = [run["pretrain"] for run in runs if run.get("pretrain")]
    summary = {
        "label": runs[0].get("label") or (cell.label if cell else name),
        "family": runs[0].get("family") or (cell.family if cell else "unknown"),
        "seeds": [run["seed"] for run in runs],
        "commands": sorted({run.get("command", "") for run in runs} - {""}),
        "scores": {
            metric: stats([run["scores"][metric] for run in runs if metric in run["scores"]])
            for metric in metrics
        },
        "runs": runs,
    }
    for key in ("tokens", "wall_s", "steps"):
        values = [p[key] for p in pretrained if isinstance(p.get(key), (int, float))]
        summary[f"pretrain_{key}"] = stats(values) if values else None
    suite_times = [run["suite_wall_s"] for run in runs if "suite_wall_s" in run]
    summary["suite_wall_s"] = stats(suite_times) if suite_times else None
    return summary


def _ranks(values: dict[str, float]) -> dict[str, int]:
    """Competition ranks, 1 = highest; ties share the better rank."""
    return {
        key: 1 + sum(other > value for other in values.values()) for key, value in values.items()
    }


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's tau-b of two paired lists; None below 3 pairs or for a constant list."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    if len(xs) < 3 or denominator == 0:
        return None
    return (concordant - discordant) / denominator


def pooled_std(a: dict[str, float], b: dict[str, float]) -> float | None:
    """The two-sample pooled standard deviation; None without a degree of freedom."""
    dof = a["n"] + b["n"] - 2
    if dof < 1:
        return None
    return math.sqrt(((a["n"] - 1) * a["std"] ** 2 + (b["n"] - 1) * b["std"] ** 2) / dof)


def table_summary(table: str, cell_summaries: dict[str, dict], primary: str) -> dict | None:
    """One paper table of our cells; None when none of its cells has a finished seed."""
    title, layout = cells.TABLES[table]
    if not any(cell in cell_summaries for cell, _ in layout):
        return None
    rows = []
    for cell, paper_row in layout:
        ours = cell_summaries.get(cell)
        headline = paper.paper_score(table, paper_row)
        fallback = cells.CELLS[cell].label if cell in cells.CELLS else cell
        rows.append(
            {
                "cell": cell,
                "label": ours["label"] if ours else fallback,
                "paper_row": paper_row,
                "seeds": len(ours["seeds"]) if ours else 0,
                "scores": ours["scores"] if ours else {},
                "paper": paper.PAPER.get(table, {}).get(paper_row) if paper_row else None,
                "paper_headline": headline[1] if headline else None,
            }
        )
    scored = {
        row["cell"]: row["scores"][primary]["mean"] for row in rows if primary in row["scores"]
    }
    published = {r["cell"]: r["paper_headline"] for r in rows if r["paper_headline"] is not None}
    ours_rank, paper_rank = _ranks(scored), _ranks(published)
    both = [cell for cell in scored if cell in published]
    baseline = BASELINE_CELL.get(table, layout[0][0])
    if baseline not in scored:  # an unfinished baseline: the first row that has a score
        baseline = next((row["cell"] for row in rows if row["cell"] in scored), None)
    paper_std = paper.paper_baseline_std(table)
    paper_base = next((r["paper_headline"] for r in rows if r["cell"] == baseline), None)
    for row in rows:
        row["rank"] = ours_rank.get(row["cell"])
        row["paper_rank"] = paper_rank.get(row["cell"])
        row["diff_sigma"] = row["within_seed_spread"] = row["paper_diff_sigma"] = None
        if row["cell"] in scored and baseline and row["cell"] != baseline:
            base = cell_summaries[baseline]["scores"][primary]
            spread = pooled_std(row["scores"][primary], base)
            if spread:
                row["diff_sigma"] = (scored[row["cell"]] - base["mean"]) / spread
                row["within_seed_spread"] = abs(row["diff_sigma"]) < SPREAD
        if paper_std and paper_base is not None and row["paper_headline"] is not None:
            row["paper_diff_sigma"] = (row["paper_headline"] - paper_base) / paper_std
    metrics = sorted(
        {m for row in rows for m in row["scores"]},
        key=lambda m: (m != primary, METRICS.index(m) if m in METRICS else len(METRICS), m),
    )
    return {
        "name": table,
        "title": title,
        "source": paper.SOURCES.get(table, ""),
        "headline_column": paper.headline_column(table),
        "primary": primary,
        "metrics": metrics,
        "baseline": baseline,
        "kendall_tau": kendall_tau([scored[c] for c in both], [published[c] for c in both]),
        "tau_rows": len(both),
        "rows": rows,
    }


def collect(workdir: str) -> dict:
    """Every finished (cell, seed) of the sweep in ``workdir``, summarised (module docstring).

    Raises:
      ValueError: naming a result.json that is not a valid result.
    """
    by_cell: dict[str, list[dict]] = {}
    pattern = os.path.join(workdir, "cells", "*", "seed*", "result.json")
    for path in sorted(glob.glob(pattern)):
        result = _read(path)
        by_cell.setdefault(result["cell"], []).append(result)
    sweep_path = os.path.join(workdir, "sweep.json")
    sweep = load(sweep_path) if os.path.exists(sweep_path) else {}
    if not isinstance(sweep, dict):
        raise ValueError(f"{sweep_path}: expected a JSON object, got {type(sweep).__name__}")
    config = sweep.get("config") or {}
    primary = config.get("suite.primary") or DEFAULT_PRIMARY
    order = [name for name in cells.CELLS if name in by_cell] + sorted(
        set(by_cell) - set(cells.CELLS)
    )
    summaries = {
        name: _cell_summary(name, sorted(by_cell[name], key=lambda r: r["seed"])) for name in order
    }
    tables = {}
    for table in cells.TABLES:
        summary = table_summary(table, summaries, primary)
        if summary is not None:
            tables[table] = summary
    return {
        "workdir": workdir,
        "command": sweep.get("command"),
        # Every distinct command that produced a finished run (a sweep resumed with other
        # cells or seeds, or fanned out with --cell, has several).
        "run_commands": sorted(
            {r.get("command", "") for rs in by_cell.values() for r in rs} - {""}
        ),
        "config": config,
        "primary": primary,
        "cells": summaries,
        "tables": tables,
    }


def write(workdir: str) -> list[str]:
    """Writes results.json, results.md and the PNG plots into ``workdir``; their paths."""
    summary = collect(workdir)
    plot_paths = plots.write_plots(summary, workdir)
    json_path = os.path.join(workdir, "results.json")
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=1)
    md_path = os.path.join(workdir, "results.md")
    with open(md_path, "w") as f:
        f.write(markdown.render(summary, [os.path.basename(p) for p in plot_paths]))
    return [json_path, md_path, *plot_paths]
