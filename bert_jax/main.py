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
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

COMMANDS = ("pretrain", "evaluate", "report", "export", "finetune")

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file, e.g. configs/bert.py:size=base.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_string("out", None, "Output directory (export).")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def _initialize_distributed() -> None:
    if FLAGS.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )


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
    _initialize_distributed()
    workdir = _require("workdir", command)
    if command == "report":
        from bert_jax import report

        report.print_report(workdir)
        return
    config = _CONFIG.value
    if config is None:
        raise app.UsageError(f"`bert-jax {command}` needs --config")
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
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        # User-facing errors (bad config, corrupt data, NaN loss) end the run
        # with their message instead of a stack trace.
        print(f"bert-jax: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
