"""Shared fixtures: the repository root and the embedded corpus and vocabulary.

`make test` builds data/c4_sample and data/vocab/spm.model before running
pytest, so tests use the real corpus and the real sentencepiece model.
"""

from __future__ import annotations

import gc
import json
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import settings

from bert_jax.cli import GC_THRESHOLD

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT / "data" / "c4_sample"
VOCAB_PATH = REPO_ROOT / "data" / "vocab" / "spm.model"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def vocab_path() -> str:
    if not VOCAB_PATH.exists():
        pytest.fail(f"{VOCAB_PATH} is missing: run `make vocab` (make test builds it)")
    return str(VOCAB_PATH)


@pytest.fixture(scope="session")
def corpus_dir() -> pathlib.Path:
    if not any(CORPUS_DIR.glob("c4-train.*.json.gz")):
        pytest.fail(f"{CORPUS_DIR} has no shards: run `make corpus` (make test builds it)")
    return CORPUS_DIR


def tiny_bert_config(tmp_path=None, **overrides):
    """configs/bert.py:recipe=short,runlocal (BERT's MLM + NSP) with absolute data paths
    and a very small model."""
    config = load_recipe("bert", "recipe=short,runlocal")
    config.data.max_seq_length = 64
    config.objective.max_predictions_per_seq = 10
    config.model.hidden_size = 32
    config.model.num_heads = 2
    config.model.intermediate_size = 64
    config.model.num_layers = 2
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The test workers' (and the scripts that import this file) collect garbage as the
# ``bert-jax`` command does (bert_jax/cli/__init__.py: GC_THRESHOLD).
gc.set_threshold(*GC_THRESHOLD)

# One JAX persistent compilation cache for the whole run, set before JAX is imported: the
# test workers and every process a test starts (they inherit the environment) compile a
# program once and load it from disk afterwards, also across tests that build the same
# step anew (jit's in-memory cache is per function object). JAX keys an entry by the
# program's HLO, the compile options, the XLA flags and the jax/jaxlib versions, so a hit
# is the executable a fresh compile would give; an entry that cannot be read (another
# process still writing it) is a warning and a fresh compile, never another program. No
# size cap: a cap turns on JAX's eviction, which reads every entry's time stamp on each
# write (90 ms a write at 2,000 entries here). The folder is git-ignored (`make clean`
# removes it); a clean clone starts empty. JAX_ENABLE_COMPILATION_CACHE=false turns it off.
JAX_CACHE_DIR = REPO_ROOT / ".cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE_DIR))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# XLA:CPU compiles the suite's programs at LLVM -O0 and with its older elemental fusion
# emitters (tiny models: compiling is most of a test's time, running them little). A tiny
# BERT's 11 training/evaluation programs compile in 5.4 s instead of 11.7 s (-O0 alone
# 7.9 s: tiny_bert_config, 30 steps, no cache, quiet machine), and 32 compile-bound tests
# took 197 s instead of 285 s with -O0 alone (`pytest -n 2`, empty caches). Two more,
# measured on the command matrix's pretraining (T5 v1.1 and BERT rows, no cache, quiet):
# without the HLO pass that splits reductions into trees (sums run in order: tiny arrays)
# the programs compiled in 5.4 s instead of 6.4 s (T5) and 2.1 s instead of 2.5 s (BERT);
# one LLVM module per program instead of 32 parts compiled in parallel took 6.0-6.2 s of
# CPU instead of 6.8-7.1 s (BERT, two runs each). The processes a test starts inherit the
# flags (run_with_devices adds the device count). Tests that compare numbers across device
# layouts bit for bit pass ``optimized=True`` to run_with_devices: at -O0 one element of
# an 8-device T5 run moved by 0.03 (test_multihost).
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    " --xla_disable_hlo_passes=tree_reduction_rewriter"
    " --xla_cpu_parallel_codegen_split_count=1"
)
os.environ["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS"), TEST_XLA_FLAGS)))
INHERITED_XLA_FLAGS = os.environ["XLA_FLAGS"]

# Property tests (tests/properties): every run of the suite (`make test`, CI, a plain
# pytest) draws the same examples, so the suite fails only when the code or the tests
# change; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) draws fresh random ones, FUZZ_SCALE times
# as many, and keeps failures in .hypothesis/ to replay them.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)
FUZZ_SCALE = 20


def property_examples(count: int) -> int:
    """A property test's ``max_examples``: ``count``, FUZZ_SCALE times more under fuzz."""
    return count * FUZZ_SCALE if HYPOTHESIS_PROFILE == "fuzz" else count


def load_recipe(name: str, arg: str = "runlocal"):
    """configs/NAME.py:ARG with the embedded corpus and vocabulary as absolute paths."""
    from bert_jax.runtime.run_config import load_recipe as load

    return load(f"configs/{name}.py:{arg}", data_root=REPO_ROOT / "data")


def base_config_with(fields: dict):
    """``run_config.base_config()`` updated with ``fields`` (nested dicts per section).

    Hand-written test configs start here so that they have every default a recipe has.
    """
    from bert_jax.runtime.run_config import base_config

    config = base_config()
    config.update(fields)
    return config


def xla_flags(device_count: int, *, optimized: bool = False) -> str:
    """XLA_FLAGS for a process with ``device_count`` simulated CPU devices: the suite's
    (TEST_XLA_FLAGS) unless ``optimized``, which compiles as users do."""
    base = INHERITED_XLA_FLAGS.replace(TEST_XLA_FLAGS, "") if optimized else INHERITED_XLA_FLAGS
    return f"{base} --xla_force_host_platform_device_count={device_count}".strip()


def run_with_devices(
    script: str, device_count: int, *, timeout: int = 600, optimized: bool = False, **env
):
    """Runs Python ``script`` in a fresh process with ``device_count`` simulated CPU devices.

    XLA reads the device count only at start-up, hence the subprocess. Extra ``env``
    variables are added; ``optimized``: see xla_flags. Fails the test with the tail of
    stderr unless the exit code is 0.
    """
    flags = xla_flags(device_count, optimized=optimized)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "XLA_FLAGS": flags, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def result_json(proc) -> dict:
    """The JSON a test script printed after ``RESULT``."""
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


# Files without a slow test that still took minutes (the suite's --durations, 2026-12-07):
# they run right after the slow ones instead of last.
LONG_FILES = (
    "test_checkpoint_nonfinite.py",
    "test_checkpoint_restore.py",
    "test_benchmarks_smoke.py",
    "models/test_t5.py",
    "objectives/test_bert_eval.py",
)


def pytest_collection_modifyitems(config, items):
    """The files with slow tests first, then LONG_FILES, then the rest (each group in
    collection order), so that under `pytest -n 2` the workers share out the long tests at
    the start and finish together on quick ones, instead of one worker running the last
    long test alone. A file's tests stay together, so a module-scoped fixture is still built
    once per worker."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    long_files = {REPO_ROOT / "tests" / name for name in LONG_FILES}
    items.sort(key=lambda item: (item.path not in slow_files, item.path not in long_files))
