"""Multi-host: real processes joined by `jax.distributed` over 127.0.0.1.

Two processes with 4 simulated CPU devices each train exactly like one process
with 8 (same mesh, same global batches, fixed by config.data.input_shards),
checkpoint on every host and resume. Start-up and its failures: test_distributed.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, run_with_devices, tiny_bert_config, xla_flags

from bert_jax import objectives
from bert_jax.data import pipeline
from bert_jax.objectives.bert_task import BertDataConfig, BertObjective

# One subprocess per host trains BERT tiny and then T5 tiny (one JAX start-up for both).
SCRIPT = r"""
import json, os, sys
sys.path.insert(0, {tests_dir!r})
from bert_jax.runtime import distributed
from bert_jax.runtime import run_config
distributed.initialize(
    distributed.resolve(coordinator_address=None, num_processes=None, process_id=None,
                        environ=os.environ, auto_detect=False),
    run_config.base_config().distributed,
)
import jax, numpy as np
from jax.experimental import multihost_utils
from conftest import load_recipe, tiny_bert_config
from bert_jax.training import loop

def configure(name):
    config = tiny_bert_config() if name == "bert" else load_recipe("t5")
    if name == "t5":
        config.data.max_seq_length = 64
        config.model.update(d_model=32, num_heads=2, d_ff=64)
        # Adafactor's update is about sign(g) * lr for a near-zero gradient (epsilon 1e-30),
        # so a summation-order difference of 1e-9 in one rare token's embedding gradient can
        # move that weight by 0.03 (seen once). AdamW's eps keeps such updates ~g / eps.
        config.optim.update(name="adamw", learning_rate=1e-3, weight_decay=0.01)
    config.mesh.shape = (2, 2, 2)
    config.data.input_shards = 2  # the same global batches for 1 and 2 processes
    config.data.prefetch = 0
    # 6 scheduled steps, run to 3 or 5: no final evaluation (its compile time) is reached.
    config.train.update(num_steps=6, log_every=1, eval_every=100, checkpoint_every=100)
    return config

for name in ("bert", "t5"):
    workdir = os.path.join({workdir!r}, name)
    result = loop.train_and_evaluate(configure(name), workdir, stop_at={stop_at})
    # Every host's shards of the parameters, gathered whole on every host; process 0 saves them.
    params = multihost_utils.process_allgather(result["state"].params, tiled=True)
    if jax.process_index() == 0:
        leaves = jax.tree_util.tree_leaves_with_path(params)
        np.savez(os.path.join(workdir, "params_%d.npz" % result["step"]),
                 **{{jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}})
    print("RESULT" + json.dumps({{
        "model": name, "process": jax.process_index(), "count": jax.process_count(),
        "devices": jax.device_count(), "start": result["start_step"], "step": result["step"],
    }}), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(workdir, *, num_processes: int, stop_at: int | None, cache_dir) -> list[dict]:
    """Runs SCRIPT on `num_processes` hosts with 8 devices in all; their RESULT records."""
    script = SCRIPT.format(
        tests_dir=str(REPO_ROOT / "tests"), workdir=str(workdir), stop_at=stop_at
    )
    port = _free_port()
    procs = []
    for process_id in range(num_processes):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            # Compile time dominates: the resumed pair reuses the first pair's programs.
            # (The suite's -O0, conftest.TEST_XLA_FLAGS, would halve it, but then one T5
            # embedding element of the 8-device run moved by 0.03 at step 4: not here.)
            "XLA_FLAGS": xla_flags(8 // num_processes, optimized=True),
            "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        if num_processes > 1:  # the environment route (the CLI test takes the flags)
            env.update(
                BERT_JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                BERT_JAX_NUM_PROCESSES=str(num_processes),
                BERT_JAX_PROCESS_ID=str(process_id),
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
        results += [json.loads(x[6:]) for x in out.splitlines() if x.startswith("RESULT")]
    return results


def _losses(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.mark.slow
def test_two_hosts_match_one_host_and_resume_exactly(tmp_path):
    cache = tmp_path / "jax_cache"
    single = _train(tmp_path / "single", num_processes=1, stop_at=5, cache_dir=cache)
    assert {(r["model"], r["count"], r["devices"], r["step"]) for r in single} == {
        ("bert", 1, 8, 5),
        ("t5", 1, 8, 5),
    }
    pair = _train(tmp_path / "pair", num_processes=2, stop_at=3, cache_dir=cache)
    assert {(r["model"], r["process"], r["count"], r["devices"], r["step"]) for r in pair} == {
        (m, p, 2, 8, 3) for m in ("bert", "t5") for p in (0, 1)
    }
    for model in ("bert", "t5"):
        # Every host saved its own data iterator position in the one orbax step.
        data_dir = tmp_path / "pair" / model / "checkpoints" / "3" / "data"
        assert sorted(p.name for p in data_dir.glob("process_*.json")) == [
            "process_0-of-2.json",
            "process_1-of-2.json",
        ]
    resumed = _train(tmp_path / "pair", num_processes=2, stop_at=5, cache_dir=cache)
    assert all(r["start"] == 3 and r["step"] == 5 for r in resumed)
    for model in ("bert", "t5"):
        reference = _losses(tmp_path / "single" / model)
        assert sorted(reference) == [1, 2, 3, 4, 5]
        # Steps 1-3 from the first pair run, 4-5 from the resumed one, in one file.
        pair_losses = _losses(tmp_path / "pair" / model)
        np.testing.assert_allclose(
            [pair_losses[s] for s in range(1, 6)], [reference[s] for s in range(1, 6)], rtol=1e-5
        )
        expected = np.load(tmp_path / "single" / model / "params_5.npz")
        actual = np.load(tmp_path / "pair" / model / "params_5.npz")
        assert sorted(actual.files) == sorted(expected.files)
        for key in expected.files:
            np.testing.assert_allclose(actual[key], expected[key], rtol=0, atol=1e-5, err_msg=key)


def test_global_batches_do_not_depend_on_the_process_count(vocab_path, corpus_dir):
    """One process running both input shards gives what two hosts give between them."""
    config = tiny_bert_config(**{"data.prefetch": 0})
    task = objectives.get_task(config)

    def batches(dataset, count, state=None):
        iterator = iter(dataset)
        if state is not None:
            iterator.set_state(state)
        return [next(iterator) for _ in range(count)], iterator.get_state()

    def dataset(process_index, process_count):
        return pipeline.create_dataset(
            config,
            BertObjective(BertDataConfig.from_config(config), task.tokenizer),
            task.tokenizer,
            split="train",
            global_batch_size=8,
            process_index=process_index,
            process_count=process_count,
        )

    per_host = [batches(dataset(i, 2), 3)[0] for i in (0, 1)]
    config.data.input_shards = 2
    one_host, _ = batches(dataset(0, 1), 3)
    for step in range(3):
        for key, value in one_host[step].items():
            assert value.shape[0] == 8
            np.testing.assert_array_equal(
                value, np.concatenate([per_host[0][step][key], per_host[1][step][key]])
            )
    # The combined iterator resumes where it stopped, like each host's own.
    _, state = batches(dataset(0, 1), 2)
    (third,), _ = batches(dataset(0, 1), 1, state=json.loads(json.dumps(state)))
    for key, value in third.items():
        np.testing.assert_array_equal(value, one_host[2][key])
    with pytest.raises(ValueError, match="input_shards=2 is not a multiple of the 3"):
        dataset(0, 3)


AXES_SCRIPT = r"""
import sys
sys.path.insert(0, {tests_dir!r})
import jax, jax.numpy as jnp
from conftest import load_recipe
from bert_jax import objectives
from bert_jax.training import optim
from bert_jax.runtime import sharding
from bert_jax.training import loop
from bert_jax.training.state import abstract_train_state, state_shardings
config = load_recipe("t5")
config.model.update(d_model=32, num_heads=2, d_ff=64)
mesh = sharding.create_mesh((2, 2, 2))
rules = sharding.validate_rules(config.mesh.axis_rules)
task = objectives.get_task(config)
tx, _ = optim.create_optimizer(config.optim, 10)
with sharding.use_mesh(mesh, rules):
    _, abs_state, init = abstract_train_state(task.create_model, tx, 0)
    shardings = state_shardings(abs_state, mesh, rules)
    state = jax.jit(init, out_shardings=shardings)()  # Adafactor's (1,) moments included
    one = jax.jit(lambda x: sharding.constrain(x * 2, ("batch", "length", "embed")))(
        jnp.ones((1, 4, 32))
    )  # a single decoded example on the 4-way batch axes
print("OK", len(jax.tree.leaves(state)), float(one.sum()))
"""


@pytest.mark.slow
def test_axes_too_small_to_split_stay_whole_on_a_multi_device_mesh(vocab_path):
    # Regression: T5's Adafactor state and a one-example decode failed on mesh (2, 2, 2)
    # with "IndivisibleError ... the dimension size is 1".
    script = AXES_SCRIPT.format(tests_dir=str(REPO_ROOT / "tests"))
    proc = run_with_devices(script, 8, timeout=300, JAX_PLATFORMS="cpu")
    assert "OK" in proc.stdout and proc.stdout.strip().endswith(" 256.0")
