"""TFDS builder that turns C4-format json.gz shards into an array_record dataset.

Preparing needs no TensorFlow (tfds 4.9.10 writes array_record with its own
serializer) and no Beam: examples come from a plain Python generator, so this is
meant for corpora up to a few GB (the sample corpus, a slice of C4). Reading it
back needs neither the builder class nor TensorFlow:

    tfds.data_source('c4_shards', split='train', data_dir=DIR)

Use `python -m data_prep.prepare_tfds` to prepare it. `data_source` opens any prepared
split (this one or real `c4/en`) for `config.data.source=tfds`.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from etils import epath

from bert_jax.data import jsonl_source


class C4Shards(tfds.core.GeneratorBasedBuilder):
    """C4-format shards (`{"text", "url", "timestamp"}` per line) as a TFDS dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    # tfds 4.9.10 derives code_path through the `importlib_resources` backport,
    # which nothing installs on Python >= 3.11 (ModuleNotFoundError when preparing).
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(
        self,
        *,
        train_pattern: str | None = None,
        eval_pattern: str | None = None,
        text_field: str = "text",
        **kwargs,
    ):
        """Args: comma-separated globs of the train / validation shards (only
        needed to prepare; reading a prepared dataset needs none), the JSON
        field holding the text, and tfds builder kwargs (data_dir, file_format)."""
        self._train_pattern = train_pattern
        self._eval_pattern = eval_pattern
        self._text_field = text_field
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="C4-format json.gz shards converted by bert_jax.",
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "url": tfds.features.Text(),
                    "timestamp": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # local files only
        if not self._train_pattern:
            raise ValueError("C4Shards needs train_pattern to prepare the dataset.")
        splits = {"train": self._generate_examples(self._train_pattern)}
        if self._eval_pattern:
            splits["validation"] = self._generate_examples(self._eval_pattern)
        return splits

    def _generate_examples(self, pattern: str):
        for path in jsonl_source.expand_patterns(pattern):
            records = jsonl_source.JsonLinesIterDataset(path, self._text_field, whole_records=True)
            for index, record in enumerate(records):
                # Keys only need to be unique; TFDS shuffles by their hash.
                yield (
                    f"{os.path.basename(path)}:{index}",
                    {
                        "text": record[self._text_field],
                        "url": str(record.get("url", "")),
                        "timestamp": str(record.get("timestamp", "")),
                    },
                )


def prepare(
    data_dir: str, train_pattern: str, eval_pattern: str | None = None, text_field: str = "text"
) -> C4Shards:
    """Prepares `c4_shards` under data_dir in array_record format; returns the builder."""
    builder = C4Shards(
        train_pattern=train_pattern,
        eval_pattern=eval_pattern,
        text_field=text_field,
        data_dir=data_dir,
        file_format="array_record",
    )
    # Nothing is downloaded; keep tfds from creating ~/tensorflow_datasets/downloads.
    download_dir = os.path.join(data_dir, "downloads")
    builder.download_and_prepare(download_dir=download_dir)
    if os.path.isdir(download_dir) and not os.listdir(download_dir):
        os.rmdir(download_dir)
    return builder


def data_source(data_config, split_name: str):
    """Random access to a prepared TFDS split (`config.data.tfds_name`), no TensorFlow."""
    try:
        return tfds.data_source(
            data_config.tfds_name, split=split_name, data_dir=data_config.tfds_data_dir or None
        )
    except (tfds.core.registered.DatasetNotFoundError, NotImplementedError, ValueError) as error:
        raise ValueError(
            f"Cannot open TFDS dataset {data_config.tfds_name!r} split {split_name!r} in "
            f"data_dir {data_config.tfds_data_dir!r} for random access. It must be prepared in "
            "array_record format, e.g. `python -m data_prep.prepare_tfds --train_pattern ... "
            f"--data_dir DIR` or tfds download_and_prepare(file_format='array_record'): {error}"
        ) from error


class RecordText:
    """Picklable TFDS record -> text (TFDS returns Text features as UTF-8 bytes)."""

    def __init__(self, text_field: str):
        self._text_field = text_field

    def __call__(self, record) -> str:
        text = record[self._text_field]
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
