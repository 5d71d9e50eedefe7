"""Tests for padir.losses: token cross-entropy, normalisers, length loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from padir import losses

V = 11


def _data(seed=0, batch=3, length=5):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  logits = 3.0 * jax.random.normal(k1, (batch, length, V))
  targets = jax.random.randint(k2, (batch, length), 0, V)
  weights = (jax.random.uniform(k3, (batch, length)) < 0.7).astype(jnp.float32)
  return logits, targets, weights


def _smoothed_reference(logits, targets, ls, z):
  """Dense soft-target formulation (T5X): -sum q log p - H(q) + z * logZ^2."""
  conf, low = 1.0 - ls, ls / (V - 1)
  soft = jax.nn.one_hot(targets, V) * (conf - low) + low
  ce = optax.softmax_cross_entropy(logits, soft)
  entropy = -(conf * np.log(conf) + (V - 1) * low * np.log(low + 1e-20))
  return ce - entropy + z * jnp.square(jax.nn.logsumexp(logits, -1))


def test_token_cross_entropy_matches_optax():
  logits, targets, _ = _data()
  loss, z = losses.token_cross_entropy(logits, targets)
  np.testing.assert_allclose(
      loss, optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-5)
  np.testing.assert_array_equal(z, 0.0)
  np.testing.assert_allclose(losses.token_log_probs(logits, targets), -loss, rtol=1e-5)


@pytest.mark.parametrize('ls, z', [(0.1, 0.0), (0.2, 1e-3)])
def test_label_smoothing_and_z_loss_match_dense_form(ls, z):
  logits, targets, _ = _data(1)
  loss, z_part = losses.token_cross_entropy(logits, targets, ls, z)
  np.testing.assert_allclose(loss, _smoothed_reference(logits, targets, ls, z), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(z_part, z * jnp.square(jax.nn.logsumexp(logits, -1)), rtol=1e-5)
  # Same gradients as the dense formulation.
  g = jax.grad(lambda l: losses.token_cross_entropy(l, targets, ls, z)[0].sum())(logits)
  g_ref = jax.grad(lambda l: _smoothed_reference(l, targets, ls, z).sum())(logits)
  np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-6)


def test_label_smoothing_optimum_is_zero():
  ls = 0.1
  conf, low = 1.0 - ls, ls / (V - 1)
  targets = jnp.array([[3, 4]])
  logits = jnp.log(jax.nn.one_hot(targets, V) * (conf - low) + low)
  loss, _ = losses.token_cross_entropy(logits, targets, ls)
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)


def test_normalizers():
  logits, targets, weights = _data(2)
  per_token, _ = losses.token_cross_entropy(logits, targets)
  total = float(jnp.sum(per_token * weights))
  kw = dict(label_smoothing=0.0, z_loss=0.0)
  loss, _, wsum = losses.weighted_cross_entropy(logits, targets, weights, **kw)
  np.testing.assert_allclose(loss, total, rtol=1e-5)  # None: sum (T5X default)
  np.testing.assert_allclose(wsum, weights.sum())
  loss, _, _ = losses.weighted_cross_entropy(logits, targets, weights,
                                             loss_normalizing_factor=7.0, **kw)
  np.testing.assert_allclose(loss, total / 7.0, rtol=1e-5)
  loss, _, _ = losses.weighted_cross_entropy(logits, targets, weights,
                                             loss_normalizing_factor='num_real_target_tokens',
                                             **kw)
  np.testing.assert_allclose(loss, total / float(weights.sum()), rtol=1e-5)
  loss, _, _ = losses.weighted_cross_entropy(logits, targets, weights,
                                             loss_normalizing_factor='NUM_TOTAL_TARGET_TOKENS',
                                             **kw)
  np.testing.assert_allclose(loss, total / weights.size, rtol=1e-5)
  loss, _, _ = losses.weighted_cross_entropy(logits, targets, weights,
                                             loss_normalizing_factor='AVERAGE_PER_SEQUENCE',
                                             **kw)
  per_seq = jnp.sum(per_token * weights, 1) / jnp.sum(weights, 1)
  np.testing.assert_allclose(loss, jnp.mean(per_seq), rtol=1e-5)
  # Separate token-count weights (used by the ELBO weighting).
  counts = jnp.ones_like(weights)
  loss, _, _ = losses.weighted_cross_entropy(logits, targets, 2.0 * weights,
                                             loss_normalizing_factor='NUM_REAL_TARGET_TOKENS',
                                             normalizing_weights=counts, **kw)
  np.testing.assert_allclose(loss, 2.0 * total / counts.size, rtol=1e-5)


def test_zero_weights_do_not_produce_nan():
  logits, targets, weights = _data(3)
  for lnf in ('NUM_REAL_TARGET_TOKENS', 'AVERAGE_PER_SEQUENCE'):
    loss, _, _ = losses.weighted_cross_entropy(logits, targets, jnp.zeros_like(weights),
                                               loss_normalizing_factor=lnf)
    assert float(loss) == 0.0


def test_length_loss_is_a_per_example_mean():
  logits = jax.random.normal(jax.random.key(0), (4, 9))
  lengths = jnp.array([1, 3, 9, 5])
  loss, acc = losses.length_loss(logits, lengths)
  expected = optax.softmax_cross_entropy_with_integer_labels(logits, lengths - 1).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Doubling the batch leaves the loss unchanged (the reference's batch sum would double it).
  loss2, acc2 = losses.length_loss(jnp.concatenate([logits, logits]),
                                   jnp.concatenate([lengths, lengths]))
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  np.testing.assert_allclose(acc2, acc)
  perfect = jax.nn.one_hot(lengths - 1, 9) * 50.0
  assert float(losses.length_loss(perfect, lengths)[1]) == 1.0


def test_target_lengths_count_eos():
  targets = jnp.array([[5, 6, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(losses.target_lengths(targets), [3, 1])


@pytest.mark.parametrize('kwargs, knob', [
    (dict(label_smoothing=1.0, z_loss=0.0, loss_normalizing_factor=None), 'label_smoothing'),
    (dict(label_smoothing=0.0, z_loss=-1.0, loss_normalizing_factor=None), 'z_loss'),
    (dict(label_smoothing=0.0, z_loss=0.0, loss_normalizing_factor='tokens'),
     'loss_normalizing_factor'),
    (dict(label_smoothing=0.0, z_loss=0.0, loss_normalizing_factor=-2.0),
     'loss_normalizing_factor'),
])
def test_bad_loss_options(kwargs, knob):
  with pytest.raises(ValueError, match=knob):
    losses.check_loss_options(**kwargs, owner='PadirModel')


def test_weighted_accuracy_counts_argmax_hits_on_weighted_positions():
  logits = jnp.asarray([[[0.1, 2.0, -1.0], [3.0, 1.0, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]])
  targets = jnp.asarray([[1, 2, 2, 0]])  # hit, miss, tie with the max (a hit), hit
  weights = jnp.asarray([[1, 1, 1, 0]])  # the last position is not counted
  correct, counted = losses.weighted_accuracy(logits, targets, weights)
  assert float(correct) == 2.0 and float(counted) == 3.0
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 5, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, size=(3, 5)))
  weights = jnp.asarray(rng.integers(0, 2, size=(3, 5)))
  correct, counted = losses.weighted_accuracy(logits, targets, weights)
  expected = np.sum((np.argmax(np.asarray(logits), -1) == np.asarray(targets)) & (weights > 0))
  assert float(correct) == expected and float(counted) == np.sum(weights > 0)
