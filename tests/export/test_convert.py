"""The shared conversion helpers: one reader for every family, templates, the checked loader."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax
from flax import nnx
from safetensors.numpy import load_file, save_file

from bert_jax.export import bert_weights, convert, hf, t5_weights
from bert_jax.models import bert, t5

BERT = bert.BertConfig(
    vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    max_position_embeddings=24,
)  # fmt: skip
T5 = t5.T5Config(
    vocab_size=40, d_model=16, num_heads=2, d_kv=8, d_ff=24, num_encoder_layers=1,
    num_decoder_layers=1,
)  # fmt: skip


def bert_params(seed: int = 0) -> nnx.State:
    abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(BERT, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    state = nnx.state(abstract, nnx.Param)
    return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype), state)


def test_expand_fills_both_sides_of_every_template():
    table = (convert.Entry("embed", "e.weight"), *convert.linear("layers/{a}/dense", "block.{i}"))
    entries = convert.expand(table, [dict(i=0, a=0), dict(i=1, a=0)])
    assert [(e.ours, e.hf, e.transpose) for e in entries] == [
        ("embed", "e.weight", False),
        ("layers/0/dense/kernel", "block.0.weight", True),
        ("layers/0/dense/kernel", "block.1.weight", True),
        ("layers/0/dense/bias", "block.0.bias", False),
        ("layers/0/dense/bias", "block.1.bias", False),
    ]


def test_bert_directory_in_shards_and_bfloat16_reads_like_one_float32_file(tmp_path):
    # The BERT reader once took only one float32 model.safetensors (NumPy has no
    # bfloat16); the one shared reader takes what the T5 reader took.
    params = bert_params()
    bert_weights.save_hf(params, BERT, "bert", str(tmp_path / "one"))
    tensors = load_file(tmp_path / "one" / "model.safetensors")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    keys = sorted(tensors)
    weight_map = {}
    for shard, part in (("a.safetensors", keys[::2]), ("b.safetensors", keys[1::2])):
        # bfloat16 holds these values to about 3 significant digits
        safetensors.flax.save_file(
            {k: jnp.asarray(tensors[k], jnp.bfloat16) for k in part}, sharded / shard
        )
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    config, state = hf.load_hf(str(sharded))
    assert config == BERT
    again = bert_weights.to_hf_state_dict(state, config, "bert")
    assert sorted(again) == keys
    for key in keys:
        np.testing.assert_allclose(again[key], tensors[key], rtol=1e-2, atol=1e-2, err_msg=key)


def test_load_hf_checks_the_model_type_and_the_fit(tmp_path):
    state = nnx.state(nnx.eval_shape(lambda: t5.T5ForConditionalGeneration(T5, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), state)
    t5_weights.save_hf(state, T5, tmp_path)
    with pytest.raises(ValueError, match=r"config.json: model_type 't5'"):
        hf.load_hf(str(tmp_path), kinds=("bert", "albert"))
    config, loaded = hf.load_hf(str(tmp_path), kinds=("t5",))
    assert config == T5
    assert sorted(t5_weights.to_hf_state_dict(loaded, config)) == sorted(
        t5_weights.to_hf_state_dict(state, T5)
    )
    with pytest.raises(ValueError, match="d_ff"):  # import_hf's fit check names the field
        hf.import_hf(str(tmp_path), dataclasses.replace(T5, d_ff=32))


def test_read_state_dict_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        convert.read_state_dict(tmp_path)
    save_file({"x": np.ones(2, np.float32)}, tmp_path / "model.safetensors")
    assert list(convert.read_state_dict(tmp_path)) == ["x"]
