"""The shared conversion helpers: one reader for every family, templates, the checked loader."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax
from flax import nnx
from safetensors.numpy import load_file, save_file

from bert_jax.data.tokenizer import Tokenizer
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


def _rewrite_header(path, edit) -> None:
    """The safetensors file at ``path`` with its JSON header changed by ``edit(header)``."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])


def test_a_config_json_that_lacks_a_field_or_is_not_json_names_the_file(tmp_path):
    bert_weights.save_hf(bert_params(), BERT, "bert", str(tmp_path))
    config_path = tmp_path / "config.json"
    fields = json.loads(config_path.read_text())
    del fields["hidden_size"]  # before: KeyError 'hidden_size', a traceback
    config_path.write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=rf"{config_path}: HF bert config lacks .*'hidden_size'"):
        hf.load_hf(str(tmp_path))
    config_path.write_text(json.dumps(fields)[:40])  # truncated
    with pytest.raises(ValueError, match=rf"{config_path}: not JSON \(.*line 1 column 41"):
        hf.load_hf(str(tmp_path))


@pytest.mark.parametrize(
    "lie, message",
    [
        # The last tensor's bytes said to run 4 KiB past the end of the file.
        (lambda key, h: h[key]["data_offsets"].__setitem__(1, h[key]["data_offsets"][1] + 4096),
         r"data_offsets \[\d+, \d+\] run past the end of the data"),
        # A shape with twice the elements that its bytes hold.
        (lambda key, h: h[key]["shape"].__setitem__(0, 2 * h[key]["shape"][0]),
         r"dtype F32 shape \[\d+(, \d+)?\] needs \d+ bytes, data_offsets give \d+"),
    ],
)  # fmt: skip
def test_a_safetensors_header_that_lies_names_the_file_and_tensor(tmp_path, lie, message):
    bert_weights.save_hf(bert_params(), BERT, "bert", str(tmp_path))
    path = tmp_path / "model.safetensors"
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    _rewrite_header(path, lambda h: lie(last, h))
    # Before: safetensors_rust.SafetensorError "invalid shape, data type, or offset for
    # tensor" (which one, in which file?), a traceback.
    with pytest.raises(ValueError, match=rf"{path}: not a valid safetensors file: tensor {last!r}"):
        hf.load_hf(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        convert.read_state_dict(tmp_path)


@pytest.mark.parametrize(
    "where", ["../outside.safetensors", "ABSOLUTE", "sub/../../outside.safetensors"]
)
def test_shards_named_outside_the_model_directory_are_refused(tmp_path, where):
    model = tmp_path / "model"
    bert_weights.save_hf(bert_params(), BERT, "bert", str(model))
    # A real shard outside the directory: before, it was loaded.
    outside = tmp_path / "outside.safetensors"
    (model / "model.safetensors").rename(outside)
    shard = str(outside) if where == "ABSOLUTE" else where
    tensors = load_file(outside)
    index = {"weight_map": dict.fromkeys(tensors, shard)}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"index.json: weight_map names shard {shard!r}"):
        hf.load_hf(str(model))


def test_an_export_appears_whole_or_not_at_all(tmp_path, vocab_path):
    tokenizer = Tokenizer(vocab_path)
    out = tmp_path / "hf"
    hf.export_params(bert_params(), BERT, "bert", tokenizer, str(out))
    umask = os.umask(0o022)
    os.umask(umask)
    # model.safetensors was 0600 (safetensors' own mode), the other files 0644.
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "spiece.model"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    # A directory holding files is refused and left as it was; an empty one is taken.
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(ValueError, match=rf"{out}' is not empty: .* replaces nothing"):
        hf.export_params(bert_params(1), BERT, "bert", tokenizer, str(out))
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    (tmp_path / "empty").mkdir()
    hf.export_params(bert_params(), BERT, "bert", tokenizer, str(tmp_path / "empty"))
    assert sorted(os.listdir(tmp_path / "empty")) == sorted(before)
    # A failure after config.json and model.safetensors are written (the sentencepiece
    # model gone when the tokenizer files are made) leaves nothing; before, those two
    # files without a tokenizer.
    shutil.copy(vocab_path, tmp_path / "vanishing.model")
    vanishing = Tokenizer(str(tmp_path / "vanishing.model"))
    os.remove(tmp_path / "vanishing.model")
    with pytest.raises(FileNotFoundError, match="vanishing.model"):
        hf.export_params(bert_params(), BERT, "bert", vanishing, str(tmp_path / "gone"))
    assert sorted(os.listdir(tmp_path)) == ["empty", "hf"]
