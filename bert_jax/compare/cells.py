"""The cells of an objective comparison and the paper tables they form.

A cell is one pretraining objective on one architecture: the encoder cells (BERT's masked
LM with NSP, SOP or no sentence-pair loss) run on the BERT encoder of configs/bert.py,
the T5 cells (Raffel et al. section 3.3) on the encoder-decoder of configs/t5.py, as in
the papers. A ``no_pretraining`` cell of each architecture is evaluated from its random
initialisation. Every cell of a sweep gets the same budget (`cell_config`): the same model
size, batch, sequence length and number of steps (so the same tokens seen) and its
family's optimizer recipe; only the objective fields differ.

``TABLES`` lays the cells out as the papers' tables (T5 Tables 4-7, ALBERT Table 5,
BERT Table 5 and T5 Table 1's no-pretraining row), each row naming the paper's row in
`bert_jax.compare.paper`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from bert_jax.runtime import run_config

FAMILIES = {"encoder": "configs/bert.py", "encoder_decoder": "configs/t5.py"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One objective on one architecture.

    Attributes:
      name: the cell's id (workdir folder, ``--cell NAME``).
      family: ``encoder`` (configs/bert.py) or ``encoder_decoder`` (configs/t5.py).
      label: the row label in our tables.
      overrides: dotted config keys set over the family recipe (the objective).
      pretrain: False for the no-pretraining rows (scored at their random initialisation).
    """

    name: str
    family: str
    label: str
    overrides: dict[str, Any]
    pretrain: bool = True


def _t5(name: str, label: str, objective: str) -> Cell:
    return Cell(name, "encoder_decoder", label, {"objective.name": objective})


def _bert(name: str, label: str, pair_task: str) -> Cell:
    return Cell(name, "encoder", label, {"objective.sentence_pair_task": pair_task})


CELLS: dict[str, Cell] = {
    cell.name: cell
    for cell in (
        _bert("bert_mlm_nsp", "MLM + NSP", "nsp"),
        _bert("bert_mlm_sop", "MLM + SOP", "sop"),
        _bert("bert_mlm_only", "MLM only", "none"),
        Cell("bert_no_pretraining", "encoder", "No pre-training", {}, pretrain=False),
        _t5("t5_iid_replace_spans", "i.i.d. replace spans (baseline)", "iid_replace_spans"),
        _t5("t5_bert_style", "BERT-style", "bert_style"),
        _t5("t5_mass_style", "MASS-style", "mass_style"),
        _t5("t5_drop_tokens", "Drop corrupted tokens", "drop_tokens"),
        _t5("t5_prefix_lm", "Prefix LM", "prefix_lm"),
        _t5("t5_deshuffling", "Deshuffling", "deshuffling"),
        _t5("t5_iid_10", "Corruption rate 10%", "iid_10_u_u"),
        _t5("t5_iid_25", "Corruption rate 25%", "iid_25_u_u"),
        _t5("t5_iid_50", "Corruption rate 50%", "iid_50_u_u"),
        _t5("t5_span_2", "Span length 2", "span_2_15_u_u"),
        _t5("t5_span_3", "Span length 3", "span_3_15_u_u"),
        _t5("t5_span_5", "Span length 5", "span_5_15_u_u"),
        _t5("t5_span_10", "Span length 10", "span_10_15_u_u"),
        Cell("t5_no_pretraining", "encoder_decoder", "No pre-training", {}, pretrain=False),
    )
}

# table -> (title, [(cell, paper row)]): the rows in the paper's order. Paper rows are
# keys of bert_jax.compare.paper.PAPER (None: a row the paper does not have).
TABLES: dict[str, tuple[str, list[tuple[str, str | None]]]] = {
    "t5_table4": (
        "T5 Table 4: high-level approaches",
        [
            ("t5_prefix_lm", "Prefix language modeling"),
            ("t5_bert_style", "BERT-style"),
            ("t5_deshuffling", "Deshuffling"),
            ("t5_no_pretraining", "No pre-training"),
        ],
    ),
    "t5_table5": (
        "T5 Table 5: variants of the BERT-style objective",
        [
            ("t5_bert_style", "BERT-style"),
            ("t5_mass_style", "MASS-style"),
            ("t5_iid_replace_spans", "Replace corrupted spans"),
            ("t5_drop_tokens", "Drop corrupted tokens"),
        ],
    ),
    "t5_table6": (
        "T5 Table 6: corruption rate (i.i.d. replace spans)",
        [
            ("t5_iid_10", "Corruption rate 10%"),
            ("t5_iid_replace_spans", "15%"),
            ("t5_iid_25", "25%"),
            ("t5_iid_50", "50%"),
        ],
    ),
    "t5_table7": (
        "T5 Table 7: mean corrupted span length (15% corruption)",
        [
            ("t5_iid_replace_spans", "Span length i.i.d."),
            ("t5_span_2", "Span length 2"),
            ("t5_span_3", "Span length 3"),
            ("t5_span_5", "Span length 5"),
            ("t5_span_10", "Span length 10"),
        ],
    ),
    "albert_table5": (
        "ALBERT Table 5: sentence-pair loss (cross-evaluated on NSP and SOP pairs)",
        [("bert_mlm_only", "None"), ("bert_mlm_nsp", "NSP"), ("bert_mlm_sop", "SOP")],
    ),
    "bert_table5": (
        "BERT Table 5: effect of next-sentence prediction",
        [
            ("bert_mlm_nsp", "BERT-base"),
            ("bert_mlm_only", "No NSP"),
            ("bert_no_pretraining", None),
        ],
    ),
}


def table_cells(table: str) -> list[str]:
    return [cell for cell, _ in TABLES[table][1]]


def select(spec: str) -> list[str]:
    """Cell names of ``spec``: ``all``, table names and cell names, comma separated.

    Raises:
      ValueError: naming an unknown table or cell.
    """
    names: list[str] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item == "all":
            found = list(CELLS)
        elif item in TABLES:
            found = table_cells(item)
        elif item in CELLS:
            found = [item]
        else:
            raise ValueError(
                f"config.compare.cells: unknown cell or table {item!r}; tables: "
                f"{', '.join(TABLES)}; cells: {', '.join(CELLS)}"
            )
        names += [name for name in found if name not in names]
    if not names:
        raise ValueError("config.compare.cells selects no cell")
    return names


def flatten(node: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """``{"train.num_steps": 1000, ...}`` of a nested ConfigDict."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def cell_config(sweep: ml_collections.ConfigDict, cell: Cell, seed: int):
    """The pretraining config of ``cell`` with ``seed`` under the sweep's shared budget.

    ``sweep`` is the config of configs/compare.py: ``compare.<family>_recipe`` names the
    family's recipe (model size, optimizer), ``compare.budget`` the fields every cell
    shares (steps, batch, length, evaluation), ``data`` and ``mesh`` the run's data
    paths and devices. The cell's objective fields come last.
    """
    config = run_config.load_recipe(sweep.compare[f"{cell.family}_recipe"])
    for dotted, value in flatten(sweep.data, "data.").items():
        run_config.set_field(config, dotted, value, "config.data")
    for dotted, value in flatten(sweep.compare.budget).items():
        run_config.set_field(config, dotted, value, "config.compare.budget")
    for dotted, value in cell.overrides.items():
        run_config.set_field(config, dotted, value, f"cell {cell.name}")
    config.seed = seed
    config.mesh = sweep.mesh
    return config
