"""``bert-jax report``: first and last evaluation against the baselines, and a plot.

Reads ``metrics.jsonl`` written by the train loop and draws
``learning_curve.png``: held-out loss and accuracy against step, on the hidden
(``[MASK]``) positions and on all selected positions, with the context-free
baselines (training-unigram cross-entropy, most-frequent-token accuracy) as
dashed lines, and for BERT/ALBERT a third panel with the loss by input kind.

For BERT and ALBERT the headline is the hidden positions: BERT's all-positions
figures include the 10% of selected positions that keep their own token in the
input, where a model can copy the answer (see objectives/bert_eval.py).
"""

from __future__ import annotations

import json
import logging
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (row label, metric key, baseline key, baseline label); rows missing from a run are skipped.
HEADLINE_ROWS = (
    ("[MASK] positions: loss (nats)", "mlm_mask_loss", "mask_unigram_xent", "training unigram"),
    ("[MASK] positions: accuracy", "mlm_mask_accuracy", "mask_majority_accuracy", "most-frequent"),
    ("all selected: loss (nats)", "mlm_loss", "unigram_xent", "training unigram"),
    ("all selected: accuracy", "mlm_accuracy", "majority_accuracy", "most-frequent"),
    ("sentence pairs: accuracy", "pair_accuracy", "pair_majority_accuracy", "majority label"),
    ("targets: loss (nats)", "target_loss", "unigram_xent", "held-out entropy"),
    ("targets: accuracy", "target_accuracy", "majority_accuracy", "most-frequent"),
)
KIND_LABELS = {"mask": "[MASK] input", "random": "random-token input", "kept": "kept (visible)"}
T5_NOTE = (
    "T5: every text token of the span-corruption targets is hidden from the encoder input "
    "(sentinels replace the spans; the targets add only the sentinels and </s>), so the "
    "target figures are already hidden-position figures. Presets that rebuild the whole "
    "input (bert_style, mass_style, deshuffling) also score visible tokens."
)
ALL_POSITIONS_NOTE = (
    "All selected positions follow BERT's convention: 10% of them keep their own token "
    "in the input and 10% show a random one; the model can copy the kept ones, so the "
    "[MASK] figures are the ones that measure prediction from context."
)


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run `bert-jax pretrain` with this workdir")
    records = []
    with open(path) as f:
        lines = f.readlines()
    for line_number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if line_number == len(lines) and not line.endswith("\n"):
                # A run killed mid-write; its next run moves the line aside (metric_writer).
                logging.warning("%s:%d: skipped a cut last line (%s)", path, line_number, error)
                continue
            raise ValueError(f"{path}:{line_number}: not JSON ({error})") from None
    return records


def _last_run(records: list[dict]) -> list[dict]:
    # A rerun from scratch appends to the same file; keep the latest monotone run.
    start = 0
    for i in range(1, len(records)):
        if records[i]["split"] == "train" and records[i - 1]["step"] > records[i]["step"] == 1:
            start = i
    return records[start:]


def summarize(workdir: str) -> dict:
    """First and last evaluation, the baselines and the margins of the last one.

    Returns:
      first_eval, last_eval, num_evals; ``mask_nats_below_unigram`` and
      ``mask_accuracy_over_majority`` (hidden positions, BERT/ALBERT) and
      ``nats_below_unigram`` (all selected positions, or T5 targets) where the
      run logged them.
    """
    evals = [r for r in _last_run(read_metrics(workdir)) if r["split"] == "eval"]
    if not evals:
        raise ValueError(f"{workdir}/metrics.jsonl holds no evaluation yet")
    first, last = evals[0], evals[-1]
    summary = {"first_eval": first, "last_eval": last, "num_evals": len(evals)}
    margins = (
        ("mask_nats_below_unigram", "mask_unigram_xent", "mlm_mask_loss"),
        ("mask_accuracy_over_majority", "mlm_mask_accuracy", "mask_majority_accuracy"),
        ("nats_below_unigram", "unigram_xent", "mlm_loss"),
        ("nats_below_unigram", "unigram_xent", "target_loss"),
    )
    for name, minuend, subtrahend in margins:
        if minuend in last and subtrahend in last:
            summary[name] = last[minuend] - last[subtrahend]
    return summary


def _plot_evals(ax, evals, key, label, style="o-"):
    if evals and key in evals[-1]:
        ax.plot(
            [r["step"] for r in evals], [r.get(key, math.nan) for r in evals], style, label=label
        )


def _baseline(ax, evals, key, label, style):
    if evals and key in evals[-1] and math.isfinite(evals[-1][key]):
        ax.axhline(evals[-1][key], ls=style, c="gray", label=label)


def plot_learning_curve(workdir: str, out_path: str | None = None) -> str:
    records = _last_run(read_metrics(workdir))
    evals = [r for r in records if r["split"] == "eval"]
    train = [r for r in records if r["split"] == "train"]
    out_path = out_path or os.path.join(workdir, "learning_curve.png")
    bert_family = bool(evals) and "mlm_loss" in evals[-1]
    by_kind = bert_family and "mlm_mask_loss" in evals[-1]
    prefix = "mlm" if bert_family else "target"
    fig, axes = plt.subplots(1, 3 if by_kind else 2, figsize=(16 if by_kind else 11, 4))
    ax_loss, ax_acc = axes[0], axes[1]
    if train and f"{prefix}_loss" in train[0]:
        ax_loss.plot(
            [r["step"] for r in train],
            [r[f"{prefix}_loss"] for r in train],
            alpha=0.4,
            label=f"train {prefix}_loss (all selected)" if bert_family else "train target_loss",
        )
    _plot_evals(ax_loss, evals, "mlm_mask_loss", "held-out, [MASK] positions")
    _plot_evals(ax_loss, evals, f"{prefix}_loss", f"held-out {prefix}_loss", "s--")
    _baseline(ax_loss, evals, "mask_unigram_xent", "unigram cross-entropy, [MASK] targets", "--")
    _baseline(ax_loss, evals, "unigram_xent", "unigram cross-entropy, all targets", ":")
    ax_loss.set_ylabel("nats")
    _plot_evals(ax_acc, evals, "mlm_mask_accuracy", "held-out, [MASK] positions")
    _plot_evals(ax_acc, evals, f"{prefix}_accuracy", f"held-out {prefix}_accuracy", "s--")
    _plot_evals(ax_acc, evals, "pair_accuracy", "held-out pair_accuracy", "^-")
    _baseline(ax_acc, evals, "mask_majority_accuracy", "most-frequent token, [MASK]", "--")
    _baseline(ax_acc, evals, "majority_accuracy", "most-frequent token, all", ":")
    ax_acc.set_ylabel("accuracy")
    if by_kind:
        for kind, label in KIND_LABELS.items():
            _plot_evals(axes[2], evals, f"mlm_{kind}_loss", label)
        _baseline(axes[2], evals, "mask_unigram_xent", "unigram cross-entropy, [MASK]", "--")
        axes[2].set_ylabel("held-out masked-LM loss (nats) by input")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    fig.suptitle(os.path.basename(os.path.normpath(workdir)))
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _cell(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if "loss" in key or "xent" in key else f"{100 * value:.1f}%"


def headline_table(summary: dict) -> list[str]:
    """The comparison with the context-free baselines, one line per figure the run logged."""
    first, last = summary["first_eval"], summary["last_eval"]
    first_title, last_title = f"first (step {first['step']})", f"last (step {last['step']})"
    lines = [f"{'held-out':<32}{first_title:>18}{last_title:>18}   baseline"]
    for label, key, base_key, base_label in HEADLINE_ROWS:
        if key in last:
            baseline = f"{base_label} {_cell(last, base_key)}" if base_key in last else "-"
            lines.append(f"{label:<32}{_cell(first, key):>18}{_cell(last, key):>18}   {baseline}")
    return lines


def _gap(nats: float) -> str:
    return f"{abs(nats):.3f} nats {'below' if nats >= 0 else 'ABOVE'}"


def print_report(workdir: str) -> dict:
    summary = summarize(workdir)
    first, last = summary["first_eval"], summary["last_eval"]
    print("\n".join(headline_table(summary)))
    if "mask_nats_below_unigram" in summary:
        print(
            f"[MASK] positions: {_gap(summary['mask_nats_below_unigram'])} the "
            f"training-unigram cross-entropy, accuracy {_cell(last, 'mlm_mask_accuracy')} vs "
            f"{_cell(last, 'mask_majority_accuracy')} for the most frequent token "
            f"({last.get('mlm_mask_count', 0):.0f} positions)"
        )
        print(ALL_POSITIONS_NOTE)
    if "nats_below_unigram" in summary:
        which = "all selected positions" if "mlm_loss" in last else "targets"
        print(f"{which}: {_gap(summary['nats_below_unigram'])} the unigram baseline")
    if "target_loss" in last:
        print(T5_NOTE)
    keys = [k for k in last if k not in ("step", "split")]
    print(f"\n{'metric':<28}{'first eval':>16}{'last eval':>16}")
    for key in keys:
        print(f"{key:<28}{first.get(key, float('nan')):>16.4f}{last[key]:>16.4f}")
    print(f"learning curve: {plot_learning_curve(workdir)}")
    return summary
