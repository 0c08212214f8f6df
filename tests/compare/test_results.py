"""The sweep report on synthetic result files: results.json, results.md and the plots.

Two tables' worth of cells (T5 Table 6 and ALBERT Table 5), three seeds each (one cell
with a missing seed), with scores chosen so the ranks, the Kendall tau and which rows
are within the seed spread are known by hand.
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import scipy.stats

from bert_jax.compare import cells, paper, results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# cell -> rt_probe_500 per seed. T5 Table 6 (baseline: 15% = t5_iid_replace_spans).
PRIMARY = {
    "t5_iid_10": [0.60, 0.61, 0.62],  # 10 pooled stds below the baseline
    "t5_iid_replace_spans": [0.70, 0.71, 0.72],
    "t5_iid_25": [0.705, 0.715, 0.725],  # 0.5 pooled stds above: within seed spread
    "t5_iid_50": [0.65, 0.66],  # seed 2 not finished
    "bert_mlm_only": [0.55, 0.56, 0.57],  # ALBERT Table 5's baseline (first row)
    "bert_mlm_nsp": [0.565, 0.575, 0.585],  # 1.5 pooled stds above: within
    "bert_mlm_sop": [0.50, 0.52, 0.54],
}
ENCODER = ("bert_mlm_only", "bert_mlm_nsp", "bert_mlm_sop")
COMMAND = "bert-jax compare --config configs/compare.py:cells=t5_table6+albert_table5"


def _result(cell: str, seed: int, value: float) -> dict:
    scores = {"rt_probe_500": value, "rt_probe_2000": value + 0.05, "lee_spearman": 0.3}
    if cell in ENCODER:
        scores |= {"nsp_accuracy": 0.6 + seed / 100, "sop_accuracy": 0.5, "mlm_accuracy": 0.2}
    return {
        "cell": cell,
        "seed": seed,
        "family": "encoder" if cell in ENCODER else "encoder_decoder",
        "label": cell.replace("_", " "),
        "command": f"{COMMAND} --cell {cell}",
        "pretrain": {"steps": 40, "tokens": 40 * 8 * 64, "wall_s": 10.0 + seed, "eval": {}},
        "curve": [[step, 9.0 - step / 10 - seed / 10] for step in (0, 10, 20, 30, 40)],
        "eval_curve": [[40, 7.0]],
        "scores": scores,
        "score_runs": {"rt_probe_500": [value] * 3},
        "suite_wall_s": 2.0,
    }


def _write_result(workdir: pathlib.Path, cell: str, seed: int, result) -> pathlib.Path:
    path = workdir / "cells" / cell / f"seed{seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result if isinstance(result, str) else json.dumps(result))
    return path


@pytest.fixture
def sweep_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    for cell, values in PRIMARY.items():
        for seed, value in enumerate(values):
            _write_result(tmp_path, cell, seed, _result(cell, seed, value))
    config = {"suite.primary": "rt_probe_500", "compare.seeds": 3, "compare.scale": "cpu"}
    (tmp_path / "sweep.json").write_text(json.dumps({"config": config, "command": COMMAND}))
    return tmp_path


def paper_title(name: str) -> str:
    return cells.TABLES[name][0]


def _md_row(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_results_json_has_every_seed_and_the_seed_statistics(sweep_dir):
    results.write(str(sweep_dir))
    written = json.loads((sweep_dir / "results.json").read_text())
    assert written["command"] == COMMAND
    for cell, values in PRIMARY.items():
        summary = written["cells"][cell]
        assert summary["seeds"] == list(range(len(values)))
        assert [run["scores"]["rt_probe_500"] for run in summary["runs"]] == values
        assert all(run["command"].endswith(f"--cell {cell}") for run in summary["runs"])
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        assert summary["scores"]["rt_probe_500"]["mean"] == pytest.approx(mean)
        assert summary["scores"]["rt_probe_500"]["std"] == pytest.approx(std)
        assert summary["scores"]["rt_probe_500"]["n"] == len(values)
        assert summary["pretrain_tokens"]["mean"] == 40 * 8 * 64
        assert summary["pretrain_wall_s"]["mean"] == pytest.approx(10.0 + (len(values) - 1) / 2)
    assert set(written["tables"]) == {
        "t5_table5",
        "t5_table6",
        "t5_table7",
        "albert_table5",
        "bert_table5",
    }


def test_results_md_names_every_command_that_produced_a_run(sweep_dir):
    results.write(str(sweep_dir))
    written = json.loads((sweep_dir / "results.json").read_text())
    assert written["run_commands"] == sorted(f"{COMMAND} --cell {cell}" for cell in PRIMARY)
    markdown = (sweep_dir / "results.md").read_text()
    assert f"Sweep command: `{COMMAND}`" in markdown
    for cell in PRIMARY:
        assert f"- `{COMMAND} --cell {cell}`" in markdown


def test_one_seed_has_zero_std():
    assert results.stats([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}


def test_results_md_puts_the_papers_numbers_and_ranks_beside_ours(sweep_dir):
    results.write(str(sweep_dir))
    markdown = (sweep_dir / "results.md").read_text()
    assert COMMAND in markdown
    assert "20,480 tokens (40 steps)" in markdown  # the budget per cell
    for name in ("t5_table6", "albert_table5"):
        assert paper_title(name) in markdown
    # Our rank by rt_probe_500 and the paper's by GLUE average, per row of T5 Table 6.
    expected = {  # label: (paper GLUE, our rank, paper rank)
        "t5 iid 10": ("82.82", "4", "3"),
        "t5 iid replace spans": ("83.28", "2", "1"),
        "t5 iid 25": ("83.00", "1", "2"),
        "t5 iid 50": ("81.27", "3", "4"),
    }
    table6 = markdown.split(paper_title("t5_table6"))[1].split("\n## ")[0]
    for label, (glue, ours, theirs) in expected.items():
        row = _md_row(table6, label)
        assert row[1] in paper.PAPER["t5_table6"]
        assert row[-5:-2] == [glue, ours, theirs]
        assert "±" in row[3]
    assert _md_row(table6, "t5 iid 50")[2] == "2"  # two seeds finished, not three
    assert _md_row(table6, "t5 iid 10")[2] == "3"
    assert "within seed spread" in _md_row(table6, "t5 iid 25")[-2]
    assert "within seed spread" not in _md_row(table6, "t5 iid 10")[-2]
    assert _md_row(table6, "t5 iid replace spans")[-2] == "baseline"
    ours, theirs = [0.61, 0.71, 0.715, 0.655], [82.82, 83.28, 83.00, 81.27]
    tau = scipy.stats.kendalltau(ours, theirs).statistic
    assert f"over 4 rows with both): {tau:+.3f}" in table6
    albert = markdown.split(paper_title("albert_table5"))[1].split("\n## ")[0]
    assert [_md_row(albert, "bert mlm " + name)[-4:-1] for name in ("only", "nsp", "sop")] == [
        ["79.0", "2", "3"],
        ["79.2", "1", "2"],
        ["80.1", "3", "1"],
    ]
    assert "within seed spread" in _md_row(albert, "bert mlm nsp")[-1]
    assert "within seed spread" not in _md_row(albert, "bert mlm sop")[-1]
    # The cross-evaluation: our NSP/SOP pair accuracies beside ALBERT's intrinsic ones.
    cross = albert.split("### Cross-evaluation")[1]
    nsp_row = _md_row(cross, "bert mlm nsp")
    assert nsp_row[4:8] == ["0.610 ± 0.010", "90.5", "0.500 ± 0.000", "52.0"]


def test_a_table_without_finished_cells_is_left_out(sweep_dir):
    paths = results.write(str(sweep_dir))
    markdown = (sweep_dir / "results.md").read_text()
    assert paper_title("t5_table4") not in markdown
    assert not (sweep_dir / "table_t5_table4.png").exists()
    assert str(sweep_dir / "table_t5_table6.png") in paths


def test_plots_are_pngs_and_linked_from_results_md(sweep_dir):
    paths = results.write(str(sweep_dir))
    markdown = (sweep_dir / "results.md").read_text()
    pngs = [pathlib.Path(p) for p in paths if p.endswith(".png")]
    names = {p.name for p in pngs}
    assert {
        "curves_encoder.png",
        "curves_encoder_decoder.png",
        "table_t5_table6.png",
        "table_albert_table5.png",
    } <= names
    for png in pngs:
        data = png.read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, png
        assert f"]({png.name})" in markdown  # a relative link, renders from docs/compare/


def test_primary_comes_from_the_sweep_config(sweep_dir):
    config = {"suite.primary": "lee_spearman"}
    (sweep_dir / "sweep.json").write_text(json.dumps({"config": config, "command": COMMAND}))
    table = results.collect(str(sweep_dir))["tables"]["t5_table6"]
    assert table["primary"] == "lee_spearman"
    assert {row["rank"] for row in table["rows"]} == {1}  # every cell scores 0.3: a tie
    (sweep_dir / "sweep.json").unlink()  # no sweep.json: the default primary
    assert results.collect(str(sweep_dir))["primary"] == "lee_spearman"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"cell": "t5_iid_10", "seed": 0, "scores": {', "not a readable JSON"),
        ({"cell": "t5_iid_10", "seed": 0}, "'scores' missing"),
        ({"cell": "t5_iid_10", "seed": 0, "scores": {"rt_probe_500": "high"}}, "not a number"),
        ({"cell": "t5_iid_25", "seed": 0, "scores": {}}, "says cell 't5_iid_25'"),
    ],
)
def test_a_malformed_result_names_its_file(sweep_dir, content, message):
    path = _write_result(sweep_dir, "t5_iid_10", 0, content)
    with pytest.raises(ValueError, match=message) as error:
        results.write(str(sweep_dir))
    assert str(error.value).startswith(str(path))


def test_every_paper_row_of_the_tables_has_published_numbers():
    for name, (_, layout) in cells.TABLES.items():
        for _, row in layout:
            if row is not None:
                assert paper.paper_score(name, row) is not None, (name, row)
    assert paper.paper_score("t5_table6", "15%") == ("GLUE avg", 83.28)
    assert paper.paper_score("albert_table5", "SOP") == ("Avg", 80.1)
    assert paper.paper_score("bert_table5", "BERT-base") == ("mean of 5", 88.14)
    assert paper.paper_score("bert_table5", None) is None


def test_a_results_json_restores_a_lost_workdir_and_refuses_another_budget(sweep_dir, tmp_path):
    from bert_jax.compare import sweep

    results.write(str(sweep_dir))
    restored = tmp_path / "restored"
    source = str(sweep_dir / "results.json")
    assert sweep.import_runs(source, str(restored)) == sum(len(v) for v in PRIMARY.values())
    for path in sweep_dir.glob("cells/*/seed*/result.json"):
        twin = restored / path.relative_to(sweep_dir)
        assert json.loads(twin.read_text()) == json.loads(path.read_text())
    assert results.collect(str(restored))["cells"] == results.collect(str(sweep_dir))["cells"]
    # A second import writes nothing; a run finished here is kept, not overwritten.
    kept = restored / "cells" / "t5_iid_50" / "seed0" / "result.json"
    kept.write_text(json.dumps(_result("t5_iid_50", 0, 0.99)))
    assert sweep.import_runs(source, str(restored)) == 0
    assert json.loads(kept.read_text())["scores"]["rt_probe_500"] == 0.99
    other = tmp_path / "other"
    other.mkdir()
    config = {"suite.primary": "rt_probe_500", "compare.scale": "paper"}
    (other / "sweep.json").write_text(json.dumps({"config": config, "command": COMMAND}))
    with pytest.raises(ValueError, match=r"sweep\.json.*compare\.scale: 'paper' -> 'cpu'"):
        sweep.import_runs(source, str(other))
    (tmp_path / "bad.json").write_text(json.dumps({"cells": []}))
    with pytest.raises(ValueError, match=r"bad\.json: not a sweep's results\.json"):
        sweep.import_runs(str(tmp_path / "bad.json"), str(tmp_path / "x"))


def test_a_truncated_result_json_names_its_file_when_the_sweep_reruns(sweep_dir):
    from bert_jax.compare import sweep

    path = sweep_dir / "cells" / "t5_iid_25" / "seed1" / "result.json"
    path.write_text("")  # a disk that filled up, a copy cut short
    # Before: "Expecting value: line 1 column 1 (char 0)", naming no file.
    with pytest.raises(ValueError, match=rf"{path}: not a readable JSON .*line 1 column 1"):
        sweep.run_cell(None, str(sweep_dir), "t5_iid_25", 1)  # found done: not rerun
    path.write_text(json.dumps({"cell": "t5_iid_25", "seed": 1}))
    with pytest.raises(ValueError, match=rf"{path}: field 'scores' missing.*delete it to run"):
        sweep.run_cell(None, str(sweep_dir), "t5_iid_25", 1)


def test_import_results_checks_every_run_before_writing_any(sweep_dir, tmp_path):
    from bert_jax.compare import sweep

    results.write(str(sweep_dir))
    summary = json.loads((sweep_dir / "results.json").read_text())
    last = list(summary["cells"])[-1]
    summary["cells"][last]["runs"][1]["scores"]["rt_probe_500"] = "high"
    source = tmp_path / "results.json"
    source.write_text(json.dumps(summary))
    restored = tmp_path / "restored"
    # Before: every run written, the bad one too, and each later rerun or report failed
    # on that result.json.
    with pytest.raises(
        ValueError,
        match=rf"{source}: cells\.{last}\.runs\[1\]: scores\.rt_probe_500 is not a number",
    ):
        sweep.import_runs(str(source), str(restored))
    assert not restored.exists()
