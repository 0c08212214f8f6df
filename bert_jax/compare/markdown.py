"""results.md of a sweep: the budget, then each paper table with ours beside the paper's.

Renders the summary of `bert_jax.compare.results.collect` as plain (GitHub) markdown. Our
scores are fractions (accuracies, Spearman's rho) with 3 decimals, ``mean ± std`` over
pretraining seeds; the papers' numbers are as published (%, BLEU, ROUGE).
"""

from __future__ import annotations

from bert_jax.compare import paper

MISSING = "–"


def _number(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _score(stats: dict | None, seeds: int) -> str:
    if not stats:
        return MISSING
    text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return text if stats["n"] == seeds else f"{text} (n={stats['n']})"


def _range(values: list[float], unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low:,.0f}{unit}" if low == high else f"{low:,.0f}–{high:,.0f}{unit}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def header(summary: dict) -> list[str]:
    config, cells = summary["config"], summary["cells"]
    pretrained = [c for c in cells.values() if c["pretrain_tokens"]]
    seeds = sorted({len(c["seeds"]) for c in cells.values()})
    lines = ["# Objective comparison: results", ""]
    if summary["command"]:
        lines += [f"Sweep command: `{summary['command']}`", ""]
    others = [c for c in summary.get("run_commands", []) if c != summary["command"]]
    if others:
        lines += ["Runs also produced by:", ""] + [f"- `{c}`" for c in others] + [""]
    lines.append(f"- Scale: {config.get('compare.scale', MISSING)}; cells finished: {len(cells)}")
    seeds_line = f"- Seeds per cell: {', '.join(map(str, seeds)) or MISSING}"
    if "compare.seeds" in config:
        seeds_line += f" (config compare.seeds = {config['compare.seeds']})"
    lines.append(seeds_line)
    if pretrained:
        tokens = [c["pretrain_tokens"]["mean"] for c in pretrained]
        steps = [c["pretrain_steps"]["mean"] for c in pretrained if c["pretrain_steps"]]
        walls = [c["pretrain_wall_s"]["mean"] for c in pretrained if c["pretrain_wall_s"]]
        budget = f"- Budget per pretrained cell: {_range(tokens)} tokens"
        lines.append(budget + (f" ({_range(steps)} steps)" if steps else ""))
        if walls:
            mean = sum(walls) / len(walls)
            lines.append(
                f"- Pretraining wall time per cell (mean over seeds): {mean:,.0f} s on average, "
                f"{_range(walls, ' s')} across cells"
            )
    suite_times = [c["suite_wall_s"]["mean"] for c in cells.values() if c["suite_wall_s"]]
    if suite_times:
        lines.append(f"- Suite wall time per run: {sum(suite_times) / len(suite_times):,.0f} s")
    lines += [
        f"- Primary score (tables rank by it, higher is better): `{summary['primary']}`",
        "",
        "Our scores: mean ± std over pretraining seeds (sample std), fractions with 3 "
        "decimals; the papers' numbers as published. Rank 1 is the best row.",
        "",
    ]
    return lines


def _diff(row: dict, baseline: str | None) -> str:
    if row["cell"] == baseline:
        return "baseline"
    if row["diff_sigma"] is None:
        return MISSING
    text = f"{row['diff_sigma']:+.2f}"
    return f"{text} (within seed spread)" if row["within_seed_spread"] else text


def table(table_info: dict) -> list[str]:
    """One paper table (the dict of `results.table_summary`) as markdown lines."""
    metrics, primary = table_info["metrics"], table_info["primary"]
    paper_std = paper.paper_baseline_std(table_info["name"])
    columns = ["Ours", "Paper row", "Seeds", *[f"`{m}`" for m in metrics]]
    columns += [f"Paper {table_info['headline_column']}", "Our rank", "Paper rank"]
    columns.append("Δ vs baseline (seed σ)")
    if paper_std:
        columns.append(f"Paper Δ (σ = {paper_std})")
    lines = [f"## {table_info['title']}", "", f"Paper: {table_info['source']}.", ""]
    lines += [_row(columns), _row(["---"] * len(columns))]
    for row in table_info["rows"]:
        cells = [row["label"], row["paper_row"] or MISSING, str(row["seeds"] or MISSING)]
        cells += [_score(row["scores"].get(m), row["seeds"]) for m in metrics]
        cells.append(_number(row["paper_headline"], paper.DIGITS.get(table_info["name"], 2)))
        cells += [str(row["rank"] or MISSING), str(row["paper_rank"] or MISSING)]
        cells.append(_diff(row, table_info["baseline"]))
        if paper_std:
            cells.append(_number(row["paper_diff_sigma"], 2, sign=True))
        lines.append(_row(cells))
    tau = table_info["kendall_tau"]
    agreement = "n/a" if tau is None else f"{tau:+.3f}"
    lines += [
        "",
        f"- Rank agreement (Kendall τ of our `{primary}` and the paper's "
        f"{table_info['headline_column']}, over {table_info['tau_rows']} rows with both): "
        f"{agreement}" + (" (fewer than 3 rows)" if table_info["tau_rows"] < 3 else ""),
        f"- Δ: each row's `{primary}` minus the baseline row's, in pooled seed standard "
        "deviations; |Δ| < 2 is within seed spread.",
    ]
    if paper_std:
        lines.append(
            f"- Paper Δ: the same for the paper's GLUE average, in T5 Table 1's baseline "
            f"standard deviation ({paper_std})."
        )
    lines.append("")
    if table_info["name"] == "albert_table5":
        lines += cross_evaluation(table_info)
    return lines


def cross_evaluation(table_info: dict) -> list[str]:
    """ALBERT Table 5's intrinsic accuracies: ours on held-out MLM, NSP and SOP pairs."""
    columns = ["Ours", "Paper row"]
    for column, metric in paper.ALBERT_INTRINSIC.items():
        columns += [f"Ours `{metric}`", f"Paper {column} (%)"]
    lines = [
        "### Cross-evaluation: every model on NSP-style and SOP-style held-out pairs",
        "",
        _row(columns),
        _row(["---"] * len(columns)),
    ]
    for row in table_info["rows"]:
        cells = [row["label"], row["paper_row"] or MISSING]
        for column, metric in paper.ALBERT_INTRINSIC.items():
            cells.append(_score(row["scores"].get(metric), row["seeds"]))
            cells.append(_number((row["paper"] or {}).get(column), 1))
        lines.append(_row(cells))
    return [*lines, ""]


def render(summary: dict, plot_names: list[str]) -> str:
    """The whole results.md; ``plot_names`` are linked relative to the file."""
    lines = header(summary)
    if not summary["tables"]:
        lines += ["No table has a finished cell yet.", ""]
    for table_info in summary["tables"].values():
        lines += table(table_info)
    if plot_names:
        lines += ["## Plots", ""]
        for name in plot_names:
            title = name.removesuffix(".png").replace("_", " ")
            lines += [f"![{title}]({name})", ""]
    return "\n".join(lines)
