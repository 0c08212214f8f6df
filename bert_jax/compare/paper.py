"""The published numbers our comparison tables sit beside.

Copied from the papers (kept here so a report never reads files outside the repository):

- T5, Raffel et al. 2019, arXiv:1910.10683v4: Table 1 (baseline average, its standard
  deviation over 10 runs, no pre-training) and Tables 4-7 (objectives, corruption rate,
  span length). Columns: GLUE average, CNN/DM ROUGE-2-F, SQuAD EM, SuperGLUE average,
  WMT En-De / En-Fr / En-Ro BLEU. The baseline (★) rows repeat Table 1's baseline.
- ALBERT, Lan et al. 2019, arXiv:1909.11942: Table 5 (ALBERT-base, 125k steps):
  intrinsic MLM / NSP / SOP accuracy, SQuAD1.1 and SQuAD2.0 F1 and EM, MNLI, SST-2,
  RACE and their average.
- BERT, Devlin et al. 2018, arXiv:1810.04805: Table 5 (BERT-base, dev sets): MNLI-m,
  QNLI, MRPC, SST-2, SQuAD F1.

``PAPER[table][row]`` maps a table of `bert_jax.compare.cells.TABLES` and a paper row name
to ``{column: value}``; `paper_score` gives the headline number a table ranks by: T5's
GLUE average, ALBERT's Avg, and for BERT the mean of its five columns (the paper prints
no average; the mean keeps every task, as T5's and ALBERT's headlines do, and ranks the
three rows the same way MNLI-m alone does).
"""

from __future__ import annotations

T5_COLUMNS = ("GLUE", "CNNDM", "SQuAD", "SGLUE", "EnDe", "EnFr", "EnRo")
ALBERT_COLUMNS = (
    "MLM", "NSP", "SOP", "SQuAD1.1 F1", "SQuAD1.1 EM", "SQuAD2.0 F1", "SQuAD2.0 EM",
    "MNLI", "SST-2", "RACE", "Avg",
)  # fmt: skip
BERT_COLUMNS = ("MNLI-m", "QNLI", "MRPC", "SST-2", "SQuAD F1")

_T5_BASELINE = (83.28, 19.24, 80.88, 71.36, 26.98, 39.82, 27.65)
# T5 Table 1: the baseline's standard deviation over 10 pre-training + fine-tuning runs.
_T5_STD = (0.235, 0.065, 0.343, 0.416, 0.112, 0.090, 0.108)
T5_BASELINE_STD = dict(zip(T5_COLUMNS, _T5_STD, strict=True))
_T5_NO_PRETRAINING = (66.22, 17.60, 50.31, 53.04, 25.86, 39.77, 24.04)
_T5_BERT_STYLE = (82.96, 19.17, 80.65, 69.85, 26.78, 40.03, 27.41)

_T5_ROWS: dict[str, dict[str, tuple[float, ...]]] = {
    "t5_table4": {
        "Prefix language modeling": (80.69, 18.94, 77.99, 65.27, 26.86, 39.73, 27.49),
        "BERT-style": _T5_BERT_STYLE,
        "Deshuffling": (73.17, 18.59, 67.61, 58.47, 26.11, 39.30, 25.62),
        "No pre-training": _T5_NO_PRETRAINING,  # from Table 1
    },
    "t5_table5": {
        "BERT-style": _T5_BERT_STYLE,
        "MASS-style": (82.32, 19.16, 80.10, 69.28, 26.79, 39.89, 27.55),
        "Replace corrupted spans": _T5_BASELINE,
        "Drop corrupted tokens": (84.44, 19.31, 80.52, 68.67, 27.07, 39.76, 27.82),
    },
    "t5_table6": {
        "Corruption rate 10%": (82.82, 19.00, 80.38, 69.55, 26.87, 39.28, 27.44),
        "15%": _T5_BASELINE,
        "25%": (83.00, 19.54, 80.96, 70.48, 27.04, 39.83, 27.47),
        "50%": (81.27, 19.32, 79.80, 70.33, 27.01, 39.90, 27.49),
    },
    "t5_table7": {
        "Span length i.i.d.": _T5_BASELINE,
        "Span length 2": (83.54, 19.39, 82.09, 72.20, 26.76, 39.99, 27.63),
        "Span length 3": (83.49, 19.62, 81.84, 72.53, 26.86, 39.65, 27.62),
        "Span length 5": (83.40, 19.24, 82.05, 72.23, 26.88, 39.40, 27.53),
        "Span length 10": (82.85, 19.33, 81.84, 70.44, 26.79, 39.49, 27.69),
    },
    "t5_table1": {
        "Baseline average": _T5_BASELINE,
        "No pre-training": _T5_NO_PRETRAINING,
    },
}

_ALBERT_ROWS = {
    "None": (54.9, 52.4, 53.3, 88.6, 81.5, 78.1, 75.3, 81.5, 89.9, 61.7, 79.0),
    "NSP": (54.5, 90.5, 52.0, 88.4, 81.5, 77.2, 74.6, 81.6, 91.1, 62.3, 79.2),
    "SOP": (54.0, 78.9, 86.5, 89.3, 82.3, 80.0, 77.1, 82.0, 90.3, 64.0, 80.1),
}

_BERT_ROWS = {
    "BERT-base": (84.4, 88.4, 86.7, 92.7, 88.5),
    "No NSP": (83.9, 84.9, 86.5, 92.6, 87.9),
    "LTR & No NSP": (82.1, 84.3, 77.5, 92.1, 77.8),
}


def _table(columns: tuple[str, ...], rows: dict[str, tuple[float, ...]]):
    return {row: dict(zip(columns, values, strict=True)) for row, values in rows.items()}


PAPER: dict[str, dict[str, dict[str, float]]] = {
    **{name: _table(T5_COLUMNS, rows) for name, rows in _T5_ROWS.items()},
    "albert_table5": _table(ALBERT_COLUMNS, _ALBERT_ROWS),
    "bert_table5": _table(BERT_COLUMNS, _BERT_ROWS),
}

# The paper each table comes from, for captions.
SOURCES = {
    **{name: "Raffel et al., arXiv:1910.10683" for name in _T5_ROWS},
    "albert_table5": "Lan et al., arXiv:1909.11942",
    "bert_table5": "Devlin et al., arXiv:1810.04805",
}

# Decimals the paper prints its headline with (T5 and our BERT mean: 2).
DIGITS = {"albert_table5": 1}

# ALBERT Table 5's intrinsic columns and the suite scores that measure the same thing.
ALBERT_INTRINSIC = {"MLM": "mlm_accuracy", "NSP": "nsp_accuracy", "SOP": "sop_accuracy"}


def headline_column(table: str) -> str:
    """The column `paper_score` reports for ``table``."""
    if table.startswith("t5_"):
        return "GLUE avg"
    return {"albert_table5": "Avg", "bert_table5": "mean of 5"}[table]


def paper_score(table: str, row: str | None) -> tuple[str, float] | None:
    """The headline ``(column name, value)`` of ``row`` in ``table``; None if not published."""
    values = PAPER.get(table, {}).get(row) if row is not None else None
    if values is None:
        return None
    if table.startswith("t5_"):
        return headline_column(table), values["GLUE"]
    if table == "albert_table5":
        return headline_column(table), values["Avg"]
    return headline_column(table), round(sum(values.values()) / len(values), 2)


def paper_baseline_std(table: str) -> float | None:
    """The spread of the headline over seeds the paper reports (T5 Table 1 only)."""
    return T5_BASELINE_STD["GLUE"] if table.startswith("t5_") else None
