"""Command line: ``bert-jax COMMAND --config FILE[:ARG] --workdir DIR [--config.x.y=v]``.

Commands:
  pretrain   train (or resume) in --workdir with --config
  evaluate   score the latest checkpoint of --workdir on held-out data
  report     print first/last evaluation against baselines, draw the learning curve
  export     write a Hugging Face directory (--out) from the latest checkpoint
  finetune   fine-tune on a downstream task (configs/finetune.py), score its dev sets
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from bert_jax import distributed, run_config

COMMANDS = ("pretrain", "evaluate", "report", "export", "finetune")

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file, e.g. configs/bert.py:size=base.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_string("out", None, "Output directory (export).")
# Each also reads BERT_JAX_<NAME> (then JAX_<NAME>) from the environment; see distributed.py.
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def _initialize_distributed(config) -> None:
    """Joins the other hosts before any JAX computation (see bert_jax/distributed.py)."""
    # A hand-written recipe that did not start from base_config() gets its defaults.
    settings = config.get("distributed") or run_config.base_config().distributed
    group = distributed.resolve(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
        environ=os.environ,
        auto_detect=settings.auto_detect,
    )
    distributed.initialize(group, settings)


def _require(name: str, command: str):
    value = getattr(FLAGS, name)
    if value is None:
        raise app.UsageError(f"`bert-jax {command}` needs --{name}")
    return value


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"usage: bert-jax {{{'|'.join(COMMANDS)}}} --config FILE --workdir DIR"
        )
    command = argv[1]
    logging.getLogger().setLevel(logging.INFO)
    # Our progress lines use the root logger; orbax, grain and jax log through
    # absl at INFO on every save, which would drown them.
    logging.getLogger("absl").setLevel(logging.WARNING)
    workdir = _require("workdir", command)
    if command == "report":  # reads files only: one process, no coordinator
        from bert_jax import report

        report.print_report(workdir)
        return
    config = _CONFIG.value
    if config is None:
        raise app.UsageError(f"`bert-jax {command}` needs --config")
    _initialize_distributed(config)
    if command == "pretrain":
        from bert_jax import train

        train.train_and_evaluate(config, workdir)
    elif command == "evaluate":
        from bert_jax import evaluate

        evaluate.evaluate_checkpoint(config, workdir)
    elif command == "export":
        from bert_jax.export import hf

        hf.export_checkpoint(config, workdir, _require("out", command))
    elif command == "finetune":
        from bert_jax.downstream import finetune

        finetune.run_finetune(config, workdir)


def run() -> None:
    """Console-script entry point."""
    try:
        app.run(main)
    except (ValueError, FileNotFoundError, FloatingPointError, distributed.InitError) as error:
        # User-facing errors (bad config, corrupt data, NaN loss, hosts that cannot
        # meet) end the run with their message instead of a stack trace.
        print(f"bert-jax: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
