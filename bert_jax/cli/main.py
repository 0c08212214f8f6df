"""Command line: ``bert-jax COMMAND --config FILE[:ARG] --workdir DIR [--config.x.y=v]``.

Commands:
  pretrain   train (or resume) in --workdir with --config
  evaluate   score the latest checkpoint of --workdir on held-out data
  report     print first/last evaluation against baselines, draw the learning curve
  export     write a Hugging Face directory (--out) from the latest checkpoint
             (evaluate and export: --config is optional, the checkpoint records its run
             config, and ``--config.x.y=v`` alone overrides fields of it, see
             configs/recorded.py; --config FILE replaces it whole, which checkpoints
             written before that record need)
  finetune   fine-tune on a downstream task (configs/finetune.py), score its dev sets
  compare    objective comparison sweep (configs/compare.py); --cell NAME runs one cell,
             ``bert-jax compare --report DIR`` collects a sweep's results

A bad input ends in one ``bert-jax: error: ...`` line; exit codes and ``--verbose`` are
described in bert_jax/errors.py (1: user error, 2: usage error, 75: preempted, 130: Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from bert_jax.cli import errors
from bert_jax.runtime import distributed, run_config

COMMANDS = ("pretrain", "evaluate", "report", "export", "finetune", "compare")
# Commands whose --config is optional: the checkpoint records the run config.
READS_RECORDED_CONFIG = ("evaluate", "export")

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file, e.g. configs/bert.py:size=base.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_string("out", None, "Output directory (export).")
flags.DEFINE_string("cell", None, "compare: run only this cell (all its seeds), no report.")
flags.DEFINE_string("report", None, "compare: write the report of this sweep directory only.")
flags.DEFINE_string(
    "import_results",
    None,
    "compare: first bring in the finished runs of this results.json (same budget), "
    "e.g. docs/compare/sweep/results.json; they are not redone.",
)
flags.DEFINE_bool("verbose", False, f"Full traceback on errors (also {errors.VERBOSE_ENV}=1).")
# Each also reads BERT_JAX_<NAME> (then JAX_<NAME>) from the environment; see distributed.py.
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def _initialize_distributed(config) -> None:
    """Joins the other hosts before any JAX computation (see bert_jax/runtime/distributed.py)."""
    settings = config.distributed
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
        raise errors.UsageError(f"`bert-jax {command}` needs --{name}")
    return value


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        given = " ".join(argv[1:]) or "none"
        raise errors.UsageError(f"one command expected, of {', '.join(COMMANDS)}; got {given}")
    command = argv[1]
    logging.getLogger().setLevel(logging.INFO)
    # Our progress lines use the root logger; orbax, grain and jax log through
    # absl at INFO on every save, which would drown them.
    logging.getLogger("absl").setLevel(logging.WARNING)
    if command == "compare" and FLAGS.report is not None:  # reads result files only
        from bert_jax.compare import results

        errors.check_workdir(FLAGS.report, create=False)
        print("\n".join(results.write(FLAGS.report)))
        return
    workdir = _require("workdir", command)
    # Before any host joins or JAX compiles: a workdir that is a file, under a file or
    # read-only would otherwise fail at the first save, under a traceback.
    errors.check_workdir(workdir, create=command in ("pretrain", "finetune", "compare"))
    if command == "report":  # reads files only: one process, no coordinator
        from bert_jax.cli import report

        report.print_report(workdir)
        return
    config = _CONFIG.value
    if config is None and command not in READS_RECORDED_CONFIG:
        raise errors.UsageError(f"`bert-jax {command}` needs --config")
    # Without --config, hosts join with the default settings (the checkpoint is read later).
    _initialize_distributed(config if config is not None else run_config.base_config())
    if command == "pretrain":
        from bert_jax.training import loop

        loop.train_and_evaluate(config, workdir)
    elif command == "evaluate":
        from bert_jax.cli import evaluate

        evaluate.evaluate_checkpoint(config, workdir)
    elif command == "export":
        from bert_jax.export import hf

        hf.export_checkpoint(config, workdir, _require("out", command))
    elif command == "finetune":
        from bert_jax.downstream import finetune

        finetune.run_finetune(config, workdir)
    elif command == "compare":
        from bert_jax.compare import sweep

        if FLAGS.import_results is not None:
            count = sweep.import_runs(FLAGS.import_results, workdir)
            logging.info("compare: %d finished runs imported from %s", count, FLAGS.import_results)
        sweep.run(config, workdir, only_cell=FLAGS.cell)


def _user_paths() -> dict[str, str]:
    """Paths the user gave, by flag or config field: OSErrors about them are bad inputs."""
    paths = {
        "--workdir": FLAGS.workdir,
        "--out": FLAGS.out,
        "--report": FLAGS.report,
        "--import_results": FLAGS.import_results,
    }
    try:
        config = _CONFIG.value
    except OSError:  # a config file that failed to load holds no paths
        config = None

    def walk(node, prefix):
        for key, value in node.items():
            if hasattr(value, "items"):
                walk(value, f"{prefix}.{key}")
            elif isinstance(value, str) and re.search(r"(_path|_pattern|_dir|workdir)$", key):
                paths[f"{prefix}.{key}"] = value

    if hasattr(config, "items"):
        walk(config, "config")
    return {field: path for field, path in paths.items() if path}


def _flag_value(argv: list[str], name: str) -> str | None:
    """The last ``--name V`` / ``--name=V`` in ``argv`` (read before absl parses it)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.partition("=")[2]
    return value


def with_recorded_config(argv: list[str]) -> list[str]:
    """``argv`` with ``--config configs/recorded.py:WORKDIR`` added when an evaluate or
    export has ``--config.x.y=v`` overrides but no --config FILE: the overrides then change
    the run config the checkpoint records (config_flags types and checks them as for any
    recipe) instead of failing as flags without a recipe."""
    command = next((arg for arg in argv[1:] if arg in COMMANDS), None)
    overrides = any(arg.startswith("--config.") for arg in argv)
    workdir = _flag_value(argv, "workdir")
    if command not in READS_RECORDED_CONFIG or not overrides or workdir is None:
        return argv
    if _flag_value(argv, "config") is not None:
        return argv
    recipe = os.path.join(errors.REPO_ROOT, "configs", "recorded.py")
    return [argv[0], f"--config={recipe}:{workdir}", *argv[1:]]


def run() -> None:
    """The commands, after `bert_jax.cli.run` (the script) chose the host heap: bad inputs
    end in one line (bert_jax/errors.py)."""
    verbose = errors.verbose_requested(sys.argv)
    sys.argv = with_recorded_config(sys.argv)
    try:
        app.run(main, flags_parser=errors.parse_flags_or_raise)
    except errors.UsageError as error:
        errors.report(error, errors.EXIT_USAGE, str(error), verbose)
    except KeyboardInterrupt as error:  # Ctrl-C in evaluate, export ...: exit 130
        command = next((arg for arg in sys.argv[1:] if arg in COMMANDS), "bert-jax")
        errors.report_interrupt(error, command, verbose)
    except (
        errors.UserError,
        ValueError,
        OSError,
        FloatingPointError,
        distributed.InitError,
    ) as error:
        # User-facing errors (bad config, corrupt data, NaN loss, hosts that cannot
        # meet, a path the user gave that cannot be used) end the run with their
        # message instead of a stack trace.
        message = " ".join(str(error).split("\n"))
        if isinstance(error, OSError):
            field = errors.user_path_field(error, _user_paths())
            if field is not None:
                message = errors.os_error_message(error, field)
            elif not isinstance(error, FileNotFoundError):
                raise  # not about a path the user gave: maybe a bug, keep the traceback
        errors.report(error, errors.EXIT_USER_ERROR, message, verbose)


if __name__ == "__main__":
    run()
