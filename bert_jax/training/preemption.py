"""SIGTERM and Ctrl-C: finish the step, save, wait until durable, exit resumable.

The first SIGTERM or SIGINT asks the loop to stop at the next step boundary, where
every host agrees on the step, saves it and waits until orbax has committed it; then
``train_and_evaluate`` prints ``stopped at step N of M; rerun the same command to
resume`` and raises ``Preempted`` (exit code ``EXIT_PREEMPTED``). A second signal, or
no step boundary within ``config.train.stop_grace_s`` seconds of the first signal (or
of the last boundary reached since), ends the process at once with one line and exit
code ``128 + signal`` (``exit_forced``): the latest checkpoint already on disk is what
a rerun resumes from.

Signals are seen by a watcher thread through ``signal.set_wakeup_fd``: Python runs
signal handlers only in the main thread between bytecodes, so a loop blocked in a
C call (compilation, a stuck reader, a device wait) would never run them, and the
grace period could never start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

# sysexits.h EX_TEMPFAIL, "temporary failure; the user is invited to retry": the
# checkpoint is durable and rerunning resumes. Not 0, which a scheduler reads as done,
# and not 128 + signal, which by shell convention means killed without cleaning up.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_forced(signum: int) -> int:
    """Exit code of a forced stop (second signal, grace expired): the shell's 128 + signal."""
    return 128 + signum


class Preempted(SystemExit):
    """Stopped by a signal with the checkpoint at ``step`` durable; a rerun resumes.

    A ``SystemExit`` so that any caller's error handling lets it through and the
    process ends with ``EXIT_PREEMPTED`` without a traceback.
    """

    def __init__(self, step: int, num_steps: int, signal_name: str):
        super().__init__(EXIT_PREEMPTED)
        self.step, self.num_steps, self.signal_name = step, num_steps, signal_name


def _flush_and_exit(message: str, code: int) -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a broken log stream must not block the exit
            handler.flush()
    print(f"bert-jax: {message}", file=sys.stderr, flush=True)
    os._exit(code)  # the main thread may be blocked in C; only _exit ends it now


class Preemption:
    """Context manager owning SIGTERM and SIGINT while training.

    Args:
      grace_s: seconds the loop may take to reach a step boundary after the first
        signal (and between boundaries until the stop is agreed) before the
        process is ended.
      agree_every: on several hosts, the flag is all-gathered every this many steps
        (and at ``should_stop(step, force_check=True)``); ignored on one host.
    """

    def __init__(self, grace_s: float = 60.0, agree_every: int = 1):
        if grace_s <= 0:
            raise ValueError(f"config.train.stop_grace_s must be > 0, got {grace_s}")
        self.grace_s = float(grace_s)
        self.agree_every = max(1, int(agree_every))
        self.requested = False  # this host received a signal
        self.stopping = False  # all hosts agreed to stop at the current step
        self.signal_name: str | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._installed = False

    # -- signal plumbing ---------------------------------------------------------------
    def __enter__(self) -> Preemption:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only: nothing to install
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        # The handler itself does nothing: the watcher thread acts on the wakeup byte.
        self._previous = {s: signal.signal(s, lambda *_: None) for s in SIGNALS}
        self._installed = True
        threading.Thread(target=self._watch, name="bert-jax-signals", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._cancel_timer()
        if not self._installed:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for signum, previous in self._previous.items():
            # None: a handler installed outside Python (e.g. jax's preemption notifier).
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._installed = False
        self._writer.close()  # the watcher reads end-of-file and returns

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                self._reader.close()
                return
            for signum in data:
                if signum in SIGNALS:
                    self.notify(signum)

    def notify(self, signum: int) -> None:
        """Acts on a signal: the first asks for a stop, a second one exits at once."""
        name = signal.Signals(signum).name
        with self._lock:
            first = not self.requested
            self.requested = True
            self.signal_name = self.signal_name or name
        if not first:
            _flush_and_exit(
                f"{name} again: exiting now without saving; rerun the same command to resume "
                "from the latest checkpoint",
                exit_forced(signum),
            )
        logging.warning(
            "%s received: stopping at the next step with a checkpoint (a second signal, or "
            "no step within config.train.stop_grace_s=%g s, exits at once)",
            name,
            self.grace_s,
        )
        self._arm_timer(signum)

    def _arm_timer(self, signum: int) -> None:
        def expire():
            _flush_and_exit(
                f"{signal.Signals(signum).name}: no training step finished within "
                f"config.train.stop_grace_s={self.grace_s:g} s, exiting without saving; rerun "
                "the same command to resume from the latest checkpoint",
                exit_forced(signum),
            )

        with self._lock:
            self._cancel_timer()
            if self.stopping:
                return
            self._timer = threading.Timer(self.grace_s, expire)
            self._timer.daemon = True
            self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the loop's side ---------------------------------------------------------------
    def should_stop(self, step: int, *, force_check: bool = False) -> bool:
        """Called by every host after each step: whether all stop (and save) at ``step``.

        On one host this reads the flag (no communication). On several hosts a
        signal usually reaches only some of them, so the flag is all-gathered every
        ``agree_every`` steps (and when ``force_check``), the same steps on every host,
        and any host's signal stops them all at that step. jax's preemption sync
        service (``multihost_utils.reached_preemption_sync_point``) is not used: it
        learns of SIGTERM only through its own C++ handler, which ours replaces, and
        knows nothing of SIGINT or a grace period.
        """
        requested = self.requested
        if jax.process_count() > 1 and (force_check or step % self.agree_every == 0):
            flags = multihost_utils.process_allgather(np.int32(requested))
            requested = bool(np.any(flags))
        elif jax.process_count() > 1:
            requested = False  # only agreed values count, or hosts would stop apart
        if requested:
            with self._lock:
                self.stopping = True
                self.signal_name = self.signal_name or "a signal on another host"
                self._cancel_timer()
        elif self.requested:
            # A boundary was reached: the loop is alive; the grace period starts again.
            self._arm_timer(signal.Signals[self.signal_name].value)
        return requested

    def finish(self, step: int, num_steps: int, directory) -> None:
        """After the stop step's checkpoint is durable: one line, then ``Preempted``."""
        message = (
            f"stopped at step {step} of {num_steps}; rerun the same command to resume "
            f"({self.signal_name}; checkpoint {step} is in {directory})"
        )
        print(f"bert-jax: {message}", file=sys.stderr, flush=True)
        raise Preempted(step, num_steps, self.signal_name or "")
