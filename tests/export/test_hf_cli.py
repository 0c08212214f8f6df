"""`bert-jax export` end to end: pretrain a few steps, export, load with transformers offline.

For BERT, ALBERT and T5 the exported directory must load with the Auto classes
and AutoTokenizer, give the logits of our model on the same inputs, and
tokenize like our Tokenizer; `import_hf` must read it back. ``bert-jax export``
without ``--config`` reads the run config the checkpoint records.
"""

from __future__ import annotations

import functools
import glob
import gzip
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may be fetched

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, load_recipe, tiny_bert_config
from flax import nnx

from bert_jax import objectives
from bert_jax.cli import main
from bert_jax.export import hf
from bert_jax.runtime import run_config
from bert_jax.training import loop

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1994, Benoît Lecomte swam 5,980 km across the Atlantic \u2014 naïve? No: 🙂",
]
HF_CLASSES = {
    "bert": ("AutoModelForPreTraining", "BertForPreTraining"),
    "albert": ("AutoModelForPreTraining", "AlbertForPreTraining"),
    "t5": ("AutoModelForSeq2SeqLM", "T5ForConditionalGeneration"),
}
# The smallest models the recipes allow: a few steps of each compile in seconds.
TINY = {
    "bert": {},
    "albert": {
        "model.hidden_size": 32,
        "model.num_heads": 2,
        "model.intermediate_size": 64,
        "model.embedding_size": 16,
        "model.num_layers": 3,
        "data.max_seq_length": 64,
        "objective.max_predictions_per_seq": 10,
    },
    "t5": {
        "model.d_model": 32,
        "model.num_heads": 2,
        "model.d_ff": 64,
        "model.num_encoder_layers": 2,
        "model.num_decoder_layers": 2,
        "data.max_seq_length": 64,
    },
}


def tiny_config(kind: str):
    config = tiny_bert_config() if kind == "bert" else load_recipe(kind)
    for dotted, value in TINY[kind].items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, vocab_path, corpus_dir):
    """kind -> (config, workdir, params after the checkpointed step), pretrained on first use."""
    runs = {}

    def get(kind: str):
        if kind not in runs:
            config = tiny_config(kind)
            workdir = str(tmp_path_factory.mktemp(f"{kind}_workdir"))
            result = loop.train_and_evaluate(config, workdir, stop_at=2)  # checkpoint at 2
            assert result["step"] == 2
            runs[kind] = (config, workdir, result["state"].params)
        return runs[kind]

    return get


def our_model(config, params):
    """The task and a jitted ``(*inputs) -> outputs`` of our model with ``params``."""
    task = objectives.get_task(config)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: task.create_model(nnx.Rngs(0))), nnx.Param)
    # One compile is faster than running the model op by op.
    forward = jax.jit(lambda params, *inputs: nnx.merge(graphdef, params)(*inputs))
    return task, functools.partial(forward, params)


def compare_bert(model, hf_model, hf_tokenizer, kind) -> float:
    batch = hf_tokenizer(SENTENCES, SENTENCES[::-1], padding=True, return_tensors="np")
    ours = model(
        jnp.asarray(batch["input_ids"]),
        jnp.asarray(batch["token_type_ids"]),
        jnp.asarray(batch["attention_mask"]),
    )
    with torch.no_grad():
        out = hf_model(**{k: torch.tensor(v) for k, v in batch.items()})
    pair = out.seq_relationship_logits if kind == "bert" else out.sop_logits
    theirs = (out.prediction_logits.numpy(), pair.numpy())
    return max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(ours, theirs, strict=True))


def compare_t5(model, hf_model, hf_tokenizer) -> float:
    inputs = hf_tokenizer(SENTENCES, padding=True, return_tensors="np")
    targets = hf_tokenizer(SENTENCES[::-1], padding=True, return_tensors="np")["input_ids"]
    decoder_inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # shift right; 0 starts
    ours = model(jnp.asarray(inputs["input_ids"]), jnp.asarray(decoder_inputs))
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(inputs["input_ids"]),
            attention_mask=torch.tensor(inputs["attention_mask"]),
            decoder_input_ids=torch.tensor(decoder_inputs),
        )
    return float(np.abs(np.asarray(ours) - out.logits.numpy()).max())


def load_export(kind: str, out_dir):
    """The exported model (its Auto class, every weight used) and tokenizer, offline."""
    auto_class, model_class = HF_CLASSES[kind]
    hf_model, info = getattr(transformers, auto_class).from_pretrained(
        out_dir, output_loading_info=True
    )
    assert type(hf_model).__name__ == model_class
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return hf_model, transformers.AutoTokenizer.from_pretrained(out_dir)


@pytest.mark.parametrize("kind", ["bert", "albert", "t5"])
def test_export_loads_offline_with_identical_outputs(kind, pretrained, tmp_path):
    config, workdir, params = pretrained(kind)
    out_dir = hf.export_checkpoint(config, workdir, str(tmp_path / "hf"))
    assert {"config.json", "model.safetensors", "spiece.model", "tokenizer.json"} <= set(
        os.listdir(out_dir)
    )

    hf_model, hf_tokenizer = load_export(kind, out_dir)
    task, model = our_model(config, params)
    tokenizer = task.tokenizer

    # Tokenizer: our ids wrapped in the model's special tokens; the special ids agree.
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).tolist()
        expected = ids + [1] if kind == "t5" else [3, *ids, 4]
        assert hf_tokenizer(sentence)["input_ids"] == expected, sentence
    # Whole held-out documents too (about 36k tokens; on the training shards only one
    # float32 score tie, '▁Or an' vs '▁O ran', splits differently).
    documents = []
    for path in sorted(glob.glob(config.data.eval_pattern)):
        with gzip.open(path, "rt") as lines:
            documents += [json.loads(line)["text"] for line in lines]
    encoded = hf_tokenizer(documents)["input_ids"]
    for document, ids in zip(documents, encoded, strict=True):
        ours = tokenizer.encode(document).tolist()
        assert ids == (ours + [1] if kind == "t5" else [3, *ours, 4]), document[:80]
    assert len(hf_tokenizer) == tokenizer.vocab_size
    assert (hf_tokenizer.pad_token_id, hf_tokenizer.unk_token_id) == (0, 2)
    if kind == "t5":
        assert hf_tokenizer.eos_token_id == 1
        assert hf_model.config.decoder_start_token_id == 0
        for i in (0, 99):
            assert hf_tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") == tokenizer.sentinel_id(i)
    else:
        special = ("cls", "sep", "mask")
        assert [getattr(hf_tokenizer, f"{s}_token_id") for s in special] == [3, 4, 5]
        assert (hf_model.config.bos_token_id, hf_model.config.eos_token_id) == (3, 4)

    # Outputs: the same logits on the same ids.
    hf_model.eval()
    if kind == "t5":
        diff = compare_t5(model, hf_model, hf_tokenizer)
    else:
        diff = compare_bert(model, hf_model, hf_tokenizer, kind)
    print(f"{kind}: max |logit diff| ours vs transformers {diff:.2e}")
    assert diff < TOLERANCE

    # And back: import_hf gives the checkpoint's parameters.
    imported = hf.import_hf(out_dir, config)
    expected_leaves = jax.tree.leaves(jax.device_get(params))
    imported_leaves = jax.tree.leaves(imported)
    assert len(imported_leaves) == len(expected_leaves)
    for a, b in zip(imported_leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def export_command(workdir: str, out_dir, *extra: str) -> list[str]:
    """``bert-jax export --workdir W --out D``: no --config unless ``extra`` gives one."""
    command = [sys.executable, "-m", "bert_jax", "export", *extra]
    return [*command, "--workdir", workdir, "--out", str(out_dir)]


@pytest.mark.parametrize("kind", ["bert", "albert", "t5"])
def test_export_without_config_reads_the_checkpoint(kind, pretrained, tmp_path):
    """No --config, run from another directory: the model, vocabulary and mesh come from
    the checkpoint, and transformers loads the directory with our logits."""
    config, workdir, params = pretrained(kind)
    out_dir = tmp_path / "hf"
    env = {**CLI_ENV, "PYTHONPATH": str(REPO_ROOT)}  # run in tmp_path: nothing relative to the repo
    done = subprocess.run(
        export_command(workdir, out_dir), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    hf_model, hf_tokenizer = load_export(kind, out_dir)
    assert len(hf_tokenizer) == objectives.get_task(config).tokenizer.vocab_size
    _, model = our_model(config, params)
    hf_model.eval()
    if kind == "t5":
        diff = compare_t5(model, hf_model, hf_tokenizer)
    else:
        diff = compare_bert(model, hf_model, hf_tokenizer, kind)
    assert diff < TOLERANCE
    # The same directory as an export given the run config.
    api_dir = pathlib.Path(hf.export_checkpoint(config, workdir, str(tmp_path / "api")))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spiece.model"):
        assert (out_dir / name).read_bytes() == (api_dir / name).read_bytes(), name


def test_checkpoint_without_a_recorded_run_config_exports_with_the_config(pretrained, tmp_path):
    """A checkpoint written before the ``run_config`` item: --config is needed, as before."""
    config, workdir, _ = pretrained("bert")
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    for step in (old / "checkpoints").iterdir():
        if step.name.isdigit():  # the checkpoint as the code before the item wrote it
            shutil.rmtree(step / "run_config")
    with pytest.raises(ValueError, match="records no run config .* --config"):
        hf.export_checkpoint(None, str(old), str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    out_dir = pathlib.Path(hf.export_checkpoint(config, str(old), str(tmp_path / "hf")))
    new_dir = pathlib.Path(hf.export_checkpoint(None, workdir, str(tmp_path / "new")))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spiece.model"):
        assert (out_dir / name).read_bytes() == (new_dir / name).read_bytes(), name


def test_overrides_alone_change_the_recorded_run_config(pretrained, tmp_path):
    """``bert-jax evaluate --workdir W --config.train.eval_batches=1`` (no --config FILE):
    the checkpoint's run config with that field changed (before: absl refused --config.*
    flags without a recipe); a field that changes the weights is refused by the guard."""
    config, shared, _ = pretrained("bert")
    workdir = str(tmp_path / "run")  # evaluate writes evaluate.json: not into the shared one
    shutil.copytree(shared, workdir)
    recipe = f"{REPO_ROOT / 'configs' / 'recorded.py'}:{workdir}"
    recorded = run_config.load_recipe(recipe)
    assert recorded.model.to_dict() == config.model.to_dict()
    assert recorded.train.eval_batches == config.train.eval_batches > 1
    given = ["bert-jax", "evaluate", "--workdir", workdir, "--config.train.eval_batches=1"]
    assert main.with_recorded_config(given) == [given[0], f"--config={recipe}", *given[1:]]
    for unchanged in (  # a recipe given, no override, a command that records nothing
        [*given[:2], "--config", "configs/bert.py", *given[2:]],
        given[:4],
        ["bert-jax", "pretrain", *given[2:]],
    ):
        assert main.with_recorded_config(unchanged) == unchanged
    command = [sys.executable, "-m", "bert_jax", *given[1:]]
    done = subprocess.run(command, cwd=tmp_path, env=CLI_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((pathlib.Path(workdir) / "evaluate.json").read_text())
    assert scores["nsp_pairs"] == config.train.batch_size  # one held-out batch, not several
    recorded.model.hidden_size *= 2
    with pytest.raises(ValueError, match="hidden_size"):
        hf.export_checkpoint(recorded, workdir, str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()


# The tiny_bert_config fields that differ from configs/bert.py:recipe=short,runlocal.
FLAG_FIELDS = (
    "data.train_pattern",
    "data.eval_pattern",
    "data.vocab_path",
    "data.max_seq_length",
    "objective.max_predictions_per_seq",
    "model.hidden_size",
    "model.num_heads",
    "model.intermediate_size",
    "model.num_layers",
)


def cli_command(name: str, config, workdir: str, *extra: str) -> list[str]:
    """``bert-jax NAME`` on the tiny config's checkpoint in ``workdir``."""
    flags = [f"--config.{k}={config[k.split('.')[0]][k.split('.')[1]]}" for k in FLAG_FIELDS]
    command = [sys.executable, "-m", "bert_jax", name]
    command += ["--config", str(REPO_ROOT / "configs" / "bert.py:recipe=short,runlocal"), *flags]
    return [*command, "--workdir", workdir, *extra]


CLI_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}


def test_cli_export_writes_the_same_directory(pretrained, tmp_path):
    config, workdir, _ = pretrained("bert")
    api_dir = pathlib.Path(hf.export_checkpoint(config, workdir, str(tmp_path / "api")))
    cli_dir = tmp_path / "cli"
    command = cli_command("export", config, workdir, "--out", str(cli_dir))
    done = subprocess.run(command, cwd=REPO_ROOT, env=CLI_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "spiece.model"):
        assert (cli_dir / name).read_bytes() == (api_dir / name).read_bytes()
    api = safetensors_numpy.load_file(str(api_dir / "model.safetensors"))
    cli = safetensors_numpy.load_file(str(cli_dir / "model.safetensors"))
    assert sorted(api) == sorted(cli)
    for key, value in api.items():
        np.testing.assert_array_equal(cli[key], value, err_msg=key)


MAX_INTERRUPT_TRIES = 5


def _interrupt_when(proc: subprocess.Popen, seen, timeout_s: float = 300) -> str:
    """SIGINT once ``seen()`` holds (polled every millisecond); the process's output."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not seen() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, f"ended before the point to interrupt: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return out


def test_ctrl_c_in_export_and_evaluate_is_one_line_exit_130_and_no_partial_file(
    pretrained, tmp_path
):
    """Before: a KeyboardInterrupt traceback (exit -SIGINT); export left config.json and
    model.safetensors without the tokenizer files."""
    config, workdir, _ = pretrained("bert")
    out_dir = tmp_path / "hf"
    command = cli_command("export", config, workdir, "--out", str(out_dir))
    run = dict(cwd=REPO_ROOT, env=CLI_ENV, text=True, stdout=subprocess.PIPE)
    # In the middle of writing: the directory being written exists beside --out. Writing
    # a tiny model takes milliseconds, so under load the signal can land after the rename:
    # then the export must be whole (exit 0, every file), and the test tries again; the
    # last try interrupts as soon as the checkpoint is being opened (orbax's first line),
    # which leaves the whole restore and write to interrupt.
    log_path = tmp_path.parent / f"{tmp_path.name}-export.log"
    for attempt in range(MAX_INTERRUPT_TRIES):
        opening = attempt == MAX_INTERRUPT_TRIES - 1
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                command, stderr=subprocess.STDOUT, **{**run, "stdout": log_file}
            )
            _interrupt_when(
                proc,
                (lambda: "CheckpointManagerOptions" in log_path.read_text())
                if opening
                else (lambda: list(tmp_path.glob(".hf.partial-*"))),
            )
        log = log_path.read_text()
        if proc.returncode != 0:
            break
        assert sorted(os.listdir(tmp_path)) == ["hf"], log[-3000:]
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out_dir))
        shutil.rmtree(out_dir)
    assert proc.returncode == 130, log[-3000:]
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        "bert-jax: SIGINT (Ctrl-C): export stopped before it finished; rerun the same command"
    )
    assert os.listdir(tmp_path) == []  # neither --out nor the partial directory
    # evaluate: interrupted after the checkpoint is restored, while scoring it.
    log_path = tmp_path / "evaluate.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cli_command("evaluate", config, workdir), stderr=log_file, **run)
        _interrupt_when(proc, lambda: "unigram baseline from" in log_path.read_text())
    log = log_path.read_text()
    assert proc.returncode == 130 and "Traceback" not in log, log[-3000:]
    assert log.strip().splitlines()[-1] == (
        "bert-jax: SIGINT (Ctrl-C): evaluate stopped before it finished; rerun the same command"
    )
    assert not [name for name in os.listdir(workdir) if name.startswith("evaluate.json")]


def test_clear_errors(pretrained, tmp_path):
    config, workdir, _ = pretrained("bert")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        hf.export_checkpoint(config, str(tmp_path / "empty"), str(tmp_path / "out"))
    out_dir = hf.export_checkpoint(config, workdir, str(tmp_path / "hf"))
    wider = tiny_config("bert")
    wider.model.hidden_size = 64
    wider.model.num_layers = 3
    with pytest.raises(
        ValueError, match=r"hidden_size: .*=32 config=64; num_layers: .*=2 config=3"
    ):
        hf.import_hf(out_dir, wider)
    with pytest.raises(ValueError, match="model_type 'bert'"):
        hf.import_hf(out_dir, tiny_config("albert"))


def test_scanned_checkpoint_exports_like_transformers_under_any_compute_fields(
    tmp_path, vocab_path, corpus_dir
):
    config = tiny_config("bert")
    config.model.scan_layers = True
    config.model.remat_policy = "full"
    workdir = str(tmp_path / "workdir")
    params = loop.train_and_evaluate(config, workdir, stop_at=2)["state"].params
    assert params["encoder"]["ffn_sublayers"]["mlp"]["wi"]["kernel"].shape[0] == 2  # stacked
    out_dir = hf.export_checkpoint(config, workdir, str(tmp_path / "hf"))
    hf_model = transformers.AutoModelForPreTraining.from_pretrained(out_dir).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    _, model = our_model(config, params)
    assert compare_bert(model, hf_model, hf_tokenizer, "bert") < TOLERANCE
    # dtype / attention / remat_policy do not change the weights: the checkpoint still
    # restores under other values and exports the same tensors.
    config.model.remat_policy, config.model.attention = "none", "explicit"
    again = hf.export_checkpoint(config, workdir, str(tmp_path / "again"))
    for name in ("config.json", "model.safetensors"):
        assert (pathlib.Path(again) / name).read_bytes() == (
            pathlib.Path(out_dir) / name
        ).read_bytes()
    imported = hf.import_hf(out_dir, config)  # stacked into the config's layout
    for a, b in zip(jax.tree.leaves(imported), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # scan_layers changes the parameter tree: the unscanned config is refused by name.
    config.model.scan_layers = False
    with pytest.raises(ValueError, match="scan_layers"):
        hf.export_checkpoint(config, workdir, str(tmp_path / "unscanned"))
