"""Saves that cannot be written fail at once with one message: path, OS error, space.

Hang-prone cases run in a subprocess under a timeout. The disk-full and read-only
cases use a real tmpfs mounted in a private mount namespace (``unshare -m``, needs
root or CAP_SYS_ADMIN; skipped elsewhere), so orbax meets real ENOSPC / EROFS errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, result_json, tiny_bert_config

from bert_jax.checkpointing.checkpointer import CheckpointError
from bert_jax.training import loop

SCENARIOS = r"""
import json, os, shutil, subprocess, sys, time
import grain, numpy as np
import jax.numpy as jnp
from bert_jax.checkpointing import guard
from bert_jax.checkpointing.checkpointer import CheckpointError, Checkpointer
from bert_jax.models.bert_config import BertConfig

CONFIG = BertConfig(vocab_size=16, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
root = sys.argv[1]
out = {}

def checkpointer(name, size=None):
    directory = os.path.join(root, name)
    os.makedirs(directory)
    if size:
        mount = ["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", directory]
        subprocess.run(mount, check=True)
    path = os.path.join(directory, "checkpoints")
    return directory, Checkpointer(path, keep=2, model_config=CONFIG)

def attempt(name, fn):
    start = time.monotonic()
    try:
        fn()
        out[name] = {"error": None}
    except CheckpointError as error:
        out[name] = {"error": str(error)}
    out[name]["seconds"] = time.monotonic() - start

small = {"x": jnp.zeros(4)}
iterator = iter(grain.MapDataset.range(4).to_iter_dataset())

if "replaced" in sys.argv:
    directory, c = checkpointer("replaced")
    c.save(1, small, iterator)
    c.wait()
    shutil.rmtree(os.path.join(directory, "checkpoints"))
    open(os.path.join(directory, "checkpoints"), "w").close()
    attempt("replaced", lambda: c.save(2, small, iterator))

if "tmpfs" in sys.argv:
    directory, c = checkpointer("full", size="1M")
    attempt("full", lambda: c.save(1, {"x": jnp.zeros(2**19)}, iterator))  # 2 MB

    directory, c = checkpointer("read_only", size="4M")
    c.save(1, small, iterator)
    c.wait()
    subprocess.run(["mount", "-o", "remount,ro", directory], check=True)
    attempt("read_only", lambda: c.save(2, small, iterator))

    # The pre-check passes (metadata not counted) but the write does not fit: orbax's
    # background commit fails with ENOSPC, and check() (each step) raises it.
    guard.METADATA_BYTES_PER_LEAF = 0
    directory, c = checkpointer("background", size="1M")
    noise = np.random.default_rng(0).integers(0, 2**32, 250_000, dtype=np.uint32)  # 1,000,000 B

    def save_then_poll():
        c.save(1, {"x": jnp.asarray(noise)}, iterator)
        out["background_save_returned"] = True
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            c.check()
            time.sleep(0.05)

    attempt("background", save_then_poll)
print("RESULT" + json.dumps(out))
"""


def _run(args: list[str], timeout: int = 240):
    return subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ
    )


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "mkdir -p /tmp/.bert_jax_probe && mount -t tmpfs -o size=64k tmpfs /tmp/.bert_jax_probe"
    return _run(["unshare", "-m", "sh", "-c", probe], timeout=30).returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs unshare -m and mount (root)")


def test_checkpoints_path_that_is_a_file_fails_before_training(tmp_path, vocab_path, corpus_dir):
    (tmp_path / "checkpoints").write_text("")
    with pytest.raises(CheckpointError, match=r"checkpoints is a file \(Not a directory\)"):
        loop.train_and_evaluate(tiny_bert_config(), str(tmp_path))


def test_directory_replaced_by_a_file_mid_run_fails_the_next_save(tmp_path):
    proc = _run([sys.executable, "-c", SCENARIOS, str(tmp_path), "replaced"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_json(proc)["replaced"]
    assert "Not a directory" in result["error"], result
    assert f"{tmp_path}/replaced/checkpoints" in result["error"]
    assert result["seconds"] < 30  # orbax alone waited 20 minutes here


@needs_mount
def test_disk_full_and_read_only_disk_each_give_one_message(tmp_path):
    proc = _run(["unshare", "-m", sys.executable, "-c", SCENARIOS, str(tmp_path), "tmpfs"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_json(proc)
    full = result["full"]["error"]
    assert f"checkpoint of 2.0 MB at step 1 needs 2.0 MB in {tmp_path}/full/checkpoints" in full
    assert "MB free" in full
    read_only = result["read_only"]["error"]
    assert "step 2" in read_only and "Read-only file system" in read_only, read_only
    assert f"{tmp_path}/read_only/checkpoints" in read_only
    assert result["background_save_returned"]
    background = result["background"]["error"]
    assert background is not None, "a failed background write was never raised"
    assert "No space left on device" in background and "MB free" in background, background
    assert result["background"]["seconds"] < 60
    # orbax's own tracebacks of the failure (logged by five threads) are not printed.
    assert proc.stderr.count("Traceback") == 0, proc.stderr[-3000:]


@needs_mount
def test_cli_disk_full_is_one_error_line(tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    command = (
        f"mount -t tmpfs -o size=1M tmpfs {workdir} && exec {sys.executable} -m bert_jax "
        f"pretrain --config configs/bert.py:runlocal --workdir {workdir}"
    )
    proc = _run(["unshare", "-m", "sh", "-c", command], timeout=400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bert-jax: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "at step 2 needs" in errors[0] and f"{workdir}/checkpoints" in errors[0]
    assert "MB free" in errors[0]
    assert "Traceback" not in proc.stderr
