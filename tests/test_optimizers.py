"""Tests of padir.optimizers: schedule values, optimizer construction and validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from padir import optimizers


def _values(schedule, steps):
  return np.asarray([float(schedule(jnp.asarray(s))) for s in steps])


def test_rsqrt_schedule_is_t5s():
  schedule = optimizers.rsqrt_schedule(1.0, warmup_steps=10_000)
  np.testing.assert_allclose(_values(schedule, [0, 5_000, 10_000, 40_000]),
                             [0.01, 0.01, 0.01, 0.005], rtol=1e-6)


def test_warmup_cosine_and_linear():
  cosine = optimizers.warmup_cosine_schedule(1.0, warmup_steps=10, decay_steps=110)
  np.testing.assert_allclose(_values(cosine, [0, 5, 10, 60, 110]), [0, 0.5, 1.0, 0.5, 0.0],
                             atol=1e-6)
  linear = optimizers.warmup_linear_schedule(2.0, warmup_steps=10, decay_steps=30,
                                             end_value=0.0)
  np.testing.assert_allclose(_values(linear, [0, 10, 20, 30, 40]), [0, 2.0, 1.0, 0.0, 0.0],
                             atol=1e-6)
  inv = optimizers.inverse_sqrt_schedule(1e-3, warmup_steps=100, init_value=0.0)
  np.testing.assert_allclose(_values(inv, [50, 100, 400]), [5e-4, 1e-3, 5e-4], rtol=1e-5)


def test_linear_cooldown_scales_the_last_steps_to_zero():
  base = optimizers.rsqrt_schedule(1.0, warmup_steps=10_000)  # 0.01 throughout
  cooled = optimizers.linear_cooldown(base, total_steps=1000, cooldown_steps=100)
  np.testing.assert_allclose(_values(cooled, [0, 900, 950, 999, 1000, 1200]),
                             [0.01, 0.01, 0.005, 0.0001, 0.0, 0.0], rtol=1e-5, atol=1e-9)
  constant = optimizers.linear_cooldown(0.5, total_steps=10, cooldown_steps=10)
  np.testing.assert_allclose(_values(constant, [0, 5]), [0.5, 0.25], rtol=1e-6)
  short = optimizers.linear_cooldown(0.5, total_steps=10, cooldown_steps=100)  # the whole run
  np.testing.assert_allclose(_values(short, [0, 5]), [0.5, 0.25], rtol=1e-6)
  none = optimizers.linear_cooldown(base, total_steps=1000, cooldown_steps=0)  # no cooldown
  np.testing.assert_allclose(_values(none, [0, 999, 1000]), [0.01, 0.01, 0.01], rtol=1e-5)


def test_linear_cooldown_with_a_warmup_ramps_up_then_holds_then_cools_down():
  base = optimizers.rsqrt_schedule(1.0, warmup_steps=10_000)  # 0.01 throughout
  wsd = optimizers.linear_cooldown(base, total_steps=1000, cooldown_steps=100, warmup_steps=50)
  np.testing.assert_allclose(_values(wsd, [0, 24, 49, 500, 950, 1000]),
                             [0.0002, 0.005, 0.01, 0.01, 0.005, 0.0], rtol=1e-5, atol=1e-9)
  ramp = optimizers.linear_cooldown(0.5, total_steps=10, cooldown_steps=0, warmup_steps=4)
  np.testing.assert_allclose(_values(ramp, [0, 3, 9]), [0.125, 0.5, 0.5], rtol=1e-6)


@pytest.mark.parametrize('make, message', [
    (lambda: optimizers.warmup_cosine_schedule(1.0, 10, 10), 'must exceed'),
    (lambda: optimizers.rsqrt_schedule(warmup_steps=0), 'positive'),
    (lambda: optimizers.adamw(-1.0), 'positive'),
    (lambda: optimizers.adafactor(max_grad_norm=0.0), 'positive'),
    (lambda: optimizers.linear_cooldown(1.0, total_steps=10, cooldown_steps=-1), 'non-negative'),
    (lambda: optimizers.linear_cooldown(1.0, 10, 0, warmup_steps=-5), 'warmup_steps'),
])
def test_bad_settings_fail_clearly(make, message):
  with pytest.raises(ValueError, match=message):
    make()


@pytest.mark.parametrize('optimizer', [
    optimizers.adafactor(),
    optimizers.adamw(optimizers.warmup_linear_schedule(1e-3, 1, 10, init_value=1e-4)),
    optimizers.adafactor(learning_rate=0.01, max_grad_norm=1.0, momentum=0.9),
])
def test_optimizers_update_params(optimizer):
  params = {'w': jnp.ones((4, 3)), 'scale': jnp.ones((3,))}
  grads = jax.tree_util.tree_map(lambda p: 0.5 * p, params)
  state = optimizer.tx.init(params)
  updates, _ = optimizer.tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  assert float(jnp.max(new['w'])) < 1.0  # moved against the gradient
  assert float(optimizer.learning_rate(0)) > 0


def test_adamw_does_not_decay_vectors_by_default():
  opt = optimizers.adamw(1.0, weight_decay=0.5, max_grad_norm=None)
  params = {'w': jnp.ones((2, 2)), 'scale': jnp.ones((2,))}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = opt.tx.update(zeros, opt.tx.init(params), params)
  assert float(jnp.abs(updates['scale']).max()) == 0.0
  assert float(jnp.abs(updates['w']).max()) > 0.0
