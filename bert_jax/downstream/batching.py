"""How a fine-tuning split becomes batches: the one ``Task.batches`` every task uses.

A task's rows (labelled sentences, SQuAD windows) are addressed by index. Training
shuffles the indices forever; evaluation reads each split once, in order, padded to
whole global batches with copies of the last row that weigh 0 and carry
``example_index`` -1, so sharded sums stay exact and `runner.predict` can drop them.
A task only says how one row becomes model features (a `RowFeatures` map).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grain
import jax
import numpy as np


class RowFeatures(grain.transforms.Map):
    """(row index, is real) -> the row's features plus ``example_weight`` / ``example_index``.

    Subclasses implement ``features(index)``; the marks added here are what makes the
    padding rows of an evaluation pass harmless.
    """

    def features(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def map(self, element):
        index, real = element
        return {
            **self.features(index),
            "example_weight": np.float32(real),
            "example_index": np.int32(index if real else -1),
        }


def indexed_dataset(num_examples: int, split: str, global_batch_size: int, seed: int):
    """Per-host (example index, is real) pairs: shuffled forever for 'train'; otherwise one
    pass in order, padded to whole global batches, each host reading its part of each batch."""
    process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} not divisible by {process_count} hosts")
    if split == "train":
        indices = np.arange(num_examples)[process_index::process_count]
        ds = grain.MapDataset.source([(int(i), True) for i in indices])
        return ds.shuffle(seed=seed).repeat()  # a new permutation every epoch
    num_batches = -(-num_examples // global_batch_size)
    padded = np.arange(num_batches * global_batch_size).reshape(num_batches, process_count, -1)
    local = padded[:, process_index].reshape(-1)
    return grain.MapDataset.source(
        [(int(min(i, num_examples - 1)), i < num_examples) for i in local]
    )


def split_name(splits: Mapping[str, Sequence], split: str) -> str:
    """The key of ``splits`` the train loop's ``split`` reads: 'eval' is the first
    evaluation split (MNLI: validation_matched)."""
    if split != "eval":
        return split
    return next(name for name in splits if name != "train")


def make_batches(
    splits: Mapping[str, Sequence],
    row_features: Callable[[Sequence], RowFeatures],
    seed: int,
):
    """``(split, global_batch_size) -> grain.IterDataset`` of per-host batches.

    Args:
      splits: the rows of each split ('train' and the evaluation splits).
      row_features: the rows of one split -> the map turning one of them into features.
      seed: shuffling seed of the training split.
    """

    def batches(split: str, global_batch_size: int) -> grain.IterDataset:
        rows = splits[split_name(splits, split)]
        ds = indexed_dataset(len(rows), split, global_batch_size, seed)
        per_host = global_batch_size // jax.process_count()
        ds = ds.map(row_features(rows)).to_iter_dataset()
        return ds.batch(per_host, drop_remainder=split == "train")

    return batches
