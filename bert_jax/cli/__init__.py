"""The ``bert-jax`` command line: dispatch (``main``), the commands that are not a
library's job elsewhere (``evaluate``, ``report``) and how a run ends on bad input
(``errors``).

``run`` is the ``bert-jax`` script and ``python -m bert_jax``: a command that trains on
this host's CPU restarts once with the host-heap malloc settings
(bert_jax/runtime/host_heap.py) before JAX and the rest are imported, which a restart
from ``main`` would import twice (1.8 s of each training command's start-up, measured
with `python -X importtime` on a loaded machine). It also raises the garbage collector's
threshold (``GC_THRESHOLD``): tracing and compiling allocate many short-lived objects in a
process whose heap holds JAX, flax and often torch, and one command-matrix row (every
command on a tiny T5, in one process) spent 2.7 s of 25 s in 2,610 collections at
Python's default of 700, 0.7 s in 142 at 10,000.
"""

import gc
import os
import sys

GC_THRESHOLD = (10_000, 10, 10)


def run() -> None:
    from bert_jax.runtime import host_heap  # the standard library only

    if host_heap.wanted(sys.argv[1:], os.environ):
        host_heap.reexec_with_heap_reuse()
    gc.set_threshold(*GC_THRESHOLD)
    from bert_jax.cli import main

    main.run()
