"""C4-format json.gz shards -> pre-tokenised ArrayRecord shards, as an Apache Beam job.

    python -m data_prep.tokenize_shards --input 'c4-train.*.json.gz' --output DIR \
        [--vocab data/vocab/spm.model] [--num_shards N] [--runner DirectRunner] [--overwrite] \
        [Beam pipeline options, e.g. --direct_num_workers=2 --direct_running_mode=multi_processing]

Each input shard (or, with --num_shards N, each of N contiguous runs of input shards)
becomes one output shard `DIR/<input name>.array_record` holding one record per
document, in input order: the document's sentences as token ids, exactly what the
raw-text pipeline computes (`Tokenizer.encode_document`; record layout in
`bert_jax/data/tokenized_source.py`). Bad lines are skipped and counted as the jsonl
reader does (it is the reader used here); documents without a sentence are dropped and
counted (`no_sentences`). The counts are Beam metrics (namespace `tokenize_shards`) and
go into `DIR/manifest.json` with the vocabulary's sha256, the token counts and the
source shards and every shard's record count and size (the reader reads exactly the
listed shards and checks both). Shards are written to a temporary name and renamed, so
a retried bundle never leaves a half shard; the whole directory is written beside DIR
and then swapped in (`data_prep/output_directory.py`), so DIR never holds the shards of
an earlier run beside a new manifest. A non-empty DIR is refused unless `--overwrite`
(which replaces only a directory of shards). A bad input glob, vocabulary or DIR ends in
one `error:` line naming it, exit 1 (`BERT_JAX_VERBOSE=1`: with the traceback).

The DirectRunner uses one worker process per core unless told otherwise; `--runner`
and every other Beam option pass through, so the same job runs on Dataflow, Flink or
Spark (DIR must then be a filesystem every worker mounts). `--runner=serial` converts
the shards in this process without Beam (for machines where apache-beam is not installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import traceback

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from bert_jax.cli import errors
from bert_jax.data import jsonl_source, tokenized_source
from bert_jax.data.tokenizer import Tokenizer
from data_prep import output_directory

try:
    import apache_beam as beam
except ImportError:  # only --runner=serial works then
    beam = None

METRICS_NAMESPACE = "tokenize_shards"
# One record per chunk: random access reads (and decompresses) only the document asked for.
WRITER_OPTIONS = "group_size:1"
_COUNTS = ("documents", "sentences", "tokens")


def assign_shards(input_paths: list[str], num_shards: int = 0) -> list[tuple[str, list[str]]]:
    """(output file name, input paths) per output shard: one per input, or `num_shards`
    contiguous runs of inputs (so every output keeps its documents in input order)."""
    if num_shards <= 0:
        num_shards = len(input_paths)
    if num_shards > len(input_paths):
        raise ValueError(f"--num_shards={num_shards} is more than the {len(input_paths)} inputs.")
    runs = np.array_split(np.arange(len(input_paths)), num_shards)
    if num_shards == len(input_paths):
        names = [_stem(path) for path in input_paths]
    else:
        names = [f"tokenized-{k:05d}-of-{num_shards:05d}" for k in range(num_shards)]
    return [
        (name + tokenized_source.SHARD_SUFFIX, [input_paths[i] for i in run])
        for name, run in zip(names, runs, strict=True)
    ]


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".json.gz", ".jsonl.gz", ".json", ".jsonl", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def convert_shard(
    output_path: str, input_paths: list[str], tokenizer: Tokenizer, text_field: str = "text"
) -> dict:
    """Tokenises the documents of `input_paths` (in order) into one ArrayRecord shard.

    Returns:
      The shard's manifest entry: output name, sources, documents / sentences / tokens
      written and the skip counts (bad lines as the jsonl reader counts them, plus
      no_sentences).
    """
    token_dtype = tokenized_source.token_dtype_for(tokenizer.spm_vocab_size)
    counts = dict.fromkeys(_COUNTS, 0)
    skips = jsonl_source.SkipCounts()
    temporary = f"{output_path}.tmp-{os.getpid()}"
    writer = ArrayRecordWriter(temporary, WRITER_OPTIONS)
    try:
        for input_path in input_paths:
            documents = iter(jsonl_source.JsonLinesIterDataset(input_path, text_field))
            for text in documents:
                sentences = tokenizer.encode_document(text)
                if not sentences:
                    skips.record("no_sentences", f"{input_path}: {text[:80]!r}")
                    continue
                writer.write(tokenized_source.encode_record(sentences, token_dtype))
                counts["documents"] += 1
                counts["sentences"] += len(sentences)
                counts["tokens"] += sum(len(sentence) for sentence in sentences)
            for reason, count in dataclasses.asdict(documents.skip_counts).items():
                setattr(skips, reason, getattr(skips, reason) + count)
    finally:
        writer.close()
    os.replace(temporary, output_path)
    return {
        "output": os.path.basename(output_path),
        "sources": [os.path.abspath(path) for path in input_paths],
        **counts,
        "bytes": os.path.getsize(output_path),
        "skip_counts": dataclasses.asdict(skips),
    }


def build_manifest(shards: list[dict], vocab_path: str, text_field: str) -> dict:
    """The directory's manifest: format, vocabulary checksum, totals and per-shard entries."""
    shards = sorted(shards, key=lambda shard: shard["output"])
    reasons = shards[0]["skip_counts"] if shards else dataclasses.asdict(jsonl_source.SkipCounts())
    return {
        "format": tokenized_source.FORMAT_NAME,
        "format_version": tokenized_source.FORMAT_VERSION,
        "vocab_path": os.path.abspath(vocab_path),
        "vocab_sha256": tokenized_source.file_sha256(vocab_path),
        "token_dtype": tokenized_source.token_dtype_for(Tokenizer(vocab_path).spm_vocab_size).str,
        "text_field": text_field,
        **{name: sum(shard[name] for shard in shards) for name in _COUNTS},
        "skip_counts": {r: sum(shard["skip_counts"][r] for shard in shards) for r in reasons},
        "shards": shards,
    }


def write_manifest(shards: list[dict], output_dir: str, vocab_path: str, text_field: str) -> dict:
    manifest = build_manifest(shards, vocab_path, text_field)
    path = os.path.join(output_dir, tokenized_source.MANIFEST_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)
    return manifest


if beam is not None:

    class TokenizeShardFn(beam.DoFn):
        """(output name, input paths) -> that shard written; yields its manifest entry."""

        def __init__(self, output_dir: str, vocab_path: str, text_field: str):
            self._output_dir = output_dir
            self._vocab_path = vocab_path
            self._text_field = text_field

        def setup(self):
            self._tokenizer = Tokenizer(self._vocab_path)

        def process(self, assignment):
            name, input_paths = assignment
            entry = convert_shard(
                os.path.join(self._output_dir, name), input_paths, self._tokenizer, self._text_field
            )
            for counter in (*_COUNTS, *entry["skip_counts"]):
                value = entry[counter] if counter in _COUNTS else entry["skip_counts"][counter]
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, counter).inc(value)
            yield entry


def run(
    input_pattern: str,
    output_dir: str,
    vocab_path: str,
    *,
    text_field: str = "text",
    num_shards: int = 0,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Runs the job: writes the shards and manifest into a staging directory beside
    `output_dir`, then swaps it in (`output_directory.py`).

    Args:
      overwrite: replace an `output_dir` that already holds tokenised shards (else a
        non-empty `output_dir` is refused).

    Returns:
      (the manifest written to `output_dir`, the job's counters: documents, sentences,
      tokens and each skip reason; Beam metrics, or the manifest's totals when serial).

    Raises:
      ValueError: `--input` matches no file, a bad vocabulary, or an `output_dir` that
        cannot be written or replaced (named).
    """
    try:
        input_paths = jsonl_source.expand_patterns(input_pattern)
    except ValueError as error:
        raise ValueError(f"--input: {error}") from error
    assignments = assign_shards(input_paths, num_shards)
    Tokenizer(vocab_path)  # fail here, not inside a worker, on a missing or wrong vocabulary
    staging = output_directory.stage(output_dir, overwrite=overwrite)
    try:
        manifest, counters = _run_into(
            staging, assignments, vocab_path, text_field, runner, beam_args or []
        )
        output_directory.swap_in(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous output stays as it was
        raise
    return manifest, counters


def _run_into(output_dir, assignments, vocab_path, text_field, runner, beam_args):
    """The shards and manifest written into `output_dir` (the staging directory)."""
    if runner == "serial":
        tokenizer = Tokenizer(vocab_path)
        shards = [
            convert_shard(os.path.join(output_dir, name), paths, tokenizer, text_field)
            for name, paths in assignments
        ]
        manifest = write_manifest(shards, output_dir, vocab_path, text_field)
        return manifest, {**{n: manifest[n] for n in _COUNTS}, **manifest["skip_counts"]}
    if beam is None:
        raise ImportError(
            "apache-beam is not installed: it is a pinned dependency (pyproject.toml); "
            "rerun `make venv`, or convert without Beam with --runner=serial (same shards)."
        )
    args = list(beam_args)
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=multi_processing")  # one worker process per core
    options = beam.options.pipeline_options.PipelineOptions([f"--runner={runner}", *args])
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Shards" >> beam.Create(assignments)
        | "Spread" >> beam.Reshuffle()  # one shard per bundle, so workers share the shards
        | "Tokenize" >> beam.ParDo(TokenizeShardFn(output_dir, vocab_path, text_field))
        | "Gather" >> beam.combiners.ToList()
        | "Manifest" >> beam.Map(write_manifest, output_dir, vocab_path, text_field)
    )
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    return tokenized_source.read_manifest(output_dir), counters


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="data_prep.tokenize_shards", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--input", required=True, help="comma-separated globs of json.gz shards")
    parser.add_argument("--output", required=True, help="directory for shards + manifest.json")
    parser.add_argument("--vocab", default="data/vocab/spm.model", help="sentencepiece model")
    parser.add_argument("--text_field", default="text")
    parser.add_argument("--num_shards", type=int, default=0, help="0: one per input shard")
    parser.add_argument("--runner", default="DirectRunner", help="a Beam runner, or 'serial'")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shards of a non-empty --output (only manifest.json and shards)",
    )
    args, beam_args = parser.parse_known_args(argv)
    try:
        manifest, counters = run(
            args.input,
            args.output,
            args.vocab,
            text_field=args.text_field,
            num_shards=args.num_shards,
            runner=args.runner,
            beam_args=beam_args,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as error:  # a bad input, output or vocabulary: one line
        if errors.verbose_requested(sys.argv if argv is None else argv):
            traceback.print_exception(error)
        parser.exit(1, f"{parser.prog}: error: {' '.join(str(error).split())}\n")
    print(f"{args.output}: {len(manifest['shards'])} shards; {counters}")


if __name__ == "__main__":
    main()
