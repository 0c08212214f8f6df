"""Keep XLA:CPU's per-step scratch memory mapped: glibc malloc settings for CPU training.

XLA:CPU allocates one buffer for all of a step's temporaries on every execution
(342 MB for T5 tiny at 32 x (128 + 32)) and frees it afterwards. Above 32 MB glibc
serves that with a fresh ``mmap`` and returns it with ``munmap``, so every step
page-faults and zeroes the whole buffer again: ~80k page faults per step, about 30 %
of the step's CPU time on the 2-core development machine (``perf stat -e page-faults``;
0 faults with the settings below). glibc reads its malloc settings only at process
start (``GLIBC_TUNABLES``; `mallopt` after start-up cannot move threads that already
have their own arena), so `reexec_with_heap_reuse` restarts the interpreter once with:

- ``arena_max=1``: every thread allocates from the main heap (a thread's own arena
  cannot hold a block larger than 64 MB and falls back to ``mmap``);
- ``mmap_max=0``: no allocation is served by ``mmap``;
- ``trim_threshold``: freed memory stays in the heap for the next step.

The cost is memory: the process keeps its peak heap until it exits (as the JAX and
PyTorch device allocators do on accelerators), and fragmentation lets it grow by a few
temporaries' worth before it settles (a step with a 64 MiB temporary: 346 MB resident,
602 MB after ~70 steps, flat from there to step 400; `tests/test_host_heap.py`).
`benchmarks/train_step.py` runs both contenders under these settings (``--host_heap``);
`bert-jax pretrain` and `finetune` restart with them on a host without an accelerator
(`wanted`; ``BERT_JAX_HOST_HEAP=0`` opts out).
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = ":".join(
    (
        "glibc.malloc.arena_max=1",
        "glibc.malloc.mmap_max=0",
        "glibc.malloc.trim_threshold=68719476736",  # 64 GiB: in practice never trim
    )
)


# Device nodes of the accelerators JAX drives: NVIDIA GPUs, TPU v4+ (accel), TPU VMs (vfio).
ACCELERATOR_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/accel0", "/dev/vfio")
COMMANDS = ("pretrain", "finetune", "compare")  # the ones that run training steps


def wanted(argv: list[str], environ, nodes=ACCELERATOR_NODES) -> bool:
    """Whether ``bert-jax ARGV`` trains on this host's CPU and so gains from `TUNABLES`.

    On an accelerator the step's temporaries live in device memory (the allocator keeps
    them), so the host's malloc does not matter and the restart is skipped.
    """
    if environ.get("BERT_JAX_HOST_HEAP", "1") == "0":
        return False
    if not any(arg in COMMANDS for arg in argv):
        return False
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(os.path.exists(node) for node in nodes)


def reexec_with_heap_reuse() -> None:
    """Restarts this Python command with `TUNABLES` unless GLIBC_TUNABLES is already set.

    A no-op off glibc (macOS, musl) and when the variable is set, so the restarted
    process (or a user's own choice) is kept. Call it first thing, before work starts.
    """
    if "GLIBC_TUNABLES" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = TUNABLES
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
