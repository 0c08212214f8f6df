"""The grain input pipeline: documents -> objective examples -> per-host batches.

    document_stream (this host's texts)
      -> tokenizer.encode_document          # docs without sentences dropped, counted
      -> groups of docs_per_group documents
      -> objective.examples_from_documents  # rng seeded from (seed, group index, host)
      -> objective.finalize                 # pad / pack (T5), identity (BERT)
      -> window shuffle (train only)
      -> batch [global_batch_size // process_count, ...]
      -> mp_prefetch(worker_count) or thread prefetch
    then, in the train loop, `global_batch` -> jax.Array sharded over the mesh.

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


class _EncodedDocumentsIterator(grain.DatasetIterator):
    def __init__(self, parent, tokenizer):
        super().__init__(parent)
        self._tokenizer = tokenizer
        self.skip_counts = jsonl_source.SkipCounts()

    def __next__(self) -> list[np.ndarray]:
        while True:
            text = next(self._parent)
            sentences = self._tokenizer.encode_document(text)
            if sentences:
                return sentences
            self.skip_counts.record("no_sentences", repr(text[:80]))

    def get_state(self):
        return {"parent": self._parent.get_state(), "no_sentences": self.skip_counts.no_sentences}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self.skip_counts = jsonl_source.SkipCounts(no_sentences=int(state["no_sentences"]))


class EncodedDocumentsIterDataset(grain.IterDataset):
    """Texts -> lists of sentence token ids; documents with no sentence are dropped."""

    def __init__(self, parent: grain.IterDataset, tokenizer):
        super().__init__(parent)
        self._tokenizer = tokenizer

    def __iter__(self):
        return _EncodedDocumentsIterator(self._parent.__iter__(), self._tokenizer)


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


class ExamplesFromDocuments(grain.experimental.FlatMapTransform):
    """(group index, documents) -> the objective's examples for that group."""

    max_fan_out = 1 << 20  # only used by the MapDataset flavour of flat map

    def __init__(self, objective, seed: int, process_index: int):
        self._objective = objective
        self._seed = seed
        self._process_index = process_index

    def flat_map(self, element):
        group_index, documents = element
        rng = np.random.default_rng((self._seed, group_index, self._process_index))
        return self._objective.examples_from_documents(documents, rng)


def create_dataset(
    config,
    objective,
    tokenizer,
    *,
    split: str,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
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

    Returns:
      IterDataset of dicts of NumPy arrays with leading dimension
      global_batch_size // process_count; the last partial batch is dropped.

    Raises:
      ValueError: if global_batch_size is not divisible by process_count.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by {process_count} hosts."
        )
    data = config.data
    train = split == "train"
    ds = sources.document_stream(
        data,
        split,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        repeat=train,
    )
    ds = EncodedDocumentsIterDataset(ds, tokenizer)
    ds = ds.batch(data.docs_per_group, batch_fn=list)
    ds = IndexedGroupsIterDataset(ds)
    ds = grain.experimental.FlatMapIterDataset(
        ds, ExamplesFromDocuments(objective, config.seed, process_index)
    )
    ds = objective.finalize(ds)
    if train and data.shuffle_buffer > 1:
        ds = grain.experimental.WindowShuffleIterDataset(
            ds, window_size=data.shuffle_buffer, seed=config.seed
        )
    ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
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
