"""Optimizers and learning-rate schedules for the trainer, configured in gin.

The optimizer belongs to the run, not to the model. Each factory returns an :class:`Optimizer`:
the optax transformation and its learning-rate schedule (logged every step).

Gin::

  OPTIMIZER = @padir.optimizers.adafactor()
  padir.optimizers.adafactor.learning_rate = @padir.optimizers.rsqrt_schedule()
  padir.optimizers.rsqrt_schedule.warmup_steps = 10000

Schedules (step -> learning rate):

* :func:`rsqrt_schedule`: T5's ``base / sqrt(max(step, warmup_steps))`` (constant during the
  first ``warmup_steps``, then inverse square root);
* :func:`warmup_cosine_schedule`, :func:`warmup_linear_schedule`: linear warm-up to a peak,
  then cosine or linear decay to ``end_value``;
* :func:`inverse_sqrt_schedule`: fairseq's linear warm-up then ``peak * sqrt(warmup / step)``
  (Mask-Predict / CMLM);
* :func:`constant_schedule`;
* :func:`linear_cooldown`: any of these, scaled down linearly to 0 over the last
  ``cooldown_steps`` of the run (a short run ends at a lower loss than at a constant rate).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from padir import gin_utils

Schedule = Callable[[jax.Array], jax.Array]


class Optimizer(NamedTuple):
  """An optax transformation and its learning-rate schedule."""
  tx: optax.GradientTransformation
  learning_rate: Schedule


def _as_schedule(learning_rate: float | Schedule) -> Schedule:
  if callable(learning_rate):
    return learning_rate
  if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
    raise ValueError(f'learning_rate={learning_rate!r} must be a positive number or a schedule.')
  return optax.constant_schedule(float(learning_rate))


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
  ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
  if not ok:
    raise ValueError(f'{name}={value!r} must be a {"non-negative" if allow_zero else "positive"} '
                     'number.')


def constant_schedule(value: float) -> Schedule:
  """A constant learning rate."""
  _positive('constant_schedule.value', value)
  return optax.constant_schedule(float(value))


def rsqrt_schedule(base_learning_rate: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
  """T5's schedule: ``base / sqrt(max(step, warmup_steps))`` (0.01 for 10k steps, then decay)."""
  _positive('rsqrt_schedule.base_learning_rate', base_learning_rate)
  _positive('rsqrt_schedule.warmup_steps', warmup_steps)
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return base_learning_rate * jax.lax.rsqrt(jnp.maximum(step, float(warmup_steps)))
  return schedule


def inverse_sqrt_schedule(peak_value: float = 5e-4, warmup_steps: int = 10_000,
                          init_value: float = 1e-7) -> Schedule:
  """fairseq's inverse_sqrt: linear warm-up to ``peak_value``, then ``peak * sqrt(w / step)``."""
  _positive('inverse_sqrt_schedule.peak_value', peak_value)
  _positive('inverse_sqrt_schedule.warmup_steps', warmup_steps)
  warmup = optax.linear_schedule(init_value, peak_value, warmup_steps)
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    decay = peak_value * jnp.sqrt(warmup_steps / jnp.maximum(step, 1.0))
    return jnp.where(step < warmup_steps, warmup(step), decay)
  return schedule


def warmup_cosine_schedule(peak_value: float, warmup_steps: int, decay_steps: int,
                           init_value: float = 0.0, end_value: float = 0.0) -> Schedule:
  """Linear warm-up to ``peak_value`` over ``warmup_steps``, cosine decay until ``decay_steps``."""
  _positive('warmup_cosine_schedule.peak_value', peak_value)
  _positive('warmup_cosine_schedule.warmup_steps', warmup_steps, allow_zero=True)
  if decay_steps <= warmup_steps:
    raise ValueError(f'warmup_cosine_schedule.decay_steps={decay_steps} must exceed '
                     f'warmup_steps={warmup_steps} (decay_steps counts the warm-up).')
  return optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
                                            end_value)


def warmup_linear_schedule(peak_value: float, warmup_steps: int, decay_steps: int,
                           init_value: float = 0.0, end_value: float = 0.0) -> Schedule:
  """Linear warm-up to ``peak_value``, then linear decay to ``end_value`` at ``decay_steps``."""
  _positive('warmup_linear_schedule.peak_value', peak_value)
  _positive('warmup_linear_schedule.warmup_steps', warmup_steps, allow_zero=True)
  if decay_steps <= warmup_steps:
    raise ValueError(f'warmup_linear_schedule.decay_steps={decay_steps} must exceed '
                     f'warmup_steps={warmup_steps} (decay_steps counts the warm-up).')
  return optax.join_schedules(
      [optax.linear_schedule(init_value, peak_value, warmup_steps),
       optax.linear_schedule(peak_value, end_value, decay_steps - warmup_steps)],
      [warmup_steps])


def linear_cooldown(schedule: float | Schedule, total_steps: int,
                    cooldown_steps: int, warmup_steps: int = 0) -> Schedule:
  """``schedule`` times ``min(1, (total_steps - step) / cooldown_steps)``.

  The rate is unchanged until ``total_steps - cooldown_steps``, then falls linearly and reaches 0
  at ``total_steps`` (the "cooldown" of warmup-stable-decay schedules). Bind ``total_steps`` to
  the run's ``TRAIN_STEPS``: a run continued to more steps then cools down at its new end. A run
  shorter than ``cooldown_steps`` cools down over all its steps; ``cooldown_steps=0`` leaves
  ``schedule`` as it is (a checkpoint that others continue at the full rate).
  ``warmup_steps`` > 0 also ramps the rate up linearly over the first steps (step ``s`` gets
  ``(s + 1) / warmup_steps`` of it), the warm-up of warmup-stable-decay.
  """
  schedule = _as_schedule(schedule)
  _positive('linear_cooldown.total_steps', total_steps)
  _positive('linear_cooldown.cooldown_steps', cooldown_steps, allow_zero=True)
  _positive('linear_cooldown.warmup_steps', warmup_steps, allow_zero=True)
  if cooldown_steps == 0 and warmup_steps == 0:
    return schedule
  span = float(min(cooldown_steps, total_steps))

  def scaled(step):
    rate = schedule(step)
    if cooldown_steps:
      rate = rate * jnp.clip((total_steps - step) / span, 0.0, 1.0)
    if warmup_steps:
      rate = rate * jnp.minimum(1.0, (step + 1.0) / warmup_steps)
    return rate
  return scaled


def _decay_mask(params: Any) -> Any:
  """Weight decay on matrices only (not on norm scales or other vectors)."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _with_clipping(tx: optax.GradientTransformation,
                   max_grad_norm: float | None) -> optax.GradientTransformation:
  if max_grad_norm is None:
    return tx
  _positive('max_grad_norm', max_grad_norm)
  return optax.chain(optax.clip_by_global_norm(float(max_grad_norm)), tx)


def adafactor(learning_rate: float | Schedule | None = None,
              decay_rate: float = 0.8,
              clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True,
              min_dim_size_to_factor: int = 128,
              momentum: float | None = None,
              weight_decay_rate: float | None = None,
              eps: float = 1e-30,
              factored: bool = True,
              max_grad_norm: float | None = None) -> Optimizer:
  """Adafactor as in T5 (Shazeer & Stern 2018): factored second moments, no momentum.

  Args:
    learning_rate: a schedule or a number; default :func:`rsqrt_schedule` (T5).
    decay_rate: second-moment decay exponent (``1 - step ** -decay_rate``).
    clipping_threshold: update clipping (RMS) threshold; None disables it.
    multiply_by_parameter_scale: scale updates by the parameters' RMS (T5: True).
    min_dim_size_to_factor: factor the moments of dimensions at least this large.
    momentum: first-moment decay (None: no momentum, as in T5).
    weight_decay_rate: decoupled weight decay (None: none).
    eps: regulariser of the second moment.
    factored: factor second moments of matrices.
    max_grad_norm: clip gradients to this global norm first (None: no clipping).
  """
  schedule = rsqrt_schedule() if learning_rate is None else _as_schedule(learning_rate)
  _positive('adafactor.decay_rate', decay_rate)
  tx = optax.adafactor(
      learning_rate=schedule, min_dim_size_to_factor=min_dim_size_to_factor,
      decay_rate=decay_rate, multiply_by_parameter_scale=multiply_by_parameter_scale,
      clipping_threshold=clipping_threshold, momentum=momentum,
      weight_decay_rate=weight_decay_rate, eps=eps, factored=factored)
  return Optimizer(_with_clipping(tx, max_grad_norm), schedule)


def adamw(learning_rate: float | Schedule,
          b1: float = 0.9,
          b2: float = 0.98,
          eps: float = 1e-9,
          weight_decay: float = 0.01,
          decay_vectors: bool = False,
          max_grad_norm: float | None = 1.0) -> Optimizer:
  """AdamW (decoupled weight decay), as used for CMLM / MDLM-style training.

  Args:
    learning_rate: a schedule or a number.
    b1, b2, eps: Adam's moment decays and epsilon (fairseq transformer defaults).
    weight_decay: decoupled weight decay.
    decay_vectors: also decay 1-D parameters (norm scales); off by default.
    max_grad_norm: clip gradients to this global norm first (None: no clipping).
  """
  schedule = _as_schedule(learning_rate)
  _positive('adamw.weight_decay', weight_decay, allow_zero=True)
  tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                   mask=None if decay_vectors else _decay_mask)
  return Optimizer(_with_clipping(tx, max_grad_norm), schedule)


for _fn in (constant_schedule, rsqrt_schedule, inverse_sqrt_schedule, warmup_cosine_schedule,
            warmup_linear_schedule, linear_cooldown, adafactor, adamw):
  gin_utils.configurable(_fn, module='padir.optimizers')
del _fn
