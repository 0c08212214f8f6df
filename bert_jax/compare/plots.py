"""A sweep's figures: pretraining curves per family, and each table's scores with error bars.

``curves_<family>.png``: the pretraining train loss of every cell of the family against
step, the mean over seeds with a min-max band (at the steps every seed logged).
``table_<name>.png``: one bar per row of the table's primary score, error bars one std over
seeds, and the paper's headline number as markers on a second axis (different units).
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAMILY_TITLES = {"encoder": "Encoder (BERT objectives)", "encoder_decoder": "Encoder-decoder (T5)"}


def seed_band(curves: list[list[list[float]]]):
    """Steps every seed logged, and the mean, min and max loss over seeds at each."""
    by_seed = [{int(step): loss for step, loss in curve} for curve in curves if curve]
    if not by_seed:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(curve) for curve in by_seed)))
    values = [[curve[step] for curve in by_seed] for step in steps]
    return (
        steps,
        [sum(v) / len(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _curves(summary: dict, family: str, path: str) -> bool:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for cell in summary["cells"].values():
        if cell["family"] != family:
            continue
        steps, mean, low, high = seed_band([run.get("curve") or [] for run in cell["runs"]])
        if not steps:
            continue
        (line,) = axis.plot(steps, mean, label=f"{cell['label']} ({len(cell['seeds'])} seeds)")
        axis.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    if drawn:
        axis.set_xlabel("step")
        axis.set_ylabel("train loss (nats)")
        axis.set_title(f"Pretraining: {FAMILY_TITLES.get(family, family)}, mean and min-max")
        axis.legend(fontsize=7, ncol=2)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    plt.close(figure)
    return drawn


def _table(table: dict, path: str) -> None:
    rows, primary = table["rows"], table["primary"]
    positions = list(range(len(rows)))
    means = [
        row["scores"][primary]["mean"] if primary in row["scores"] else math.nan for row in rows
    ]
    stds = [row["scores"][primary]["std"] if primary in row["scores"] else 0.0 for row in rows]
    figure, axis = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.5))
    axis.bar(positions, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8, label="ours")
    axis.set_ylabel(f"ours: {primary} (mean ± std over seeds)")
    axis.set_xticks(positions, [row["label"] for row in rows], rotation=20, ha="right", fontsize=8)
    finite = [m for m in means if not math.isnan(m)]
    if finite:  # bars of near-equal scores: start the axis near them so differences show
        low = min(m - s for m, s in zip(means, stds, strict=True) if not math.isnan(m))
        high = max(m + s for m, s in zip(means, stds, strict=True) if not math.isnan(m))
        margin = max(0.05 * (high - low), 0.01)
        axis.set_ylim(max(0.0, low - 4 * margin), high + margin)
    published = [
        (i, row["paper_headline"])
        for i, row in enumerate(rows)
        if row["paper_headline"] is not None
    ]
    if published:
        twin = axis.twinx()
        twin.plot(*zip(*published, strict=True), "D", color="tab:red", label="paper")
        twin.set_ylabel(f"paper: {table['headline_column']}", color="tab:red")
        handles = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        axis.legend(handles=handles, fontsize=8, numpoints=1, framealpha=0.9)
    axis.set_title(table["title"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_plots(summary: dict, out_dir: str) -> list[str]:
    """The curve and table figures of ``summary`` (`results.collect`); their paths."""
    paths = []
    for family in ("encoder", "encoder_decoder"):
        path = os.path.join(out_dir, f"curves_{family}.png")
        if _curves(summary, family, path):
            paths.append(path)
    for name, table in summary["tables"].items():
        path = os.path.join(out_dir, f"table_{name}.png")
        _table(table, path)
        paths.append(path)
    return paths
