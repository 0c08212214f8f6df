"""``bert-jax report``: first and last evaluation against the baselines, and a plot.

Reads ``metrics.jsonl`` written by the train loop and draws
``learning_curve.png`` (held-out loss and accuracy against step, with the
unigram and majority-token baselines as dashed lines).
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run `bert-jax pretrain` with this workdir")
    records = []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
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
    """First and last evaluation, the baselines and whether the model learned."""
    evals = [r for r in _last_run(read_metrics(workdir)) if r["split"] == "eval"]
    if not evals:
        raise ValueError(f"{workdir}/metrics.jsonl holds no evaluation yet")
    first, last = evals[0], evals[-1]
    summary = {"first_eval": first, "last_eval": last, "num_evals": len(evals)}
    for loss_key, base_key in (("mlm_loss", "unigram_xent"), ("target_loss", "unigram_xent")):
        if loss_key in last and base_key in last:
            summary["nats_below_unigram"] = last[base_key] - last[loss_key]
    return summary


def plot_learning_curve(workdir: str, out_path: str | None = None) -> str:
    records = _last_run(read_metrics(workdir))
    evals = [r for r in records if r["split"] == "eval"]
    train = [r for r in records if r["split"] == "train"]
    out_path = out_path or os.path.join(workdir, "learning_curve.png")
    loss_key = "mlm_loss" if evals and "mlm_loss" in evals[0] else "target_loss"
    acc_key = "mlm_accuracy" if evals and "mlm_accuracy" in evals[0] else "target_accuracy"
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if train and loss_key in train[0]:
        ax_loss.plot(
            [r["step"] for r in train],
            [r[loss_key] for r in train],
            alpha=0.4,
            label=f"train {loss_key}",
        )
    ax_loss.plot(
        [r["step"] for r in evals],
        [r.get(loss_key) for r in evals],
        "o-",
        label=f"held-out {loss_key}",
    )
    if evals and "unigram_xent" in evals[-1]:
        ax_loss.axhline(evals[-1]["unigram_xent"], ls="--", c="gray", label="unigram cross-entropy")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("nats")
    ax_loss.legend()
    for key in (acc_key, "pair_accuracy"):
        if evals and key in evals[0]:
            ax_acc.plot(
                [r["step"] for r in evals], [r[key] for r in evals], "o-", label=f"held-out {key}"
            )
    if evals and "majority_accuracy" in evals[-1]:
        ax_acc.axhline(
            evals[-1]["majority_accuracy"], ls="--", c="gray", label="most-frequent token"
        )
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(os.path.basename(os.path.normpath(workdir)))
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def print_report(workdir: str) -> dict:
    summary = summarize(workdir)
    first, last = summary["first_eval"], summary["last_eval"]
    keys = [k for k in last if k not in ("step", "split")]
    first_title, last_title = (
        f"first eval (step {first['step']})",
        f"last eval (step {last['step']})",
    )
    print(f"{'metric':<24}{first_title:>24}{last_title:>24}")
    for key in keys:
        print(f"{key:<24}{first.get(key, float('nan')):>24.4f}{last[key]:>24.4f}")
    if "nats_below_unigram" in summary:
        gap = summary["nats_below_unigram"]
        print(f"held-out loss is {gap:.3f} nats below the unigram cross-entropy")
    print(f"learning curve: {plot_learning_curve(workdir)}")
    return summary
