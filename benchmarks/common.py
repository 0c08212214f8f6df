"""What every benchmark shares: timing (wall and CPU), alternation, machine info, tables.

A benchmark measures ours and a named peer in the same process, alternating
(ours, peer, ours, peer, ...) so that load from other processes on a shared machine
falls on both, and reports the median over repeats. CPU time is the process's
(all threads: sentencepiece, Rust tokenizers, torch and XLA thread pools), so
"per core" means per CPU-second actually spent, whatever the threading.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT / "data" / "c4_sample"
VOCAB_PATH = REPO_ROOT / "data" / "vocab" / "spm.model"


@dataclasses.dataclass
class Timing:
    """One timed run: wall and process CPU seconds and what was produced."""

    wall_s: float
    cpu_s: float
    counts: dict[str, float]


@dataclasses.dataclass
class Summary:
    """Medians over repeats of one contender."""

    name: str
    timings: list[Timing]

    @property
    def wall_s(self) -> float:
        return statistics.median(t.wall_s for t in self.timings)

    @property
    def cpu_s(self) -> float:
        return statistics.median(t.cpu_s for t in self.timings)

    @property
    def cores_busy(self) -> float:
        """CPU seconds per wall second: how many cores the contender kept busy."""
        return statistics.median(t.cpu_s / t.wall_s for t in self.timings)

    def rate(self, count: str) -> float:
        """Median over repeats of count per wall second."""
        return statistics.median(t.counts[count] / t.wall_s for t in self.timings)

    def rate_per_core(self, count: str) -> float:
        """Median over repeats of count per CPU second (the process's, all threads)."""
        return statistics.median(t.counts[count] / max(t.cpu_s, 1e-9) for t in self.timings)


def timed(fn: Callable[[], dict[str, float]]) -> Timing:
    """Runs ``fn`` once; ``fn`` returns what it produced, e.g. {'examples': 32}."""
    wall, cpu = time.perf_counter(), time.process_time()
    counts = fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu, dict(counts))


def alternate(
    contenders: dict[str, Callable[[], dict[str, float]]], *, warmup: int, repeats: int
) -> dict[str, Summary]:
    """Times each contender ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    Interleaving (a, b, a, b, ...) spreads the noise of a shared machine over all
    contenders instead of letting one of them run during a quiet or busy spell.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    timings: dict[str, list[Timing]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            timings[name].append(timed(fn))
    return {name: Summary(name, runs) for name, runs in timings.items()}


def machine_info() -> str:
    """One line: CPU model, cores visible, load average, Python and platform."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{model}; {cores} cores usable (os.cpu_count()={os.cpu_count()}); "
        f"load average {load}; Python {platform.python_version()}; {platform.system()}"
    )


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain aligned text table (floats get 3 significant digits or thousands separators)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_ratio(ours: float, peer: float, what: str) -> None:
    """The line every benchmark ends with: ``ratio (ours / peer): N.NN  [what]``."""
    print(f"ratio (ours / peer): {ours / peer:.2f}  [{what}]")


# The objective the BERT benchmark tables were measured with and the peers reproduce
# (MLM 15% + NSP): configs/bert.py's default recipe=cpu trains masked LM only at 30%.
BENCHMARK_RECIPES = {"bert": "recipe=short"}


def load_recipe(name: str, arg: str = ""):
    """configs/NAME.py:ARG with the embedded corpus and vocabulary as absolute paths."""
    from bert_jax.runtime.run_config import load_recipe as load

    arg = ",".join(a for a in (BENCHMARK_RECIPES.get(name, ""), arg) if a)
    return load(f"configs/{name}.py:{arg}", data_root=REPO_ROOT / "data")


def drain(iterator, num_batches: int, count, unit: str = "examples"):
    """A contender for `alternate`: pulls num_batches batches and sums their counts.

    ``count(batch) -> (units, tokens)``; the totals are ``{unit: ..., "tokens": ...}``.
    """

    def run():
        totals = {unit: 0.0, "tokens": 0.0}
        for _ in range(num_batches):
            units, tokens = count(next(iterator))
            totals[unit] += units
            totals["tokens"] += tokens
        return totals

    return run


def pipeline_parser(description: str) -> argparse.ArgumentParser:
    """The flags every input-pipeline benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_batches", type=int, default=None, help="per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    return parser


def pipeline_recipe(name: str, args: argparse.Namespace):
    """(config, max_documents, num_batches) to time recipe NAME's pipeline in this thread."""
    config = load_recipe(name)
    config.data.worker_count = 0
    config.data.prefetch = 0  # no prefetch thread: everything is timed in this thread
    max_documents = None
    if args.smoke:
        config.data.shuffle_buffer = 64
        max_documents = 64
    # Whole shuffle windows per repeat, so every repeat pays for the same window fills.
    num_batches = args.num_batches or (2 if args.smoke else config.data.shuffle_buffer // 32)
    return config, max_documents, num_batches


def pretokenized_documents(config, tokenizer, max_documents: int | None = None):
    """One pass over the train split's texts, sentence-split and encoded (for id-level runs).

    Returns:
      (texts, documents): the raw texts and, for each, its list of int32 sentence arrays;
      documents without any sentence are dropped from both.
    """
    from bert_jax.data import sources

    stream = sources.document_stream(
        config.data, "train", seed=config.seed, process_index=0, process_count=1, repeat=False
    )
    texts, documents = [], []
    for text in stream:
        sentences = tokenizer.encode_document(text)
        if sentences:
            texts.append(text)
            documents.append(sentences)
        if max_documents is not None and len(documents) >= max_documents:
            break
    return texts, documents


def pipeline_from_documents(config, objective, documents, *, global_batch_size: int):
    """`pipeline.create_dataset`'s stages after tokenization, fed pre-tokenized documents.

    The same grain classes in the same order (group -> index -> examples_from_documents ->
    finalize -> window shuffle -> batch), repeating the documents forever, so ours and a
    peer that starts from token ids begin at the same point.
    """
    import grain

    from bert_jax.data import pipeline

    # In memory already: no reader threads (grain's advice), as the json reader has none.
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    ds = grain.MapDataset.source(documents).repeat().to_iter_dataset(read_options)
    return pipeline.batches_from_documents(
        ds, config, objective, shuffle=True, batch_size=global_batch_size, process_index=0
    )


def tokenized_config(config, workdir: str | None = None):
    """A copy of `config` reading the train split from pre-tokenised ArrayRecord shards.

    Uses data/c4_tokenized/train (`make tokenized`) when it was made with this vocabulary;
    otherwise prepares the train shards into `workdir` (a temporary directory) first.
    """
    import tempfile

    from bert_jax.data import tokenized_source
    from data_prep import tokenize_shards

    tokenized = config.copy_and_resolve_references()
    shards = REPO_ROOT / "data" / "c4_tokenized" / "train"
    try:
        manifest = tokenized_source.read_manifest(str(shards))
        tokenized_source.check_vocabulary(manifest, str(shards), config.data.vocab_path)
    except ValueError:
        shards = pathlib.Path(workdir or tempfile.mkdtemp(prefix="c4_tokenized_"))
        tokenize_shards.run(
            config.data.train_pattern, str(shards), config.data.vocab_path, runner="serial"
        )
    tokenized.data.source = "tokenized"
    tokenized.data.train_pattern = str(shards / ("*" + tokenized_source.SHARD_SUFFIX))
    return tokenized


def objective_batches(objective, documents, *, docs_per_group: int, batch_size: int, seed: int):
    """Diagnostic, not a contender for the ratio: the objective's NumPy alone, no grain.

    Cycles over groups of pre-tokenized documents, calls `examples_from_documents` with the
    pipeline's per-group seeding and yields lists of ``batch_size`` examples. Next to the
    grain rows it shows how much of ours is the objective and how much the plumbing.
    """
    import numpy as np

    pending, group_index = [], 0
    while True:
        for start in range(0, len(documents), docs_per_group):
            rng = np.random.default_rng((seed, group_index, 0))
            group_index += 1
            pending.extend(
                objective.examples_from_documents(documents[start : start + docs_per_group], rng)
            )
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                del pending[:batch_size]
