"""BERT / ALBERT model: shapes, sharing, parameter counts, dropout, masking, sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.models import bert
from bert_jax.runtime import sharding

VOCAB = 97


def small_config(**overrides) -> bert.BertConfig:
    # Odd head count on purpose: 3 heads of 20.
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=60,
        num_layers=2,
        num_heads=3,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    return bert.BertConfig(**{**fields, **overrides})


def batch(length: int = 16):
    """Three rows: full, padded after 12 tokens, padded after 3 tokens."""
    rng = np.random.default_rng(0)
    input_ids = jnp.asarray(rng.integers(0, VOCAB, (3, length)), jnp.int32)
    segment_ids = jnp.asarray(np.arange(length)[None].repeat(3, 0) >= length // 2, jnp.int32)
    input_mask = jnp.ones((3, length), jnp.int32).at[1, 12:].set(0).at[2, 3:].set(0)
    return input_ids, segment_ids, input_mask


@pytest.fixture(scope="module")
def model() -> bert.BertForPreTraining:
    return bert.BertForPreTraining(small_config(), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=64, num_heads=3), "hidden_size"),
        (dict(share_mode="some"), "share_mode"),
        (dict(num_groups=2), "num_groups"),
        (dict(share_mode="all", num_groups=3), "num_groups"),
        (dict(hidden_act="swish"), "hidden_act"),
        (dict(dtype="int8"), "dtype"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(dropout_rate=1.0), "dropout_rate"),
    ],
)
def test_config_rejects_bad_fields_by_name(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


def test_sized_configs():
    config = bert.sized_config("albert", "base", vocab_size=30000)
    assert (config.num_layers, config.hidden_size, config.embedding_size) == (12, 768, 128)
    assert config.share_mode == "all"
    assert bert.sized_config("bert", "tiny", vocab_size=100, num_layers=3).num_layers == 3
    with pytest.raises(ValueError, match="huge"):
        bert.sized_config("bert", "huge", vocab_size=100)


def test_output_shapes_with_odd_heads(model):
    input_ids, segment_ids, input_mask = batch()
    mlm, pair = model(input_ids, segment_ids, input_mask)
    assert mlm.shape == (3, 16, VOCAB) and mlm.dtype == jnp.float32
    assert pair.shape == (3, 2) and pair.dtype == jnp.float32
    sequence, pooled = model.encode(input_ids, segment_ids, input_mask)
    assert sequence.shape == (3, 16, 60) and pooled.shape == (3, 60)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(*batch(length=40))


def test_factorised_embeddings_shapes():
    config = small_config(embedding_size=16, share_mode="all")
    model = bert.BertForPreTraining(config, rngs=nnx.Rngs(0))
    assert model.encoder.embeddings.token.embedding.shape == (VOCAB, 16)
    mlm, pair = model(*batch(), jnp.array([[1, 2, 3], [0, 5, 7], [0, 0, 1]]))
    assert mlm.shape == (3, 3, VOCAB) and pair.shape == (3, 2)


def test_masked_positions_gather_equals_full_logits(model):
    inputs = batch()
    positions = jnp.array([[1, 4, 4, 0], [11, 2, 9, 3], [15, 0, 1, 2]])
    full, pair_full = model(*inputs)
    gathered, pair = model(*inputs, positions)
    expected = jnp.take_along_axis(full, positions[:, :, None], axis=1)
    np.testing.assert_allclose(gathered, expected, atol=1e-6)
    np.testing.assert_allclose(pair, pair_full, atol=1e-6)


def test_padding_is_invisible_to_real_tokens(model):
    input_ids, segment_ids, input_mask = batch()
    changed = input_ids.at[1, 12:].set(7)  # only padded positions of row 1 change
    mlm, pair = model(input_ids, segment_ids, input_mask)
    mlm2, pair2 = model(changed, segment_ids, input_mask)
    np.testing.assert_allclose(mlm[:, :12], mlm2[:, :12], atol=1e-5)
    np.testing.assert_allclose(pair, pair2, atol=1e-5)


@pytest.mark.parametrize(
    "share_mode, num_groups, attention_sets, ffn_sets",
    [
        ("none", 1, 6, 6),
        ("all", 1, 1, 1),
        ("all", 2, 2, 2),
        ("attention", 1, 1, 6),
        ("ffn", 2, 6, 2),
    ],
)
def test_sharing_modes_hold_one_parameter_set_per_group(
    share_mode, num_groups, attention_sets, ffn_sets
):
    config = small_config(num_layers=6, share_mode=share_mode, num_groups=num_groups)
    model = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    assert len(model.encoder.attention_sublayers) == attention_sets
    assert len(model.encoder.ffn_sublayers) == ffn_sets
    # A plain tree: every Variable object appears exactly once.
    variables = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)]
    assert len({id(v) for v in variables}) == len(variables)
    used_attention = {config.attention_index(i) for i in range(6)}
    used_ffn = {config.ffn_index(i) for i in range(6)}
    assert used_attention == set(range(attention_sets)) and used_ffn == set(range(ffn_sets))


def test_group_index_matches_hugging_face():
    config = small_config(num_layers=4, share_mode="all", num_groups=2)
    assert [config.group_index(i) for i in range(4)] == [0, 0, 1, 1]
    # Hugging Face's float formula, not i * G // L (they differ at L=18, G=14).
    edge = small_config(num_layers=18, share_mode="all", num_groups=14)
    assert edge.group_index(9) == 6 and 9 * 14 // 18 == 7


def _with_params(config: bert.BertConfig, source_state, source_path):
    """A model of ``config`` whose params are read from ``source_path(path)``."""
    abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    values = dict(nnx.to_flat_state(source_state))
    flat = [(path, values[source_path(path)]) for path, _ in nnx.to_flat_state(abstract_state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def test_shared_set_is_applied_at_every_layer(model):
    # share_mode='all' with one group == a per-layer model holding two copies of set 0.
    def set_zero(path):
        shared = len(path) > 2 and path[1] in ("attention_sublayers", "ffn_sublayers")
        return (*path[:2], 0, *path[3:]) if shared else path

    state = nnx.state(model)
    shared = _with_params(small_config(share_mode="all"), state, set_zero)
    copies = _with_params(small_config(), state, set_zero)
    assert len(shared.encoder.attention_sublayers) == 1
    mlm_shared, _ = shared(*batch())
    mlm_copies, _ = copies(*batch())
    np.testing.assert_allclose(mlm_shared, mlm_copies, atol=1e-5)
    assert not np.allclose(mlm_shared, model(*batch())[0], atol=1e-3)


@pytest.mark.parametrize("kind, size, expected", [
    ("albert", "base", 11_813_810),
    ("albert", "large", 17_847_474),
    ("albert", "xlarge", 59_021_490),
    ("bert", "base", 110_106_428),
])  # fmt: skip
def test_parameter_counts_match_hugging_face(kind, size, expected):
    # Expected values are transformers' own counts for the same configs (tied
    # decoder counted once). The ALBERT paper rounds them to 12M, 18M, 60M.
    vocab_size = 30000 if kind == "albert" else 30522
    config = bert.sized_config(kind, size, vocab_size=vocab_size)
    abstract = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == expected
    paper_millions = {"base": 12, "large": 18, "xlarge": 60}
    if kind == "albert":
        assert abs(count / 1e6 - paper_millions[size]) < 1.0


def test_every_weight_has_logical_axes():
    config = small_config(embedding_size=16, share_mode="all", num_groups=2)
    model = nnx.eval_shape(lambda: bert.BertForPreTraining(config, rngs=nnx.Rngs(0)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), path
        assert all(a is None or a in sharding.LOGICAL_AXES for a in axes), path


def test_dropout_is_random_only_when_not_deterministic(model):
    inputs = batch()
    eval_a, _ = model(*inputs)
    eval_b, _ = model(*inputs, deterministic=True)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = model(*inputs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    train_b, _ = model(*inputs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    train_c, _ = model(*inputs, deterministic=False, rngs=nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, train_c) and not np.allclose(train_a, eval_a)
    with pytest.raises(ValueError, match="rngs"):
        model(*inputs, deterministic=False)


def test_bfloat16_compute_keeps_float32_params_and_logits(model):
    # Same parameters (float32 either way), bfloat16 activations.
    abstract = nnx.eval_shape(
        lambda: bert.BertForPreTraining(small_config(dtype="bfloat16"), rngs=nnx.Rngs(0))
    )
    graphdef, abstract_state = nnx.split(abstract)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract_state)} == {jnp.dtype("float32")}
    model_bf16 = nnx.merge(graphdef, nnx.state(model))
    mlm, pair = model_bf16(*batch())
    assert mlm.dtype == jnp.float32 and pair.dtype == jnp.float32
    np.testing.assert_allclose(mlm, model(*batch())[0], atol=0.05)
    assert model_bf16.encode(*batch())[0].dtype == jnp.bfloat16


def test_jit_under_a_mesh_with_logical_rules(model):
    mesh = sharding.create_mesh((1, 1, -1))
    # Activations ('batch', 'length', 'embed') with batch on ('data', 'fsdp') keep embed
    # replicated: a mesh axis is used once per spec (sharding.logical_to_mesh).
    rules = sharding.DEFAULT_RULES
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, inputs):
        return nnx.merge(graphdef, state)(*inputs)

    with sharding.use_mesh(mesh, rules):
        mlm, _ = forward(state, batch())
    np.testing.assert_allclose(mlm, model(*batch())[0], atol=1e-5)
    specs = sharding.state_shardings(nnx.state(model, nnx.Param), mesh, rules)
    assert tuple(specs["encoder"]["embeddings"]["token"]["embedding"].spec) == ("tensor", "fsdp")
    assert tuple(specs["encoder"]["ffn_sublayers"][0]["mlp"]["wi"]["kernel"].spec) == (
        "fsdp",
        "tensor",
    )
