"""Tests for padir.objectives: schedules, noise split, decoder inputs, weights, validation."""

import functools
import importlib
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from padir import objectives
from padir.objectives import CorruptionConfig
from padir.special_ids import special_ids

IDS = special_ids(num_real_pieces=40, extra_ids=40, model_vocab_size=96, mask_range_length=24)
IDS_NO_RANGE = special_ids(num_real_pieces=40, extra_ids=3)
N_RATIOS = 20000


def _targets(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """Random real pieces, EOS at a random position, padding after it."""
  rng = np.random.default_rng(seed)
  lo, hi = IDS.random_token_range
  tokens = rng.integers(lo, hi, size=(batch, length)).astype(np.int32)
  lengths = rng.integers(2, length + 1, size=batch)  # tokens incl. EOS
  pos = np.arange(length)[None]
  tokens[pos == (lengths[:, None] - 1)] = IDS.eos
  tokens[pos >= lengths[:, None]] = 0
  return tokens


def _ratios(config: CorruptionConfig, seed: int = 0, n: int = N_RATIOS) -> np.ndarray:
  fn = jax.jit(lambda k: objectives.sample_noise_ratios(config, k, n))
  return np.asarray(fn(jax.random.key(seed)))


def _ks(samples: np.ndarray, cdf) -> float:
  return stats.kstest(samples, cdf).statistic


# ----------------------------------------------------------------------------- schedules


def test_fixed_schedule():
  r = _ratios(CorruptionConfig(noise_ratio_schedule='fixed', noise_ratio=0.3), n=16)
  np.testing.assert_allclose(r, 0.3, rtol=1e-6)


def test_uniform_schedule_matches_u01():
  r = _ratios(CorruptionConfig(noise_ratio_schedule='uniform'))
  assert _ks(r, stats.uniform(0, 1).cdf) < 0.015
  assert r.min() >= 0.0 and r.max() <= 1.0


def test_cosine_schedule_matches_maskgit():
  r = _ratios(CorruptionConfig(noise_ratio_schedule='cosine'))
  # r = cos(pi/2 u): P(R <= x) = 1 - (2/pi) arccos(x).
  cdf = lambda x: 1.0 - 2.0 / np.pi * np.arccos(np.clip(x, -1, 1))
  assert _ks(r, cdf) < 0.015
  assert abs(r.mean() - 2.0 / np.pi) < 0.01  # E[cos(pi/2 u)] = 2/pi


def test_beta_schedule_matches_beta():
  config = CorruptionConfig(noise_ratio_schedule='beta', beta_a=2.0, beta_b=5.0)
  r = _ratios(config)
  assert _ks(r, stats.beta(2.0, 5.0).cdf) < 0.015


def test_truncated_gaussian_matches_mage():
  config = CorruptionConfig(noise_ratio_schedule='truncated_gaussian')
  r = _ratios(config)
  mean, std, lo, hi = 0.55, 0.25, 0.5, 1.0
  dist = stats.truncnorm((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)
  assert _ks(r, dist.cdf) < 0.015
  assert r.min() >= lo and r.max() <= hi


def test_masked_diffusion_is_antithetic_uniform_eps_1():
  config = CorruptionConfig(noise_ratio_schedule='masked_diffusion', diffusion_eps=0.01)
  assert config.antithetic  # on by default for masked diffusion (MDLM / MD4)
  r = np.sort(_ratios(config, n=64))
  assert r.min() >= 0.01 and r.max() <= 1.0
  # Low discrepancy: exactly one draw per stratum of width (1 - eps) / B.
  np.testing.assert_allclose(np.diff(r), 0.99 / 64, rtol=1e-4)
  plain = config.replace(antithetic=False)
  r = _ratios(plain)
  assert _ks(r, stats.uniform(0.01, 0.99).cdf) < 0.015


def test_antithetic_cosine_is_stratified():
  config = CorruptionConfig(noise_ratio_schedule='cosine', antithetic=True)
  r = _ratios(config, n=100)
  u = np.sort(np.arccos(r) * 2.0 / np.pi)
  np.testing.assert_allclose(np.diff(u), 0.01, atol=1e-4)


# ----------------------------------------------------------------------------- noise mask and split


@pytest.fixture(scope='module')
def big_targets():
  return jnp.asarray(_targets(2048, 24, seed=1))


@functools.lru_cache(maxsize=None)
def _corrupt_fn(config, ids):
  return jax.jit(lambda k, t: objectives.corrupt_targets(config, ids, k, t))


def _corrupt(config, targets, seed=0, ids=IDS):
  out = _corrupt_fn(config, ids)(jax.random.key(seed), targets)
  return jax.tree_util.tree_map(np.asarray, out)


def test_bernoulli_noise_fraction_matches_ratio(big_targets):
  targets = np.asarray(big_targets)
  eligible = (targets > 0) & (targets != IDS.eos)
  c = _corrupt(CorruptionConfig(noise_ratio_schedule='fixed', noise_ratio=0.3), big_targets)
  frac = c.noise_mask[eligible].mean()
  assert abs(frac - 0.3) < 0.01
  # Uniform schedule: the per-example noise fraction tracks the per-example ratio.
  c = _corrupt(CorruptionConfig(noise_ratio_schedule='uniform'), big_targets, seed=3)
  n = eligible.sum(1)
  per_example = c.noise_mask.sum(1) / np.maximum(n, 1)
  assert abs(np.mean((per_example - c.noise_ratios)[n > 0])) < 0.01
  long_rows = n >= 16
  assert np.corrcoef(per_example[long_rows], c.noise_ratios[long_rows])[0, 1] > 0.85


def test_exact_count_noises_ceil_r_n(big_targets):
  targets = np.asarray(big_targets)
  eligible = (targets > 0) & (targets != IDS.eos)
  c = _corrupt(CorruptionConfig(noise_ratio_schedule='uniform', noise_count='exact'),
               big_targets)
  n = eligible.sum(1)
  expected = np.clip(np.ceil(c.noise_ratios * n - 1e-4), 0, n)
  np.testing.assert_array_equal(c.noise_mask.sum(1), expected)
  assert not (c.noise_mask & ~eligible).any()


def test_mask_random_keep_split_fixed(big_targets):
  config = CorruptionConfig(noise_ratio_schedule='fixed', noise_ratio=0.8, keep_prob=0.1,
                            random_prob=0.2)
  c = _corrupt(config, big_targets)
  noised = c.noise_mask.sum()
  assert noised > 20000
  assert abs(c.kept.sum() / noised - 0.1) < 0.01
  assert abs(c.randomized.sum() / noised - 0.2) < 0.01
  assert abs(c.masked.sum() / noised - 0.7) < 0.01
  # The three branches partition the noised positions.
  np.testing.assert_array_equal(c.kept ^ c.randomized ^ c.masked, c.noise_mask)
  assert not (c.kept & c.randomized).any() and not (c.masked & c.randomized).any()
  targets = np.asarray(big_targets)
  np.testing.assert_array_equal(c.decoder_input_tokens[c.kept], targets[c.kept])
  assert (c.decoder_input_tokens[c.masked] == IDS.mask).all()
  lo, hi = IDS.random_token_range
  rand = c.decoder_input_tokens[c.randomized]
  assert rand.min() >= lo and rand.max() < hi
  assert len(np.unique(rand)) == hi - lo  # every real piece can be drawn


def test_mask_random_keep_split_per_example(big_targets):
  config = CorruptionConfig(noise_ratio_schedule='fixed', noise_ratio=1.0, keep_prob=None,
                            random_prob=None)
  c = _corrupt(config, big_targets)
  noised = c.noise_mask.sum(1)
  rows = noised >= 15
  keep_frac = c.kept.sum(1)[rows] / noised[rows]
  rand_frac = c.randomized.sum(1)[rows] / noised[rows]
  # Probabilities ~ U(0, 0.5) per example: mean 0.25, spread ~ sd of U(0, 0.5) = 0.144.
  assert abs(keep_frac.mean() - 0.25) < 0.01
  assert abs(rand_frac.mean() - 0.25) < 0.01
  assert 0.12 < keep_frac.std() < 0.2
  assert abs(np.corrcoef(keep_frac, rand_frac)[0, 1]) < 0.1


def test_random_decoder_input_scheme_never_special(big_targets):
  config = CorruptionConfig(noise_ratio_schedule='fixed', noise_ratio=1.0,
                            decoder_input_scheme='random', random_prob=0.5)
  c = _corrupt(config, big_targets)
  lo, hi = IDS.random_token_range
  noised = c.decoder_input_tokens[c.noise_mask]
  assert noised.min() >= lo and noised.max() < hi


def test_mask_range_uses_position_ids_and_counts_in_mask_weights(big_targets):
  config = CorruptionConfig(decoder_input_scheme='mask_range', loss_weighting='mask')
  c = _corrupt(config, big_targets)
  rows, cols = np.nonzero(c.masked)
  np.testing.assert_array_equal(c.decoder_input_tokens[rows, cols],
                                [IDS.mask_i(int(i)) for i in cols])
  assert (c.loss_weights[c.masked] == 1.0).all()


def test_eos_and_padding_invariants(big_targets):
  targets = np.asarray(big_targets)
  config = CorruptionConfig(keep_prob=0.1, random_prob=0.1, loss_weighting='all')
  c = _corrupt(config, big_targets)
  eos = targets == IDS.eos
  pad = targets == 0
  assert (c.decoder_input_tokens[eos] == IDS.eos).all()
  assert (c.decoder_input_tokens[pad] == 0).all()
  assert not c.noise_mask[eos | pad].any()
  assert (c.loss_weights[pad] == 0).all()
  # No special id other than EOS / [MASK] shows up in the canvas.
  x = c.decoder_input_tokens
  special = (x > 0) & (x != IDS.eos) & (x != IDS.mask) & (x >= IDS.num_real_pieces)
  assert not special.any()
  assert (x[~c.noise_mask] == targets[~c.noise_mask]).all()


@pytest.mark.parametrize('scheme', ['all', 'noise', 'mask'])
def test_weights_per_scheme(big_targets, scheme):
  targets = np.asarray(big_targets)
  config = CorruptionConfig(keep_prob=0.2, random_prob=0.2, loss_weighting=scheme)
  c = _corrupt(config, big_targets)
  eos = targets == IDS.eos
  expected = {'all': targets > 0, 'noise': c.noise_mask | eos, 'mask': c.masked | eos}[scheme]
  np.testing.assert_array_equal(c.loss_weights, expected.astype(np.float32))
  np.testing.assert_array_equal(c.normalizing_weights, c.loss_weights)


def test_elbo_weights(big_targets):
  targets = np.asarray(big_targets)
  config = CorruptionConfig(noise_ratio_schedule='masked_diffusion', loss_weighting='elbo')
  c = _corrupt(config, big_targets)
  expected = c.masked / c.noise_ratios[:, None]
  np.testing.assert_allclose(c.loss_weights, expected, rtol=1e-6)
  assert c.loss_weights.max() <= 1.0 / config.diffusion_eps + 1e-3
  np.testing.assert_array_equal(c.normalizing_weights, (targets > 0).astype(np.float32))
  # Unbiased: E[sum_i w_i] = number of eligible (non-EOS) tokens.
  eligible = ((targets > 0) & (targets != IDS.eos)).sum()
  assert abs(c.loss_weights.sum() / eligible - 1.0) < 0.05


def test_deterministic_for_fixed_key(big_targets):
  config = CorruptionConfig(keep_prob=None, random_prob=None)
  a = _corrupt(config, big_targets, seed=5)
  b = _corrupt(config, big_targets, seed=5)
  c = _corrupt(config, big_targets, seed=6)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert (a.decoder_input_tokens != c.decoder_input_tokens).any()


def test_masked_canvas_keeps_eos_and_pad():
  targets = jnp.asarray([[5, 6, 7, 1, 0], [8, 1, 0, 0, 0]], jnp.int32)
  canvas = objectives.masked_canvas('mask', IDS, jax.random.key(0), targets)
  np.testing.assert_array_equal(canvas, [[IDS.mask] * 3 + [1, 0], [IDS.mask, 1, 0, 0, 0]])
  canvas = objectives.masked_canvas('mask_range', IDS, jax.random.key(0), targets)
  np.testing.assert_array_equal(canvas[0, :3], [IDS.mask_i(i) for i in range(3)])


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize('kwargs, knob', [
    (dict(keep_prob=1.5), 'keep_prob'),
    (dict(random_prob=-0.1), 'random_prob'),
    (dict(noise_ratio=2.0), 'noise_ratio'),
    (dict(keep_prob=0.6, random_prob=0.5), 'keep_prob'),
    (dict(noise_ratio_schedule='linear'), 'noise_ratio_schedule'),
    (dict(decoder_input_scheme='masks'), 'decoder_input_scheme'),
    (dict(loss_weighting='tokens'), 'loss_weighting'),
    (dict(noise_count='poisson'), 'noise_count'),
    (dict(loss_weighting='elbo'), 'loss_weighting'),
    (dict(noise_ratio_schedule='masked_diffusion', loss_weighting='elbo', random_prob=0.1),
     'loss_weighting'),
    (dict(noise_ratio_schedule='beta', antithetic=True), 'antithetic'),
    (dict(beta_a=0.0), 'beta_a'),
    (dict(truncated_gaussian_low=0.9, truncated_gaussian_high=0.5), 'truncated_gaussian_low'),
    (dict(diffusion_eps=0.0), 'diffusion_eps'),
])
def test_bad_config_names_the_knob(kwargs, knob):
  with pytest.raises(ValueError, match=f'CorruptionConfig.{knob}'):
    CorruptionConfig(**kwargs)


def test_mask_range_without_reserved_ids_fails_before_jit():
  config = CorruptionConfig(decoder_input_scheme='mask_range')
  with pytest.raises(ValueError, match='mask_range_length=24'):
    config.check_special_ids(IDS_NO_RANGE, 24)
  with pytest.raises(ValueError, match='decoder_input_scheme'):
    config.check_special_ids(special_ids(40, 40, mask_range_length=8), 24)
  with pytest.raises(ValueError, match='mask_range_length'):
    objectives.corrupt_targets(config, IDS_NO_RANGE, jax.random.key(0),
                               jnp.ones((2, 24), jnp.int32))


def test_gin_binding_and_reimport():
  gin.clear_config()
  try:
    gin.parse_config(['padir.objectives.CorruptionConfig.noise_ratio_schedule = "cosine"',
                      'CorruptionConfig.keep_prob = 0.25'])
    config = CorruptionConfig()
    assert config.noise_ratio_schedule == 'cosine' and config.keep_prob == 0.25
    # A second import of the module re-registers instead of failing.
    saved = sys.modules.pop('padir.objectives')
    try:
      fresh = importlib.import_module('padir.objectives')
      assert fresh.CorruptionConfig().noise_ratio_schedule == 'cosine'
    finally:
      sys.modules['padir.objectives'] = saved
  finally:
    gin.clear_config()
