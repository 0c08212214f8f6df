"""Two real processes joined by `jax.distributed` over 127.0.0.1 train, checkpoint and resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPT = r"""
import json, sys
sys.path.insert(0, {tests_dir!r})
import jax
jax.distributed.initialize(
    coordinator_address="127.0.0.1:{port}", num_processes=2, process_id=int(sys.argv[1])
)
from conftest import tiny_bert_config
from bert_jax import train
config = tiny_bert_config(**{{"train.num_steps": {steps}, "train.checkpoint_every": 2}})
result = train.train_and_evaluate(config, {workdir!r})
print("RESULT" + json.dumps({{
    "process": jax.process_index(), "count": jax.process_count(), "devices": jax.device_count(),
    "start": result["start_step"], "step": result["step"], "loss": result["train"]["loss"],
}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(workdir: str, steps: int) -> list[dict]:
    script = SCRIPT.format(
        tests_dir=str(REPO_ROOT / "tests"), port=_free_port(), steps=steps, workdir=workdir
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT"))
        results.append(json.loads(line[len("RESULT") :]))
    return results


@pytest.mark.slow
def test_two_hosts_train_checkpoint_and_resume(tmp_path, vocab_path, corpus_dir):
    workdir = str(tmp_path / "run")
    first = _run_two_processes(workdir, steps=3)
    assert [r["process"] for r in first] == [0, 1]
    assert all(r["count"] == 2 and r["devices"] == 2 and r["step"] == 3 for r in first)
    assert first[0]["loss"] == first[1]["loss"]  # one global batch, one loss
    data_dir = tmp_path / "run" / "checkpoints" / "3" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*.json")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    # Each host saved its own position (in its own shards, see tests/data/test_pipeline.py).
    assert all(json.loads(p.read_text()) for p in data_dir.glob("process_*.json"))
    resumed = _run_two_processes(workdir, steps=5)
    assert all(r["start"] == 3 and r["step"] == 5 for r in resumed)
