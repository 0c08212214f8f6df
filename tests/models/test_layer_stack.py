"""Scaling options of the shared block library: fused vs explicit attention, scanned
layers, rematerialisation and the bfloat16 policy, for BERT, ALBERT and T5.

Every comparison starts from the same weights (converted between layouts with
`stack_layers`), so a wrong mask, a mis-stacked layer or a policy that changes the
maths shows up as a difference.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax.models import bert, layer_stack, layers, t5

VOCAB = 61


def bert_config(**overrides) -> bert.BertConfig:
    fields = dict(
        vocab_size=VOCAB, hidden_size=24, num_layers=3, num_heads=3, intermediate_size=32,
        max_position_embeddings=16, dropout_rate=0.0, attention_dropout_rate=0.0,
    )  # fmt: skip
    return bert.BertConfig(**{**fields, **overrides})


def t5_config(**overrides) -> t5.T5Config:
    fields = dict(
        vocab_size=VOCAB, d_model=16, num_heads=2, d_kv=8, d_ff=32, num_encoder_layers=2,
        num_decoder_layers=3, relative_attention_num_buckets=8,
        relative_attention_max_distance=16, dropout_rate=0.0, feed_forward="gated-gelu",
        tie_word_embeddings=False,
    )  # fmt: skip
    return t5.T5Config(**{**fields, **overrides})


def bert_batch():
    """Three rows of 12: full, padded after 9, padded after 3."""
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(6, VOCAB, (3, 12)), jnp.int32)
    segments = jnp.asarray(np.arange(12)[None].repeat(3, 0) >= 6, jnp.int32)
    mask = jnp.ones((3, 12), jnp.int32).at[1, 9:].set(0).at[2, 3:].set(0)
    return ids, segments, mask


def t5_batch(packed: bool):
    """Encoder [2, 10] with padding, decoder [2, 7]; packed: two segments in row 0."""
    rng = np.random.default_rng(1)
    enc = jnp.asarray(rng.integers(2, VOCAB, (2, 10)), jnp.int32).at[1, 6:].set(0)
    dec = jnp.asarray(rng.integers(2, VOCAB, (2, 7)), jnp.int32).at[:, 0].set(0)
    if not packed:
        return (enc, dec), {}
    enc = enc.at[0, 9:].set(0)
    seg_enc = jnp.array([[1] * 5 + [2] * 4 + [0], [1] * 6 + [0] * 4])
    seg_dec = jnp.array([[1] * 4 + [2] * 3, [1] * 7])
    pos = lambda seg: jnp.where(seg > 0, jnp.cumsum(seg == seg, 1) - 1, 0)  # noqa: E731
    extra = dict(
        encoder_segment_ids=seg_enc,
        decoder_segment_ids=seg_dec,
        encoder_positions=pos(seg_enc).at[0, 5:9].add(-5),
        decoder_positions=pos(seg_dec).at[0, 4:].add(-4),
    )
    return (enc, dec), extra


def build(model_cls, config, params=None):
    """A model of ``config``; ``params`` (an unscanned state) are stacked to its layout."""
    if params is None:
        return model_cls(config, rngs=nnx.Rngs(0))
    module = bert if model_cls is bert.BertForPreTraining else t5
    abstract = nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), module.stack_layers(params, config))


@functools.partial(nnx.jit, static_argnames=("deterministic",))
def bert_forward(model, inputs, deterministic=True, rngs=None):
    return model(*inputs, deterministic=deterministic, rngs=rngs)


@nnx.jit
def t5_forward(model, inputs, extra):
    return model(*inputs, **extra)


def test_dot_product_equals_explicit_on_a_causal_mask():
    """The shared attention alone, on a decoder-style causal + padding mask."""
    kwargs = dict(kernel_init=nnx.initializers.normal(0.5), rngs=nnx.Rngs(0))
    fused = layers.MultiHeadAttention(16, 2, 8, attention="dot_product", **kwargs)
    explicit = layers.MultiHeadAttention(16, 2, 8, attention="explicit", **kwargs)
    nnx.update(explicit, nnx.state(fused))
    x = jax.random.normal(jax.random.key(1), (2, 9, 16))
    mask = layers.causal_mask(9) & (jnp.arange(9) < jnp.array([[9], [5]]))[:, None, None, :]
    bias = jax.random.normal(jax.random.key(2), (1, 2, 9, 9))
    out = fused(x, mask=mask, bias=bias)
    np.testing.assert_allclose(out, explicit(x, mask=mask, bias=bias), atol=1e-5)
    # The mask matters: a future key changes nothing before it.
    changed = x.at[:, 6].add(1.0)
    np.testing.assert_allclose(fused(changed, mask=mask, bias=bias)[:, :6], out[:, :6], atol=1e-6)
    assert np.abs(fused(x, bias=bias) - out).max() > 1e-3


@pytest.mark.parametrize("share_mode", ["none", "all"])
def test_bert_dot_product_equals_explicit_on_padded_rows(share_mode):
    model = build(bert.BertForPreTraining, bert_config(share_mode=share_mode))
    explicit = build(
        bert.BertForPreTraining,
        bert_config(share_mode=share_mode, attention="explicit"),
        nnx.state(model),
    )
    for ours, reference in zip(
        bert_forward(model, bert_batch()), bert_forward(explicit, bert_batch()), strict=True
    ):
        np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_t5_dot_product_equals_explicit(packed):
    # Covers the encoder padding mask, the decoder's causal mask, cross-attention and,
    # packed, the segment masks with per-segment relative positions.
    model = build(t5.T5ForConditionalGeneration, t5_config())
    explicit = build(
        t5.T5ForConditionalGeneration, t5_config(attention="explicit"), nnx.state(model)
    )
    inputs, extra = t5_batch(packed)
    np.testing.assert_allclose(
        t5_forward(model, inputs, extra), t5_forward(explicit, inputs, extra), atol=1e-5
    )


def test_bert_scan_layers_gives_the_same_loss_and_dropout():
    model = build(bert.BertForPreTraining, bert_config(dropout_rate=0.2))
    params = nnx.state(model, nnx.Param)
    scanned = build(
        bert.BertForPreTraining, bert_config(dropout_rate=0.2, scan_layers=True), params
    )
    kernel = nnx.state(scanned)["encoder"]["attention_sublayers"]["attention"]["query"]["kernel"]
    assert kernel.shape == (3, 24, 24)
    assert kernel.get_metadata()["out_sharding"] == ("layers", "embed", "joined_kv")
    np.testing.assert_allclose(
        bert_forward(scanned, bert_batch())[0], bert_forward(model, bert_batch())[0], atol=1e-5
    )
    # Both layouts draw the same per-layer dropout keys.
    train = dict(deterministic=False, rngs=nnx.Rngs(dropout=3))
    np.testing.assert_allclose(
        bert_forward(scanned, bert_batch(), **train)[0],
        bert_forward(model, bert_batch(), deterministic=False, rngs=nnx.Rngs(dropout=3))[0],
        atol=1e-5,
    )
    # stack / unstack are inverse.
    back = bert.unstack_layers(nnx.state(scanned, nnx.Param), scanned.config)
    for (path, a), (_, b) in zip(nnx.to_flat_state(params), nnx.to_flat_state(back), strict=True):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
        assert a.get_metadata()["out_sharding"] == b.get_metadata()["out_sharding"], path


def test_albert_shared_layer_scans_without_a_stack():
    config = bert_config(share_mode="all", embedding_size=8)
    model = build(bert.BertForPreTraining, config)
    scanned = build(
        bert.BertForPreTraining, dataclasses.replace(config, scan_layers=True), nnx.state(model)
    )
    assert len(scanned.encoder.attention_sublayers) == 1  # same tree: nothing stacked
    np.testing.assert_allclose(
        bert_forward(scanned, bert_batch())[0], bert_forward(model, bert_batch())[0], atol=1e-5
    )
    with pytest.raises(ValueError, match="scan_layers"):
        bert_config(share_mode="attention", scan_layers=True)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_t5_scan_layers_gives_the_same_loss(packed):
    model = build(t5.T5ForConditionalGeneration, t5_config())
    scanned = build(t5.T5ForConditionalGeneration, t5_config(scan_layers=True), nnx.state(model))
    stacked = nnx.state(scanned)["decoder"]["layers"]["mlp"]["wo"]["kernel"]
    assert stacked.shape == (3, 32, 16)
    # The relative bias table is the stack's own, outside the scanned layers.
    assert nnx.state(scanned)["decoder"]["relative_position_bias"]["embedding"].shape == (8, 2)
    inputs, extra = t5_batch(packed)
    np.testing.assert_allclose(
        t5_forward(scanned, inputs, extra), t5_forward(model, inputs, extra), atol=1e-5
    )


def test_t5_greedy_decode_works_scanned_and_gives_the_unscanned_tokens():
    # The training loop's evaluation decodes eagerly (t5_task.decode_example); the scanned
    # layers' nnx.scan inside the decode's while_loop raised flax's TraceContextError.
    model = build(t5.T5ForConditionalGeneration, t5_config())
    scanned = build(t5.T5ForConditionalGeneration, t5_config(scan_layers=True), nnx.state(model))
    (encoder_tokens, decoder_tokens), _ = t5_batch(packed=False)
    # Inside lax.map too: text-to-text fine-tuning scores each label's target so.
    labels = jnp.stack([decoder_tokens, decoder_tokens[::-1]])  # [labels, batch, length]
    np.testing.assert_allclose(
        jax.lax.map(lambda target: scanned(encoder_tokens, target), labels),
        jax.lax.map(lambda target: model(encoder_tokens, target), labels),
        atol=1e-5,
    )
    unscanned_tokens = np.asarray(model.greedy_decode(encoder_tokens, 6, eos_id=VOCAB + 1))
    assert unscanned_tokens.shape == (2, 6) and (unscanned_tokens > 0).all()
    # Rematerialised layers (nnx.remat raised the same error, scanned or not) decode alike.
    remat = build(t5.T5ForConditionalGeneration, t5_config(remat_policy="full"), nnx.state(model))
    for other in (scanned, remat):
        np.testing.assert_array_equal(
            np.asarray(other.greedy_decode(encoder_tokens, 6, eos_id=VOCAB + 1)), unscanned_tokens
        )
    # Under jit too, and stopping at an EOS: the token row 0 emits at step 2.
    eos = int(unscanned_tokens[0, 2])
    decode = nnx.jit(lambda m, x: m.greedy_decode(x, 6, eos_id=eos))
    np.testing.assert_array_equal(
        np.asarray(decode(scanned, encoder_tokens)), np.asarray(decode(model, encoder_tokens))
    )
    assert (np.asarray(decode(scanned, encoder_tokens))[0, 3:] == 0).all()


def _bert_loss(model, inputs):
    mlm, pair = model(*inputs)
    return jnp.mean(jax.nn.log_softmax(mlm)[..., 7]) + jnp.mean(jax.nn.log_softmax(pair)[:, 1])


def _t5_loss(model, inputs):
    return jnp.mean(jax.nn.log_softmax(model(*inputs))[..., 5])


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "scan_layers"), [("bert", False), ("t5", True)])
def test_every_remat_policy_gives_the_same_gradients(kind, scan_layers):
    if kind == "bert":
        make = functools.partial(bert_config, num_layers=2)
        loss, inputs = _bert_loss, bert_batch()
        model_cls = bert.BertForPreTraining
    else:
        make, loss, inputs = t5_config, _t5_loss, t5_batch(False)[0]
        model_cls = t5.T5ForConditionalGeneration
    params = nnx.state(build(model_cls, make()), nnx.Param)
    grads = {}
    for policy in layer_stack.REMAT_POLICIES:
        model = build(model_cls, make(remat_policy=policy, scan_layers=scan_layers), params)
        grads[policy] = nnx.jit(nnx.grad(loss))(model, inputs)
    reference = nnx.to_flat_state(grads["none"])
    assert max(np.abs(np.asarray(g.get_value())).max() for _, g in reference) > 1e-4
    for policy, grad in grads.items():
        for (path, a), (_, b) in zip(reference, nnx.to_flat_state(grad), strict=True):
            np.testing.assert_allclose(
                b.get_value(), a.get_value(), atol=1e-6, err_msg=f"{policy} {path}"
            )


def test_remat_policy_changes_what_the_backward_pass_keeps():
    # Same maths, different programs: 'full' recomputes the forward inside the backward.
    def dot_count(policy):
        config = bert_config(remat_policy=policy, num_layers=2, hidden_size=48, num_heads=4)
        graphdef, params = nnx.split(build(bert.BertForPreTraining, config))
        grad = jax.jit(jax.grad(lambda p: _bert_loss(nnx.merge(graphdef, p), bert_batch())))
        return grad.lower(params).compile().as_text().count("dot(")

    assert dot_count("full") > dot_count("none")


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_bfloat16_compute_keeps_float32_params_and_logits(kind):
    if kind == "bert":
        config = bert_config(dtype="bfloat16", scan_layers=True)
        model = build(bert.BertForPreTraining, config)
        logits = bert_forward(model, bert_batch())[0]
        reference = build(bert.BertForPreTraining, bert_config(scan_layers=True))
        reference = bert_forward(reference, bert_batch())[0]
    else:
        config = t5_config(dtype="bfloat16", scan_layers=True)
        model = build(t5.T5ForConditionalGeneration, config)
        logits = t5_forward(model, *t5_batch(True))
        reference = build(t5.T5ForConditionalGeneration, t5_config(scan_layers=True))
        reference = t5_forward(reference, *t5_batch(True))
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype("float32")}
    assert logits.dtype == jnp.float32
    # Same weights (same seed), bfloat16 activations: close, not equal.
    assert 0 < np.abs(np.asarray(logits) - np.asarray(reference)).max() < 0.1


@pytest.mark.parametrize(
    "field, value",
    [("attention", "flash"), ("remat_policy", "some"), ("scan_layers", 1), ("param_dtype", "int8")],
)
def test_configs_reject_bad_scaling_fields_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        bert_config(**{field: value})
    with pytest.raises(ValueError, match=field):
        t5_config(**{field: value})
