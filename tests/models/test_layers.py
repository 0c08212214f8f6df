"""`projections.Dense` and `tied_logits`: 2-D row matmuls, the numbers of `nnx.Linear`."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.models import layers, projections

ROWS, EMBED, MLP = 4 * 8, 16, 64


def _feed_forward() -> layers.FeedForward:
    return layers.FeedForward(
        EMBED,
        MLP,
        activation_name="gelu_new",
        gated=True,
        use_bias=False,
        kernel_init=jax.nn.initializers.normal(0.5),
        rngs=nnx.Rngs(0),
    )


def test_dense_matches_nnx_linear_on_any_leading_shape():
    dense = projections.dense(
        EMBED, MLP, ("embed", "mlp"), kernel_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(1)
    )
    linear = nnx.Linear(EMBED, MLP, rngs=nnx.Rngs(2))
    linear.kernel[...] = dense.kernel[...]
    linear.bias[...] = jnp.arange(MLP, dtype=jnp.float32)
    dense.bias[...] = linear.bias[...]
    for shape in [(EMBED,), (3, EMBED), (2, 5, EMBED), (2, 3, 4, EMBED)]:
        x = jax.random.normal(jax.random.key(len(shape)), shape)
        np.testing.assert_allclose(dense(x), linear(x), rtol=1e-6, atol=1e-5)
        assert dense(x).shape == (*shape[:-1], MLP)


def test_tied_logits_match_the_einsum_over_leading_axes():
    x = jax.random.normal(jax.random.key(0), (2, 3, EMBED))
    table = jax.random.normal(jax.random.key(1), (50, EMBED))
    np.testing.assert_allclose(
        projections.tied_logits(x, table), jnp.einsum("ble,ve->blv", x, table), rtol=1e-6, atol=1e-5
    )


def test_mlp_gradient_is_not_written_transposed():
    """The regression: a 3-D dense made XLA:CPU store d(pre-activation) as [mlp, rows]."""
    ffn = _feed_forward()
    graphdef, params = nnx.split(ffn)
    x = jax.random.normal(jax.random.key(0), (4, 8, EMBED))

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    transposed = re.findall(rf"= f32\[{MLP},{ROWS}\]\{{1,0\}} fusion", hlo)
    assert not transposed, f"{len(transposed)} fusions write the MLP gradient as [{MLP}, {ROWS}]"
    natural = re.findall(rf"f32\[{ROWS},{MLP}\]", hlo)
    assert natural, "expected the MLP gradient as 2-D [rows, mlp] operands"
