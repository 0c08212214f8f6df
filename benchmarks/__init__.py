"""Throughput benchmarks, each printing a ratio against a named peer measured in the same run."""
