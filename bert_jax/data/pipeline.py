"""The grain input pipeline: documents -> objective examples -> per-host batches.

    document_stream (this host's texts)
      -> tokenizer.encode_document          # docs without sentences dropped, counted
      (or, with source=tokenized, this host's pre-tokenised documents: tokenized_source.py)
      -> groups of docs_per_group documents
      -> objective.example_block or .examples_from_documents
                                            # rng seeded from (seed, group index, host)
      -> objective.finalize                 # pad / pack (T5), identity (BERT)
      -> window shuffle (train only; window_shuffle.py)
      -> batch [global_batch_size // process_count, ...]
    From the group on, an element is a group's whole chunk of examples (a block of
    rows from `example_block`, or a list of example dicts), and the buffered stages
    (window_shuffle.BufferedIterDataset) cut their buffers across chunks: the same
    examples, windows and batches as one example per element, without a Python hop and
    grain's per-element hooks for each example.
      -> mp_prefetch(worker_count) or thread prefetch
    then, in the train loop, `global_batch` -> jax.Array sharded over the mesh, and
`skip_metrics(iterator)` -> this host's skipped-record counts for the log line.

Everything before `global_batch` is NumPy. The iterator is checkpointable:
`it.get_state()` after k batches, `it.set_state(state)` on a fresh iterator,
and the next batches are exactly the ones the old iterator would have given.
With worker_count > 0 each grain worker process reads every worker_count-th
json shard (or document), and the output depends on worker_count (still
deterministic). Worker processes are spawned: the program needs a
`if __name__ == '__main__':` guard.
"""

from __future__ import annotations

import grain
import jax
import numpy as np
from absl import flags, logging

from bert_jax.data import jsonl_source, sources
from bert_jax.data.faults import skip_metrics
from bert_jax.data.window_shuffle import batch_rows, window_shuffle

__all__ = ["batches_from_documents", "create_dataset", "global_batch", "skip_metrics"]


class _IndexedGroupsIterator(grain.DatasetIterator):
    def __init__(self, parent):
        super().__init__(parent)
        self._count = 0

    def __next__(self):
        group = next(self._parent)
        # Inside a grain worker, number groups globally so that workers draw
        # different random streams (the same scheme as grain's random_map).
        mp_context = self._ctx.mp_context
        index = mp_context.process_index + self._count * mp_context.process_count
        self._count += 1
        return index, group

    def get_state(self):
        return {"parent": self._parent.get_state(), "count": self._count}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._count = int(state["count"])


class IndexedGroupsIterDataset(grain.IterDataset):
    """Pairs each element with its index: (index, element)."""

    def __iter__(self):
        return _IndexedGroupsIterator(self._parent.__iter__())


class ExamplesFromDocuments(grain.transforms.Map):
    """(group index, documents) -> the objective's chunk of examples for that group.

    A block of rows where the objective builds them as arrays (`example_block`),
    otherwise its list of example dicts (`examples_from_documents`).
    """

    def __init__(self, objective, seed: int, process_index: int, draw: int = 0):
        self._objective = objective
        self._seed = seed
        self._process_index = process_index
        self._draw = (draw,) if draw else ()  # draw 0 keeps the seeds every run had before

    def map(self, element):
        group_index, documents = element
        rng = np.random.default_rng((self._seed, group_index, self._process_index, *self._draw))
        build = getattr(self._objective, "example_block", None)
        if build is None:
            build = self._objective.examples_from_documents
        return build(documents, rng)


def batches_from_documents(
    ds: grain.IterDataset,
    config,
    objective,
    *,
    shuffle: bool,
    batch_size: int,
    process_index: int,
    draw: int = 0,
) -> grain.IterDataset:
    """Documents -> groups -> the objective's examples -> finalize -> shuffle -> batches.

    Args:
      ds: IterDataset of documents (lists of int32 sentence ids), e.g. `sources.documents(...)`.
      config: the run config; reads seed, data.docs_per_group and data.shuffle_buffer.
      objective: has `examples_from_documents(documents, rng)` (or `example_block`) and
        `finalize(ds, chunks=True)`.
      shuffle: window-shuffle the examples (the train split).
      batch_size: examples per batch (this host's share); the last partial batch is dropped.
      process_index: this host, in the per-group seeds.
      draw: 0, or another draw of the same documents' examples (other windows and masks).
    """
    ds = ds.batch(config.data.docs_per_group, batch_fn=list)
    ds = IndexedGroupsIterDataset(ds)
    ds = ds.map(ExamplesFromDocuments(objective, config.seed, process_index, draw))
    ds = objective.finalize(ds, chunks=True)
    if shuffle and config.data.shuffle_buffer > 1:
        window = config.data.shuffle_buffer
        ds = window_shuffle(ds, window_size=window, seed=config.seed, chunks=True)
    return batch_rows(ds, batch_size)


def create_dataset(
    config,
    objective,
    tokenizer,
    *,
    split: str,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    draw: int = 0,
) -> grain.IterDataset:
    """Per-host batches of objective examples.

    Args:
      config: the run config; reads config.seed and config.data (source,
        patterns / tfds fields, docs_per_group, shuffle_buffer, worker_count,
        prefetch).
      objective: has `examples_from_documents(documents, rng)` and `finalize(ds)`.
      tokenizer: has `encode_document(text) -> list[np.ndarray]`; picklable.
      split: 'train' (repeats forever, shuffled) or 'eval' (one pass, fixed
        order: the same batches every time it is created).
      global_batch_size: examples per step over all hosts.
      process_index, process_count: this host; default to jax's.
      draw: 0, or (held-out splits) another fixed draw of the same documents' windows and
        masks, for a split smaller than the evaluation (train.eval_batches).

    Returns:
      IterDataset of dicts of NumPy arrays with leading dimension
      global_batch_size // process_count; the last partial batch is dropped.

    Raises:
      ValueError: if global_batch_size is not divisible by process_count.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    input_shards = config.data.input_shards or process_count
    if input_shards != process_count:
        host = (process_index, process_count, input_shards)
        return _host_streams(config, objective, tokenizer, split, global_batch_size, *host, draw)
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by {process_count} hosts."
        )
    data = config.data
    train = split == "train"
    ds = sources.documents(
        data,
        split,
        tokenizer,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        repeat=train,
        # e.g. 2 for next-sentence prediction: fewer warns (train) or fails (eval)
        min_documents=getattr(objective, "min_documents", 1),
    )
    ds = batches_from_documents(
        ds,
        config,
        objective,
        shuffle=train,
        batch_size=global_batch_size // process_count,
        process_index=process_index,
        draw=draw,
    )
    if data.worker_count > 0:
        # grain reads its absl flags when it starts workers; outside `app.run`
        # (notebooks, pytest) nothing parsed them, so take their defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        _warn_if_workers_share_shards(data, split, process_count)
        options = grain.MultiprocessingOptions(
            num_workers=data.worker_count, per_worker_buffer_size=max(1, data.prefetch)
        )
        return ds.mp_prefetch(options)
    if data.prefetch > 0:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=data.prefetch)
    return ds


def _host_streams(
    config,
    objective,
    tokenizer,
    split,
    global_batch_size,
    process_index,
    process_count,
    shards,
    draw,
) -> grain.IterDataset:
    """This host's run of the `shards` (config.data.input_shards) streams, one batch each.

    Stream s is the pipeline of host s of `shards` and fills rows [s * b, (s + 1) * b)
    of every global batch (b = global_batch_size // shards); host p runs streams
    p * k ... (p + 1) * k - 1 (k = shards // process_count). So the global batch
    depends on `shards`, never on how many processes share the streams.
    """
    if shards % process_count:
        raise ValueError(
            f"config.data.input_shards={shards} is not a multiple of the {process_count} processes"
        )
    per_host = shards // process_count
    streams = [
        create_dataset(
            config,
            objective,
            tokenizer,
            split=split,
            global_batch_size=global_batch_size,
            process_index=stream,
            process_count=shards,
            draw=draw,
        )
        for stream in range(process_index * per_host, (process_index + 1) * per_host)
    ]
    if len(streams) == 1:
        return streams[0]
    # Not strict: eval streams of unequal length stop at the shortest.
    return grain.experimental.ZipIterDataset(streams, strict=False).map(_concatenate_batches)


def _concatenate_batches(batches: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


def _warn_if_workers_share_shards(data, split: str, process_count: int) -> None:
    """Workers split json shards by file: with fewer shards than workers, some
    workers either idle (eval) or read the next epoch of the same shards (train)."""
    if data.source != "jsonl":
        return
    pattern = data.train_pattern if split == "train" else data.eval_pattern
    shards_per_host = len(jsonl_source.expand_patterns(pattern)) // process_count
    if shards_per_host < data.worker_count:
        logging.warning(
            "%d json shard(s) per host for %d grain workers: workers will %s. Use "
            "worker_count <= %d.",
            shards_per_host,
            data.worker_count,
            "read the same documents concurrently" if split == "train" else "idle",
            max(1, shards_per_host),
        )


def global_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """Assembles the hosts' batches into global jax.Arrays split along the batch axis.

    Args:
      batch: this host's batch, leading dimension global_batch // process_count.
      sharding: e.g. NamedSharding(mesh, PartitionSpec(('data', 'fsdp'))); it
        applies to the leading axis of every feature.
    """
    return jax.tree.map(
        lambda local: jax.make_array_from_process_local_data(sharding, local), batch
    )
