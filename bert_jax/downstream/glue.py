"""The nine GLUE tasks: label sets, official metrics and two readers.

Readers give `LabelledExample`s with the label ids of TFDS ``glue/*`` (so the two
sources agree):

- GLUE TSV folders as the GLUE download script writes them (``CoLA/train.tsv``,
  ``MNLI/dev_matched.tsv`` ...): tab separated, no quoting (sentences contain
  quote characters), a header row except CoLA, task-specific column indices.
- TFDS ``glue/<task>`` prepared in array_record format, read by random access
  with ``tfds.data_source`` (no TensorFlow).

Split names are TFDS's: ``train``, ``validation`` (MNLI: ``validation_matched``
and ``validation_mismatched``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os


@dataclasses.dataclass(frozen=True)
class LabelledExample:
    """One sentence (pair) with its label (class id, or a float score for regression)."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's fields live and how it is scored.

    Attributes:
      folder: directory of the task in the GLUE download (``SST-2``).
      labels: label strings of the TSV files, in TFDS label-id order; None for
        regression (STS-B).
      text_a_column, text_b_column, label_column: TSV column indices (negative
        counts from the end); text_b_column None for single-sentence tasks.
      header: whether the TSV files start with a header row.
      eval_files: evaluation split name -> TSV file name.
      tfds_text_a, tfds_text_b: feature names in TFDS ``glue/<task>``.
      metrics: the official metrics, the first one is the headline.
      score_range: the closed range of a regression score (STS-B: 0 to 5); None for classes.
    """

    name: str
    folder: str
    labels: tuple[str, ...] | None
    text_a_column: int
    text_b_column: int | None
    label_column: int
    header: bool
    tfds_text_a: str
    tfds_text_b: str | None
    metrics: tuple[str, ...]
    eval_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)
    score_range: tuple[float, float] | None = None

    @property
    def num_labels(self) -> int:
        """Output units of the head: 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.eval_files)

    def tsv_file(self, split: str) -> str:
        files = {"train": "train.tsv", **dict(self.eval_files)}
        if split not in files:
            raise ValueError(f"GLUE {self.name} has no split {split!r}; know {sorted(files)}")
        return files[split]


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        # CoLA rows: source, label, original label, sentence (no header).
        GlueTask("cola", "CoLA", _BINARY, 3, None, 1, False, "sentence", None, ("matthews_corr",)),
        GlueTask("sst2", "SST-2", _BINARY, 0, None, 1, True, "sentence", None, ("accuracy",)),
        # MRPC rows: Quality, #1 ID, #2 ID, #1 String, #2 String.
        GlueTask(
            "mrpc", "MRPC", _BINARY, 3, 4, 0, True, "sentence1", "sentence2", ("f1", "accuracy")
        ),
        # QQP rows: id, qid1, qid2, question1, question2, is_duplicate.
        GlueTask(
            "qqp", "QQP", _BINARY, 3, 4, 5, True, "question1", "question2", ("f1", "accuracy")
        ),
        # STS-B rows: index genre filename year old_index source1 source2 s1 s2 score.
        GlueTask(
            "stsb",
            "STS-B",
            None,
            7,
            8,
            -1,
            True,
            "sentence1",
            "sentence2",
            ("pearson", "spearman"),
            score_range=(0.0, 5.0),
        ),
        # MNLI rows: index promptID pairID genre 4 parses, sentence1, sentence2, labels, gold.
        GlueTask(
            "mnli",
            "MNLI",
            ("entailment", "neutral", "contradiction"),
            8,
            9,
            -1,
            True,
            "premise",
            "hypothesis",
            ("accuracy",),
            (
                ("validation_matched", "dev_matched.tsv"),
                ("validation_mismatched", "dev_mismatched.tsv"),
            ),
        ),
        GlueTask(
            "qnli", "QNLI", _ENTAILMENT, 1, 2, -1, True, "question", "sentence", ("accuracy",)
        ),
        GlueTask(
            "rte", "RTE", _ENTAILMENT, 1, 2, -1, True, "sentence1", "sentence2", ("accuracy",)
        ),
        # WNLI labels: 0 not_entailment, 1 entailment (TFDS order).
        GlueTask("wnli", "WNLI", _BINARY, 1, 2, -1, True, "sentence1", "sentence2", ("accuracy",)),
    )
}


# The embedded default task (`rotten_tomatoes`) has SST-2's labels and metrics.
ROTTEN_TOMATOES = dataclasses.replace(TASKS["sst2"], name="rotten_tomatoes", folder="")


def task_spec(name: str) -> GlueTask:
    """The table entry of GLUE task ``name``; Rotten Tomatoes is scored like SST-2."""
    if name == ROTTEN_TOMATOES.name:
        return ROTTEN_TOMATOES
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; know {sorted(TASKS)}")
    return TASKS[name]


def _task_directory(data_dir: str, task: GlueTask) -> str:
    """``data_dir`` may be the GLUE root (holding ``SST-2/``) or the task folder itself."""
    nested = os.path.join(data_dir, task.folder)
    return nested if os.path.isdir(nested) else data_dir


def read_tsv(data_dir: str, task: GlueTask | str, split: str) -> list[LabelledExample]:
    """Labelled examples of ``split`` from a GLUE TSV folder.

    Raises:
      FileNotFoundError: the TSV file is missing.
      ValueError: naming ``file:line`` for a row with too few columns, an unknown
        label or a score that is not a number in the task's ``score_range``.
    """
    task = task_spec(task) if isinstance(task, str) else task
    path = os.path.join(_task_directory(data_dir, task), task.tsv_file(split))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: config.finetune.data_dir must hold the GLUE TSV folders "
            f"(e.g. {task.folder}/{task.tsv_file(split)})"
        )
    columns = [task.text_a_column, task.label_column]
    columns += [task.text_b_column] if task.text_b_column is not None else []
    needed = max(c + 1 if c >= 0 else -c for c in columns)
    label_ids = {label: i for i, label in enumerate(task.labels or ())}
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if task.header and reader.line_num == 1:
                continue
            if not any(cell.strip() for cell in row):
                continue  # blank line (e.g. a trailing newline)
            if len(row) < needed:
                raise ValueError(
                    f"{where}: {len(row)} tab-separated columns, GLUE {task.name} rows need "
                    f"at least {needed}"
                )
            raw_label = row[task.label_column].strip()
            if task.is_regression:
                label: int | float = regression_score(task, raw_label, where)
            elif raw_label in label_ids:
                label = label_ids[raw_label]
            else:
                raise ValueError(f"{where}: label {raw_label!r} not in {list(label_ids)}")
            text_b = row[task.text_b_column] if task.text_b_column is not None else None
            guid = f"{task.name}-{split}-{len(examples)}"
            examples.append(LabelledExample(guid, row[task.text_a_column], text_b, label))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def regression_score(task: GlueTask, raw, where: str) -> float:
    """``raw`` as a float in ``task.score_range``; ValueError naming ``where`` otherwise."""
    try:
        score = float(raw)
    except ValueError:
        raise ValueError(f"{where}: score {raw!r} is not a number") from None
    low, high = task.score_range or (-math.inf, math.inf)
    if not low <= score <= high:  # NaN too: a scale error would train on wrong targets
        raise ValueError(f"{where}: score {raw!r} outside GLUE {task.name}'s {low:g}..{high:g}")
    return score


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(
    task: GlueTask | str, split: str, data_dir: str | None = None, tfds_name: str | None = None
) -> list[LabelledExample]:
    """Labelled examples of ``split`` from TFDS ``glue/<task>`` prepared in array_record.

    Args:
      task: the GLUE task (its feature names are used).
      split: a TFDS split name (``train``, ``validation``, ``validation_matched`` ...).
      data_dir: the TFDS data directory; None uses TFDS's default.
      tfds_name: defaults to ``glue/<task>``; another dataset with the same features works.
    """
    import tensorflow_datasets as tfds  # heavy import, only for this reader

    task = task_spec(task) if isinstance(task, str) else task
    name = tfds_name or f"glue/{task.name}"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except (tfds.core.registered.DatasetNotFoundError, NotImplementedError, ValueError) as error:
        raise FileNotFoundError(
            f"cannot open TFDS {name!r} split {split!r} in data_dir {data_dir!r} for random "
            "access: prepare it in array_record format (tfds download_and_prepare with "
            f"file_format='array_record') or use the GLUE TSV reader: {error}"
        ) from error
    examples = []
    for index in range(len(source)):
        record = source[index]
        label = record["label"]
        if not task.is_regression and not 0 <= int(label) < task.num_labels:
            raise ValueError(f"TFDS {name} {split}[{index}]: label {label} (unlabelled split?)")
        text_b = _text(record[task.tfds_text_b]) if task.tfds_text_b else None
        examples.append(
            LabelledExample(
                f"{task.name}-{split}-{index}",
                _text(record[task.tfds_text_a]),
                text_b,
                regression_score(task, label, f"TFDS {name} {split}[{index}]")
                if task.is_regression
                else int(label),
            )
        )
    return examples


def read_examples(
    task: GlueTask | str, split: str, data_dir: str, source: str = "tsv", tfds_name: str = ""
) -> list[LabelledExample]:
    """``source`` 'tsv' (GLUE TSV folders in ``data_dir``) or 'tfds' (TFDS data_dir)."""
    if source == "tsv":
        return read_tsv(data_dir, task, split)
    if source == "tfds":
        return read_tfds(task, split, data_dir, tfds_name or None)
    raise ValueError(f"GLUE source {source!r}: choose 'tsv' or 'tfds'")
