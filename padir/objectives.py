"""GMLM target corruption on device: masking-ratio schedules, noise split, decoder inputs, weights.

A PaDIR / CMLM / masked-diffusion training example is a target sequence ``y`` ([B, L] int32, 0 =
padding, one EOS per row) and a position-aligned noisy copy ``x`` fed to the bidirectional
decoder. `corrupt_targets` builds ``x`` from a PRNG key, inside ``jax.jit``:

1. a noise ratio ``r`` per example from `CorruptionConfig.noise_ratio_schedule`:

   ==================== ======================================== ===========================
   schedule             r                                        source
   ==================== ======================================== ===========================
   ``fixed``            ``noise_ratio``                          BERT / T5 style
   ``uniform``          ``u``                                    CMLM, PaDIR (default)
   ``cosine``           ``cos(pi/2 * u)``                        MaskGIT
   ``beta``             ``Beta(beta_a, beta_b)``                 FiLM
   ``truncated_gaussian`` N(mean, std) truncated to [low, high]  MAGE
   ``masked_diffusion`` ``eps + (1 - eps) * u`` (= t)            MDLM / MD4 / LLaDA
   ==================== ======================================== ===========================

   with ``u ~ U(0, 1)`` per example, or antithetic ``u_b = (u_0 + b / B) mod 1`` across the batch
   (``antithetic``; MDLM / MD4's low-discrepancy sampler);
2. a noise mask: every position except padding and EOS is noised with probability ``r``
   (``noise_count='bernoulli'``, the reference) or exactly ``ceil(r * n)`` of the ``n`` eligible
   positions are noised (``'exact'``; with the uniform schedule this is CMLM's
   ``k ~ U{1..n}``);
3. each noised position keeps its token (``keep_prob``), becomes a random real piece
   (``random_prob``; drawn only from `SpecialIds.random_token_range`) or takes the mask fill of
   ``decoder_input_scheme``: ``[MASK]`` (``'mask'``), a random real piece (``'random'``) or the
   position-specific ``[MASK_i]`` (``'mask_range'``). ``keep_prob`` / ``random_prob`` set to
   ``None`` are drawn per example from U(0, 0.5) (PaDIR);
4. loss weights per ``loss_weighting``: ``all`` non-pad targets, ``noise`` (noised positions and
   EOS), ``mask`` (positions that took the mask fill, ``[MASK_i]`` included, and EOS) or ``elbo``
   (``1 / t`` on masked positions, the masked-diffusion ELBO of MDLM / MD4 for the linear
   schedule).

EOS is never noised and padding is never touched. Everything is validated on the host when the
config is built (`CorruptionConfig.__post_init__`) and, against the vocabulary and the target
length, in `CorruptionConfig.check_special_ids` (called at trace time by `corrupt_targets`).

Gin: the config is registered as ``padir.objectives.CorruptionConfig`` (short names
``objectives.CorruptionConfig`` / ``CorruptionConfig`` also resolve).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from padir import gin_utils
from padir.special_ids import SpecialIds

Array = jax.Array

NOISE_RATIO_SCHEDULES = ('fixed', 'uniform', 'cosine', 'beta', 'truncated_gaussian',
                         'masked_diffusion')
NOISE_COUNTS = ('bernoulli', 'exact')
DECODER_INPUT_SCHEMES = ('mask', 'random', 'mask_range')
LOSS_WEIGHTINGS = ('all', 'noise', 'mask', 'elbo')
# Schedules drawn by inverse CDF from one uniform, so antithetic sampling applies.
_INVERSE_CDF_SCHEDULES = ('uniform', 'cosine', 'truncated_gaussian', 'masked_diffusion')
_PER_EXAMPLE_PROB_HIGH = 0.5  # keep_prob / random_prob = None draw U(0, 0.5) (PaDIR).
_GIN_PREFIX = 'padir.objectives.CorruptionConfig'


def _fail(field: str, message: str) -> None:
  raise ValueError(f'{_GIN_PREFIX}.{field}: {message}')


@gin_utils.configurable
@dataclasses.dataclass(frozen=True)
class CorruptionConfig:
  """How targets are corrupted and weighted for GMLM training. Validated on construction.

  Attributes:
    noise_ratio_schedule: distribution of the per-example noise ratio; one of
      `NOISE_RATIO_SCHEDULES` (see the module docstring).
    noise_ratio: the ratio of the ``fixed`` schedule.
    beta_a, beta_b: Beta(a, b) parameters of the ``beta`` schedule (FiLM).
    truncated_gaussian_mean, truncated_gaussian_std, truncated_gaussian_low,
      truncated_gaussian_high: the ``truncated_gaussian`` schedule (MAGE: 0.55, 0.25, [0.5, 1]).
    diffusion_eps: lower bound of t ~ U(eps, 1) for ``masked_diffusion`` (MDLM: 1e-3).
    antithetic: low-discrepancy ratios across the batch; None = on for ``masked_diffusion``
      only. Needs an inverse-CDF schedule (uniform, cosine, truncated_gaussian,
      masked_diffusion).
    noise_count: ``bernoulli`` (i.i.d. per position, the reference) or ``exact``
      (ceil(r * n) positions).
    keep_prob: probability that a noised position keeps its token; None = U(0, 0.5) per example.
    random_prob: probability that a noised position becomes a random real piece; None =
      U(0, 0.5) per example.
    decoder_input_scheme: mask fill of the remaining noised positions: ``mask``, ``random`` or
      ``mask_range`` (needs ``special_ids(..., mask_range_length=L)``).
    loss_weighting: ``all``, ``noise``, ``mask`` or ``elbo``.
  """
  noise_ratio_schedule: str = 'uniform'
  noise_ratio: float = 0.15
  beta_a: float = 2.0
  beta_b: float = 2.0
  truncated_gaussian_mean: float = 0.55
  truncated_gaussian_std: float = 0.25
  truncated_gaussian_low: float = 0.5
  truncated_gaussian_high: float = 1.0
  diffusion_eps: float = 1e-3
  antithetic: bool | None = None
  noise_count: str = 'bernoulli'
  keep_prob: float | None = 0.0
  random_prob: float | None = 0.0
  decoder_input_scheme: str = 'mask'
  loss_weighting: str = 'mask'

  def __post_init__(self):
    if self.antithetic is None:
      object.__setattr__(self, 'antithetic', self.noise_ratio_schedule == 'masked_diffusion')
    self.validate()

  def replace(self, **changes: Any) -> 'CorruptionConfig':
    return dataclasses.replace(self, **changes)

  def validate(self) -> None:
    """Raises ValueError naming the gin knob at fault and the fix."""
    def choice(field: str, options: tuple[str, ...]):
      value = getattr(self, field)
      if value not in options:
        _fail(field, f'unknown value {value!r}; choose one of {options}.')

    def probability(field: str, allow_none: bool = False):
      value = getattr(self, field)
      if value is None and allow_none:
        return
      if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        extra = ' (or None to draw it per example from U(0, 0.5))' if allow_none else ''
        _fail(field, f'{value!r} is not a probability; use a value in [0, 1]{extra}.')

    def positive(field: str):
      value = getattr(self, field)
      if not isinstance(value, (int, float)) or not value > 0:
        _fail(field, f'{value!r} must be a positive number.')

    choice('noise_ratio_schedule', NOISE_RATIO_SCHEDULES)
    choice('noise_count', NOISE_COUNTS)
    choice('decoder_input_scheme', DECODER_INPUT_SCHEMES)
    choice('loss_weighting', LOSS_WEIGHTINGS)
    probability('noise_ratio')
    probability('keep_prob', allow_none=True)
    probability('random_prob', allow_none=True)
    if (self.keep_prob is not None and self.random_prob is not None and
        self.keep_prob + self.random_prob > 1.0 + 1e-9):
      _fail('keep_prob', f'keep_prob + random_prob = {self.keep_prob} + {self.random_prob} > 1; '
            'lower one of them (the rest of the noised positions take the mask fill).')
    positive('beta_a')
    positive('beta_b')
    positive('truncated_gaussian_std')
    probability('truncated_gaussian_low')
    probability('truncated_gaussian_high')
    if not self.truncated_gaussian_low < self.truncated_gaussian_high:
      _fail('truncated_gaussian_low',
            f'the interval [{self.truncated_gaussian_low}, {self.truncated_gaussian_high}] is '
            'empty; set truncated_gaussian_low < truncated_gaussian_high.')
    if not (isinstance(self.diffusion_eps, (int, float)) and 0.0 < self.diffusion_eps < 1.0):
      _fail('diffusion_eps', f'{self.diffusion_eps!r} must be in (0, 1) (MDLM uses 1e-3); '
            'it bounds the ELBO weight 1/t by 1/eps.')
    if not isinstance(self.antithetic, bool):
      _fail('antithetic', f'{self.antithetic!r} must be True, False or None.')
    if self.antithetic and self.noise_ratio_schedule not in _INVERSE_CDF_SCHEDULES:
      _fail('antithetic', f'antithetic sampling needs a schedule drawn from one uniform '
            f'{_INVERSE_CDF_SCHEDULES}, not {self.noise_ratio_schedule!r}; set antithetic=False.')
    if self.loss_weighting == 'elbo':
      if self.noise_ratio_schedule != 'masked_diffusion':
        _fail('loss_weighting', "'elbo' (weight 1/t) is the ELBO of t ~ U(eps, 1); set "
              "noise_ratio_schedule='masked_diffusion' or pick another loss_weighting.")
      if self.keep_prob != 0.0 or self.random_prob != 0.0:
        _fail('loss_weighting', "'elbo' assumes absorbing [MASK] noise; set keep_prob=0.0 and "
              'random_prob=0.0.')
      if self.decoder_input_scheme == 'random':
        _fail('loss_weighting', "'elbo' assumes absorbing [MASK] noise; use "
              "decoder_input_scheme='mask' or 'mask_range'.")
      if self.noise_count != 'bernoulli':
        _fail('loss_weighting', "'elbo' needs i.i.d. masking with probability t; set "
              "noise_count='bernoulli'.")

  def check_special_ids(self, ids: SpecialIds, target_length: int) -> None:
    """Checks the vocabulary against the scheme and the target length.

    Raises:
      ValueError: when ``mask_range`` lacks reserved [MASK_i] ids, or the vocabulary has no
        real piece to draw random tokens from.
    """
    lo, hi = ids.random_token_range
    if hi <= lo:
      raise ValueError(f'The vocabulary has no real pieces to draw random tokens from '
                       f'(random_token_range={ids.random_token_range}).')
    if self.decoder_input_scheme == 'mask_range' and ids.mask_range_size < target_length:
      raise ValueError(
          f"{_GIN_PREFIX}.decoder_input_scheme='mask_range' needs one [MASK_i] id per target "
          f'position ({target_length}) but the vocabulary reserves {ids.mask_range_size}; build '
          f'the ids with special_ids(..., mask_range_length={target_length}) (and enough '
          "extra_ids), or use decoder_input_scheme='mask'.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Corruption:
  """A corrupted batch. All arrays are [B, L] unless noted.

  Attributes:
    decoder_input_tokens: int32 noisy canvas aligned with the targets (pad stays 0, EOS kept).
    noise_mask: bool, the noised positions (kept + random + mask fill).
    masked: bool, noised positions that took the mask fill of ``decoder_input_scheme``.
    randomized: bool, noised positions replaced by a random real piece (``random_prob``).
    kept: bool, noised positions that kept the gold token (``keep_prob``).
    loss_weights: float32 per-token loss weights of ``loss_weighting``.
    normalizing_weights: float32 weights whose sum is the token count used for normalising the
      loss: equal to ``loss_weights`` except for ``elbo``, where it is the non-pad mask (the loss
      is then the negative ELBO per target token, MDLM's convention).
    noise_ratios: [B] float32, the per-example ratio r (t for masked diffusion).
  """
  decoder_input_tokens: Array
  noise_mask: Array
  masked: Array
  randomized: Array
  kept: Array
  loss_weights: Array
  normalizing_weights: Array
  noise_ratios: Array


def _uniforms(rng: Array, batch_size: int, antithetic: bool) -> Array:
  """[B] float32 in [0, 1); antithetic: one draw shifted by b / B (low discrepancy)."""
  if not antithetic:
    return jax.random.uniform(rng, (batch_size,), jnp.float32)
  u0 = jax.random.uniform(rng, (), jnp.float32)
  return jnp.mod(u0 + jnp.arange(batch_size, dtype=jnp.float32) / batch_size, 1.0)


def sample_noise_ratios(config: CorruptionConfig, rng: Array, batch_size: int) -> Array:
  """Draws one noise ratio per example: [B] float32 in [0, 1]."""
  schedule = config.noise_ratio_schedule
  if schedule == 'fixed':
    return jnp.full((batch_size,), config.noise_ratio, jnp.float32)
  if schedule == 'beta':
    return jax.random.beta(rng, config.beta_a, config.beta_b, (batch_size,), jnp.float32)
  u = _uniforms(rng, batch_size, config.antithetic)
  if schedule == 'uniform':
    return u
  if schedule == 'cosine':
    return jnp.cos(0.5 * math.pi * u)
  if schedule == 'masked_diffusion':
    return config.diffusion_eps + (1.0 - config.diffusion_eps) * u
  if schedule == 'truncated_gaussian':
    mean, std = config.truncated_gaussian_mean, config.truncated_gaussian_std
    cdf_lo = jax.scipy.special.ndtr((config.truncated_gaussian_low - mean) / std)
    cdf_hi = jax.scipy.special.ndtr((config.truncated_gaussian_high - mean) / std)
    ratio = mean + std * jax.scipy.special.ndtri(cdf_lo + u * (cdf_hi - cdf_lo))
    return jnp.clip(ratio, config.truncated_gaussian_low, config.truncated_gaussian_high)
  raise ValueError(f'Unknown noise_ratio_schedule {schedule!r}.')  # validated earlier


def sample_noise_mask(config: CorruptionConfig, rng: Array, eligible: Array,
                      ratios: Array) -> Array:
  """Chooses the noised positions among ``eligible`` ([B, L] bool) with ratios [B]: [B, L] bool."""
  scores = jax.random.uniform(rng, eligible.shape, jnp.float32)  # [B, L]
  if config.noise_count == 'bernoulli':
    return eligible & (scores < ratios[:, None])
  # exact: noise the ceil(r * n) eligible positions with the smallest scores.
  n = jnp.sum(eligible, axis=1).astype(jnp.float32)  # [B]
  count = jnp.clip(jnp.ceil(ratios * n - 1e-4), 0.0, n).astype(jnp.int32)  # [B]
  scores = jnp.where(eligible, scores, 2.0)  # ineligible positions sort last
  ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)  # [B, L]
  return eligible & (ranks < count[:, None])


def _branch_probs(value: float | None, rng: Array, batch_size: int) -> Array:
  if value is None:
    return jax.random.uniform(rng, (batch_size,), jnp.float32, 0.0, _PER_EXAMPLE_PROB_HIGH)
  return jnp.full((batch_size,), value, jnp.float32)


def random_tokens(ids: SpecialIds, rng: Array, shape: tuple[int, ...]) -> Array:
  """Uniform random real pieces (never a special id): int32 of ``shape``."""
  lo, hi = ids.random_token_range
  return jax.random.randint(rng, shape, lo, hi, jnp.int32)


def mask_fill_tokens(scheme: str, ids: SpecialIds, rng: Array, shape: tuple[int, int]) -> Array:
  """The token each position takes when fully masked under ``scheme``: [B, L] int32."""
  batch, length = shape
  if scheme == 'mask':
    return jnp.full(shape, ids.mask, jnp.int32)
  if scheme == 'random':
    return random_tokens(ids, rng, shape)
  if scheme == 'mask_range':
    if ids.mask_range_size < length:
      raise ValueError(f"decoder_input_scheme='mask_range' needs special_ids(..., "
                       f'mask_range_length={length}); {ids.mask_range_size} ids are reserved.')
    row = ids.mask_range_start + jnp.arange(length, dtype=jnp.int32)
    return jnp.broadcast_to(row[None], (batch, length))
  raise ValueError(f'Unknown decoder_input_scheme {scheme!r}; choose one of '
                   f'{DECODER_INPUT_SCHEMES}.')


def masked_canvas(scheme: str, ids: SpecialIds, rng: Array, targets: Array) -> Array:
  """A fully masked canvas of the gold length: [B, L] int32.

  Every non-pad, non-EOS target position takes the mask fill of ``scheme``; EOS stays in place
  and padding stays 0. ``rng`` is only used by the ``random`` scheme.
  """
  fill = mask_fill_tokens(scheme, ids, rng, targets.shape)
  eligible = (targets != ids.pad) & (targets != ids.eos)
  return jnp.where(eligible, fill, targets).astype(jnp.int32)


def compute_loss_weights(loss_weighting: str, targets: Array, ids: SpecialIds,
                         noise_mask: Array, masked: Array,
                         noise_ratios: Array) -> tuple[Array, Array]:
  """Per-token loss weights and normalising weights ([B, L] float32 each).

  Args:
    loss_weighting: one of `LOSS_WEIGHTINGS`.
    targets: [B, L] gold tokens (0 = padding).
    ids: the special ids (for EOS).
    noise_mask: [B, L] bool noised positions.
    masked: [B, L] bool positions that took the mask fill.
    noise_ratios: [B] the per-example ratio (t for ``elbo``).

  Returns:
    (loss_weights, normalizing_weights); see `Corruption`.
  """
  nonpad = targets != ids.pad
  eos = targets == ids.eos
  if loss_weighting == 'all':
    weights = nonpad
  elif loss_weighting == 'noise':
    weights = noise_mask | eos
  elif loss_weighting == 'mask':
    weights = masked | eos
  elif loss_weighting == 'elbo':
    weights = masked.astype(jnp.float32) / noise_ratios[:, None]
    return weights, nonpad.astype(jnp.float32)
  else:
    raise ValueError(f'Unknown loss_weighting {loss_weighting!r}; choose one of '
                     f'{LOSS_WEIGHTINGS}.')
  weights = (weights & nonpad).astype(jnp.float32)
  return weights, weights


def corrupt_targets(config: CorruptionConfig, ids: SpecialIds, rng: Array,
                    targets: Array) -> Corruption:
  """Corrupts a target batch on device. Jittable; deterministic for a fixed ``rng``.

  Args:
    config: the corruption knobs.
    ids: the special ids of the vocabulary.
    rng: a PRNG key.
    targets: [B, L] int32 gold targets (0 = padding, EOS included).

  Returns:
    The `Corruption` (decoder inputs, masks, loss weights, ratios).

  Raises:
    ValueError: (at trace time) when the vocabulary does not fit the scheme.
  """
  batch, length = targets.shape
  config.check_special_ids(ids, length)
  targets = targets.astype(jnp.int32)
  k_ratio, k_noise, k_keep, k_random, k_branch, k_tokens, k_fill = jax.random.split(rng, 7)
  ratios = sample_noise_ratios(config, k_ratio, batch)  # [B]
  nonpad = targets != ids.pad
  eligible = nonpad & (targets != ids.eos)
  noise = sample_noise_mask(config, k_noise, eligible, ratios)  # [B, L]
  keep_p = _branch_probs(config.keep_prob, k_keep, batch)[:, None]  # [B, 1]
  random_p = _branch_probs(config.random_prob, k_random, batch)[:, None]  # [B, 1]
  branch = jax.random.uniform(k_branch, (batch, length), jnp.float32)  # [B, L]
  kept = noise & (branch < keep_p)
  randomized = noise & ~kept & (branch < keep_p + random_p)
  masked = noise & ~kept & ~randomized
  inputs = jnp.where(randomized, random_tokens(ids, k_tokens, (batch, length)), targets)
  fill = mask_fill_tokens(config.decoder_input_scheme, ids, k_fill, (batch, length))
  inputs = jnp.where(masked, fill, inputs)
  weights, norm_weights = compute_loss_weights(config.loss_weighting, targets, ids, noise,
                                               masked, ratios)
  return Corruption(decoder_input_tokens=inputs, noise_mask=noise, masked=masked,
                    randomized=randomized, kept=kept, loss_weights=weights,
                    normalizing_weights=norm_weights, noise_ratios=ratios)
