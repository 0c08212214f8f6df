"""Orbax checkpoints holding the train state, the data iterator and the model config.

One orbax step directory holds these items:
  * ``state``: parameters, optimizer state and step (sharded arrays, async save);
  * ``data``: the grain iterator state of every host, so a resumed run neither
    repeats nor skips examples;
  * ``model``: the model's hyperparameters as JSON, checked on restore so a
    checkpoint of another model gets a clear error instead of a shape trace;
  * ``optimizer``: the optimizer's name and state layout, checked the same way
    (absent from checkpoints written before it existed: not checked then);
  * ``data_spec``: what the train stream reads (bert_jax/data/fingerprint.py); a resume
    on other data is refused, or with ``config.data.allow_new_data`` restarts the
    stream. Checkpoints written before it resume unchecked, with a warning.
  * ``run_config``: the run config (workdir.run_record), so commands that read a
    checkpoint (export, evaluate, fine-tuning) need no recipe; absent from
    checkpoints written before it existed.

Saves fail loudly and at once (guard.py): a save that cannot fit is
refused before it starts, a directory that cannot be created raises in ``save``
and a background write that fails is raised by ``check`` at the next step.
Restores take the newest step that restores, moving damaged steps aside.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath

from bert_jax.checkpointing import guard
from bert_jax.checkpointing.fingerprint import (
    model_defaults,
    model_differences,
    model_fingerprint,
    optimizer_differences,
    optimizer_fingerprint,
)
from bert_jax.checkpointing.guard import CheckpointError, CheckpointMismatchError
from bert_jax.checkpointing.workdir import RUN_CONFIG_ITEM, run_record
from bert_jax.data import fingerprint

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "model_fingerprint",
    "optimizer_fingerprint",
]


class Checkpointer:
    """Saves and restores train state, data iterator and model description.

    Args:
      directory: the checkpoint directory (``WORKDIR/checkpoints``).
      keep: steps kept (None: all; reading commands must never drop one).
      model_config: the model dataclass, whose fields must match on restore.
      optimizer: ``optimizer_fingerprint(...)`` of the run; None skips that check.
      timeout_s: the longest a save may take in the background before ``wait`` and
        ``close`` give up with an error (a stalled disk must not hang the run).
      data_spec: ``Task.data_fingerprint()`` of the run's train stream; None: not checked.
      allow_new_data: a resume on other data restarts the stream instead of failing.
      run_config: the run config, saved with every step (``run_config`` item); None: not saved.
    """

    def __init__(
        self,
        directory: str | epath.Path,
        *,
        keep: int | None,
        model_config: Any,
        optimizer: dict[str, Any] | None = None,
        timeout_s: int = 1200,
        data_spec: dict[str, Any] | None = None,
        allow_new_data: bool = False,
        run_config: Any = None,
    ):
        # orbax's background commit thread rejects relative paths (and the next save
        # then waits on it forever), so `--workdir workdirs/x` is made absolute here.
        self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"checkpoint directory {self.directory} is a file (Not a directory): "
                "move it away or use another --workdir"
            )
        self.fingerprint = model_fingerprint(model_config)
        self.optimizer = optimizer
        self.timeout_s = timeout_s
        self.data_spec, self.allow_new_data = data_spec, allow_new_data
        self.run_record = None if run_config is None else run_record(run_config)
        self._defaults = model_defaults(model_config)
        guard.install_quiet_filter()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=True,
                # Created in the background, a directory that cannot be made (a file
                # in its place, a read-only disk) left the save waiting for 20 minutes.
                async_options=ocp.AsyncOptions(
                    timeout_secs=timeout_s, create_directories_asynchronously=False
                ),
            ),
            item_names=("state", "data", "model", "optimizer", "data_spec", RUN_CONFIG_ITEM),
        )
        self._pending: tuple[int, int] | None = None  # (step, bytes) of the save in flight
        self._params_reader: ocp.PyTreeCheckpointer | None = None  # restore_params only

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any) -> None:
        """Starts an async save of ``state`` and the iterator position at ``step``.

        Raises:
          CheckpointError: the previous save failed, this one cannot fit on the disk,
            or its directory cannot be created; the message names path and OS error.
        """
        # orbax would wait for the previous save anyway; waiting here raises its failure
        # under its own step and lets the free-space check see what it wrote.
        self.wait()
        guard.check_free_space(self.directory, step, state)
        items = {
            "state": ocp.args.StandardSave(state),
            "data": grain.checkpoint.CheckpointSave(data_iterator),
            "model": ocp.args.JsonSave(self.fingerprint),
        }
        if self.optimizer is not None:
            items["optimizer"] = ocp.args.JsonSave(self.optimizer)
        if self.data_spec is not None:
            items["data_spec"] = ocp.args.JsonSave(self.data_spec)
        if self.run_record is not None:
            items[RUN_CONFIG_ITEM] = ocp.args.JsonSave(self.run_record)
        nbytes = guard.bytes_needed(state)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:
            message = guard.write_error(error, self.directory, step, nbytes)
            raise CheckpointError(message) from None
        self._pending = (step, nbytes)

    def check(self) -> None:
        """Raises a background save that failed; returns at once while one is running."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return
        self._finish()

    def _finish(self) -> None:
        step, nbytes = self._pending
        self._pending = None
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            message = guard.write_error(error, self.directory, step, nbytes)
            raise CheckpointError(message) from None

    def wait(self) -> None:
        """Waits (at most ``timeout_s``) until the save in flight is durable."""
        if self._pending is None:
            return
        deadline = time.monotonic() + self.timeout_s
        while self._manager.is_saving_in_progress():
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"checkpoint of step {self._pending[0]} in {self.directory} did not finish "
                    f"within {self.timeout_s} s: check that disk, then rerun to resume"
                )
            time.sleep(0.05)
        self._finish()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pending is None:  # a stalled save would block close() too
                self._manager.close()
            if self._params_reader is not None:
                self._params_reader.close()
                self._params_reader = None

    def check_model(self, step: int) -> None:
        """Raises CheckpointMismatchError naming each field that differs from the checkpoint."""
        diffs = model_differences(self._read_json(step, "model"), self.fingerprint, self._defaults)
        what = "model"
        if not diffs and self.optimizer is not None and self._has_item(step, "optimizer"):
            diffs = optimizer_differences(self._read_json(step, "optimizer"), self.optimizer)
            what = "optimizer"
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} was written for a different {what}; "
                f"use another --workdir or the matching config. Differences: {'; '.join(diffs)}"
            )

    def _has_item(self, step: int, item: str) -> bool:
        return (self.directory / str(step) / item).is_dir()

    def _read_json(self, step: int, item: str) -> Any:
        return self._manager.restore(
            step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()})
        )[item]

    def _same_data(self, step: int) -> bool:
        """Whether ``step``'s data position applies to this run's stream (fingerprint.py)."""
        if self.data_spec is None:
            return True
        saved = self._read_json(step, "data_spec") if self._has_item(step, "data_spec") else None
        where = f"checkpoint {self.directory}/{step}"
        return fingerprint.check_resume(saved, self.data_spec, where, self.allow_new_data)

    def restore_latest(self, abstract_state: Any, data_iterator: Any = None):
        """``(state, step)`` of the newest step that restores; ``(None, None)`` if none exist.

        The iterator (if given) is restored in place to the same step. See ``_newest``.
        """
        return self._newest(lambda step: self._restore_items(step, abstract_state, data_iterator))

    def restore_params(self, abstract_params: Any, step: int | None = None):
        """``(params, step)``: only the ``params`` subtree of the ``state`` item.

        Args:
          abstract_params: ShapeDtypeStructs (with shardings) of the parameters.
          step: a given step; None takes the newest step that restores (``_newest``).

        Raises:
          FileNotFoundError: no checkpoint in the directory.
        """

        def restore(step: int):
            self.check_model(step)
            restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
            args = ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args={"params": restore_args},
                partial_restore=True,  # no optimizer state is read
            )
            # The manager's `state` handler is the standard one, which cannot restore a
            # subtree; the generic PyTree handler reads the same files.
            if self._params_reader is None:
                self._params_reader = ocp.PyTreeCheckpointer()
            path = self.directory / str(step) / "state"
            return self._params_reader.restore(path, args=args)["params"]

        if step is not None:
            return restore(step), step
        params, found = self._newest(restore)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: pretrain first")
        return params, found

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """Restores the state onto ``abstract_state``'s shardings and the iterator in place."""
        return self._restore_items(step, abstract_state, data_iterator)

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Restores only the train state (evaluation and export need no iterator)."""
        return self._restore_items(step, abstract_state, None)

    def _restore_items(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        self.check_model(step)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None and self._same_data(step):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except KeyError as error:  # grain: a position of another pipeline ('next_index')
            message = f"the data position in {self.directory}/{step} does not fit config.data"
            raise CheckpointMismatchError(f"{message} ({error}); {fingerprint.REMEDY}") from None
        except ValueError as error:
            if not any(m in str(error) for m in ("tree structures do not", "Structure mismatch")):
                raise
            # A checkpoint from before the optimizer item: orbax's mismatch is all we get.
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} holds an optimizer state of another "
                "layout than this config's: set config.optim (name, grad_clip_norm) as in the "
                "run that wrote it, or use another --workdir"
            ) from None
        logging.info("Restored checkpoint %s/%d", self.directory, step)
        return restored["state"]

    def _newest(self, restore: Callable[[int], Any]):
        """``(restore(step), step)`` for the newest step that restores (``(None, None)``
        without any): damaged steps are moved aside (guard.newest_that_restores)."""
        return guard.newest_that_restores(self._manager, self.directory, restore)
