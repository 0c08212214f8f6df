"""BERT / ALBERT export and import against Hugging Face transformers (PyTorch, fp32, eval).

Random weights everywhere (LayerNorm scales and biases included), so a wrong
transpose, a swapped layer or a mismatched group mapping shows up in the logits.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.export import bert_weights, hf
from bert_jax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow
VOCAB = 97
TOLERANCE = 1e-4
HF_CLASSES = {"bert": "BertForPreTraining", "albert": "AlbertForPreTraining"}


def graphdef(config: bert.BertConfig):
    return nnx.graphdef(nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0))))


def inputs(length: int = 16):
    """Three rows: full, padded after 12 tokens, padded after 3 tokens (int64 for torch)."""
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, VOCAB, (3, length))
    segment_ids = (np.arange(length)[None].repeat(3, 0) >= length // 2).astype(np.int64)
    input_mask = np.ones((3, length), np.int64)
    input_mask[1, 12:] = 0
    input_mask[2, 3:] = 0
    return input_ids, segment_ids, input_mask


def random_model(config: bert.BertConfig, seed: int) -> bert.BertForPreTraining:
    """Our model with every parameter random (NumPy: no per-op JAX compiles)."""
    abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(
        lambda leaf: jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype), state
    )
    return nnx.merge(graphdef, state)


def randomize_torch(model, seed: int):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():  # tied parameters are yielded once
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def hf_logits(hf_model, kind: str):
    input_ids, segment_ids, input_mask = (torch.tensor(x) for x in inputs())
    with torch.no_grad():
        out = hf_model(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=input_mask)
    pair = out.seq_relationship_logits if kind == "bert" else out.sop_logits
    return out.prediction_logits.numpy(), pair.numpy()


def max_diffs(ours, theirs) -> tuple[float, float]:
    return tuple(
        float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(ours, theirs, strict=True)
    )


EXPORT_CASES = {
    "bert_tiny": ("bert", bert.sized_config("bert", "tiny", vocab_size=VOCAB)),
    "bert_odd_heads": (
        "bert",
        bert.BertConfig(VOCAB, 60, 2, 3, 48, max_position_embeddings=32),
    ),
    "albert_factorised_2_groups": (
        "albert",
        bert.BertConfig(
            VOCAB, 48, 4, 4, 40, embedding_size=16, share_mode="all", num_groups=2,
            max_position_embeddings=32, hidden_act="gelu_new",
        ),
    ),
    # L=18, G=14: Hugging Face's int(i / (L / G)) differs from i * G // L at layer 9.
    "albert_group_rounding": (
        "albert",
        bert.BertConfig(
            VOCAB, 48, 18, 4, 40, embedding_size=16, share_mode="all", num_groups=14,
            max_position_embeddings=32, hidden_act="gelu_new",
        ),
    ),
    # No Hugging Face equivalent: exported unrolled into one group per layer.
    "albert_attention_shared_unrolled": (
        "albert",
        bert.BertConfig(
            VOCAB, 48, 3, 4, 40, embedding_size=16, share_mode="attention",
            max_position_embeddings=32, hidden_act="gelu_new",
        ),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_matches_transformers(case, tmp_path):
    kind, config = EXPORT_CASES[case]
    model = random_model(config, seed=1)
    # Eager on purpose: repeated layers reuse compiled ops; jit would compile each
    # unrolled layer (18 in one case).
    ours = model(*(jnp.asarray(x) for x in inputs()))
    bert_weights.save_hf(model, config, kind, str(tmp_path))
    hf_model = getattr(transformers, HF_CLASSES[kind]).from_pretrained(str(tmp_path)).eval()
    diffs = max_diffs(ours, hf_logits(hf_model, kind))
    print(f"{case}: max |mlm diff| {diffs[0]:.2e}, max |pair diff| {diffs[1]:.2e}")
    assert max(diffs) < TOLERANCE
    # Reading the directory back gives the same config (unless sharing was unrolled)
    # and the same weights.
    loaded_config, loaded_state = hf.load_hf(str(tmp_path))
    assert (loaded_config == config) == (case != "albert_attention_shared_unrolled")
    saved = bert_weights.to_hf_state_dict(model, config, kind)
    for key, value in bert_weights.to_hf_state_dict(loaded_state, loaded_config, kind).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)


IMPORT_CASES = {
    "bert": dict(hidden_size=60, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48),
    "albert": dict(
        embedding_size=16,
        hidden_size=48,
        num_hidden_layers=4,
        num_hidden_groups=2,
        num_attention_heads=4,
        intermediate_size=40,
    ),
}


@pytest.mark.parametrize("kind", list(IMPORT_CASES))
def test_import_from_transformers(kind):
    config_class = transformers.BertConfig if kind == "bert" else transformers.AlbertConfig
    # Same shapes as the export cases, so eager ops compiled there are reused.
    hf_config = config_class(vocab_size=VOCAB, max_position_embeddings=32, **IMPORT_CASES[kind])
    hf_model = randomize_torch(getattr(transformers, HF_CLASSES[kind])(hf_config), seed=2)
    config = bert_weights.config_from_hf(hf_config.to_dict())
    state = bert_weights.from_hf_state_dict(hf_model.state_dict(), config, kind)
    model = nnx.merge(graphdef(config), state)
    diffs = max_diffs(model(*(jnp.asarray(x) for x in inputs())), hf_logits(hf_model, kind))
    print(f"import {kind}: max |mlm diff| {diffs[0]:.2e}, max |pair diff| {diffs[1]:.2e}")
    assert max(diffs) < TOLERANCE
    assert bert_weights.config_from_hf(bert_weights.hf_config(config, kind).to_dict()) == config
    # And back: our export reproduces the original state_dict exactly.
    exported = bert_weights.to_hf_state_dict(state, config, kind, include_tied=True)
    original = hf_model.state_dict()
    for key, value in exported.items():
        np.testing.assert_array_equal(value, original[key].numpy(), err_msg=key)


def test_load_bare_encoder_from_pytorch_bin_keeps_fresh_heads(tmp_path, caplog):
    hf_config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=60, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=48, max_position_embeddings=32,
    )  # fmt: skip
    hf_model = randomize_torch(transformers.BertModel(hf_config), seed=3)
    # BertModel keys have no 'bert.' prefix and no heads.
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    hf_config.to_json_file(tmp_path / "config.json")
    with caplog.at_level(logging.WARNING):
        config, state = hf.load_hf(str(tmp_path))
    assert "cls.predictions.bias" in caplog.text and "cls.seq_relationship.weight" in caplog.text
    model = nnx.merge(graphdef(config), state)
    input_ids, segment_ids, input_mask = inputs()
    sequence, pooled = model.encode(*(jnp.asarray(x) for x in inputs()))
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(input_ids),
            token_type_ids=torch.tensor(segment_ids),
            attention_mask=torch.tensor(input_mask),
        )
    np.testing.assert_allclose(sequence, out.last_hidden_state.numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=TOLERANCE)


def test_unsupported_layouts_raise_clear_errors():
    factorised = bert.BertConfig(VOCAB, 32, 2, 2, 24, embedding_size=16)
    with pytest.raises(ValueError, match="embedding_size"):
        bert_weights.to_hf_state_dict(random_model(factorised, 0), factorised, "bert")
    shared_ffn = bert.BertConfig(VOCAB, 32, 2, 2, 24, share_mode="ffn")
    with pytest.raises(ValueError, match="share_mode"):
        bert_weights.from_hf_state_dict({}, shared_ffn, "bert")
    with pytest.raises(ValueError, match="inner_group_num"):
        bert_weights.config_from_hf(
            dict(
                model_type="albert", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=24, inner_group_num=2,
            )
        )  # fmt: skip
    config = bert.BertConfig(VOCAB, 32, 1, 2, 24)
    state_dict = bert_weights.to_hf_state_dict(random_model(config, 0), config, "bert")
    del state_dict["bert.encoder.layer.0.output.dense.weight"]
    with pytest.raises(KeyError, match="output.dense.weight"):
        bert_weights.from_hf_state_dict(state_dict, config, "bert")
    wider = bert.BertConfig(VOCAB, 32, 1, 2, 28)
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        bert_weights.from_hf_state_dict(
            bert_weights.to_hf_state_dict(random_model(config, 0), config, "bert"), wider, "bert"
        )


@pytest.mark.parametrize("case", ["bert_tiny", "albert_factorised_2_groups"])
def test_scanned_layout_exports_the_same_directory(case, tmp_path):
    kind, config = EXPORT_CASES[case]
    if config.share_mode == "all":  # scan_layers scans one shared layer: one group only
        config = dataclasses.replace(config, num_groups=1)
    scanned_config = dataclasses.replace(config, scan_layers=True)
    model = random_model(config, seed=1)
    scanned = nnx.merge(
        graphdef(scanned_config), bert.stack_layers(nnx.state(model, nnx.Param), scanned_config)
    )
    bert_weights.save_hf(model, config, kind, str(tmp_path / "loop"))
    bert_weights.save_hf(scanned, scanned_config, kind, str(tmp_path / "scan"))
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "loop" / name).read_bytes() == (tmp_path / "scan" / name).read_bytes()
    # The scanned model itself matches transformers, and imports into its own layout.
    hf_model = getattr(transformers, HF_CLASSES[kind]).from_pretrained(str(tmp_path / "scan"))
    theirs = hf_logits(hf_model.eval(), kind)
    assert max(max_diffs(scanned(*map(jnp.asarray, inputs())), theirs)) < TOLERANCE
    state = bert_weights.from_hf_state_dict(hf_model.state_dict(), scanned_config, kind)
    imported = nnx.merge(graphdef(scanned_config), state)
    assert max(max_diffs(imported(*map(jnp.asarray, inputs())), theirs)) < TOLERANCE
