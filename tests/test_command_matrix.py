"""Every command on every recipe family and layout a user can pick, a few tiny steps each.

One row per (recipe, layout) and one workdir per row: ``pretrain`` once (with its
evaluation; T5's greedy decodes an example), then ``evaluate``, ``report``, ``export``
(loaded with transformers, one forward pass), ``finetune`` from the checkpoint and, where a
sweep can pick the row, ``compare --cell``, which finds the row's run finished in its cell
folder and scores it. The commands run in process through the functions ``bert_jax.cli.main``
dispatches to, on the recipe files and arguments a user gives (`run_config.load_recipe`)
with runlocal's 4 steps of 8 x 64 tokens and 2 held-out batches. The 8-device FSDP preset
runs in a subprocess (XLA reads the device count at start-up), checked the same way.

What it caught (issue 27): ``evaluate`` and the compare cell ``bert_mlm_only`` on the
default recipe (masked LM only) died with KeyError 'pair_accuracy'; a scanned T5 died at
its first evaluation (greedy decode) and in text-to-text fine-tuning (label scores), and
any T5 with a ``remat_policy`` in the greedy decode, with flax's TraceContextError.
Measured 2026-12-07 on the 2-core machine (`pytest -n 0 --durations`, other work beside
it): the two quick rows 1 min 46 s by themselves (bert 50 s, t5_v1_1_scanned 52 s), the
whole matrix 7 min 19 s (rows 28-52 s, the 8-device subprocess 79 s).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

import pytest
from conftest import REPO_ROOT, result_json, run_with_devices

from bert_jax.cli import evaluate, report
from bert_jax.compare import cells, sweep
from bert_jax.downstream import finetune
from bert_jax.export import hf
from bert_jax.runtime import run_config
from bert_jax.training import loop

DATA = REPO_ROOT / "data"
# Sizes of the rows without a compare cell (those take the recipe's tiny preset).
TINY = {
    "bert": {
        "model.hidden_size": 32,
        "model.num_heads": 2,
        "model.intermediate_size": 64,
        "model.num_layers": 2,
        "objective.max_predictions_per_seq": 10,
    },
    "t5": {
        "model.d_model": 32,
        "model.num_heads": 2,
        "model.d_ff": 64,
        "model.num_encoder_layers": 2,
        "model.num_decoder_layers": 2,
    },
}
TINY["albert"] = {**TINY["bert"], "model.embedding_size": 16}


@dataclasses.dataclass(frozen=True)
class Row:
    """One recipe and layout: ``recipe`` as a user writes it, plus ``--config.*`` overrides.

    A row with a ``compare_cell`` pretrains that cell's config (the recipe under the
    ``configs/compare.py:runlocal`` budget, the cell's objective) in the cell's folder of
    a sweep, so ``compare --cell`` finds the run finished and only scores it. A row
    without one (a layout a sweep cannot pick) runs ``RECIPE:runlocal`` at TINY sizes.
    """

    recipe: str
    overrides: dict = dataclasses.field(default_factory=dict)
    compare_cell: str | None = None

    @property
    def family(self) -> str:
        return os.path.basename(self.recipe.split(":")[0])[: -len(".py")]  # bert | albert | t5


ROWS = {
    # configs/bert.py as `make pretrain` runs it: masked LM only.
    "bert": Row("configs/bert.py", compare_cell="bert_mlm_only"),
    "bert_short": Row("configs/bert.py:recipe=short", compare_cell="bert_mlm_nsp"),
    "albert": Row("configs/albert.py", compare_cell="bert_mlm_sop"),
    "t5_v1_0": Row("configs/t5.py:variant=v1_0", compare_cell="t5_prefix_lm"),
    "t5_v1_1": Row("configs/t5.py", compare_cell="t5_drop_tokens"),
    "bert_scanned": Row("configs/bert.py", {"model.scan_layers": True}),
    "albert_scanned": Row("configs/albert.py", {"model.scan_layers": True}),
    # The default objective (span corruption) and the evaluation's greedy decode.
    "t5_v1_0_scanned": Row("configs/t5.py:variant=v1_0", {"model.scan_layers": True}),
    "t5_v1_1_scanned": Row("configs/t5.py", {"model.scan_layers": True}),
}


def _sweep_config(row: Row, mesh_preset: str):
    config = run_config.load_recipe("configs/compare.py:runlocal,seeds=1", data_root=DATA)
    family = "encoder_decoder" if row.family == "t5" else "encoder"
    config.compare[f"{family}_recipe"] = row.recipe
    config.compare.cells = row.compare_cell
    config.suite.tasks = "lee,pairs"
    config.suite.download_dir = str(DATA / "downloads")
    config.mesh.preset = mesh_preset
    return config


def _pretrain_config(row: Row, mesh_preset: str):
    if row.compare_cell is not None:
        cell = cells.CELLS[row.compare_cell]
        return cells.cell_config(_sweep_config(row, mesh_preset), cell, seed=0)
    path, _, arg = row.recipe.partition(":")
    config = run_config.load_recipe(
        f"{path}:{arg},runlocal" if arg else f"{path}:runlocal", data_root=DATA
    )
    config.data.max_seq_length = 64
    for dotted, value in {**TINY[row.family], **row.overrides, "mesh.preset": mesh_preset}.items():
        run_config.set_field(config, dotted, value, "test")
    return config


def _finetune_config(row: Row, workdir: str, mesh_preset: str):
    arg = "runlocal,init=pretrained" + (",model=t5" if row.family == "t5" else "")
    config = run_config.load_recipe(f"configs/finetune.py:{arg}", data_root=DATA)
    config.finetune.init_workdir = workdir
    config.finetune.pretrain_config = row.recipe
    config.finetune.download_dir = str(DATA / "downloads")
    config.finetune.max_eval_examples = 16  # two evaluation batches
    config.data.max_seq_length = 64
    config.train.num_steps = 2
    config.mesh.preset = mesh_preset
    return config


def run_commands(name: str, root: str, mesh_preset: str = "") -> dict:
    """Every command on row ``name`` under ``root``; JSON-able figures of each."""
    row = ROWS[name]
    sweep_dir = os.path.join(root, "compare")
    if row.compare_cell is None:
        workdir = os.path.join(root, "run")
    else:
        workdir = sweep.cell_dir(sweep_dir, row.compare_cell, 0)
    config = _pretrain_config(row, mesh_preset)
    out: dict = {"num_steps": config.train.num_steps}
    pretrained = loop.train_and_evaluate(config, workdir)
    out["pretrain"] = {k: pretrained.get(k) for k in ("step", "eval", "example")}
    out["evaluate"] = evaluate.evaluate_checkpoint(config, workdir)
    summary = report.print_report(workdir)
    out["report"] = {
        "last_step": summary["last_eval"]["step"],
        "plot": os.path.exists(os.path.join(workdir, "learning_curve.png")),
    }
    out["export"] = hf.export_checkpoint(config, workdir, os.path.join(root, "hf"))
    finetune_config = _finetune_config(row, workdir, mesh_preset)
    tuned = finetune.run_finetune(finetune_config, os.path.join(root, "finetune"))
    out["finetune"] = {"step": tuned["step"], "final": tuned["final"]}
    if row.compare_cell is not None:
        sweep.run(_sweep_config(row, mesh_preset), sweep_dir, only_cell=row.compare_cell)
        with open(os.path.join(workdir, sweep.RESULT)) as f:
            result = json.load(f)
        out["compare"] = {"steps": result["pretrain"]["steps"], "scores": result["scores"]}
    return out


def _check_hf_export(family: str, out_dir: str) -> None:
    """The export loads with transformers and runs one forward pass to finite logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    text = ["The quick brown fox jumps over the lazy dog."]
    with torch.no_grad():
        if family == "t5":
            model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out_dir).eval()
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids, decoder_input_ids=torch.zeros((1, 3), dtype=torch.long))
            logits = logits.logits
        else:
            model = transformers.AutoModelForPreTraining.from_pretrained(out_dir).eval()
            logits = model(**tokenizer(text, text, return_tensors="pt")).prediction_logits
    assert logits.shape[-1] >= tokenizer.vocab_size and torch.isfinite(logits).all()


def _check(name: str, out: dict) -> None:
    """Each command's figures are there and in range (the commands ran to the end)."""
    row, num_steps = ROWS[name], out["num_steps"]
    assert out["pretrain"]["step"] == num_steps
    loss = "target_loss" if row.family == "t5" else "mlm_loss"
    assert math.isfinite(out["pretrain"]["eval"][loss]), "pretrain"
    scores = out["evaluate"]
    assert scores["step"] == num_steps
    if row.family == "t5":
        assert isinstance(out["pretrain"]["example"]["prediction"], str)  # greedy decode ran
        assert 0.0 <= scores["target_accuracy"] <= 1.0 and math.isfinite(scores["target_loss"])
    else:  # the one pair head on NSP and SOP pairs, trained or not (ALBERT Table 5)
        for pair_task in evaluate.PAIR_TASKS:
            assert 0.0 <= scores[f"{pair_task}_accuracy"] <= 1.0, pair_task
            assert math.isfinite(scores[f"mlm_mask_loss_on_{pair_task}_pairs"]), pair_task
        assert scores["sop_majority_accuracy"] == 0.5
    assert out["report"] == {"last_step": num_steps, "plot": True}
    _check_hf_export(row.family, out["export"])
    assert out["finetune"]["step"] == 2
    assert 0.0 <= out["finetune"]["final"]["validation"]["accuracy"] <= 1.0, "finetune"
    if row.compare_cell is not None:  # scored the pretrained run, not a new one
        assert out["compare"]["steps"] == num_steps
        assert math.isfinite(out["compare"]["scores"]["lee_spearman"]), "compare"
        if row.family != "t5":
            assert 0.0 <= out["compare"]["scores"]["sop_accuracy"] <= 1.0, "compare"


# The rows whose bugs the matrix found run in every quick pass; the rest are slow.
QUICK_ROWS = ("bert", "t5_v1_1_scanned")


@pytest.mark.parametrize(
    "name",
    [name if name in QUICK_ROWS else pytest.param(name, marks=pytest.mark.slow) for name in ROWS],
)
def test_every_command_runs_on_the_recipe_and_layout(name, tmp_path, vocab_path, corpus_dir):
    _check(name, run_commands(name, str(tmp_path)))


@pytest.mark.slow
def test_every_command_runs_on_eight_devices_with_the_fsdp_preset(tmp_path, vocab_path):
    names = ("bert", "t5_v1_1_scanned")
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
import jax
from test_command_matrix import run_commands
assert jax.device_count() == 8
root = {str(tmp_path)!r}
out = {{name: run_commands(name, f"{{root}}/{{name}}", "fsdp") for name in {names!r}}}
print("RESULT" + json.dumps(out, default=float))
"""
    runs = result_json(run_with_devices(script, 8, timeout=900))
    for name, out in runs.items():
        _check(name, out)
