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


SLURM_TWO_TASKS = {
    "SLURM_JOB_ID": "7",
    "SLURM_STEP_NODELIST": "n[1-2]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}
OPEN_MPI_FOUR_RANKS = {
    "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_RANK": "2",
    "OMPI_COMM_WORLD_LOCAL_RANK": "0",
}


def _jax_detects(environ, monkeypatch) -> tuple:
    """What jax.distributed.initialize() itself reads from ``environ``: address, count, id."""
    from jax._src import clusters

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, None
    )
    return detected[:3]


@pytest.mark.parametrize("cluster", [SLURM_TWO_TASKS, OPEN_MPI_FOUR_RANKS])
def test_managed_clusters_are_the_ones_jax_detects(cluster, monkeypatch):
    address, count, index = _jax_detects(cluster, monkeypatch)
    assert address and count > 1  # jax reads the coordinator itself: we pass it none
    group = _resolve({})
    assert (group.coordinator_address, group.num_processes, group.process_id) == (
        None,
        count,
        index,
    )
    assert _resolve({}, auto_detect=False) is None
    # Explicit settings win over the cluster.
    assert _resolve({"BERT_JAX_COORDINATOR_ADDRESS": "h:1", "BERT_JAX_NUM_PROCESSES": "2",
                     "BERT_JAX_PROCESS_ID": "0"}).coordinator_address == "h:1"  # fmt: skip


def test_single_process_runs_and_what_jax_does_not_detect_start_nothing(monkeypatch):
    assert _resolve({}) is None
    _jax_detects({**SLURM_TWO_TASKS, "SLURM_NTASKS": "1"}, monkeypatch)
    assert _resolve({}) is None  # a one-task SLURM job needs no coordinator
    monkeypatch.delenv("SLURM_JOB_ID")
    # Off a Cloud TPU VM jax does not read TPU worker lists (before, we started a group
    # here that jax then refused: "coordinator_address should be defined").
    _jax_detects({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3", "TPU_WORKER_ID": "2"}, monkeypatch)
    assert _jax_detects({}, monkeypatch) == (None, None, None)
    assert _resolve({}) is None


def test_a_cluster_without_its_process_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", OPEN_MPI_FOUR_RANKS["OMPI_MCA_orte_hnp_uri"])
    with pytest.raises(distributed.InitError, match="OmpiCluster found a cluster but no process"):
        _resolve({})


JOIN_SCRIPT = """
import os
from bert_jax.runtime import distributed, run_config
config = run_config.base_config().distributed
config.init_timeout_s = int(os.environ["TEST_INIT_TIMEOUT_S"])
group = distributed.resolve(
    coordinator_address=None, num_processes=None, process_id=None, environ=os.environ,
    auto_detect=True,
)
distributed.initialize(group, config)
import jax
print("joined", jax.process_index(), jax.process_count(), flush=True)
"""


def _slurm_task(process_id: int, port: int, timeout_s: int) -> subprocess.Popen:
    slurm = {**SLURM_TWO_TASKS, "SLURM_STEP_NODELIST": "127.0.0.1"}
    slurm.update(SLURM_PROCID=str(process_id), SLURM_LOCALID=str(process_id))
    return subprocess.Popen(
        [sys.executable, "-c", JOIN_SCRIPT],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            **slurm,
            "JAX_COORDINATOR_PORT": str(port),
            "JAX_PLATFORMS": "cpu",
            "TEST_INIT_TIMEOUT_S": str(timeout_s),
        },  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_slurm_tasks_join_through_jaxs_own_detection_and_a_lone_one_says_why():
    # No flags and no coordinator: jax reads SLURM's variables (the port from
    # JAX_COORDINATOR_PORT) and the two tasks form one group. A lone task 0 of 2, on
    # another port, gets the watchdog's line naming the missing task.
    ports = (_free_port(), _free_port())
    procs = [_slurm_task(i, ports[0], 60) for i in (0, 1)] + [_slurm_task(0, ports[1], 5)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs[:2], outputs, strict=False):
        assert proc.returncode == 0, err[-4000:]
    assert sorted(out.strip() for out, _ in outputs[:2]) == ["joined 0 2", "joined 1 2"]
    assert procs[2].returncode == distributed.EXIT_CODE, outputs[2][1][-4000:]
    errors = [line for line in outputs[2][1].splitlines() if line.startswith("bert-jax: error:")]
    assert errors == [
        "bert-jax: error: process 1 of 2 did not join the coordinator (detected from jax's "
        "SlurmCluster) within 5 s (this is process 0, the coordinator); start all 2 processes "
        "with the same coordinator and process count, or raise config.distributed.init_timeout_s"
    ]
