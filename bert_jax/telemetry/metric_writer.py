"""Progress on the console, TensorBoard event files and a JSON-lines metrics log.

Only process 0 writes. ``metrics.jsonl`` in the workdir is what
``bert-jax report`` reads to draw learning curves. A run killed mid-write (or stopped
by a full disk) can leave its last line cut; the next run moves that line aside
(``set_aside_cut_line``) so that its records start on a fresh line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

import jax


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch when torch is not loaded yet.

    tensorboardX tries ``import torch`` at import time only to accept torch tensors
    (which we never pass) and carries on without it on ImportError; importing tensorboardX
    with torch took 1.1-1.3 s on a quiet machine, without it 0.5 s (JAX included; 3.4 s
    of torch under load, `python -X importtime`).
    ``sys.modules["torch"] = None`` makes that one import fail fast; the entry is removed
    afterwards, so a later ``import torch`` (transformers, the export tests) works as usual.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def set_aside_cut_line(path: str) -> str | None:
    """Moves a cut last line of a JSON-lines file to ``PATH.partial-TIME``.

    A last line without its newline that still parses (only the newline was lost) gets
    its newline instead. The cut bytes are written (and synced) aside before the file is
    truncated, so a kill in between loses nothing.

    Returns:
      The file holding the cut line, or None when ``path`` ends cleanly (or is absent).
    """
    if not os.path.exists(path):
        return None
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        keep = end = size
        while end > 0:  # back to the byte after the last newline, a block at a time
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            keep = start + newline + 1 if newline >= 0 else start
            if newline >= 0:
                break
            end = start
        f.seek(keep)
        cut = f.read()
        if not cut:
            return None
        try:
            json.loads(cut)
        except ValueError:
            pass
        else:
            f.write(b"\n")
            return None
        aside = f"{path}.partial-{time.strftime('%Y%m%d-%H%M%S')}"
        with open(aside, "ab") as out:
            out.write(cut + b"\n")
            out.flush()
            os.fsync(out.fileno())
        f.truncate(keep)
    return aside


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class MetricWriter:
    """Writes scalars and reports speed (steps/s, tokens/s, TFLOP/s, MFU) and ETA.

    Args:
      workdir: where ``tensorboard/`` and ``metrics.jsonl`` go.
      total_steps: the run's last step (for the ETA).
      tokens_per_step: global tokens one step trains on.
      num_devices: devices sharing a step (TFLOP/s are per device).
      peak_flops: peak FLOP/s of one device (``bert_jax.telemetry.flops``); None logs no MFU.
    """

    def __init__(
        self,
        workdir: str,
        *,
        total_steps: int,
        tokens_per_step: int,
        num_devices: int = 1,
        peak_flops: float | None = None,
    ):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.num_devices = num_devices
        self.peak_flops = peak_flops
        self.flops_per_step: float | None = None  # set_flops_per_step, once a batch is seen
        self._last_time: float | None = None
        self._last_step: int | None = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))
            path = os.path.join(workdir, "metrics.jsonl")
            aside = set_aside_cut_line(path)
            if aside is not None:
                logging.warning(
                    "%s ended in a cut line (a run stopped mid-write): moved it to %s; "
                    "new records start on a fresh line",
                    path, aside,
                )  # fmt: skip
            self._jsonl = open(path, "a")  # noqa: SIM115

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        """Logs ``scalars`` under ``split/`` to TensorBoard and metrics.jsonl."""
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(f"{split}/{name}", float(value), step)
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def start(self, step: int) -> None:
        """Marks the step from which speed is measured (after compilation)."""
        self._last_time, self._last_step = time.perf_counter(), step

    def set_flops_per_step(self, flops: float | None) -> None:
        """Model FLOPs of one global step (``bert_jax.telemetry.flops.train_flops_per_step``)."""
        self.flops_per_step = flops

    def speed(self, step: int) -> dict[str, float]:
        """Steps/s, tokens/s, TFLOP/s per device and MFU since the last call; ETA in s."""
        now = time.perf_counter()
        if self._last_time is None or step <= self._last_step:
            self.start(step)
            return {}
        steps_per_sec = (step - self._last_step) / (now - self._last_time)
        self._last_time, self._last_step = now, step
        speed = {
            "steps_per_sec": steps_per_sec,
            "tokens_per_sec": steps_per_sec * self.tokens_per_step,
            "eta_sec": (self.total_steps - step) / steps_per_sec,
        }
        if self.flops_per_step is not None:
            flops_per_device = steps_per_sec * self.flops_per_step / self.num_devices
            speed["tflops_per_device"] = flops_per_device / 1e12
            if self.peak_flops is not None:
                speed["mfu"] = flops_per_device / self.peak_flops
        return speed

    def report_train(self, step: int, metrics: Mapping[str, float]) -> None:
        """Console progress line plus the scalars."""
        speed = self.speed(step)
        scalars = {**metrics, **speed}
        self.write(step, "train", scalars)
        if self.enabled:
            parts = [f"step {step}/{self.total_steps}"]
            parts += [f"{k} {v:.4g}" for k, v in metrics.items()]
            if speed:
                parts += [
                    f"{speed['steps_per_sec']:.2f} steps/s",
                    f"{speed['tokens_per_sec']:,.0f} tokens/s",
                ]
                if "tflops_per_device" in speed:
                    parts.append(f"{speed['tflops_per_device']:.3g} TFLOP/s/device")
                if "mfu" in speed:
                    parts.append(f"MFU {100 * speed['mfu']:.1f}%")
                parts.append(f"ETA {_format_duration(speed['eta_sec'])}")
            logging.info(" | ".join(parts))

    def report_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.write(step, "eval", metrics)
        if self.enabled:
            logging.info(
                "eval step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            )

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
