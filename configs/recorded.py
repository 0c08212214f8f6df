"""The run config a pretraining checkpoint records, as a recipe: ``configs/recorded.py:WORKDIR``.

``bert-jax evaluate`` and ``export`` read the run config saved with the latest checkpoint
of --workdir, so they need no --config. To change a field of it (more held-out batches, a
mesh for this machine), give only the override; the command then loads this recipe on its
own workdir and applies the override on top, typed and checked as for any recipe:

  bert-jax evaluate --workdir workdirs/bert_tiny --config.train.eval_batches=16

which is short for

  bert-jax evaluate --workdir workdirs/bert_tiny \\
      --config configs/recorded.py:workdirs/bert_tiny --config.train.eval_batches=16

A field that changes the weights (the model's sizes, the vocabulary) cannot be overridden:
the checkpoint guard refuses a model other than the saved one. ``--config FILE`` with any
other recipe replaces the recorded config whole (what checkpoints written before the
record need).
"""

from __future__ import annotations


def get_config(arg: str | None = None):
    from bert_jax.checkpointing.inference import older_checkpoint_message
    from bert_jax.checkpointing.workdir import saved_run_config

    if not arg:
        raise ValueError("configs/recorded.py needs the workdir: configs/recorded.py:WORKDIR")
    try:
        config = saved_run_config(arg)
    except FileNotFoundError as error:  # no checkpoint: one line, as for any recipe argument
        raise ValueError(str(error)) from error
    if config is None:
        raise ValueError(older_checkpoint_message(arg))
    return config
