"""Optimizer chains and learning-rate schedules of the three recipes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import load_recipe

from bert_jax.training import optim


def _optim(**overrides) -> ml_collections.ConfigDict:
    config = load_recipe("bert", "").optim
    for key, value in overrides.items():
        config[key] = value
    return config


def test_linear_schedule_warms_up_then_decays_to_zero():
    schedule = optim.create_schedule(_optim(learning_rate=1e-3, warmup_steps=10), num_steps=110)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(60)), 5e-4, rtol=1e-6)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-12)


def test_rsqrt_schedule_is_flat_during_warmup_then_inverse_sqrt():
    schedule = optim.create_schedule(
        _optim(schedule="rsqrt", learning_rate=0.01, warmup_steps=100), num_steps=10_000
    )
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(0.01)
    assert float(schedule(400)) == pytest.approx(0.005)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_each_optimizer_reduces_a_quadratic(name):
    tx, _ = optim.create_optimizer(
        _optim(name=name, learning_rate=0.05, warmup_steps=0, schedule="constant"), num_steps=100
    )
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones((3,))}

    def loss(p):
        return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)

    state = tx.init(params)
    start = float(loss(params))
    for _ in range(20):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < start


def test_unknown_names_are_errors_naming_the_field():
    with pytest.raises(ValueError, match="config.optim.name='adam'"):
        optim.create_optimizer(_optim(name="adam"), num_steps=10)
    with pytest.raises(ValueError, match="config.optim.schedule='linaer'"):
        optim.create_schedule(_optim(schedule="linaer"), num_steps=10)
