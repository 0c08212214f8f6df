r"""Prepares C4-format json.gz shards as a TFDS dataset in array_record format.

    python -m data_prep.prepare_tfds \
        --train_pattern 'data/c4_sample/c4-train.*.json.gz' \
        --eval_pattern 'data/c4_sample/c4-validation.*.json.gz' \
        --data_dir data/tfds

Then train with `--config.data.source=tfds --config.data.tfds_name=c4_shards
--config.data.tfds_data_dir=data/tfds --config.data.eval_split=validation`.
No TensorFlow is needed, neither here nor to read the result.
"""

from __future__ import annotations

from absl import app, flags, logging

from bert_jax.data import c4_tfds

_TRAIN_PATTERN = flags.DEFINE_string(
    "train_pattern", None, "Comma-separated globs of the train shards.", required=True
)
_EVAL_PATTERN = flags.DEFINE_string(
    "eval_pattern", None, "Comma-separated globs of the validation shards (optional)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write to.", required=True)
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSON field holding the document text.")


def main(argv):
    del argv
    builder = c4_tfds.prepare(
        _DATA_DIR.value, _TRAIN_PATTERN.value, _EVAL_PATTERN.value, _TEXT_FIELD.value
    )
    for split, info in builder.info.splits.items():
        logging.info("%s: %d documents", split, info.num_examples)
        print(f"{split}: {info.num_examples} documents in {builder.data_dir}")


if __name__ == "__main__":
    app.run(main)
