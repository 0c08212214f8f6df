"""Bad inputs on the command line (issue 12): one ``bert-jax: error:`` line, exit 1 for a
user error and 2 for a usage error, no traceback unless --verbose / BERT_JAX_VERBOSE=1.

Every case is a real ``python -m bert_jax`` process. None gets past start-up, and
they run side by side (each spends ~3 s of CPU importing JAX), so the file stays well
under a minute on 2 cores. The wider table of bad inputs is in the issue 12 note.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from bert_jax.cli import errors

TIMEOUT_S = 240
RUNLOCAL = "--config=configs/bert.py:runlocal"
# Stands in for a training loop that hits an OSError, to see how run() reports it.
RAISE_IN_TRAIN = """
from bert_jax.cli import main
from bert_jax.training import loop
def fail(config, workdir):
    raise NotADirectoryError(20, "Not a directory", {path!r})
loop.train_and_evaluate = fail
main.run()
"""


def raise_in_train(path) -> str:
    return RAISE_IN_TRAIN.format(path=str(path))


def can_mount_read_only(directory) -> bool:
    probe = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro none {directory}"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def cli_cases(tmp_path) -> dict[str, dict]:
    """name -> command, expected exit code, strings the error line names, traceback wanted."""
    (tmp_path / "a_file").write_text("not a directory")
    python = [sys.executable, "-m", "bert_jax"]
    pretrain = [*python, "pretrain", RUNLOCAL]
    workdir = f"--workdir={tmp_path / 'workdir'}"
    typo = [*pretrain, "--config.train.num_stepz=3", workdir]
    cases = {
        "config typo": (typo, 2, ["--config.train.num_stepz", 'did you mean "num_steps"']),
        "config typo, --verbose": ([*typo, "--verbose"], 2, ["num_stepz"]),
        "missing config file": (
            [*python, "pretrain", "--config=configs/nope.py:runlocal", workdir],
            2,
            ["'configs/nope.py' does not exist", "configs/bert.py"],
        ),
        "unknown recipe": (
            [*python, "pretrain", "--config=configs/bert.py:recipe=fast", workdir],
            2,
            ["--config=configs/bert.py:recipe=fast", "recipe='fast'"],
        ),
        "value of the wrong type": (
            [*pretrain, "--config.train.num_steps=abc", workdir],
            2,
            ["--config.train.num_steps=abc", "'abc'"],
        ),
        "unknown command": ([*python, "trian", RUNLOCAL, workdir], 2, ["got trian"]),
        "no --workdir": ([*pretrain], 2, ["needs --workdir"]),
        "pretrain without --config": ([*python, "pretrain", workdir], 2, ["needs --config"]),
        # export and evaluate read the run config the checkpoint records: none here.
        "export without --config or checkpoint": (
            [*python, "export", f"--workdir={tmp_path}", f"--out={tmp_path / 'hf'}"],
            1,
            [f"{tmp_path / 'checkpoints'} does not exist"],
        ),
        "workdir is a file": (
            [*pretrain, f"--workdir={tmp_path / 'a_file'}"],
            1,
            [f"'{tmp_path / 'a_file'}' is a file"],
        ),
        "workdir under a file, BERT_JAX_VERBOSE=1": (
            [*pretrain, f"--workdir={tmp_path / 'a_file' / 'run'}"],
            1,
            [f"is under '{tmp_path / 'a_file'}', which is a file"],
        ),
        "OSError about the workdir": (
            [sys.executable, "-c", raise_in_train(tmp_path / "workdir" / "checkpoints")]
            + ["pretrain", RUNLOCAL, workdir],
            1,
            [f"Not a directory: '{tmp_path / 'workdir' / 'checkpoints'}' (--workdir)"],
        ),
        "OSError about a path nobody gave": (
            [sys.executable, "-c", raise_in_train("/proc/x"), "pretrain", RUNLOCAL, workdir],
            1,
            ["NotADirectoryError"],  # a possible bug: the traceback stays
        ),
    }
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    if can_mount_read_only(read_only):
        # The mount lives only in the child's mount namespace.
        command = " ".join([*pretrain, f"--workdir={read_only / 'run'}"])
        mount = f"mount -t tmpfs -o ro none {read_only} && exec {command}"
        cases["workdir on a read-only mount"] = (
            ["unshare", "-m", "sh", "-c", mount],
            1,
            [f"'{read_only / 'run'}' is not writable: Read-only file system"],
        )
    assert set(cases) <= set(CASE_NAMES)
    return {
        name: dict(command=command, code=code, names=names, traceback="verbose" in name.lower())
        for name, (command, code, names) in cases.items()
    }


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Runs every case at once; name -> (case, exit code, stderr)."""
    cases = cli_cases(tmp_path_factory.mktemp("cli"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(errors.VERBOSE_ENV, None)
    procs = {
        name: subprocess.Popen(
            case["command"],
            cwd=REPO_ROOT,
            env={**env, errors.VERBOSE_ENV: "1"} if "BERT_JAX_VERBOSE" in name else env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, case in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        try:
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            stderr += f"\n(hung: killed after {TIMEOUT_S} s)"
        results[name] = (cases[name], proc.returncode, stderr)
    return results


CASE_NAMES = [
    "config typo",
    "config typo, --verbose",
    "missing config file",
    "unknown recipe",
    "value of the wrong type",
    "unknown command",
    "no --workdir",
    "pretrain without --config",
    "export without --config or checkpoint",
    "workdir is a file",
    "workdir under a file, BERT_JAX_VERBOSE=1",
    "workdir on a read-only mount",
    "OSError about the workdir",
    "OSError about a path nobody gave",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_bad_input_ends_in_one_error_line(cli_results, name):
    if name not in cli_results:
        pytest.skip("no read-only mount here (needs unshare -m and mount)")
    case, code, stderr = cli_results[name]
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if name == "OSError about a path nobody gave":
        assert code == 1 and "Traceback" in stderr, stderr[-3000:]
        assert last == "NotADirectoryError: [Errno 20] Not a directory: '/proc/x'"
        return
    assert code == case["code"], stderr[-3000:]
    assert last.startswith("bert-jax: error: "), stderr[-3000:]
    for expected in case["names"]:
        assert expected in last, last
    assert ("Traceback" in stderr) == case["traceback"], stderr[-3000:]
    if code == errors.EXIT_USAGE:  # one usage line before the error
        assert stderr.strip().splitlines()[-2] == errors.USAGE, stderr[-3000:]
    elif not case["traceback"]:
        assert len(stderr.strip().splitlines()) <= 5, stderr[-3000:]  # no chained reports


def test_verbose_is_read_from_the_command_line_and_the_environment(monkeypatch):
    monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
    assert not errors.verbose_requested(["bert-jax", "pretrain"])
    assert errors.verbose_requested(["bert-jax", "pretrain", "--verbose"])
    assert not errors.verbose_requested(["bert-jax", "--verbose", "--noverbose"])
    monkeypatch.setenv(errors.VERBOSE_ENV, "1")
    assert errors.verbose_requested(["bert-jax", "pretrain"])


def test_read_only_commands_want_an_existing_workdir(tmp_path):
    with pytest.raises(errors.UserError, match="does not exist; pretrain there first"):
        errors.check_workdir(str(tmp_path / "missing"), create=False)
    assert not (tmp_path / "missing").exists()  # evaluate/export never create it
    errors.check_workdir(str(tmp_path / "new" / "run"), create=True)
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_os_errors_are_matched_to_the_path_the_user_gave(tmp_path):
    paths = {
        "--workdir": str(tmp_path / "run"),
        "config.data.train_pattern": str(tmp_path / "shards" / "c4-train.*.json.gz"),
        "config.data.vocab_path": str(tmp_path / "vocab" / "spm.model"),
    }

    def field(filename):
        return errors.user_path_field(OSError(5, "Input/output error", filename), paths)

    assert field(str(tmp_path / "run" / "checkpoints" / "4")) == "--workdir"
    assert field(str(tmp_path / "shards" / "c4-train.3.json.gz")) == "config.data.train_pattern"
    assert field(str(tmp_path / "vocab" / "spm.model")) == "config.data.vocab_path"
    assert field(str(tmp_path / "vocab" / "other.model")) is None
    assert field(str(tmp_path / "run2")) is None  # a prefix of the name is not inside
    assert errors.user_path_field(ValueError("x"), paths) is None
