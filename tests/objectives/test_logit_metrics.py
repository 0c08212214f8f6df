"""label_logit_stats: the loss, log Z and accuracy the BERT and T5 losses share."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.objectives.logit_metrics import label_logit_stats


def _logits_and_labels(seed=0, shape=(3, 5, 97)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape).astype(np.float32) * 4
    labels = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    # Make some rows right: the label is the argmax there.
    right = rng.random(shape[:-1]) < 0.5
    labels = np.where(right, logits.argmax(-1), labels).astype(np.int32)
    return jnp.asarray(logits), jnp.asarray(labels), right


def test_matches_optax_logsumexp_and_argmax_without_ties():
    logits, labels, _ = _logits_and_labels()
    xent, log_z, correct = label_logit_stats(logits, labels)
    np.testing.assert_allclose(
        xent, optax.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(log_z, jax.nn.logsumexp(logits, -1), rtol=1e-6)
    np.testing.assert_array_equal(correct, np.asarray(jnp.argmax(logits, -1) == labels, np.float32))
    assert 0 < float(correct.mean()) < 1  # both outcomes are exercised


def test_a_tie_with_the_max_counts_as_correct():
    logits = jnp.asarray([[2.0, 5.0, 5.0, 1.0], [2.0, 5.0, 5.0, 1.0]])
    labels = jnp.asarray([2, 0])  # argmax would say 1 for both rows
    _, _, correct = label_logit_stats(logits, labels)
    np.testing.assert_array_equal(correct, [1.0, 0.0])


def test_gradients_equal_the_softmax_cross_entropy_gradients():
    logits, labels, _ = _logits_and_labels(seed=1)
    weights = jnp.linspace(0.0, 1.0, labels.size).reshape(labels.shape)

    def ours(x):
        xent, log_z, _ = label_logit_stats(x, labels)
        return jnp.sum((xent + 1e-2 * jnp.square(log_z)) * weights)

    def reference(x):
        xent = optax.softmax_cross_entropy_with_integer_labels(x, labels)
        return jnp.sum((xent + 1e-2 * jnp.square(jax.nn.logsumexp(x, -1))) * weights)

    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)
