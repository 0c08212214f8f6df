"""Multi-host start-up (bert_jax/runtime/distributed.py): where the settings come from, and a
process whose peer never arrives exiting with one clear line instead of hanging or
aborting in C++ (exit 134). Training across processes: test_multihost.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from bert_jax.runtime import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lone_process(tmp_path, process_id: int, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bert_jax", "pretrain", "--config=configs/bert.py:runlocal"]
        + [f"--workdir={tmp_path / f'lone{process_id}'}", f"--coordinator_address=127.0.0.1:{port}"]
        + ["--num_processes=2", f"--process_id={process_id}"]
        + ["--config.distributed.init_timeout_s=10"],
        cwd=REPO_ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_lone_process_exits_with_a_clear_error(tmp_path):
    # Process 0 alone (the coordinator waits for 1) and process 1 alone (no
    # coordinator at all), side by side on two ports.
    ports = (_free_port(), _free_port())
    start = time.monotonic()
    procs = [_lone_process(tmp_path, i, ports[i]) for i in (0, 1)]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == distributed.EXIT_CODE != 0, err[-4000:]
        errors.append([line for line in err.splitlines() if line.startswith("bert-jax: error:")])
    assert time.monotonic() - start < 40
    assert errors[0] == [
        f"bert-jax: error: process 1 of 2 did not join the coordinator 127.0.0.1:{ports[0]} "
        "within 10 s (this is process 0, the coordinator); start all 2 processes with the same "
        "coordinator and process count, or raise config.distributed.init_timeout_s"
    ]
    assert len(errors[1]) == 1
    assert (
        f"process 1 of 2 did not join the coordinator 127.0.0.1:{ports[1]} within 10 s"
        in (errors[1][0])
    )
    assert "nothing answers there" in errors[1][0]


def _resolve(environ, address=None, count=None, index=None, auto_detect=True):
    return distributed.resolve(
        coordinator_address=address,
        num_processes=count,
        process_id=index,
        environ=environ,
        auto_detect=auto_detect,
    )


def test_settings_come_from_flags_then_environment():
    env = {
        "BERT_JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "BERT_JAX_NUM_PROCESSES": "4",
        "BERT_JAX_PROCESS_ID": "3",
        "JAX_COORDINATOR_ADDRESS": "10.0.0.2:99",
    }
    flags = _resolve(env, "h:1", 2, 1)
    assert (flags.coordinator_address, flags.num_processes, flags.process_id) == ("h:1", 2, 1)
    from_env = _resolve(env)
    assert (from_env.coordinator_address, from_env.num_processes, from_env.process_id) == (
        "10.0.0.1:1234",
        4,
        3,
    )
    with pytest.raises(distributed.InitError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        _resolve({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:99"})
    with pytest.raises(distributed.InitError, match="BERT_JAX_NUM_PROCESSES='two' is not an int"):
        _resolve({**env, "BERT_JAX_NUM_PROCESSES": "two"})
    with pytest.raises(distributed.InitError, match=r"--process_id=2 is not in \[0, 2\)"):
        _resolve(env, "h:1", 2, 2)
    with pytest.raises(distributed.InitError, match="needs --num_processes as well"):
        _resolve(env, "h:1", None, 0)
    with pytest.raises(distributed.InitError, match="HOST:PORT"):
        _resolve(env, "h", 2, 0)


def test_managed_clusters_are_detected_and_single_process_runs_are_not():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2"}
    slurm["SLURM_PROCID"] = "1"
    group = _resolve(slurm)
    assert (group.coordinator_address, group.num_processes, group.process_id) == (None, 2, 1)
    assert _resolve(slurm, auto_detect=False) is None
    assert _resolve({**slurm, "SLURM_NTASKS": "1"}) is None
    assert _resolve({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3", "TPU_WORKER_ID": "2"}).process_id == 2
    assert _resolve({}) is None
