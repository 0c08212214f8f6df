"""Where and how a run executes: the run config every recipe shares (``run_config``),
the hosts (``distributed``), the device mesh and logical axes (``sharding``) and the
host allocator settings for XLA:CPU (``host_heap``)."""
