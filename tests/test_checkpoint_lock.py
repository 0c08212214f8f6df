"""One writing run per workdir (bert_jax/lock.py), with real processes."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from test_preemption import pretrain_command, start, wait_for

from bert_jax.checkpointing import lock

# A process that holds the lock of a workdir until it is killed.
HOLDER = r"""
import threading
from bert_jax.checkpointing import lock
with lock.hold({workdir!r}):
    print("HELD", flush=True)
    threading.Event().wait()
"""


def _hold_in_another_process(tmp_path, workdir) -> subprocess.Popen:
    log_path = tmp_path / "holder.log"
    proc = start([sys.executable, "-c", HOLDER.format(workdir=str(workdir))], log_path)
    wait_for(proc, log_path, "HELD", timeout=120)
    return proc


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_held_workdir_refuses_pretrain_and_a_killed_holder_is_taken_over(tmp_path, caplog):
    workdir = tmp_path / "run"
    holder = _hold_in_another_process(tmp_path, workdir)
    try:
        refused = subprocess.run(
            pretrain_command(workdir), capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
        )
        assert refused.returncode == 1, refused.stderr[-3000:]
        line = _last_line(refused.stderr)
        assert line.startswith("bert-jax: error: --workdir"), refused.stderr[-3000:]
        assert f"is in use by host {os.uname().nodename} pid {holder.pid} (started " in line
        assert "Traceback" not in refused.stderr
        assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
        # Reading commands are not blocked: report reads metrics.jsonl of a held workdir.
        record = {"step": 2, "split": "eval", "mlm_loss": 5.0, "unigram_xent": 6.0}
        (workdir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        read = subprocess.run(
            [sys.executable, "-m", "bert_jax", "report", f"--workdir={workdir}"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
        )
        assert read.returncode == 0, read.stderr[-3000:]
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays behind
        holder.wait(timeout=60)
    lock_path = workdir / lock.LOCK_NAME
    assert json.loads(lock_path.read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING), lock.hold(str(workdir)):
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    (warning,) = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert f"pid {holder.pid} (started " in warning
    assert not lock_path.exists()  # released on exit


def test_the_lock_is_reentrant_in_one_process_and_released_after_an_error(tmp_path):
    workdir = str(tmp_path)
    lock_path = pathlib.Path(workdir) / lock.LOCK_NAME
    with pytest.raises(RuntimeError, match="inside"), lock.hold(workdir):
        with lock.hold(workdir):  # a finetune around its train loop
            assert lock_path.exists()
        assert lock_path.exists()  # still held by the outer block
        raise RuntimeError("inside")
    assert not lock_path.exists()


@pytest.mark.slow
def test_two_pretrains_on_one_workdir_together_and_one_second_apart(tmp_path):
    workdir = tmp_path / "run"
    command = pretrain_command(workdir, "--config.train.num_steps=8")
    # Started together: one trains, the other is refused naming it.
    procs = [start(command, tmp_path / f"together{i}.log") for i in range(2)]
    codes = [proc.wait(timeout=600) for proc in procs]
    logs = [(tmp_path / f"together{i}.log").read_text() for i in range(2)]
    assert sorted(codes) == [0, 1], logs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"is in use by host {os.uname().nodename} pid {procs[winner].pid}" in logs[loser]
    assert _last_line(logs[loser]).startswith("bert-jax: error: --workdir")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys)) and (8, "eval") in keys  # each record once
    # One second apart: the first is stopped (SIGSTOP) once it holds the lock, so the
    # second surely finds it held; the first then finishes as if alone.
    more = pretrain_command(workdir, "--config.train.num_steps=12")
    first = start(more, tmp_path / "first.log")
    wait_for(first, tmp_path / "first.log", r"starting at step 8")
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(more, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"pid {first.pid} (started " in _last_line(second.stderr)
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 12
    assert list((workdir / "checkpoints" / "12" / "state").iterdir())  # arrays, not just a marker
    assert not (workdir / lock.LOCK_NAME).exists()
