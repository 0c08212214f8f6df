"""T5 <-> Hugging Face: name table round trips and logits parity in transformers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.export import hf, t5_weights
from bert_jax.models.t5 import T5ForConditionalGeneration, t5_config
from bert_jax.models.t5_layers import relative_position_bucket

VOCAB = 256
PARITY_CONFIGS = {
    "v1_0": t5_config("tiny", "v1_0", vocab_size=VOCAB),
    "v1_1": t5_config("tiny", "v1_1", vocab_size=VOCAB),
    # Odd head count, inner dim (3 * 24) != d_model, more decoder than encoder layers.
    "v1_0_3heads": t5_config(
        "tiny", "v1_0", vocab_size=VOCAB, num_heads=3, d_kv=24, num_decoder_layers=3
    ),
}


def build(config, state=None) -> T5ForConditionalGeneration:
    """A model of ``config`` holding ``state`` (fresh random weights if None)."""
    if state is None:
        model = T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))
        # Norm scales start at 1; perturb them so a mis-mapped norm would show.
        state = nnx.state(model)
        for index, (path, variable) in enumerate(nnx.to_flat_state(state)):
            if path[-1] == "scale":
                noise = jax.random.normal(jax.random.key(index), variable.get_value().shape)
                variable.set_value(1.0 + 0.2 * noise)
        nnx.update(model, state)
        return model
    abstract = nnx.eval_shape(lambda: T5ForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), state)


@nnx.jit
def forward(model, encoder_tokens, decoder_tokens):
    return model(encoder_tokens, decoder_tokens)


def parity_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Lengths past max_distance=128 so the last (shared) bucket is exercised."""
    rng = np.random.default_rng(0)
    encoder_tokens = rng.integers(2, VOCAB, (2, 150))
    encoder_tokens[1, 97:] = 0  # padding
    decoder_tokens = rng.integers(2, VOCAB, (2, 140))
    decoder_tokens[:, 0] = 0  # decoder start token
    return encoder_tokens, decoder_tokens


def hf_logits(hf_model, encoder_tokens, decoder_tokens) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(encoder_tokens),
            attention_mask=torch.tensor(encoder_tokens > 0, dtype=torch.long),
            decoder_input_ids=torch.tensor(decoder_tokens),
        )
    return out.logits.numpy()


def test_state_round_trips_through_hf_names():
    config = t5_config("tiny", "v1_1", vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1)
    state = nnx.state(T5ForConditionalGeneration(config, rngs=nnx.Rngs(3)))
    state_dict = t5_weights.to_hf_state_dict(state, config)
    assert "lm_head.weight" in state_dict and state_dict["lm_head.weight"].shape == (VOCAB, 128)
    q = state_dict["encoder.block.0.layer.0.SelfAttention.q.weight"]
    ours = state["encoder"]["layers"][0]["self_attention"]["query"]["kernel"].get_value()
    np.testing.assert_array_equal(q, np.asarray(ours).T)
    restored = t5_weights.from_hf_state_dict(state_dict, config)
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(state), nnx.to_flat_state(restored), strict=True
    ):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
        assert a.get_metadata()["out_sharding"] == b.get_metadata()["out_sharding"]


def test_from_hf_state_dict_rejects_bad_checkpoints():
    config = t5_config("tiny", "v1_0", vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1)
    state_dict = t5_weights.to_hf_state_dict(
        nnx.state(T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))), config
    )
    # Tied checkpoints may carry lm_head (equal to shared) and HF's duplicates.
    extra = {
        "lm_head.weight": state_dict["shared.weight"],
        "encoder.embed_tokens.weight": state_dict["shared.weight"],
    }
    t5_weights.from_hf_state_dict({**state_dict, **extra}, config)
    with pytest.raises(ValueError, match="lm_head"):
        t5_weights.from_hf_state_dict(
            {**state_dict, "lm_head.weight": np.zeros((VOCAB, 128))}, config
        )
    missing = dict(state_dict)
    del missing["decoder.final_layer_norm.weight"]
    with pytest.raises(KeyError, match="decoder.final_layer_norm.weight"):
        t5_weights.from_hf_state_dict(missing, config)
    with pytest.raises(KeyError, match="surprise"):
        t5_weights.from_hf_state_dict({**state_dict, "surprise": np.zeros(1)}, config)
    wrong = {**state_dict, "encoder.final_layer_norm.weight": np.ones(7)}
    with pytest.raises(ValueError, match="encoder.final_layer_norm.weight"):
        t5_weights.from_hf_state_dict(wrong, config)


def test_config_round_trips_through_hf_dict():
    for config in PARITY_CONFIGS.values():
        assert t5_weights.config_from_hf(t5_weights.hf_config_dict(config)) == config
    with pytest.raises(ValueError, match="feed_forward_proj"):
        t5_weights.config_from_hf(
            {**t5_weights.hf_config_dict(config), "feed_forward_proj": "silu"}
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bidirectional", "num_buckets", "max_distance"),
    [(True, 32, 128), (False, 32, 128), (True, 8, 20), (False, 64, 200)],
)
def test_relative_position_buckets_match_hf(bidirectional, num_buckets, max_distance):
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-600, 601)
    expected = T5Attention._relative_position_bucket(
        torch.tensor(relative),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    ).numpy()
    ours = relative_position_bucket(
        jnp.asarray(relative),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    )
    np.testing.assert_array_equal(np.asarray(ours), expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_logits_match_transformers_both_directions(name, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = PARITY_CONFIGS[name]
    encoder_tokens, decoder_tokens = parity_inputs()

    # Ours -> HF: save_hf, load with transformers' own loader.
    model = build(config)
    ours = np.asarray(forward(model, jnp.asarray(encoder_tokens), jnp.asarray(decoder_tokens)))
    t5_weights.save_hf(nnx.state(model), config, tmp_path)
    hf_model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    theirs = hf_logits(hf_model.eval(), encoder_tokens, decoder_tokens)
    export_diff = np.abs(ours - theirs).max()
    assert export_diff < 1e-4, export_diff
    loaded_config, _ = hf.load_hf(str(tmp_path))
    assert loaded_config == config

    # HF -> ours: a random transformers model imported from its state_dict.
    torch.manual_seed(0)
    hf_model = transformers.T5ForConditionalGeneration(t5_weights.hf_config(config)).eval()
    with torch.no_grad():
        for key, parameter in hf_model.named_parameters():
            if key.endswith("layer_norm.weight"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    if not config.tie_word_embeddings:
        # transformers>=5 ties lm_head at construction; give it its own weights.
        hf_model.lm_head.weight = torch.nn.Parameter(0.05 * torch.randn(VOCAB, config.d_model))
    theirs = hf_logits(hf_model, encoder_tokens, decoder_tokens)
    imported_config = t5_weights.config_from_hf(hf_model.config)
    assert imported_config == config
    state = t5_weights.from_hf_state_dict(hf_model.state_dict(), imported_config)
    imported = build(config, state)
    ours = np.asarray(forward(imported, jnp.asarray(encoder_tokens), jnp.asarray(decoder_tokens)))
    import_diff = np.abs(ours - theirs).max()
    assert import_diff < 1e-4, import_diff
    print(f"{name}: max |logit diff| export {export_diff:.2e}, import {import_diff:.2e}")


@pytest.mark.slow
def test_scanned_layout_exports_the_same_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = PARITY_CONFIGS["v1_0_3heads"]
    scanned_config = dataclasses.replace(config, scan_layers=True)
    model = build(config)
    state = t5_weights.from_hf_state_dict(
        t5_weights.to_hf_state_dict(nnx.state(model), config), scanned_config
    )
    assert state["decoder"]["layers"]["self_attention"]["query"]["kernel"].shape[0] == 3
    scanned = build(scanned_config, state)
    t5_weights.save_hf(nnx.state(model), config, tmp_path / "loop")
    t5_weights.save_hf(nnx.state(scanned), scanned_config, tmp_path / "scan")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "loop" / name).read_bytes() == (tmp_path / "scan" / name).read_bytes()
    encoder_tokens, decoder_tokens = parity_inputs()
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "scan").eval()
    theirs = hf_logits(hf_model, encoder_tokens, decoder_tokens)
    ours = forward(scanned, jnp.asarray(encoder_tokens), jnp.asarray(decoder_tokens))
    assert np.abs(np.asarray(ours) - theirs).max() < 1e-4
