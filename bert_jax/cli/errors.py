"""How ``bert-jax`` ends on a bad input: one ``bert-jax: error: ...`` line, no traceback.

Exit codes:
  0   the command finished
  1   user error: a bad config value, data, vocabulary, checkpoint or path (workdir,
      patterns, --out) stopped the run; the last line of stderr names the field or path
  2   usage error: the command line itself is wrong (unknown command, missing flag, a flag
      or ``--config.x.y`` override that does not parse, a misspelt config field, a
      ``--config`` file that does not exist or whose ``FILE:ARGS`` it rejects)
  75  stopped by SIGTERM / Ctrl-C with the checkpoint durable (bert_jax/training/preemption.py)
  130 Ctrl-C (SIGINT) outside training, or a forced stop of training: one ``bert-jax:``
      line (`report_interrupt`); evaluate and export leave no partial file

An exception that is not one of these (a bug, or an OS error about a path the user did
not give) keeps its traceback. ``--verbose`` or ``BERT_JAX_VERBOSE=1`` prints the full
traceback before the one line, with the same exit code, for debugging.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import traceback

from absl import flags

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a Ctrl-C, as preemption.py
VERBOSE_ENV = "BERT_JAX_VERBOSE"
USAGE = "usage: bert-jax {pretrain|evaluate|report|export|finetune} --config FILE --workdir DIR"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class UsageError(Exception):
    """The command line is wrong; exits ``EXIT_USAGE`` after the usage line."""


class UserError(Exception):
    """A bad input the message fully explains; exits ``EXIT_USER_ERROR``."""


def verbose_requested(argv: list[str]) -> bool:
    """``--verbose`` on the command line (read before absl parses it) or the env var."""
    if os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes"):
        return True
    chosen = [arg for arg in argv if re.fullmatch(r"--(no)?verbose(=.*)?", arg)]
    return bool(chosen) and chosen[-1] in ("--verbose", "--verbose=true", "--verbose=1")


def _config_file_error(flag_name: str) -> UsageError | None:
    """The --config file could not be loaded (config_flags defers this error until use)."""
    flag = flags.FLAGS[flag_name]
    spec = getattr(flag, "_config_filename", None)  # set once the flag is parsed
    if not spec:
        return None
    path = spec.partition(":")[0]
    if os.path.isfile(path):
        return None
    configs = os.path.join(REPO_ROOT, "configs")
    recipes = sorted(
        os.path.join("configs", name)
        for name in (os.listdir(configs) if os.path.isdir(configs) else [])
        if name.endswith(".py") and not name.startswith("_")
    )
    problem = "is a directory" if os.path.isdir(path) else "does not exist"
    where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
    return UsageError(
        f"--{flag_name}: recipe file {path!r} {problem}{where}; "
        f"the recipes are {', '.join(recipes)}"
    )


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    return error


def _override_error(error: Exception, argv: list[str], flag_name: str) -> UsageError | None:
    """A ``--config.a.b=v`` naming a field the recipe lacks (config_flags raises a bare
    KeyError/AttributeError from inside flag parsing, three tracebacks deep)."""
    key = _innermost(error).args[0] if _innermost(error).args else ""
    key = str(key).split("\n")[0].strip("'\"")
    suggestion = re.search(r'Did you mean "([^"]+)"', str(error))
    prefix = f"--{flag_name}."
    for arg in argv:
        if not arg.startswith(prefix):
            continue
        field = arg[len(prefix) :].partition("=")[0]
        parts = re.split(r"[.\[\]]+", field)
        if key in parts:
            parent = ".".join([flag_name, *parts[: parts.index(key)]])
            hint = f'; did you mean "{suggestion.group(1)}"?' if suggestion else ""
            return UsageError(f"--{flag_name}.{field}: {parent} has no field {key!r}{hint}")
    return None  # a KeyError from inside the recipe itself: a bug, keep the traceback


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _flag_error(error: flags.Error, flag_name: str) -> UsageError:
    message = str(error)
    # A recipe's get_config raising ValueError arrives as the text of its traceback.
    embedded = re.search(
        r"Error whilst parsing config file:.*\n(\w+Error): (.*)\s*$", message, re.S
    )
    if embedded and embedded.group(1) == "ValueError":
        spec = re.match(r"flag (--\S+):\s", message)
        where = f"{spec.group(1)}: " if spec else f"--{flag_name}: "
        return UsageError(where + _one_line(embedded.group(2)))
    if embedded:  # TypeError etc. inside the recipe: a bug, keep its traceback text
        return UsageError(message)
    # absl: "flag --config.train.num_steps=abc: invalid literal for int() ...".
    return UsageError(_one_line(message.removeprefix("flag ")))


def parse_flags_or_raise(argv: list[str], config_flag: str = "config") -> list[str]:
    """absl ``flags_parser`` for ``app.run``: parse errors become ``UsageError``.

    absl would print ``FATAL Flags parsing error`` (or let a KeyError out with three
    chained tracebacks) and exit 1 before ``main``; a missing config file would only
    surface as an OSError at first use of the config.
    """
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        missing = _config_file_error(config_flag)
        raise (missing or _flag_error(error, config_flag)) from error
    except (KeyError, AttributeError, OSError) as error:
        missing = _config_file_error(config_flag)
        known = missing or _override_error(error, argv, config_flag)
        if known is None:
            raise
        raise known from error
    missing = _config_file_error(config_flag)
    if missing:
        raise missing
    return remaining


def check_workdir(workdir: str, *, create: bool) -> None:
    """Fails early, in one line, on a workdir that cannot hold the run's files.

    Args:
      workdir: the --workdir value; remote paths (``gs://...``) are left to their library.
      create: make it (pretrain, finetune) and prove it writable by creating a file:
        permission bits say nothing when running as root, a read-only mount does.
        Otherwise (evaluate, export, report) it must already be a directory.
    """
    if "://" in workdir:
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir!r} is a file, not a directory")
    ancestor = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UserError(f"--workdir {workdir!r} is under {ancestor!r}, which is a file")
    if not create:
        if not os.path.isdir(workdir):
            raise UserError(f"--workdir {workdir!r} does not exist; pretrain there first")
        return
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir, prefix=".bert_jax_write_test"):
            pass
    except OSError as error:
        raise UserError(f"--workdir {workdir!r} is not writable: {error.strerror}") from error


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root``, inside it, or matched by it as a glob pattern."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    root_dir = root if not re.search(r"[*?\[]", root) else os.path.dirname(root.split("*")[0])
    return path in (root, root_dir) or path.startswith(root_dir.rstrip(os.sep) + os.sep)


def user_path_field(error: BaseException, user_paths: dict[str, str]) -> str | None:
    """The flag or config field whose path an OSError is about, else None."""
    if not isinstance(error, OSError):
        return None
    for filename in (error.filename, error.filename2):
        if isinstance(filename, (str, bytes, os.PathLike)) and filename:
            filename = os.fsdecode(filename)
            for field, root in user_paths.items():
                if root and "://" not in root and _under(filename, root):
                    return field
    return None


def report(error: BaseException, code: int, message: str, verbose: bool) -> None:
    """Prints the one line (after the traceback when verbose) and exits with ``code``."""
    if verbose:
        traceback.print_exception(error)
    if code == EXIT_USAGE and not message.startswith("usage:"):
        print(USAGE, file=sys.stderr)
    print(f"bert-jax: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def os_error_message(error: OSError, field: str) -> str:
    """``[Errno 20] Not a directory: '/x/w/checkpoints'`` as one line naming the field."""
    path = error.filename if error.filename is not None else error.filename2
    reason = error.strerror or _one_line(error)
    return f"{reason}: {os.fsdecode(path)!r} ({field})"


def report_interrupt(error: KeyboardInterrupt, command: str, verbose: bool) -> None:
    """Ctrl-C outside the train loop (which has its own, bert_jax/training/preemption.py): one line.

    Python raises KeyboardInterrupt in the main thread; what the command was writing is
    left whole or absent by the command itself (export: `convert.new_directory`).
    """
    if verbose:
        traceback.print_exception(error)
    print(
        f"bert-jax: SIGINT (Ctrl-C): {command} stopped before it finished; rerun the same command",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(EXIT_INTERRUPTED)
