"""Documents/s of the tokenize_shards Beam job with 1 and 2 local workers vs in-process.

  python -m benchmarks.tokenize_shards                  # data/c4_sample train shards
  python -m benchmarks.tokenize_shards --input 'c4-train.0000*-of-01024.json.gz' --repeats=3
  python -m benchmarks.tokenize_shards --smoke          # one repeat, no warm-up

Contenders, alternating, each writing the whole job's output into a fresh directory:

  serial (the peer)  `data_prep.tokenize_shards` with --runner=serial: the same
                     `convert_shard` in this process, no Beam.
  Beam, N workers    --runner=DirectRunner --direct_running_mode=multi_processing
                     --direct_num_workers=N: Beam's portable runner with N SDK worker
                     processes, start-up and the manifest step included.

Documents/s is input documents written per wall second; per core divides by this
process's CPU seconds plus its children's (the Beam workers). The embedded corpus has
only 4 train shards (1,175 documents), so Beam's fixed start-up of a few seconds weighs
heavily; give --input a larger set of shards to see the per-document rate.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from benchmarks import common


def job(input_pattern: str, vocab_path: str, runner: str, workers: int = 0):
    """A contender: one run of the job into a fresh directory; counts documents."""

    def run():
        from data_prep import tokenize_shards

        output = tempfile.mkdtemp(prefix="tokenize_shards_bench_")
        beam_args = [f"--direct_num_workers={workers}"] if workers else []
        try:
            manifest, _ = tokenize_shards.run(
                input_pattern, output, vocab_path, runner=runner, beam_args=beam_args
            )
        finally:
            shutil.rmtree(output, ignore_errors=True)
        return {"documents": manifest["documents"], "tokens": manifest["tokens"]}

    return run


def _children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def main(argv=None) -> None:
    parser = common.pipeline_parser(__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(common.CORPUS_DIR / "c4-train.*.json.gz"))
    args = parser.parse_args(argv)
    try:
        import apache_beam
    except ImportError:
        print("apache-beam is not installed (see data_prep/tokenize_shards.py): nothing to time")
        return
    contenders = {"serial, in process (peer)": job(args.input, str(common.VOCAB_PATH), "serial")}
    for workers in (1, 2):
        contenders[f"Beam DirectRunner, {workers} worker(s)"] = job(
            args.input, str(common.VOCAB_PATH), "DirectRunner", workers
        )
    print(f"machine: {common.machine_info()}")
    repeats = 1 if args.smoke else args.repeats
    print(f"input: {args.input}; apache-beam {apache_beam.__version__}; {repeats} repeats")
    timings = {name: [] for name in contenders}
    for _ in range(repeats):  # alternating; the Beam workers' CPU is the children's
        for name, fn in contenders.items():
            children = _children_cpu_s()
            timing = common.timed(fn)
            timing.cpu_s += _children_cpu_s() - children
            timings[name].append(timing)
    summaries = {name: common.Summary(name, runs) for name, runs in timings.items()}
    rows = [
        [name, s.rate("documents"), s.rate("tokens"), s.cores_busy, s.rate_per_core("documents")]
        for name, s in summaries.items()
    ]
    common.print_table(["contender", "documents/s", "tokens/s", "cores busy", "docs/s/core"], rows)
    serial, one, two = summaries.values()
    common.print_ratio(one.rate("documents"), serial.rate("documents"), "Beam 1 worker / serial")
    common.print_ratio(two.rate("documents"), serial.rate("documents"), "Beam 2 workers / serial")


if __name__ == "__main__":
    main()
