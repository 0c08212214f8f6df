"""What a run reports: console progress, TensorBoard and ``metrics.jsonl``
(``metric_writer``), and model FLOPs / MFU (``flops``)."""
