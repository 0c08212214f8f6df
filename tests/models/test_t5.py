"""T5 model behaviour: shapes, packing, causality, greedy decoding, sharding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.export.t5_weights import abstract_state
from bert_jax.models import t5_layers
from bert_jax.models.t5 import T5Config, T5ForConditionalGeneration, t5_config
from bert_jax.runtime import sharding

VOCAB = 64
# Shared input shapes so the jitted forward compiles once per model.
ENCODER_SHAPE, DECODER_SHAPE = (2, 12), (2, 8)


def small_config(**overrides) -> T5Config:
    fields = dict(
        vocab_size=VOCAB,
        d_model=32,
        num_heads=2,
        d_kv=8,
        d_ff=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward="gated-gelu",
        tie_word_embeddings=False,
    )
    return T5Config(**{**fields, **overrides})


@pytest.fixture(scope="module")
def untied_model():
    """T5 v1.1 style: gated GELU, separate lm_head."""
    return T5ForConditionalGeneration(small_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tied_model():
    """T5 v1.0 style: relu MLP, logits through the scaled input embedding."""
    config = small_config(feed_forward="relu", tie_word_embeddings=True)
    return T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module", params=["v1_0", "v1_1"])
def model(request, tied_model, untied_model):
    return tied_model if request.param == "v1_0" else untied_model


@functools.partial(nnx.jit, static_argnames=("deterministic",))
def forward(model, encoder_tokens, decoder_tokens, deterministic=True, rngs=None, **packing):
    """Jitted forward: one compile per shape is much faster than eager op-by-op."""
    return model(encoder_tokens, decoder_tokens, deterministic=deterministic, rngs=rngs, **packing)


@functools.partial(nnx.jit, static_argnames=("max_length",))
def greedy(model, encoder_tokens, max_length, eos_id):
    return model.greedy_decode(encoder_tokens, max_length, eos_id=eos_id)


def tokens(rng, shape):
    return jnp.asarray(rng.integers(2, VOCAB, shape), jnp.int32)


def test_logits_shape_and_dtype(model):
    rng = np.random.default_rng(0)
    logits = forward(model, tokens(rng, ENCODER_SHAPE), tokens(rng, DECODER_SHAPE))
    assert logits.shape == (*DECODER_SHAPE, VOCAB)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_packed_row_matches_each_segment_alone(untied_model):
    model = untied_model
    rng = np.random.default_rng(1)
    enc_a, enc_b = tokens(rng, (5,)), tokens(rng, (6,))
    # Decoder inputs start with the start token 0 in each segment, as t5x packs them.
    dec_a = tokens(rng, (4,)).at[0].set(0)
    dec_b = tokens(rng, (3,)).at[0].set(0)
    enc_len, dec_len = 14, 9

    def pad(x, length):
        return jnp.pad(x, (0, length - x.shape[0]))[None]

    packed_enc = pad(jnp.concatenate([enc_a, enc_b]), enc_len)
    packed_dec = pad(jnp.concatenate([dec_a, dec_b]), dec_len)
    packed = dict(
        encoder_segment_ids=pad(jnp.array([1] * 5 + [2] * 6), enc_len),
        decoder_segment_ids=pad(jnp.array([1] * 4 + [2] * 3), dec_len),
        encoder_positions=pad(jnp.concatenate([jnp.arange(5), jnp.arange(6)]), enc_len),
        decoder_positions=pad(jnp.concatenate([jnp.arange(4), jnp.arange(3)]), dec_len),
    )
    logits = forward(model, packed_enc, packed_dec, **packed)
    alone_a = forward(model, pad(enc_a, enc_len), pad(dec_a, dec_len))
    alone_b = forward(model, pad(enc_b, enc_len), pad(dec_b, dec_len))
    np.testing.assert_allclose(logits[0, :4], alone_a[0, :4], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logits[0, 4:7], alone_b[0, :3], atol=1e-5, rtol=1e-5)
    # Segment ids alone give the same logits (what the T5 task passes, as t5x does):
    # within a segment, key - query positions equal those of the row's own arange.
    no_positions = {k: v for k, v in packed.items() if "positions" not in k}
    np.testing.assert_allclose(
        forward(model, packed_enc, packed_dec, **no_positions)[0, :7], logits[0, :7], atol=1e-6
    )

    # Without segment ids and positions the second segment sees the first: the
    # comparison above is not vacuous.
    unpacked = forward(model, packed_enc, packed_dec)
    assert np.abs(unpacked[0, 4:7] - alone_b[0, :3]).max() > 1e-3


def test_segment_ids_must_come_in_pairs(untied_model):
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="segment_ids"):
        untied_model(tokens(rng, (1, 4)), tokens(rng, (1, 4)), encoder_segment_ids=jnp.ones((1, 4)))


def test_decoder_is_causal(model):
    rng = np.random.default_rng(3)
    encoder_tokens, decoder_tokens = tokens(rng, ENCODER_SHAPE), tokens(rng, DECODER_SHAPE)
    changed = decoder_tokens.at[:, 5].set((decoder_tokens[:, 5] + 1) % VOCAB)
    before, after = (
        forward(model, encoder_tokens, decoder_tokens),
        forward(model, encoder_tokens, changed),
    )
    np.testing.assert_array_equal(before[:, :5], after[:, :5])
    assert np.abs(before[:, 5:] - after[:, 5:]).max() > 1e-4


def test_encoder_padding_is_ignored(untied_model):
    model = untied_model
    rng = np.random.default_rng(4)
    encoder_tokens, decoder_tokens = tokens(rng, (2, 8)), tokens(rng, DECODER_SHAPE)
    padded = jnp.pad(encoder_tokens, ((0, 0), (0, 4)))
    np.testing.assert_allclose(
        forward(model, encoder_tokens, decoder_tokens),
        forward(model, padded, decoder_tokens),
        atol=1e-5,
    )


def test_greedy_decode_is_teacher_forced_argmax_and_stops_at_eos(tied_model):
    model = tied_model
    rng = np.random.default_rng(5)
    encoder_tokens = tokens(rng, ENCODER_SHAPE)
    max_length = DECODER_SHAPE[1]
    free = np.asarray(greedy(model, encoder_tokens, max_length, VOCAB + 1))
    assert free.shape == DECODER_SHAPE and free.dtype == np.int32
    # Greedy output is the argmax of the teacher-forced logits on its own prefix.
    shifted = jnp.pad(jnp.asarray(free[:, :-1]), ((0, 0), (1, 0)))
    np.testing.assert_array_equal(np.argmax(forward(model, encoder_tokens, shifted), -1), free)

    # Make the token row 0 emits at step 2 the EOS: every row stops at its first
    # occurrence and is padded with 0 afterwards.
    eos = int(free[0, 2])
    stopped = np.asarray(greedy(model, encoder_tokens, max_length, eos))
    for row, out in zip(free, stopped, strict=True):
        hits = np.flatnonzero(row == eos)
        end = hits[0] + 1 if hits.size else max_length
        np.testing.assert_array_equal(out[:end], row[:end])
        assert (out[end:] == 0).all()


def test_dropout_uses_call_time_rngs(untied_model):
    model = untied_model
    rng = np.random.default_rng(6)
    x, y = tokens(rng, ENCODER_SHAPE), tokens(rng, DECODER_SHAPE)

    # 'rbg' keys: XLA:CPU compiles threefry dropout masks very slowly.
    def dropout_rngs(seed):
        return nnx.Rngs(dropout=jax.random.key(seed, impl="rbg"))

    first = forward(model, x, y, deterministic=False, rngs=dropout_rngs(1))
    again = forward(model, x, y, deterministic=False, rngs=dropout_rngs(1))
    other = forward(model, x, y, deterministic=False, rngs=dropout_rngs(2))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4
    assert np.abs(first - forward(model, x, y)).max() > 1e-4


def test_every_parameter_gets_a_gradient(untied_model):
    model = untied_model
    rng = np.random.default_rng(7)
    x, y = tokens(rng, ENCODER_SHAPE), tokens(rng, DECODER_SHAPE)

    @nnx.jit
    def grads(m):
        def loss(m):
            logits = m(x, y)
            return -jnp.mean(jax.nn.log_softmax(logits)[..., 3])

        return nnx.grad(loss)(m)

    for path, grad in nnx.to_flat_state(grads(model)):
        assert np.abs(np.asarray(grad.get_value())).max() > 0, path


def test_bias_broadcast_has_the_gradient_of_a_plain_broadcast():
    bias = jnp.asarray(np.random.default_rng(3).normal(size=(1, 2, 5, 5)), jnp.float32)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=(3, 2, 5, 5)), jnp.float32)

    def loss(b, broadcast):
        return jnp.sum(jnp.sin(broadcast(b)) * weights)

    ours = jax.grad(loss)(bias, lambda b: t5_layers.broadcast_batch(b, 3))
    plain = jax.grad(loss)(bias, lambda b: jnp.broadcast_to(b, weights.shape))
    np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-6)
    assert t5_layers.broadcast_batch(bias, 3).shape == weights.shape


def test_every_weight_has_logical_axes():
    state = abstract_state(small_config())
    for path, variable in nnx.to_flat_state(state):
        axes = variable.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == variable.get_value().ndim, path
        assert all(a is None or a in sharding.LOGICAL_AXES for a in axes), (path, axes)
    relative = dict(nnx.to_flat_state(state))[("encoder", "relative_position_bias", "embedding")]
    assert relative.get_metadata()["out_sharding"] == (None, "heads")


def test_runs_jitted_under_a_mesh_with_bfloat16():
    config = small_config(dtype="bfloat16", num_encoder_layers=1, num_decoder_layers=1)
    mesh = sharding.create_mesh((-1, 1, 1))
    # DEFAULT_RULES map both batch and embed to fsdp, which the activation
    # constraint ('batch', 'length', 'embed') cannot satisfy; use DP+TP rules.
    rules = [(name, "data" if name == "batch" else axes) for name, axes in sharding.DEFAULT_RULES]
    with sharding.use_mesh(mesh, rules):
        model = T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))
        rng = np.random.default_rng(8)
        logits = nnx.jit(lambda m, x, y: m(x, y))(
            model, tokens(rng, ENCODER_SHAPE), tokens(rng, DECODER_SHAPE)
        )
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_heads", 0),
        ("d_model", 1.5),
        ("feed_forward", "gelu"),
        ("dropout_rate", 1.0),
        ("dtype", "int8"),
        ("relative_attention_max_distance", 4),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        small_config(**{field: value})


def test_published_sizes_match_known_parameter_counts():
    # transformers' num_parameters() for t5-small and google/t5-v1_1-small (vocab 32128).
    expected = {("small", "v1_0"): 60_506_624, ("small", "v1_1"): 76_961_152}
    for (size, variant), count in expected.items():
        state = abstract_state(t5_config(size, variant))
        total = sum(v.get_value().size for _, v in nnx.to_flat_state(state))
        assert total == count, (size, variant)
    with pytest.raises(ValueError, match="size"):
        t5_config("huge")
    with pytest.raises(ValueError, match="variant"):
        t5_config("small", "v2")
