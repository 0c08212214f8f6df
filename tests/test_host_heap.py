"""host_heap: with its glibc settings a jitted CPU step stops page-faulting its scratch buffer."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import textwrap

import pytest

from bert_jax.runtime import host_heap

# A step whose XLA temporary (exp(x), 64 MiB, a matmul operand) is far above glibc's
# 32 MiB mmap threshold; prints the minor page faults of 20 executions after warm-up.
SCRIPT = textwrap.dedent(
    """
    import os, resource, sys
    from bert_jax.runtime import host_heap
    if sys.argv[1] == "reuse":
        host_heap.reexec_with_heap_reuse()
    import jax, jax.numpy as jnp
    step = jax.jit(lambda x, w: jnp.exp(x) @ w)
    x, w = jnp.ones((2048, 8192)), jnp.ones((8192, 8))
    for _ in range(20):  # the reused heap settles after a few temporaries' worth
        step(x, w).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step(x, w).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(os.environ.get("GLIBC_TUNABLES", "-"), faults)
    """
)


def _run(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    tunables, faults = out.stdout.split()
    return tunables, int(faults)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc settings")
def test_heap_reuse_removes_per_step_page_faults():
    default_tunables, default_faults = _run("default")
    reuse_tunables, reuse_faults = _run("reuse")
    assert default_tunables == "-"
    assert reuse_tunables == host_heap.TUNABLES  # restarted once, with the settings
    # Default glibc maps the 64 MiB temporary afresh each time: ~16k faults per step.
    assert default_faults > 20 * 10_000
    # Reused, the heap only grows now and then (fragmentation; it settles after a few
    # temporaries' worth, see host_heap), not by one temporary per step. (One CI run under
    # pytest -n 2 saw 98k reused vs 328k default after a 5-step warm-up, hence 20 now.)
    assert reuse_faults < default_faults / 4


def test_cli_restarts_with_the_heap_settings_only_for_cpu_training(tmp_path):
    none = (str(tmp_path / "no-such-node"),)
    gpu = (str(tmp_path),)  # a path that exists stands for an accelerator's device node
    assert host_heap.wanted(["pretrain", "--config=c"], {}, none)
    assert host_heap.wanted(["finetune"], {"JAX_PLATFORMS": "cpu"}, gpu)  # forced onto CPU
    assert not host_heap.wanted(["pretrain"], {}, gpu)
    assert not host_heap.wanted(["pretrain"], {"JAX_PLATFORMS": "cuda,cpu"}, none)
    assert not host_heap.wanted(["pretrain"], {"BERT_JAX_HOST_HEAP": "0"}, none)
    assert not host_heap.wanted(["report", "--workdir=w"], {}, none)  # trains nothing


def test_the_cli_restarts_before_jax_is_imported(tmp_path):
    """``bert-jax pretrain`` restarts for the heap settings before it imports JAX (before:
    after, so every training command imported JAX and the CLI twice, 1.8 s)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, "-X", "importtime", "-m", "bert_jax", "pretrain"]
    command += ["--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w")]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "missing.py" in done.stderr, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    starts = sum(line.endswith("| site") for line in lines)  # one per interpreter start
    restarts = host_heap.wanted(["pretrain"], env) and platform.libc_ver()[0] == "glibc"
    assert starts == (2 if restarts else 1)
    assert sum(bool(re.search(r"\|\s+jax$", line)) for line in lines) == 1  # after the restart
