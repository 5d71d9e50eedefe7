"""Token and length losses with T5X semantics (label smoothing, z-loss, loss normalising factor).

The token loss never materialises a log-softmax: per position it needs the logsumexp over the
vocabulary, the gold logit and (with label smoothing) the sum of the logits, all reductions of
the [B, L, V] float32 logits that XLA fuses, so no further [B, L, V] float32 buffer is kept
for the backward pass beyond what the softmax gradient needs. (A hand-written gradient,
``g_z * softmax + g_gold * one_hot`` in one pass, measured slower on the 2-core CPU: XLA then
copies the [B*L, V] gradient into a transposed layout for the output projection's matmul.)

With label smoothing ``ls`` the soft target puts ``1 - ls`` on the gold id and
``ls / (V - 1)`` on every other id (T5X); the loss subtracts the entropy of that soft target, so
a perfect prediction of the soft target scores 0. The z-loss adds ``z_loss * logsumexp^2``
(PaLM / T5X) to keep the softmax normaliser near 1.

``loss_normalizing_factor`` (T5X): ``None`` sums the weighted token losses; a number divides the
sum by that constant; the strings (case-insensitive)

* ``'NUM_REAL_TARGET_TOKENS'``: divide by the token count, the sum of the normalising weights
  (the loss weights unless given separately; see `padir.objectives.Corruption`);
* ``'NUM_TOTAL_TARGET_TOKENS'``: divide by B * L, padding included;
* ``'AVERAGE_PER_SEQUENCE'``: average each sequence over its own token count, then average over
  the sequences that have any weight.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SPECIAL_LOSS_NORMALIZING_FACTORS = ('NUM_REAL_TARGET_TOKENS', 'NUM_TOTAL_TARGET_TOKENS',
                                    'AVERAGE_PER_SEQUENCE')


def check_loss_options(label_smoothing: float, z_loss: float,
                       loss_normalizing_factor: Any, owner: str = 'model') -> None:
  """Validates the loss knobs on the host.

  Args:
    label_smoothing: in [0, 1).
    z_loss: >= 0.
    loss_normalizing_factor: None, a positive number or one of
      `SPECIAL_LOSS_NORMALIZING_FACTORS` (case-insensitive).
    owner: gin-style name of the object holding the knobs, used in messages.

  Raises:
    ValueError: naming the knob and the accepted values.
  """
  if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f'{owner}.label_smoothing={label_smoothing!r} must be in [0, 1) '
                     '(0.1 is the usual value).')
  if not isinstance(z_loss, (int, float)) or z_loss < 0.0:
    raise ValueError(f'{owner}.z_loss={z_loss!r} must be >= 0 (T5X uses 1e-4).')
  lnf = loss_normalizing_factor
  if lnf is None:
    return
  if isinstance(lnf, str):
    if lnf.upper() not in SPECIAL_LOSS_NORMALIZING_FACTORS:
      raise ValueError(f'{owner}.loss_normalizing_factor={lnf!r} is not one of '
                       f'{SPECIAL_LOSS_NORMALIZING_FACTORS} (or a positive number, or None).')
    return
  if isinstance(lnf, bool) or not isinstance(lnf, (int, float)) or not lnf > 0:
    raise ValueError(f'{owner}.loss_normalizing_factor={lnf!r} must be None, a positive number '
                     f'or one of {SPECIAL_LOSS_NORMALIZING_FACTORS}.')


def _gold_logit(logits: Array, targets: Array) -> Array:
  """logits[..., targets]: [...] (``targets`` int [...])."""
  return jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def token_cross_entropy(logits: Array, targets: Array, label_smoothing: float = 0.0,
                        z_loss: float = 0.0) -> tuple[Array, Array]:
  """Per-token cross-entropy with label smoothing and z-loss.

  Args:
    logits: [..., V] float logits.
    targets: [...] int gold ids.
    label_smoothing: mass spread uniformly over the V - 1 other ids.
    z_loss: coefficient of the ``logsumexp^2`` auxiliary loss.

  Returns:
    (loss, z_loss_part), both [...] float32; ``loss`` includes ``z_loss_part``.
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [...]
  gold = _gold_logit(logits, targets)  # [...]
  loss = log_z - gold  # -log p(gold)
  if label_smoothing > 0.0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    # -sum_j q_j log p_j = -(conf - low) log p_gold - low * sum_j log p_j
    sum_log_p = jnp.sum(logits, axis=-1) - vocab * log_z
    loss = (confidence - low) * loss - low * sum_log_p
    entropy = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low + 1e-20))
    loss = loss - entropy
  z_part = z_loss * jnp.square(log_z)
  return loss + z_part, z_part


def token_log_probs(logits: Array, targets: Array) -> Array:
  """log p(target) per position: [...] float32 (no smoothing, no z-loss)."""
  logits = logits.astype(jnp.float32)
  return _gold_logit(logits, targets) - jax.nn.logsumexp(logits, axis=-1)


def normalizing_factor_and_weights(loss_normalizing_factor: Any, weights: Array,
                                   normalizing_weights: Array | None = None
                                   ) -> tuple[Array | float | None, Array]:
  """Resolves ``loss_normalizing_factor`` into a divisor and (possibly rescaled) weights.

  Args:
    loss_normalizing_factor: see the module docstring.
    weights: [B, L] per-token loss weights.
    normalizing_weights: [B, L] weights whose sum is the token count; defaults to ``weights``.

  Returns:
    (factor or None, weights [B, L] float32).
  """
  weights = weights.astype(jnp.float32)
  counts = weights if normalizing_weights is None else normalizing_weights.astype(jnp.float32)
  lnf = loss_normalizing_factor
  if lnf is None or not isinstance(lnf, str):
    return lnf, weights
  lnf = lnf.upper()
  if lnf == 'NUM_REAL_TARGET_TOKENS':
    return jnp.maximum(jnp.sum(counts), 1e-8), weights
  if lnf == 'NUM_TOTAL_TARGET_TOKENS':
    return float(np.prod(weights.shape)), weights
  if lnf == 'AVERAGE_PER_SEQUENCE':
    per_seq = jnp.sum(counts, axis=-1, keepdims=True)  # [B, 1]
    has = per_seq > 0
    weights = jnp.where(has, weights / jnp.where(has, per_seq, 1.0), 0.0)
    return jnp.maximum(jnp.sum(has), 1).astype(jnp.float32), weights
  raise ValueError(f'loss_normalizing_factor={loss_normalizing_factor!r} is not one of '
                   f'{SPECIAL_LOSS_NORMALIZING_FACTORS}, a positive number or None.')


def weighted_cross_entropy(logits: Array, targets: Array, weights: Array | None = None,
                           *, label_smoothing: float = 0.0, z_loss: float = 0.0,
                           loss_normalizing_factor: Any = None,
                           normalizing_weights: Array | None = None
                           ) -> tuple[Array, Array, Array]:
  """The token loss of T5X's ``compute_weighted_cross_entropy`` plus named normalisers.

  Args:
    logits: [B, L, V] float logits.
    targets: [B, L] int gold ids.
    weights: [B, L] loss weights; None = every position weighs 1.
    label_smoothing: see `token_cross_entropy`.
    z_loss: see `token_cross_entropy`.
    loss_normalizing_factor: see the module docstring.
    normalizing_weights: [B, L] token-count weights for the named normalisers (defaults to
      ``weights``).

  Returns:
    (loss, z_loss_part, weight_sum): scalar float32 loss (z-loss included), its z-loss part and
    the sum of the loss weights.
  """
  if logits.ndim != targets.ndim + 1:
    raise ValueError(f'logits {logits.shape} must have one more axis than targets '
                     f'{targets.shape}.')
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  weight_sum = jnp.sum(weights.astype(jnp.float32))
  factor, weights = normalizing_factor_and_weights(loss_normalizing_factor, weights,
                                                   normalizing_weights)
  loss, z_part = token_cross_entropy(logits, targets, label_smoothing, z_loss)
  loss = jnp.sum(loss * weights)
  z_part = jnp.sum(z_part * weights)
  if factor is not None:
    loss = loss / factor
    z_part = z_part / factor
  return loss, z_part, weight_sum


def weighted_accuracy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
  """(number of correct argmax predictions where weights > 0, number of such positions).

  A prediction is correct when the gold logit is the largest (a tie counts as correct): a max
  and a gather, which cost a fraction of an argmax over [B, L, V] on a CPU.
  """
  gold = _gold_logit(logits, targets)  # [B, L]
  hit = (gold >= jnp.max(logits, axis=-1)) & (weights > 0)
  return jnp.sum(hit).astype(jnp.float32), jnp.sum(weights > 0).astype(jnp.float32)


def target_lengths(targets: Array, pad_id: int = 0) -> Array:
  """Non-pad target tokens per row, EOS included: [B] int32."""
  return jnp.sum(targets != pad_id, axis=-1).astype(jnp.int32)


def length_loss(length_logits: Array, lengths: Array, label_smoothing: float = 0.0
                ) -> tuple[Array, Array]:
  """Cross-entropy of the length classifier, averaged over the examples.

  Class ``c`` means a target of ``c + 1`` tokens (EOS included). The reference sums this loss over
  the batch, which changes its weight with the batch size; here it is a per-example mean.

  Args:
    length_logits: [B, C] float logits over C length classes.
    lengths: [B] int gold lengths in [1, C].
    label_smoothing: optional smoothing of the length targets.

  Returns:
    (mean loss, accuracy): scalar float32 each.
  """
  classes = jnp.clip(lengths - 1, 0, length_logits.shape[-1] - 1)
  loss, _ = token_cross_entropy(length_logits, classes, label_smoothing, 0.0)
  accuracy = jnp.mean((jnp.argmax(length_logits, axis=-1) == classes).astype(jnp.float32))
  return jnp.mean(loss), accuracy
