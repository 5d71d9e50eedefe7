"""Remasking (rejection) rules shared by unrolled training and refinement decoding.

One refinement step proposes a token for every *open* position of a canvas (by argmax or
sampling) together with its confidence, the log-probability of the proposed token. A rejection
rule then decides which proposals are rejected; a rejected position takes a *replacement*
token instead (its initial canvas token, its previous token, or the argmax of the logits summed
over the iterations so far). Everything here is a pure, jittable function of arrays; the step
index may be a traced scalar.

Notation (per row): ``n`` = number of valid positions (those a rule may touch: the row's
length with its EOS, or without it when the decoder keeps the EOS fixed),
``t`` = 1-based iteration index, ``T`` = number of iterations, ``m`` = number of eligible
positions (valid and open), ``c_i`` = confidence (log-probability) of the proposal at ``i``.
A *ranking* rule rejects the ``k`` eligible positions of lowest confidence; ties are broken by
position (lower index first), so exactly ``k`` positions are rejected.

Rules (``RemaskConfig.rule``):

* ``keep_all``: ``k = 0``; every proposal is kept (PaDIR's pass-through rejecter).
* ``stutter``: only adjacent repeats are rejected (see below); same as ``keep_all`` with
  ``stutter=True``.
* ``mask_predict``: linear schedule of Mask-Predict, ``k_t = floor(n * (T - t) / T)``; no
  "at least one" rule, so ``k_T = 0``.
* ``constant``: ``k = min(count, n)`` or ``k = floor(fraction * n + 1e-6)`` at every iteration
  but the last.
* ``cosine``: MaskGIT, ``k_t = floor(n * cos(pi / 2 * t / T) + 1e-4)``, clamped to
  ``m - 1`` so that at least one eligible position is committed per iteration. Ranking uses
  ``c_i + choice_temperature * (1 - t / T) * g_i`` with ``g_i ~ Gumbel(0, 1)`` (MaskGIT's
  annealed choice temperature; 0 disables the noise).
* ``threshold``: confidence threshold (Fast-dLLM): an eligible position is committed when
  ``exp(c_i) > threshold``; the most confident eligible position is always committed, so with
  ``update='commit'`` a row of ``n`` positions is finished after at most ``n`` iterations.
  ``k = m - #committed``.

The small epsilons absorb float32 rounding of the products (``cos(pi/3) * 10`` is
``4.9999995`` in float32). ``choice_temperature`` also applies to ``mask_predict`` and
``constant``.

Stutter: position ``i >= 1`` stutters when ``tokens[i] == tokens[i-1]`` and both are valid (no
wrap-around, unlike the reference code). With ``stutter=True`` (or ``rule='stutter'``)
stuttering eligible positions are rejected in addition to the rule's choice. At the last
iteration (``t >= T``) no rule rejects anything, except stutter when ``stutter_after_last``.

Update modes (``RemaskConfig.update``) tell the decoder which positions are re-predicted:

* ``all``: every valid position is re-predicted each iteration (PaDIR); ranking is among all.
* ``masked``: only the positions rejected at the previous iteration are re-predicted; the
  others keep their token and the confidence they had when last predicted, and all positions
  compete in the ranking (Mask-Predict).
* ``commit``: kept positions are committed for good; only uncommitted positions are
  re-predicted and eligible (MaskGIT, Fast-dLLM).

Default update per rule: ``keep_all``, ``stutter``, ``constant`` -> ``all``; ``mask_predict``
-> ``masked``; ``cosine``, ``threshold`` -> ``commit``. Default replacement per rule:
``mask_predict``, ``cosine``, ``threshold`` -> ``initial`` (the rejected position is masked
again, as in Mask-Predict and MaskGIT); the others -> ``previous``.

Which update modes a model supports depends on its training (`trained_updates`): a model whose
loss only covers masked positions never learnt to re-predict a visible token, so it supports
``masked`` and ``commit`` but not ``all``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from padir import gin_utils

RULES = ('keep_all', 'stutter', 'mask_predict', 'constant', 'cosine', 'threshold')
REPLACEMENTS = ('initial', 'previous', 'logits_sum')
UPDATES = ('all', 'masked', 'commit')
_DEFAULT_UPDATE = {
    'keep_all': 'all',
    'stutter': 'all',
    'constant': 'all',
    'mask_predict': 'masked',
    'cosine': 'commit',
    'threshold': 'commit',
}
# Default replacement per rule: the masking rules put [MASK] (the initial canvas) back at a
# rejected position, as Mask-Predict / MaskGIT / Fast-dLLM do; PaDIR's rules keep the previous
# token (the reference's PREVIOUS_TOKENS).
_DEFAULT_REPLACEMENT = {
    'keep_all': 'previous',
    'stutter': 'previous',
    'constant': 'previous',
    'mask_predict': 'initial',
    'cosine': 'initial',
    'threshold': 'initial',
}
_RANKING_RULES = ('mask_predict', 'constant', 'cosine')
_FRACTION_EPS = 1e-6
_COSINE_EPS = 1e-4


@dataclasses.dataclass(frozen=True)
class RemaskConfig:
  """Which proposals a refinement step rejects and what a rejected position gets.

  Attributes:
    rule: one of ``RULES`` (see the module docstring for each formula).
    count: ``constant`` rule: reject this many lowest-confidence positions.
    fraction: ``constant`` rule: reject this fraction (0, 1) of the row's length.
    threshold: ``threshold`` rule: commit positions whose probability exceeds it, in (0, 1).
    choice_temperature: scale of the annealed Gumbel noise added to the confidences of the
      ranking rules (MaskGIT uses 4.5); 0 ranks by confidence alone.
    stutter: also reject adjacent repeated tokens at every iteration but the last.
    stutter_after_last: also reject adjacent repeats at the last iteration.
    replacement: what a rejected position takes: ``initial`` (its initial canvas token, e.g.
      [MASK]), ``previous`` (the token it held before the step) or ``logits_sum`` (argmax of the
      logits summed over all iterations so far; the decoder then keeps that [B, L, V] buffer).
      None (default) picks the rule's own: ``initial`` for ``mask_predict``, ``cosine`` and
      ``threshold`` (Mask-Predict / MaskGIT re-mask what they reject), ``previous`` for the
      others (PaDIR).
    update: ``all``, ``masked`` or ``commit`` (see module docstring); None picks the rule's
      default.
  """

  rule: str = 'keep_all'
  count: int | None = None
  fraction: float | None = None
  threshold: float = 0.9
  choice_temperature: float = 0.0
  stutter: bool = False
  stutter_after_last: bool = False
  replacement: str | None = None
  update: str | None = None

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f'RemaskConfig.rule={self.rule!r} is not one of {RULES}.')
    if self.replacement is None:
      object.__setattr__(self, 'replacement', _DEFAULT_REPLACEMENT[self.rule])
    if self.replacement not in REPLACEMENTS:
      raise ValueError(
          f'RemaskConfig.replacement={self.replacement!r} is not one of {REPLACEMENTS}.')
    if self.update is not None and self.update not in UPDATES:
      raise ValueError(
          f'RemaskConfig.update={self.update!r} is not one of {UPDATES} (or None for the '
          "rule's default).")
    if self.rule == 'constant':
      if (self.count is None) == (self.fraction is None):
        raise ValueError(
            "The 'constant' rule needs exactly one of RemaskConfig.count (a number of "
            'positions) or RemaskConfig.fraction (a share of the row length); got '
            f'count={self.count}, fraction={self.fraction}.')
    elif self.count is not None or self.fraction is not None:
      raise ValueError(
          f"RemaskConfig.count/fraction only apply to rule='constant', not {self.rule!r}; "
          'leave them None.')
    if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
      raise ValueError(f'RemaskConfig.count={self.count!r} must be an int >= 0.')
    if self.fraction is not None and not 0.0 < self.fraction < 1.0:
      raise ValueError(f'RemaskConfig.fraction={self.fraction} must be in (0, 1).')
    if not 0.0 < self.threshold < 1.0:
      raise ValueError(f'RemaskConfig.threshold={self.threshold} must be in (0, 1).')
    if self.choice_temperature < 0.0:
      raise ValueError(
          f'RemaskConfig.choice_temperature={self.choice_temperature} must be >= 0.')
    if self.choice_temperature > 0.0 and self.rule not in _RANKING_RULES:
      raise ValueError(
          f'RemaskConfig.choice_temperature only affects the ranking rules {_RANKING_RULES}, '
          f'not {self.rule!r}; set it to 0.')

  @property
  def effective_update(self) -> str:
    """The update mode, with the rule's default filled in."""
    return self.update if self.update is not None else _DEFAULT_UPDATE[self.rule]

  @property
  def rejects_stutter(self) -> bool:
    """Whether adjacent repeats are rejected before the last iteration."""
    return self.stutter or self.rule == 'stutter'

  @property
  def needs_rng(self) -> bool:
    """Whether ``rejection_mask`` draws random numbers (annealed choice noise)."""
    return self.choice_temperature > 0.0


def stutter_mask(tokens: jax.Array, valid: jax.Array) -> jax.Array:
  """Positions that repeat their left neighbour.

  Args:
    tokens: [B, L] int ids.
    valid: [B, L] bool, positions holding a token of the row.

  Returns:
    [B, L] bool, True at ``i >= 1`` when ``tokens[i] == tokens[i-1]`` and both are valid.
  """
  same = (tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:] & valid[:, :-1]
  return jnp.concatenate([jnp.zeros_like(same[:, :1]), same], axis=1)


def num_to_reject(config: RemaskConfig,
                  lengths: jax.Array,
                  step: jax.Array | int,
                  num_steps: jax.Array | int,
                  num_eligible: jax.Array | None = None) -> jax.Array:
  """How many eligible positions a ranking rule rejects (the schedule formulas).

  Args:
    config: the remasking config.
    lengths: [B] int, valid positions per row (``n``).
    step: 1-based iteration ``t``.
    num_steps: number of iterations ``T``.
    num_eligible: [B] int, eligible positions per row (``m``); defaults to ``lengths``.

  Returns:
    [B] int32 ``k`` (0 for non-ranking rules and at the last iteration).
  """
  n = jnp.asarray(lengths, jnp.int32)
  m = n if num_eligible is None else jnp.asarray(num_eligible, jnp.int32)
  t = jnp.asarray(step, jnp.int32)
  big_t = jnp.asarray(num_steps, jnp.int32)
  if config.rule == 'mask_predict':
    k = (n * jnp.maximum(big_t - t, 0)) // jnp.maximum(big_t, 1)
  elif config.rule == 'constant':
    if config.count is not None:
      k = jnp.minimum(jnp.int32(config.count), n)
    else:
      k = jnp.floor(config.fraction * n.astype(jnp.float32) + _FRACTION_EPS).astype(jnp.int32)
  elif config.rule == 'cosine':
    ratio = t.astype(jnp.float32) / jnp.maximum(big_t, 1).astype(jnp.float32)
    k = jnp.floor(n.astype(jnp.float32) * jnp.cos(0.5 * math.pi * ratio) + _COSINE_EPS)
    k = jnp.minimum(jnp.maximum(k.astype(jnp.int32), 0), jnp.maximum(m - 1, 0))
  else:
    k = jnp.zeros_like(n)
  k = jnp.minimum(k, m)
  return jnp.where(t >= big_t, 0, k).astype(jnp.int32)


def _ascending_ranks(keys: jax.Array, eligible: jax.Array) -> jax.Array:
  """Rank of each eligible position by ascending key (ties by position); others rank last."""
  keys = jnp.where(eligible, keys, jnp.inf)
  order = jnp.argsort(keys, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def _choice_noise(rng: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Gumbel noise [B, L] from one key, or from one key per row (noise independent of the batch)."""
  typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
  per_row = rng.ndim == (1 if typed else 2)
  if per_row:
    if rng.shape[0] != shape[0]:
      raise ValueError(f'rng holds {rng.shape[0]} row keys for {shape[0]} rows.')
    return jax.vmap(lambda k: jax.random.gumbel(k, shape[1:], jnp.float32))(rng)
  return jax.random.gumbel(rng, shape, jnp.float32)


def rejection_mask(config: RemaskConfig,
                   tokens: jax.Array,
                   confidence: jax.Array,
                   valid: jax.Array,
                   step: jax.Array | int,
                   num_steps: jax.Array | int,
                   *,
                   eligible: jax.Array | None = None,
                   rng: jax.Array | None = None) -> jax.Array:
  """Which proposals are rejected at iteration ``step`` of ``num_steps``.

  Args:
    config: the remasking config.
    tokens: [B, L] int, the canvas after the proposals (proposed tokens at open positions).
    confidence: [B, L] float, log-probability of each position's current token.
    valid: [B, L] bool, positions of the row (pad positions are never rejected).
    step: 1-based iteration ``t`` (python int or traced scalar).
    num_steps: number of iterations ``T``.
    eligible: [B, L] bool, positions that may be rejected (defaults to ``valid``; the decoder
      passes the uncommitted positions in ``commit`` mode).
    rng: PRNG key, or [B] keys (one per row, so a row's noise does not depend on the
      batch), needed when ``config.choice_temperature > 0``.

  Returns:
    [B, L] bool, True where the proposal is rejected.
  """
  valid = valid.astype(bool)
  eligible = valid if eligible is None else (eligible.astype(bool) & valid)
  confidence = confidence.astype(jnp.float32)
  t = jnp.asarray(step, jnp.int32)
  big_t = jnp.asarray(num_steps, jnp.int32)
  is_last = t >= big_t
  num_eligible = jnp.sum(eligible, axis=-1, dtype=jnp.int32)

  if config.rule in _RANKING_RULES:
    keys = confidence
    if config.choice_temperature > 0.0:
      if rng is None:
        raise ValueError('RemaskConfig.choice_temperature > 0 needs an rng key.')
      anneal = 1.0 - t.astype(jnp.float32) / jnp.maximum(big_t, 1).astype(jnp.float32)
      noise = _choice_noise(rng, confidence.shape)
      keys = keys + config.choice_temperature * jnp.maximum(anneal, 0.0) * noise
    lengths = jnp.sum(valid, axis=-1, dtype=jnp.int32)
    k = num_to_reject(config, lengths, t, big_t, num_eligible)
    rejected = eligible & (_ascending_ranks(keys, eligible) < k[:, None])
  elif config.rule == 'threshold':
    keep = eligible & (confidence > math.log(config.threshold))
    best = jnp.argmax(jnp.where(eligible, confidence, -jnp.inf), axis=-1)
    best_mask = jax.nn.one_hot(best, valid.shape[-1], dtype=bool) & eligible
    rejected = eligible & ~(keep | best_mask)
  else:
    rejected = jnp.zeros_like(valid)
  rejected = rejected & ~is_last

  if config.rejects_stutter or config.stutter_after_last:
    stut = stutter_mask(tokens, valid) & eligible
    before_last = config.rejects_stutter & ~is_last
    after_last = config.stutter_after_last & is_last
    rejected = rejected | (stut & (before_last | after_last))
  return rejected


def replacement_tokens(config: RemaskConfig,
                       previous: jax.Array,
                       initial: jax.Array,
                       logits_sum: jax.Array | None = None) -> jax.Array:
  """The token a rejected position takes.

  Args:
    config: the remasking config.
    previous: [B, L] int, the canvas before this step.
    initial: [B, L] int, the initial canvas.
    logits_sum: [B, L, V] float, logits summed over the iterations so far (this one
      included); needed only for ``replacement='logits_sum'``.

  Returns:
    [B, L] int32 replacement tokens.
  """
  if config.replacement == 'initial':
    return initial.astype(jnp.int32)
  if config.replacement == 'previous':
    return previous.astype(jnp.int32)
  if logits_sum is None:
    raise ValueError("replacement='logits_sum' needs the summed logits (logits_sum=...).")
  return jnp.argmax(logits_sum, axis=-1).astype(jnp.int32)


def remask(config: RemaskConfig,
           proposed: jax.Array,
           confidence: jax.Array,
           previous: jax.Array,
           initial: jax.Array,
           valid: jax.Array,
           step: jax.Array | int,
           num_steps: jax.Array | int,
           *,
           eligible: jax.Array | None = None,
           logits_sum: jax.Array | None = None,
           rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One rejection step: the next canvas from the proposals.

  Positions outside ``valid`` keep their previous token (pad stays pad, also in unrolled
  training); positions outside ``eligible`` keep their previous token too. Eligible positions
  take the proposal unless rejected, in which case they take the replacement.

  Args:
    config: the remasking config.
    proposed: [B, L] int, the new predictions (argmax or sampled).
    confidence: [B, L] float, log-probability of each proposal.
    previous: [B, L] int, the canvas before this step.
    initial: [B, L] int, the initial canvas.
    valid: [B, L] bool, positions of the row.
    step: 1-based iteration ``t``.
    num_steps: number of iterations ``T``.
    eligible: [B, L] bool or None (all valid positions).
    logits_sum: [B, L, V] float, for ``replacement='logits_sum'``.
    rng: PRNG key (or [B] row keys) for annealed choice noise.

  Returns:
    (tokens [B, L] int32, rejected [B, L] bool).
  """
  valid = valid.astype(bool)
  eligible = valid if eligible is None else (eligible.astype(bool) & valid)
  candidate = jnp.where(eligible, proposed, previous).astype(jnp.int32)
  rejected = rejection_mask(
      config, candidate, confidence, valid, step, num_steps, eligible=eligible, rng=rng)
  replacement = replacement_tokens(config, previous, initial, logits_sum)
  tokens = jnp.where(rejected, replacement, candidate)
  return jnp.where(valid, tokens, previous).astype(jnp.int32), rejected


gin_utils.configurable(RemaskConfig, module='padir.remasking')


def trained_updates(loss_weighting: str, keep_prob: float | None, random_prob: float | None,
                    num_train_stages: int = 1) -> tuple[str, ...]:
  """The update modes a GMLM's training supports.

  ``masked`` and ``commit`` only ever predict positions that hold the mask fill, which every
  GMLM is trained on. ``all`` also re-predicts visible tokens: the loss must have covered
  visible positions, i.e. ``loss_weighting='all'``, or ``'noise'`` with kept or random tokens
  among the noised positions (PaDIR's keep/random shares), or unrolled stages after the first
  (trained on every position).

  Args:
    loss_weighting: `padir.objectives.CorruptionConfig.loss_weighting`.
    keep_prob: its ``keep_prob`` (None = drawn per example, so > 0).
    random_prob: its ``random_prob`` (None = drawn per example).
    num_train_stages: `padir.models.PadirModel.num_train_stages`.

  Returns:
    The supported members of `UPDATES`.
  """
  visible = (loss_weighting == 'all' or num_train_stages > 1 or
             (loss_weighting == 'noise' and (keep_prob != 0.0 or random_prob != 0.0)))
  return UPDATES if visible else ('masked', 'commit')

