"""Multi-host start-up: ``jax.distributed`` from flags, the environment or the cluster.

Where the coordinator, process count and process id come from, first match wins:

  1. ``--coordinator_address``, ``--num_processes``, ``--process_id``;
  2. ``BERT_JAX_COORDINATOR_ADDRESS``, ``BERT_JAX_NUM_PROCESSES``, ``BERT_JAX_PROCESS_ID``;
  3. ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (jax itself
     reads only the first);
  4. with none of those and ``config.distributed.auto_detect``, the managed cluster
     ``jax.distributed.initialize()`` detects itself (its cluster plugins: SLURM, Open
     MPI, Cloud TPU on GKE or GCE, Kubernetes Jobs), when it runs several processes;
     jax is then called with no coordinator, count or id and reads them itself.

Otherwise the run is single-process and nothing is initialised (a one-task SLURM job
or a single-host TPU VM needs no coordinator).

jax's own initialisation blocks until every process has registered and then
aborts the whole process from C++ (``F... Deadline Exceeded``, exit 134) when one
never does, which is easy to mistake for a crash. So the call runs under a
watchdog: at ``config.distributed.init_timeout_s`` (jax is given a few seconds
more) it prints one ``bert-jax: error: ...`` line naming the coordinator and the
processes that did not join, and exits with status 1.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from collections.abc import Mapping

import jax
from jax._src import clusters  # jax's own cluster plugins (what initialize() consults)

EXIT_CODE = 1
# jax's own deadline trails the watchdog's, so the clear message always wins the race.
_JAX_TIMEOUT_MARGIN_S = 10

_ENV_PREFIXES = ("BERT_JAX_", "JAX_")
_FIELDS = ("coordinator_address", "num_processes", "process_id")


class InitError(RuntimeError):
    """The process group cannot be formed (bad settings or an unreachable coordinator)."""


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """Where this process joins; None fields are left to jax's cluster detection.

    Attributes:
      coordinator_address: ``host:port`` of process 0's coordination service.
      num_processes: processes in the run.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      source: where the settings came from, for messages (``flags``, an
        environment prefix, or the detected cluster's name).
    """

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    source: str


def detect_cluster() -> ProcessGroup | None:
    """The managed cluster ``jax.distributed.initialize()`` would join, if it has >1 process.

    The environment is jax's choice (its first cluster plugin that finds itself, opt-in
    ones such as mpi4py aside); count and id are read for messages only.

    Raises:
      InitError: the cluster is there but cannot say its process count or id.
    """
    candidates = [e for e in clusters.ClusterEnv._cluster_types if not e.opt_in_only_method]
    env = next((e for e in candidates if e.is_env_present()), None)  # jax's order and rule
    if env is None:
        return None
    name = f"jax's {env.__name__}"
    try:
        count = env.get_process_count()
        process_id = env.get_process_id() if count > 1 else None
    except (KeyError, ValueError, RuntimeError) as error:
        raise InitError(
            f"{name} found a cluster but no process count and id ({error!r}); pass "
            "--coordinator_address, --num_processes and --process_id, or "
            "--config.distributed.auto_detect=False to run one process"
        ) from error
    return ProcessGroup(None, count, process_id, name) if count > 1 else None


def _int_setting(name: str, value, source: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InitError(f"{source}{name}={value!r} is not an integer") from None


def resolve(
    *,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    environ: Mapping[str, str],
    auto_detect: bool,
) -> ProcessGroup | None:
    """The process group from flags, then the environment, then the cluster; None: one process.

    ``environ`` gives the settings of steps 2 and 3; jax reads a cluster from ``os.environ``.

    Raises:
      InitError: naming the missing or inconsistent setting.
    """
    group = None
    if coordinator_address or num_processes is not None or process_id is not None:
        group = ProcessGroup(coordinator_address, num_processes, process_id, "--")
    for prefix in _ENV_PREFIXES:
        if group is None and any(environ.get(prefix + f.upper()) for f in _FIELDS):
            values = {f: environ.get(prefix + f.upper()) for f in _FIELDS}
            group = ProcessGroup(
                values["coordinator_address"] or None,
                _int_setting("NUM_PROCESSES", values["num_processes"], prefix),
                _int_setting("PROCESS_ID", values["process_id"], prefix),
                prefix,
            )
    if group is None:
        return detect_cluster() if auto_detect else None
    missing = [f for f in _FIELDS if getattr(group, f) in (None, "")]
    if missing:
        names = ", ".join(_setting_name(group.source, f) for f in missing)
        raise InitError(f"multi-host start-up needs {names} as well")
    if group.num_processes < 1:
        raise InitError(f"{_setting_name(group.source, 'num_processes')} must be >= 1")
    if not 0 <= group.process_id < group.num_processes:
        raise InitError(
            f"{_setting_name(group.source, 'process_id')}={group.process_id} is not in "
            f"[0, {group.num_processes})"
        )
    if ":" not in group.coordinator_address:
        raise InitError(
            f"{_setting_name(group.source, 'coordinator_address')}="
            f"{group.coordinator_address!r} needs the form HOST:PORT"
        )
    return group


def _setting_name(source: str, field: str) -> str:
    return f"--{field}" if source == "--" else f"{source}{field.upper()}"


def _process_range(ids: list[int]) -> str:
    if len(ids) == 1:
        return f"process {ids[0]}"
    return f"processes {ids[0]}-{ids[-1]}"


def _coordinator_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def timeout_message(group: ProcessGroup, timeout_s: float) -> str:
    """What the watchdog says when the group has not formed after ``timeout_s``."""
    address = group.coordinator_address or f"(detected from {group.source})"
    count, me = group.num_processes, group.process_id
    advice = (
        f"start all {count or 'the'} processes with the same coordinator and process count, "
        "or raise config.distributed.init_timeout_s"
    )
    if count is None or me is None:
        return f"the {group.source} process group did not form within {timeout_s:g} s; {advice}"
    if me == 0:
        others = list(range(1, count))
        verb = "did" if len(others) == 1 else "(some or all) did"
        return (
            f"{_process_range(others)} of {count} {verb} not join the coordinator {address} "
            f"within {timeout_s:g} s (this is process 0, the coordinator); {advice}"
        )
    if group.coordinator_address and not _coordinator_answers(group.coordinator_address):
        return (
            f"process {me} of {count} did not join the coordinator {address} within "
            f"{timeout_s:g} s: nothing answers there (process 0 hosts it: is it running, "
            f"and is the address right?); {advice}"
        )
    others = [i for i in range(count or 0) if i not in (0, me)]
    missing = f"; missing among {_process_range(others)}" if others else ""
    return (
        f"process {me} of {count} reached the coordinator {address} but the group did not "
        f"form within {timeout_s:g} s{missing}; {advice}"
    )


def _watchdog(group: ProcessGroup, timeout_s: float) -> threading.Timer:
    def expire():
        print(f"bert-jax: error: {timeout_message(group, timeout_s)}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)  # the main thread is blocked inside jax; only _exit ends it

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    return timer


def initialize(group: ProcessGroup | None, distributed_config) -> None:
    """Joins ``group`` (no-op for None) or exits with a clear error after the timeout.

    Args:
      group: from ``resolve``.
      distributed_config: ``config.distributed``: init_timeout_s, heartbeat_timeout_s.

    Raises:
      InitError: jax refused the settings (e.g. the coordinator port is taken).
    """
    if group is None:
        return
    timeout_s = float(distributed_config.init_timeout_s)
    if timeout_s <= 0:
        raise InitError(f"config.distributed.init_timeout_s must be > 0, got {timeout_s}")
    watchdog = _watchdog(group, timeout_s)
    watchdog.start()
    try:
        # A detected cluster (no coordinator here): jax reads it again, as with no arguments.
        explicit = {f: getattr(group, f) for f in _FIELDS} if group.coordinator_address else {}
        jax.distributed.initialize(
            **explicit,
            initialization_timeout=int(timeout_s) + _JAX_TIMEOUT_MARGIN_S,
            heartbeat_timeout_seconds=int(distributed_config.heartbeat_timeout_s),
        )
    except (RuntimeError, ValueError) as error:
        raise InitError(
            f"jax.distributed.initialize failed for process {group.process_id} of "
            f"{group.num_processes} (coordinator {group.coordinator_address}): {error}"
        ) from error
    finally:
        watchdog.cancel()
