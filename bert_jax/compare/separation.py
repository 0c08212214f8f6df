"""Which downstream tasks tell a pretrained model from random initialisation at small scale.

  python -m bert_jax.compare.separation --pretrained workdirs/bert_long \
      --recipe configs/bert.py:recipe=long --seeds 3 --out docs/compare/separation

Scores each candidate task of the suite on the pretrained checkpoint and on ``--seeds``
random initialisations of the same architecture. Seed k pairs the pretrained model with
labelled subset / fine-tuning seed k, and random initialisation k with the same subset,
so both arms vary over the same draws. Separation = (mean pretrained - mean random) /
the larger of the two standard deviations (ddof 1); a task is kept when it is at least 3.
Writes ``separation.json`` and ``separation.md`` to ``--out``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
import time

import numpy as np
from absl import app, flags

from bert_jax import run_config
from bert_jax.compare import features, few_label, probes, suite

FLAGS = flags.FLAGS
flags.DEFINE_string("pretrained", None, "Pretraining workdir (its latest checkpoint).")
flags.DEFINE_string("recipe", "configs/bert.py", "The recipe it was pretrained with.")
flags.DEFINE_integer("seeds", 3, "Random initialisations / labelled draws per arm.")
flags.DEFINE_string("out", "docs/compare/separation", "Output directory.")
flags.DEFINE_string("scratch", "/tmp/bert_jax_separation", "Fine-tuning workdirs go here.")
flags.DEFINE_string("tasks", "rt_probe,lee,pairs,rt_finetune", "Candidate tasks.")
flags.DEFINE_integer("finetune_examples", 500, "Labelled snippets for rt_finetune.")
flags.DEFINE_integer("finetune_epochs", 10, "Epochs over them.")

KEEP_AT = 3.0


def _arm_scores(config, workdir, seeds: int, tasks, scratch: str) -> dict[str, list[float]]:
    """Per seed k, each candidate metric of one arm (workdir None: random init k)."""
    sweep_suite = run_config.load_recipe("configs/compare.py").suite
    out: dict[str, list[float]] = {}
    for k in range(seeds):
        cell_config = copy.deepcopy(config)
        cell_config.seed = k
        encoder = features.Encoder(cell_config, workdir)
        if "rt_probe" in tasks:
            sizes = [int(s) for s in sweep_suite.probe_sizes.split(",")]
            _, runs = probes.rt_probe(
                encoder, sizes, seeds, sweep_suite.probe_l2, sweep_suite.max_length,
                sweep_suite.download_dir,
            )  # fmt: skip
            for name, values in runs.items():
                out.setdefault(name, []).append(values[k])
        if "lee" in tasks:
            lee = probes.lee_spearman(encoder, sweep_suite.max_length, sweep_suite.download_dir)
            out.setdefault("lee_spearman", []).append(lee)
        if "pairs" in tasks and config.model.name != "t5":
            for name, value in suite.pair_scores(encoder, cell_config, 512).items():
                out.setdefault(name, []).append(value)
        if "rt_finetune" in tasks:
            accuracy = few_label.rt_finetune(
                cell_config, FLAGS.recipe, workdir, scratch, FLAGS.finetune_examples, k,
                FLAGS.finetune_epochs,
            )  # fmt: skip
            out.setdefault(f"rt_finetune_{FLAGS.finetune_examples}", []).append(accuracy)
        logging.info(
            "arm %s seed %d: %s", workdir or "random", k, {n: v[-1] for n, v in out.items()}
        )
    return out


def summarise(pretrained: dict, random: dict) -> list[dict]:
    rows = []
    for name in pretrained:
        a, b = np.array(pretrained[name]), np.array(random[name])
        std = max(a.std(ddof=1) if len(a) > 1 else 0.0, b.std(ddof=1) if len(b) > 1 else 0.0)
        gap = a.mean() - b.mean()
        rows.append({
            "task": name, "pretrained": a.tolist(), "random": b.tolist(),
            "pretrained_mean": a.mean(), "pretrained_std": a.std(ddof=1) if len(a) > 1 else 0.0,
            "random_mean": b.mean(), "random_std": b.std(ddof=1) if len(b) > 1 else 0.0,
            "separation": float(gap / std) if std > 0 else float("inf") * np.sign(gap),
        })  # fmt: skip
        rows[-1]["kept"] = bool(rows[-1]["separation"] >= KEEP_AT)
    return rows


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| task | pretrained (mean ± std) | random init (mean ± std) | "
             "separation (std) | kept (≥ 3) |", "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['pretrained_mean']:.3f} ± {row['pretrained_std']:.3f} | "
            f"{row['random_mean']:.3f} ± {row['random_std']:.3f} | {row['separation']:.1f} | "
            f"{'yes' if row['kept'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if not FLAGS.pretrained:
        raise app.UsageError("--pretrained WORKDIR is required")
    config = run_config.load_recipe(FLAGS.recipe)
    tasks = FLAGS.tasks.split(",")
    os.makedirs(FLAGS.out, exist_ok=True)
    start = time.monotonic()
    scratch = FLAGS.scratch
    shutil.rmtree(scratch, ignore_errors=True)  # runs of another checkpoint would resume
    pretrained = _arm_scores(config, FLAGS.pretrained, FLAGS.seeds, tasks, scratch + "/pre")
    random = _arm_scores(config, None, FLAGS.seeds, tasks, scratch + "/random")
    rows = summarise(pretrained, random)
    command = " ".join(["python -m bert_jax.compare.separation", *sys.argv[1:]])
    header = (
        f"Pretrained `{FLAGS.pretrained}` ({FLAGS.recipe}) vs random initialisation, "
        f"{FLAGS.seeds} seeds each; `{command}` ({time.monotonic() - start:.0f} s)."
    )
    with open(os.path.join(FLAGS.out, "separation.json"), "w") as f:
        json.dump({"command": command, "rows": rows}, f, indent=1)
    with open(os.path.join(FLAGS.out, "separation.md"), "w") as f:
        f.write(markdown(rows, header))
    print(markdown(rows, header))


if __name__ == "__main__":
    app.run(main)
