"""Tests for padir.sampling: fast argmax, precision-safe Gumbel noise, filters, row keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from padir import sampling


def test_argmax_matches_jnp_including_ties():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 50))
  x = x.at[0, 0, 7].set(9.0).at[0, 0, 3].set(9.0)  # tie: lowest index wins
  np.testing.assert_array_equal(sampling.argmax(x), jnp.argmax(x, axis=-1))
  assert int(sampling.argmax(x)[0, 0]) == 3
  tokens, lp = sampling.argmax_and_log_prob(x)
  np.testing.assert_array_equal(tokens, jnp.argmax(x, axis=-1))
  np.testing.assert_allclose(lp, jnp.max(jax.nn.log_softmax(x), axis=-1), rtol=1e-5)


@pytest.mark.parametrize('vocab', [160, 163])  # chunked (5 x 32) and prime (fallback)
def test_greedy_choice_matches_argmax_and_logsumexp(vocab):
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 7, vocab))
  x = x.at[0, 0, 40].set(9.0).at[0, 0, 99].set(9.0)  # tie across chunks: lowest index
  x = x.at[1, 1, 3].set(50.0)  # a forbidden id with the largest logit
  bias = jnp.zeros((vocab,)).at[3].set(-1e9)
  tokens, log_z = sampling.greedy_choice(x, bias)
  np.testing.assert_array_equal(tokens, jnp.argmax(x + bias, axis=-1))
  assert int(tokens[0, 0]) == 40 and int(tokens[1, 1]) != 3
  np.testing.assert_allclose(log_z, jax.nn.logsumexp(x + bias, axis=-1), rtol=1e-5)
  plain, _ = sampling.greedy_choice(x)
  np.testing.assert_array_equal(plain, jnp.argmax(x, axis=-1))


@pytest.mark.parametrize('vocab', [160, 163])  # chunked (5 x 32) and prime (fallback)
def test_greedy_top2_gives_the_two_most_likely_ids(vocab):
  x = jax.random.normal(jax.random.PRNGKey(6), (3, 6, vocab))
  x = x.at[0, 0, 40].set(9.0).at[0, 0, 99].set(9.0)  # tie across chunks: 40 then 99
  x = x.at[0, 1, 33].set(9.0).at[0, 1, 34].set(9.0)  # tie inside one chunk
  x = x.at[1, 1, 3].set(50.0).at[1, 1, 4].set(49.0)  # forbidden best; runner-up allowed
  x = x.at[2, 2, 10].set(30.0).at[2, 2, 150].set(29.0)  # runner-up in another chunk
  bias = jnp.zeros((vocab,)).at[3].set(-1e9)
  for b in (None, bias):
    first, second, log_z = sampling.greedy_top2(x, b)
    biased = np.asarray(x if b is None else x + b)
    order = np.argsort(-biased, axis=-1, kind='stable')  # lowest index first on ties
    np.testing.assert_array_equal(first, order[..., 0])
    np.testing.assert_array_equal(second, order[..., 1])
    np.testing.assert_allclose(log_z, jax.nn.logsumexp(biased, axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(first, sampling.greedy_choice(x, b)[0])
  assert (int(first[0, 0]), int(second[0, 0])) == (40, 99)
  assert (int(first[0, 1]), int(second[0, 1])) == (33, 34)
  assert (int(first[1, 1]), int(second[1, 1])) == (4, int(order[1, 1, 1]))
  assert (int(first[2, 2]), int(second[2, 2])) == (10, 150)


def test_greedy_choice_static_bias_is_bitwise_the_traced_one():
  # 8192 ids in 128 chunks of 64: clean chunks, fully excluded chunks (the top ids) and mixed
  # ones (a few special ids at the start, an excluded id inside); the largest logit is excluded.
  vocab = 8192
  x = 4.0 * jax.random.normal(jax.random.PRNGKey(7), (3, 5, vocab))
  x = x.at[0, 0, 8000].set(40.0).at[1, 2, 2].set(40.0).at[2, 4, 700].set(40.0)
  bias = np.zeros((vocab,), np.float32)
  bias[:4] = -1e9
  bias[700] = -1e9
  bias[7936:] = -1e9
  static = jax.jit(lambda x: sampling.greedy_choice(x, bias))(x)  # bias known when tracing
  traced = jax.jit(sampling.greedy_choice)(x, jnp.asarray(bias))
  for a, b in zip(static, traced):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(static[0], jnp.argmax(x + bias, axis=-1))


def test_gumbel_tails_are_not_truncated():
  top = 2**23 - 1
  hi = jnp.array([0, 0, top, top, 2**22 - 1, 2**22], jnp.uint32)
  lo = jnp.array([0, top, 0, top, top, 0], jnp.uint32)
  g = -jnp.log(sampling._uniform_halves_to_exponential(hi, lo))
  assert bool(jnp.all(jnp.isfinite(g)))
  # u = 1 - 2^-47 gives g = log(2^47) = 32.6; plain float32 noise stops near 16.
  assert float(g[3]) == pytest.approx(47 * math.log(2), rel=1e-5)
  naive_cap = -math.log(-math.log1p(-2.0**-24))
  assert float(g.max()) > naive_cap + 15.0
  # u = 2^-47 gives the smallest value, -log(47 log 2).
  assert float(g[0]) == pytest.approx(-math.log(47 * math.log(2)), rel=1e-5)
  # Continuous across the split at one half.
  assert float(g[4]) == pytest.approx(float(g[5]), abs=1e-6)


def test_gumbel_noise_distribution():
  g = np.asarray(sampling.gumbel_noise(jax.random.PRNGKey(1), (200_000,)), np.float64)
  result = stats.kstest(g, stats.gumbel_r.cdf)
  assert result.pvalue > 1e-3, result
  assert abs(g.mean() - np.euler_gamma) < 0.01
  assert abs(g.var() - math.pi**2 / 6) < 0.03


def test_gumbel_noise_uses_float64_under_x64():
  with jax.enable_x64(True):
    g = sampling.gumbel_noise(jax.random.PRNGKey(2), (1000,))
    assert g.dtype == jnp.float64
    assert bool(jnp.all(jnp.isfinite(g)))


def test_sampled_frequencies_match_tempered_softmax():
  logits = jnp.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
  n = 60_000
  batch = jnp.broadcast_to(logits, (n, logits.shape[0]))
  temperature = 0.7
  tokens, lp = sampling.choose_tokens(batch, jax.random.PRNGKey(3), temperature=temperature)
  counts = np.bincount(np.asarray(tokens), minlength=6)
  probs = np.exp(np.asarray(logits, np.float64) / temperature)
  expected = probs / probs.sum() * n
  chi2 = stats.chisquare(counts, expected)
  assert chi2.pvalue > 1e-3, (counts, expected)
  # Returned log-probs are the model's own (untempered) ones.
  np.testing.assert_allclose(lp, jax.nn.log_softmax(logits)[tokens], rtol=1e-5)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  k2 = sampling.filter_logits(logits, top_k=2)
  np.testing.assert_array_equal(jnp.isfinite(k2), [[True, True, False, False, False]])
  p = sampling.filter_logits(logits, top_p=0.8)  # 0.5 + 0.2 < 0.8 <= 0.5 + 0.2 + 0.15
  np.testing.assert_array_equal(jnp.isfinite(p), [[True, True, True, False, False]])
  p_small = sampling.filter_logits(logits, top_p=0.1)  # the top token is always kept
  np.testing.assert_array_equal(jnp.isfinite(p_small), [[True, False, False, False, False]])
  batch = jnp.broadcast_to(logits, (4000, 5))
  tokens, _ = sampling.choose_tokens(batch, jax.random.PRNGKey(4), temperature=1.0, top_k=2)
  assert set(np.unique(np.asarray(tokens))) == {0, 1}


def test_sampling_arg_validation():
  with pytest.raises(ValueError, match='temperature'):
    sampling.check_sampling_args(-1.0, 0, 1.0)
  with pytest.raises(ValueError, match='top_k'):
    sampling.check_sampling_args(1.0, -2, 1.0)
  with pytest.raises(ValueError, match='top_p'):
    sampling.check_sampling_args(1.0, 0, 0.0)


def test_source_keys_ignore_batch_position_and_padding():
  tokens = jnp.array([[5, 6, 7, 0], [9, 9, 0, 0], [5, 6, 7, 0]])
  keys = sampling.source_keys(jax.random.PRNGKey(0), tokens)
  np.testing.assert_array_equal(keys[0], keys[2])
  assert not bool(jnp.array_equal(keys[0], keys[1]))
  alone = sampling.source_keys(jax.random.PRNGKey(0), jnp.array([[9, 9, 0, 0, 0, 0]]))
  np.testing.assert_array_equal(alone[0], keys[1])
  other_rng = sampling.source_keys(jax.random.PRNGKey(1), tokens)
  assert not bool(jnp.array_equal(other_rng[0], keys[0]))


def test_log_prob_of_matches_log_softmax():
  logits = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 7))
  tokens = jnp.array([[0, 6, 2], [1, 1, 5]])
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(sampling.log_prob_of(logits, tokens), expected, rtol=1e-6)
