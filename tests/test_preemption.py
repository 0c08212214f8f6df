"""SIGTERM / Ctrl-C (bert_jax/training/preemption.py): finish the step, save, wait, exit 75.

Real signals to real processes: the CLI on a tiny BERT, a script whose data never
arrives (blocked before the first step), and two hosts joined by jax.distributed of
which only one is signalled. Random interruptions and resume: test_interrupt_trials.py.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest
from conftest import REPO_ROOT

from bert_jax.training import preemption
from bert_jax.training.preemption import EXIT_PREEMPTED, Preemption, exit_forced

# configs/bert.py:recipe=short,runlocal shrunk as conftest.tiny_bert_config shrinks it.
TINY = [
    "--config=configs/bert.py:recipe=short,runlocal",
    "--config.data.max_seq_length=64",
    "--config.objective.max_predictions_per_seq=10",
    "--config.model.hidden_size=32",
    "--config.model.num_heads=2",
    "--config.model.intermediate_size=64",
    "--config.model.num_layers=2",
]
STOPPED = re.compile(r"stopped at step (\d+) of (\d+); rerun the same command to resume")


def pretrain_command(workdir, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "bert_jax", "pretrain", f"--workdir={workdir}"] + [
        *TINY,
        *overrides,
    ]


def start(command: list[str], log_path, **env) -> subprocess.Popen:
    """Starts ``command`` with stdout and stderr into ``log_path`` (read while it runs)."""
    log = open(log_path, "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(proc: subprocess.Popen, log_path, pattern: str, timeout: float = 300) -> re.Match:
    """Polls the log until ``pattern`` matches; fails with its tail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, pathlib.Path(log_path).read_text())
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    tail = pathlib.Path(log_path).read_text()[-3000:]
    pytest.fail(f"no {pattern!r} (exit {proc.poll()}):\n{tail}")


def saved_steps(workdir) -> list[int]:
    """The steps orbax lists (committed; not its *.orbax-checkpoint-tmp directories)."""
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    steps = list(manager.all_steps())
    manager.close()
    return sorted(steps)


def assert_clean_stop(log: str, returncode: int, num_steps: int) -> int:
    """Exit 75, one ``stopped at step N of M`` line, no traceback; returns N."""
    assert returncode == EXIT_PREEMPTED, log[-3000:]
    assert "Traceback" not in log and "cannot schedule new futures" not in log, log[-3000:]
    (match,) = STOPPED.finditer(log)
    step, total = int(match.group(1)), int(match.group(2))
    assert total == num_steps and 0 < step < num_steps
    return step


@pytest.mark.slow
def test_sigterm_then_sigint_stop_with_a_durable_checkpoint_and_resume(tmp_path):
    command = pretrain_command(
        tmp_path / "run", "--config.train.num_steps=500", "--config.train.checkpoint_every=3"
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        log_path = tmp_path / f"{signum.name}.log"
        proc = start(command, log_path)
        # A few steps into this run (the second run resumes, so wait past its start).
        first = int(wait_for(proc, log_path, r"starting at step (\d+)").group(1))
        wait_for(proc, log_path, rf"step {first + 2}/500")
        proc.send_signal(signum)
        proc.wait(timeout=120)
        log = pathlib.Path(log_path).read_text()
        step = assert_clean_stop(log, proc.returncode, 500)
        assert step > first
        assert saved_steps(tmp_path / "run")[-1] == step  # committed, listed by orbax
        assert not list((tmp_path / "run" / "checkpoints").glob("*tmp*"))
        assert f"{signum.name} received" in log
    assert f"starting at step {first}" in pathlib.Path(tmp_path / "SIGINT.log").read_text()


# Training whose data never comes: the loop is blocked before its first step.
BLOCKED_SCRIPT = r"""
import sys, threading
sys.path.insert(0, {tests_dir!r})
from conftest import tiny_bert_config
from bert_jax.objectives.bert_task import BertPretrainingTask
from bert_jax.training import loop

class StuckTask(BertPretrainingTask):
    def batches(self, split, global_batch_size, draw=0):
        print("BLOCKED", flush=True)
        threading.Event().wait()  # a reader that never returns (a hung network disk)
        yield {{}}

config = tiny_bert_config()
config.train.stop_grace_s = {grace}
task = StuckTask(config)
loop.train_and_evaluate(config, {workdir!r}, task=task)
"""


def _blocked_run(tmp_path, grace: float) -> tuple[subprocess.Popen, str]:
    script = BLOCKED_SCRIPT.format(
        tests_dir=str(REPO_ROOT / "tests"), workdir=str(tmp_path / "run"), grace=grace
    )
    log_path = tmp_path / "blocked.log"
    proc = start([sys.executable, "-c", script], log_path)
    wait_for(proc, log_path, "BLOCKED")
    return proc, log_path


@pytest.mark.slow
def test_sigterm_while_blocked_before_the_first_step_exits_after_the_grace(tmp_path):
    proc, log_path = _blocked_run(tmp_path, grace=2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    waited = time.monotonic() - sent
    log = pathlib.Path(log_path).read_text()
    assert proc.returncode == exit_forced(signal.SIGTERM) == 143, log[-3000:]
    assert 2 <= waited < 30
    assert "Traceback" not in log
    assert (
        "bert-jax: SIGTERM: no training step finished within config.train.stop_grace_s=2 s, "
        "exiting without saving; rerun the same command to resume from the latest checkpoint"
    ) in log.splitlines()


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
    proc, log_path = _blocked_run(tmp_path, grace=600)
    proc.send_signal(signal.SIGINT)
    wait_for(proc, log_path, "SIGINT received")  # the first only asks for a stop
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    log = pathlib.Path(log_path).read_text()
    assert proc.returncode == exit_forced(signal.SIGINT) == 130, log[-3000:]
    assert time.monotonic() - sent < 10
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert "bert-jax: SIGINT again: exiting now without saving" in log


def test_one_process_stops_at_the_step_after_a_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGINT)
    with Preemption(grace_s=600) as stop:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, seen by the watcher thread
        deadline = time.monotonic() + 10
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and not stop.stopping
        assert stop.should_stop(2) and stop.stopping  # cancels the grace timer
        assert stop._timer is None
        with pytest.raises(preemption.Preempted) as raised:
            stop.finish(2, 10, "/ckpt")
    assert raised.value.code == EXIT_PREEMPTED == 75 and raised.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C raises KeyboardInterrupt again
    with pytest.raises(ValueError, match="config.train.stop_grace_s must be > 0"):
        Preemption(grace_s=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_to_one_of_two_hosts_stops_both_at_the_same_step(tmp_path):
    port, workdir = _free_port(), tmp_path / "run"
    procs, logs = [], []
    for process_id in (0, 1):
        command = pretrain_command(
            workdir,
            "--config.train.num_steps=500",
            "--config.train.log_every=2",  # the hosts agree on the flag every 2 steps
            "--config.train.checkpoint_every=1000",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={process_id}",
        )
        logs.append(tmp_path / f"host{process_id}.log")
        # Compiling for two processes on CPU takes minutes at full optimisation; the
        # numbers do not matter here, only where the hosts stop.
        procs.append(start(command, logs[-1], XLA_FLAGS="--xla_backend_optimization_level=0"))
    wait_for(procs[0], logs[0], r"step 4/500", timeout=600)  # process 0 logs the steps
    assert procs[1].poll() is None
    procs[1].send_signal(signal.SIGTERM)
    steps = []
    for proc, log_path in zip(procs, logs, strict=True):
        proc.wait(timeout=120)
        steps.append(assert_clean_stop(pathlib.Path(log_path).read_text(), proc.returncode, 500))
    assert steps[0] == steps[1] and steps[0] % 2 == 0
    assert "a signal on another host" in pathlib.Path(logs[0]).read_text()
    assert saved_steps(workdir) == [steps[0]]
    data = workdir / "checkpoints" / str(steps[0]) / "data"
    assert sorted(p.name for p in data.glob("process_*.json")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
