"""Tests for padir.remasking: schedule formulas, threshold, stutter, replacement, config."""

import math

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import remasking
from padir.remasking import RemaskConfig

_LENGTHS = np.array([1, 2, 5, 7, 10, 13, 16], np.int32)
_L = 16


def _valid(lengths=_LENGTHS, width=_L):
  return jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]


def _confidences(seed=0, shape=(len(_LENGTHS), _L)):
  # Distinct log-probabilities so rankings are unambiguous.
  rng = np.random.default_rng(seed)
  return jnp.asarray(-rng.permutation(shape[0] * shape[1]).reshape(shape) / 100.0, jnp.float32)


def _expected_count(config, n, t, big_t):
  if t >= big_t:
    return 0
  if config.rule == 'mask_predict':
    return math.floor(n * (big_t - t) / big_t)
  if config.rule == 'constant':
    if config.count is not None:
      return min(config.count, n)
    return math.floor(config.fraction * n + 1e-9)
  if config.rule == 'cosine':
    return max(0, min(math.floor(n * math.cos(math.pi / 2 * t / big_t) + 1e-9), n - 1))
  return 0


@pytest.mark.parametrize('config', [
    RemaskConfig(rule='mask_predict'),
    RemaskConfig(rule='constant', count=3),
    RemaskConfig(rule='constant', fraction=0.3),
    RemaskConfig(rule='cosine'),
    RemaskConfig(rule='keep_all'),
])
def test_ranking_counts_follow_formula(config):
  valid = _valid()
  conf = _confidences()
  tokens = jnp.arange(_L)[None, :].repeat(len(_LENGTHS), 0) + 3  # no stutter
  mask_fn = jax.jit(remasking.rejection_mask, static_argnums=0)
  for big_t in (1, 3, 4, 10):
    for t in range(1, big_t + 1):
      rejected = np.asarray(mask_fn(config, tokens, conf, valid, t, big_t))
      counts = rejected.sum(-1)
      expected = [_expected_count(config, int(n), t, big_t) for n in _LENGTHS]
      np.testing.assert_array_equal(counts, expected, err_msg=f'{config} t={t} T={big_t}')
      assert not rejected[~np.asarray(valid)].any()
      # The rejected positions are the least confident ones.
      for row, n in enumerate(_LENGTHS):
        k = counts[row]
        if k:
          lowest = np.argsort(np.asarray(conf)[row, :n], kind='stable')[:k]
          assert set(np.nonzero(rejected[row])[0]) == set(lowest)


def test_cosine_counts_among_uncommitted_positions():
  config = RemaskConfig(rule='cosine')
  valid = _valid([10], 12)
  eligible = valid & (jnp.arange(12) >= 4)[None]  # 6 uncommitted
  conf = _confidences(shape=(1, 12))
  tokens = jnp.arange(12)[None] + 3
  rejected = remasking.rejection_mask(config, tokens, conf, valid, 1, 8, eligible=eligible)
  # floor(10 * cos(pi/16)) = 9 clamped to 6 - 1: one commit at least.
  assert int(rejected.sum()) == 5
  assert not bool(rejected[0, :4].any())


def test_choice_temperature_anneals_to_plain_ranking():
  config = RemaskConfig(rule='cosine', choice_temperature=4.5)
  valid = _valid([16], 16)
  conf = _confidences(shape=(1, 16))
  tokens = jnp.arange(16)[None] + 3
  key = jax.random.PRNGKey(0)
  noisy = [remasking.rejection_mask(config, tokens, conf, valid, 1, 4, rng=jax.random.fold_in(
      key, i)) for i in range(4)]
  plain = remasking.rejection_mask(RemaskConfig(rule='cosine'), tokens, conf, valid, 1, 4)
  assert all(int(r.sum()) == int(plain.sum()) for r in noisy)
  assert any(not bool(jnp.array_equal(r, plain)) for r in noisy)
  with pytest.raises(ValueError, match='rng'):
    remasking.rejection_mask(config, tokens, conf, valid, 1, 4)


def test_threshold_commits_at_least_one_and_terminates():
  config = RemaskConfig(rule='threshold', threshold=0.9)
  assert config.effective_update == 'commit'
  n_rows, width = 3, 12
  valid = _valid([12, 7, 1], width)
  rng = np.random.default_rng(1)
  committed = jnp.zeros((n_rows, width), bool)
  canvas = jnp.zeros((n_rows, width), jnp.int32)
  step = jax.jit(remasking.remask, static_argnums=0)
  for t in range(1, width + 1):
    # Low confidences everywhere (below tau): only the forced commit happens.
    conf = jnp.asarray(np.log(rng.uniform(0.05, 0.5, (n_rows, width))), jnp.float32)
    proposed = jnp.asarray(rng.integers(3, 50, (n_rows, width)), jnp.int32)
    eligible = valid & ~committed
    before = int(eligible.sum())
    canvas, rejected = step(config, proposed, conf, canvas, jnp.zeros_like(canvas), valid, t,
                            width, eligible=eligible)
    newly = eligible & ~rejected
    per_row = np.asarray(newly.sum(-1))
    np.testing.assert_array_equal(per_row, np.minimum(1, np.asarray(eligible.sum(-1))))
    committed = committed | newly
    if before == 0:
      break
  assert bool(committed[valid].all())
  # High confidences: everything above tau is committed at once.
  conf = jnp.full((1, 4), math.log(0.95))
  rejected = remasking.rejection_mask(config, jnp.arange(4)[None] + 3, conf,
                                      jnp.ones((1, 4), bool), 1, 10)
  assert not bool(rejected.any())


def test_stutter_rule_and_after_last():
  tokens = jnp.array([[5, 5, 6, 7, 7, 7, 1, 0]])
  valid = tokens > 0
  conf = jnp.zeros(tokens.shape)
  expected = np.array([[0, 1, 0, 0, 1, 1, 0, 0]], bool)
  np.testing.assert_array_equal(remasking.stutter_mask(tokens, valid), expected)
  rej = remasking.rejection_mask(RemaskConfig(rule='stutter'), tokens, conf, valid, 1, 3)
  np.testing.assert_array_equal(rej, expected)
  # At the last iteration only stutter_after_last rejects.
  rej = remasking.rejection_mask(RemaskConfig(rule='stutter'), tokens, conf, valid, 3, 3)
  assert not bool(rej.any())
  cfg = RemaskConfig(rule='mask_predict', stutter_after_last=True)
  rej = remasking.rejection_mask(cfg, tokens, conf, valid, 3, 3)
  np.testing.assert_array_equal(rej, expected)
  # No wrap-around: first equal to last is not stutter.
  wrap = jnp.array([[4, 6, 4]])
  assert not bool(remasking.stutter_mask(wrap, wrap > 0).any())


def test_remask_replacements_and_padding():
  proposed = jnp.array([[10, 11, 12, 13, 14]])
  previous = jnp.array([[20, 21, 22, 23, 0]])
  initial = jnp.array([[30, 31, 32, 33, 0]])
  valid = previous > 0
  conf = jnp.array([[-0.1, -3.0, -0.2, -2.0, -0.05]])
  logits_sum = jax.nn.one_hot(jnp.array([[40, 41, 42, 43, 44]]), 50)
  outs = {}
  for repl in remasking.REPLACEMENTS:
    cfg = RemaskConfig(rule='constant', count=2, replacement=repl)
    outs[repl], rejected = remasking.remask(cfg, proposed, conf, previous, initial, valid, 1, 2,
                                            logits_sum=logits_sum)
    np.testing.assert_array_equal(rejected, [[False, True, False, True, False]])
  np.testing.assert_array_equal(outs['initial'], [[10, 31, 12, 33, 0]])
  np.testing.assert_array_equal(outs['previous'], [[10, 21, 12, 23, 0]])
  np.testing.assert_array_equal(outs['logits_sum'], [[10, 41, 12, 43, 0]])
  with pytest.raises(ValueError, match='logits_sum'):
    remasking.replacement_tokens(RemaskConfig(replacement='logits_sum'), previous, initial)


@pytest.mark.parametrize('kwargs, match', [
    (dict(rule='nope'), 'rule'),
    (dict(replacement='zero'), 'replacement'),
    (dict(update='sometimes'), 'update'),
    (dict(rule='constant'), 'exactly one'),
    (dict(rule='constant', count=2, fraction=0.5), 'exactly one'),
    (dict(rule='mask_predict', count=2), 'only apply'),
    (dict(rule='constant', fraction=1.5), 'fraction'),
    (dict(rule='constant', count=-1), 'count'),
    (dict(rule='threshold', threshold=1.0), 'threshold'),
    (dict(rule='keep_all', choice_temperature=1.0), 'choice_temperature'),
])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    RemaskConfig(**kwargs)


def test_config_defaults_and_gin():
  assert RemaskConfig(rule='mask_predict').effective_update == 'masked'
  assert RemaskConfig(rule='keep_all').effective_update == 'all'
  assert RemaskConfig(rule='cosine', update='all').effective_update == 'all'
  with gin.unlock_config():
    gin.parse_config('padir.remasking.RemaskConfig.rule = "cosine"\n'
                      'RemaskConfig.choice_temperature = 2.0')
  try:
    cfg = RemaskConfig()
    assert cfg.rule == 'cosine' and cfg.choice_temperature == 2.0
  finally:
    gin.clear_config()
