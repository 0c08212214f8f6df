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

from bert_jax.compare import suite
from bert_jax.runtime import run_config

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
    """Per seed k, each candidate metric of one arm (workdir None: random init k).

    Scores through ``suite.score`` (the sweep's own path) with the candidate tasks; a
    few-label probe's k-th labelled draw goes with seed k.
    """
    candidates = run_config.load_recipe("configs/compare.py").suite
    candidates.tasks = ",".join(tasks)
    candidates.probe_seeds = seeds
    candidates.finetune_examples = FLAGS.finetune_examples
    candidates.finetune_epochs = FLAGS.finetune_epochs
    candidates.glue_dir = candidates.squad_dir = ""  # the candidates only
    out: dict[str, list[float]] = {}
    for k in range(seeds):
        cell_config = copy.deepcopy(config)
        cell_config.seed = k
        scores, runs = suite.score(
            candidates, cell_config, workdir, recipe=FLAGS.recipe, out_dir=scratch
        )
        for name, value in scores.items():
            out.setdefault(name, []).append(runs[name][k] if name in runs else value)
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
