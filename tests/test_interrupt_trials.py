"""Random interruptions, then resume: the end state is bit-identical to a straight run.

Each trial trains the same tiny BERT (dropout on, a checkpoint every 3 steps) in its
own workdir and interrupts it with SIGTERM, SIGINT or ``kill -9`` at random steps
(seeded: ``INTERRUPT_TRIALS_SEED``, default 0), one ``kill -9`` while an asynchronous
save is in flight (its ``*.orbax-checkpoint-tmp*`` directory on disk); after each
interruption the same command is rerun, and after the last until it finishes. The final
checkpoints (parameters, optimizer state, step) must equal the uninterrupted run's
exactly. Run with ``-s`` to see the table of trials.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_preemption import STOPPED, assert_clean_stop, pretrain_command, start, wait_for

NUM_STEPS = 40
OVERRIDES = [
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.checkpoint_every=3",
    "--config.train.eval_every=1000",  # one evaluation, at the end
    "--config.model.dropout_rate=0.1",  # the dropout keys must follow the step too
]
# Interruptions per trial; "SIGKILL@save" waits for a save in flight, then kill -9.
PLAN = (("SIGTERM", "SIGKILL@save", "SIGINT"), ("SIGKILL", "SIGTERM"))


def _final_state(workdir) -> dict:
    path = pathlib.Path(workdir) / "checkpoints" / str(NUM_STEPS) / "state"
    return ocp.StandardCheckpointer().restore(path)


def _kill_during_save(proc, checkpoints: pathlib.Path) -> bool:
    """kill -9 as soon as a save is in flight; whether its tmp directory outlived the kill."""
    while proc.poll() is None:
        if checkpoints.is_dir() and any("tmp" in name for name in os.listdir(checkpoints)):
            proc.kill()
            break
        time.sleep(0.001)
    proc.wait(timeout=60)
    return any("tmp" in p.name for p in checkpoints.iterdir())


def _interrupt(proc, log_path, how: str, step: int, checkpoints) -> dict:
    wait_for(proc, log_path, rf"step {step}/{NUM_STEPS} ")
    during_save = False
    if how == "SIGKILL@save":
        during_save = _kill_during_save(proc, checkpoints)
    elif how == "SIGKILL":
        proc.kill()
    else:
        proc.send_signal(signal.Signals[how])
    proc.wait(timeout=120)
    log = pathlib.Path(log_path).read_text()
    if how.startswith("SIGKILL"):
        seen = [int(s) for s in re.findall(rf"step (\d+)/{NUM_STEPS} ", log)]
        stopped = max(seen)
        assert proc.returncode == -signal.SIGKILL
    else:
        stopped = assert_clean_stop(log, proc.returncode, NUM_STEPS)
    return {"signal": how, "at": stopped, "exit": proc.returncode, "during_save": during_save}


@pytest.mark.slow
def test_random_interruptions_resume_to_identical_parameters(tmp_path):
    seed = int(os.environ.get("INTERRUPT_TRIALS_SEED", "0"))
    rng = np.random.default_rng(seed)
    # Every run after the first loads the programs from the suite's compilation cache
    # (tests/conftest.py), which the test_preemption runs of the same recipe also fill.
    reference = tmp_path / "reference"
    proc = start(pretrain_command(reference, *OVERRIDES), tmp_path / "reference.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    expected = _final_state(reference)

    rows = []
    for trial, plan in enumerate(PLAN):
        workdir = tmp_path / f"trial{trial}"
        command = pretrain_command(workdir, *OVERRIDES)
        trial_rows: list[dict] = []
        # Each interrupted run, then the same command once more: it must finish.
        for run, how in enumerate((*plan, None)):
            log_path = tmp_path / f"trial{trial}_run{run}.log"
            proc = start(command, log_path)
            start_step = int(wait_for(proc, log_path, r"starting at step (\d+)").group(1))
            if trial_rows:
                previous = trial_rows[-1]
                previous["resumed_from"] = start_step
                if not previous["signal"].startswith("SIGKILL"):
                    assert start_step == previous["at"]  # from the step it stopped at
                assert start_step <= previous["at"]  # never a half-written checkpoint
            if how is None:
                assert proc.wait(timeout=600) == 0, log_path.read_text()[-3000:]
                assert not STOPPED.search(log_path.read_text())
                break
            # A step a little past where this run starts, leaving room for the rest.
            step = int(rng.integers(start_step + 2, min(start_step + 10, NUM_STEPS - 6)))
            trial_rows.append(_interrupt(proc, log_path, how, step, workdir / "checkpoints"))
        leaves = zip(_leaves(expected), _leaves(_final_state(workdir)), strict=True)
        identical = all(np.array_equal(a, b) for a, b in leaves)
        rows += [{"trial": trial, **row, "identical": identical} for row in trial_rows]

    print(f"\ninterrupt trials (seed {seed}, {NUM_STEPS} steps, checkpoint every 3):")
    print("| trial | signal | at step | exit code | during a save | resumed from | identical |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['trial']} | {r['signal']} | {r['at']} | {r['exit']} | "
            f"{'yes' if r['during_save'] else 'no'} | {r['resumed_from']} | {r['identical']} |"
        )
    assert all(r["identical"] for r in rows), "a trial ended with different parameters"
    assert any(r["during_save"] for r in rows), "no kill -9 landed during an asynchronous save"


def _leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
