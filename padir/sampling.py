"""Token choice shared by the refinement and AR decoders: argmax and precision-safe sampling.

Sampling uses the Gumbel-max trick: ``argmax(logits / temperature + g)`` with
``g ~ Gumbel(0, 1)``. The usual float32 noise ``-log(-log(u))`` with a 23/24-bit uniform ``u``
cannot produce ``g`` above about 16: the upper tail is cut off, so low-probability tokens are
under-sampled and the effective temperature drops (Zheng et al. 2024, "Masked diffusion models
are secretly time-agnostic masked models and exploit inaccurate categorical sampling").
`gumbel_noise` instead builds each uniform from 46 random bits and evaluates the exponential
``-log(u)`` through ``log`` or ``log1p`` depending on which end of (0, 1) ``u`` lies, so the noise
is accurate at both tails (it reaches ~32.6 instead of ~15.9); under ``jax_enable_x64`` it uses
float64 noise directly.

`argmax` replaces ``jnp.argmax`` on the hot path: XLA's variadic argmax reduction is ~6x slower
on CPU than a max followed by a masked min over indices; ties resolve to the lowest index like
``jnp.argmax``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_BITS = 23  # random bits per half of the 46-bit uniform.


def argmax(x: jax.Array) -> jax.Array:
  """Index of the maximum over the last axis (lowest index on ties) as int32.

  Args:
    x: [..., V] float array without NaNs.

  Returns:
    [...] int32.
  """
  size = x.shape[-1]
  top = jnp.max(x, axis=-1, keepdims=True)
  idx = jnp.arange(size, dtype=jnp.int32)
  return jnp.min(jnp.where(x == top, idx, size), axis=-1).astype(jnp.int32)


def _chunk_size(size: int) -> int | None:
  """A divisor of ``size`` near its square root (at least 8 chunks), or None."""
  best = None
  for c in range(16, size // 8 + 1):
    if size % c == 0 and (best is None or abs(c * c - size) < abs(best * best - size)):
      best = c
  return best


def _chunk_maxima(xc: jax.Array, bc: jax.Array, static_bias: np.ndarray | None) -> jax.Array:
  """``max(xc + bc)`` over the last axis: [..., n, c] logits, [n, c] bias -> [..., n].

  With a bias known at trace time, the chunks whose bias is one constant (all 0, or all the
  same exclusion value, like every chunk of special ids) reduce the logits alone and add the
  constant afterwards, which is exact (rounding is monotone); only the few chunks that mix
  values add the bias first. Adding a [n, c] bias to the whole [..., n, c] block before the
  reduction made XLA on CPU write the biased logits out in full, in every refinement pass.
  """
  if static_bias is None:
    return jnp.max(xc + bc, axis=-1)
  sb = static_bias.reshape(bc.shape)
  offset = sb[:, 0]  # [n]
  mixed = np.flatnonzero(np.any(sb != offset[:, None], axis=1))
  chunk_max = jnp.max(xc, axis=-1) + offset
  if mixed.size:
    exact = jnp.max(jnp.take(xc, mixed, axis=-2) + sb[mixed], axis=-1)  # [..., m]
    chunk_max = chunk_max.at[..., mixed].set(exact)
  return chunk_max


def greedy_choice(logits: jax.Array,
                  bias: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Argmax of ``logits + bias`` and the log-normaliser of ``logits + bias``.

  The vocabulary is split into chunks: a max over each chunk (a plain reduction that XLA
  runs fast), the best chunk, then the argmax inside it. Neither ``logits + bias`` nor any
  other [..., V] intermediate is materialised, which matters on CPU where large temporaries
  and index reductions are slow. Ties resolve to the lowest index.

  Args:
    logits: [..., V] float logits.
    bias: optional [V] additive bias (e.g. -1e9 on ids that may never be chosen).

  Returns:
    (tokens [...] int32, log_z [...] float32 = logsumexp(logits + bias)).
  """
  first, _, log_z = _greedy(logits, bias, runner_up=False)
  return first, log_z


def greedy_top2(logits: jax.Array,
                bias: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`greedy_choice` plus the runner-up: (first [...], second [...], log_z [...]) int32,
  int32, float32.

  The second most likely id comes from the same chunk maxima: it is either the runner-up
  inside the best chunk or the best of another chunk, so only one more [..., chunk] row is
  read beyond what `greedy_choice` reads, and no [..., V] intermediate is built. Ties resolve
  to the lowest index.
  """
  return _greedy(logits, bias, runner_up=True)


def _greedy(logits: jax.Array, bias: jax.Array | None,
            runner_up: bool) -> tuple[jax.Array, jax.Array | None, jax.Array]:
  """Body of `greedy_choice` / `greedy_top2`: (first, second or None, log_z)."""
  logits = logits.astype(jnp.float32)
  size = logits.shape[-1]
  static_bias = None if bias is None or isinstance(bias, jax.core.Tracer) else np.asarray(
      bias, np.float32)
  bias = jnp.zeros((size,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
  chunk = _chunk_size(size)
  second = None
  if chunk is None:
    biased = logits + bias
    first = argmax(biased)
    top = jnp.max(biased, axis=-1)
    if runner_up:
      ids = jnp.arange(size, dtype=jnp.int32)
      second = argmax(jnp.where(ids == first[..., None], -jnp.inf, biased))
  else:
    n = size // chunk
    xc = logits.reshape(logits.shape[:-1] + (n, chunk))
    bc = bias.reshape(n, chunk)
    chunk_max = _chunk_maxima(xc, bc, static_bias)  # [..., n]
    top = jnp.max(chunk_max, axis=-1)
    best = argmax(chunk_max)  # [...]

    def row(c: jax.Array) -> jax.Array:  # [...] chunk ids -> [..., chunk] biased logits
      return jnp.take_along_axis(xc, c[..., None, None], axis=-2)[..., 0, :] + jnp.take(
          bc, c, axis=0)

    inside = row(best)
    lane = argmax(inside)
    first = best * chunk + lane
    if runner_up:
      rest = jnp.where(jnp.arange(chunk) == lane[..., None], -jnp.inf, inside)
      in_value, in_id = jnp.max(rest, axis=-1), best * chunk + argmax(rest)
      others = jnp.where(jnp.arange(n) == best[..., None], -jnp.inf, chunk_max)
      other = argmax(others)
      out_value, out_id = jnp.max(others, axis=-1), other * chunk + argmax(row(other))
      # Equal values: the lower id, as in argmax.
      second = jnp.where((in_value > out_value) | ((in_value == out_value) & (in_id < out_id)),
                         in_id, out_id)
  log_z = top + jnp.log(jnp.sum(jnp.exp(logits + bias - top[..., None]), axis=-1))
  return (first.astype(jnp.int32), None if second is None else second.astype(jnp.int32),
          log_z)


def argmax_and_log_prob(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Greedy token and its log-probability in one pass over the logits.

  Args:
    logits: [..., V] float logits.

  Returns:
    (tokens [...] int32, log-probabilities [...] float32).
  """
  logits = logits.astype(jnp.float32)
  top = jnp.max(logits, axis=-1, keepdims=True)
  size = logits.shape[-1]
  idx = jnp.arange(size, dtype=jnp.int32)
  tokens = jnp.min(jnp.where(logits == top, idx, size), axis=-1).astype(jnp.int32)
  log_z = jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1))
  return tokens, -log_z


def log_prob_of(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Log-probability of ``tokens`` [...] under ``logits`` [..., V], float32."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def _uniform_halves_to_exponential(hi: jax.Array, lo: jax.Array) -> jax.Array:
  """Exp(1) variate ``-log(u)`` from a 46-bit uniform ``u = (hi * 2^23 + lo + 1/2) / 2^46``.

  ``hi`` and ``lo`` are integers in [0, 2^23). Below one half ``u`` itself is represented
  accurately in float32 and ``-log(u)`` is used; above, ``1 - u`` is formed exactly from the
  complemented bits and ``-log1p(-(1 - u))`` is used, so both tails keep full precision.
  """
  hi = hi.astype(jnp.float32)
  lo = lo.astype(jnp.float32)
  scale_hi = jnp.float32(2.0**-_BITS)
  scale_lo = jnp.float32(2.0**(-2 * _BITS))
  top = jnp.float32(2.0**_BITS - 1.0)
  u = hi * scale_hi + (lo + 0.5) * scale_lo
  one_minus_u = (top - hi) * scale_hi + (top - lo + 0.5) * scale_lo
  lower_half = hi < jnp.float32(2.0**(_BITS - 1))
  return jnp.where(lower_half, -jnp.log(u), -jnp.log1p(-one_minus_u))


def gumbel_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Precision-safe standard Gumbel noise (float64 under x64, else accurate float32).

  Args:
    key: PRNG key.
    shape: output shape.

  Returns:
    Gumbel(0, 1) samples of ``shape``.
  """
  if jax.config.jax_enable_x64:
    u = jax.random.uniform(key, shape, jnp.float64, minval=jnp.finfo(jnp.float64).tiny)
    return -jnp.log(-jnp.log(u))
  bits = jax.random.bits(key, (2,) + tuple(shape), jnp.uint32) >> (32 - _BITS)
  return -jnp.log(_uniform_halves_to_exponential(bits[0], bits[1]))


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sets logits outside the top-k / nucleus (top-p) set to -inf.

  Args:
    logits: [..., V] float32.
    top_k: keep the k largest (0 = no limit).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p
      (1.0 = no limit); the most likely token is always kept.

  Returns:
    [..., V] filtered logits.
  """
  neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if top_p < 1.0:
    sorted_desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Keep a sorted entry while the mass before it is below top_p (the first always is).
    keep = mass_before < top_p
    cutoff = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg_inf, logits)
  return logits


def choose_tokens(logits: jax.Array,
                  key: jax.Array | None,
                  temperature: float = 0.0,
                  top_k: int = 0,
                  top_p: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Greedy or sampled tokens and their (untempered) log-probabilities.

  Args:
    logits: [..., V] float logits.
    key: PRNG key (unused when greedy).
    temperature: 0 for argmax; > 0 samples from softmax(filtered logits / temperature).
    top_k, top_p: filters applied before sampling.

  Returns:
    (tokens [...] int32, log-probabilities under the model's own distribution [...] float32).
  """
  logits = logits.astype(jnp.float32)
  if temperature <= 0.0:
    return argmax_and_log_prob(logits)
  filtered = filter_logits(logits, top_k, top_p)
  noise = gumbel_noise(key, logits.shape)
  scores = filtered.astype(noise.dtype) / temperature + noise
  tokens = argmax(scores)
  return tokens, log_prob_of(logits, tokens)


def check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
  """Host-side validation of the sampling knobs.

  Raises:
    ValueError: naming the bad knob and its valid range.
  """
  if temperature < 0.0:
    raise ValueError(f'temperature={temperature} must be >= 0 (0 = greedy).')
  if top_k < 0 or int(top_k) != top_k:
    raise ValueError(f'top_k={top_k} must be an integer >= 0 (0 = off).')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p={top_p} must be in (0, 1] (1 = off).')


def raw_key(rng: jax.Array | None) -> jax.Array:
  """A raw uint32 [2] PRNG key from None (PRNGKey(0)), a raw key or a typed key."""
  if rng is None:
    return jax.random.PRNGKey(0)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  return rng


def fold_keys(keys: jax.Array, data: jax.Array | int) -> jax.Array:
  """``fold_in`` over a batch of raw keys [..., 2] with scalar or matching integer data."""
  data = jnp.broadcast_to(jnp.asarray(data, jnp.uint32), keys.shape[:-1])
  flat = jax.vmap(jax.random.fold_in)(keys.reshape(-1, 2), data.reshape(-1))
  return flat.reshape(keys.shape)


def source_keys(rng: jax.Array, tokens: jax.Array) -> jax.Array:
  """One raw PRNG key per row, derived from ``rng`` and the row's non-pad tokens: [B, 2].

  The key depends neither on the row's place in the batch nor on the padded width, so
  random canvases and samples of a source are the same alone or inside any batch (duplicate
  sources share their randomness).
  """
  rng = raw_key(rng)
  tok = tokens.astype(jnp.uint32)
  pos = jnp.arange(tok.shape[1], dtype=jnp.uint32)
  mix = (tok * jnp.uint32(2654435761)) ^ (pos * jnp.uint32(40503) + jnp.uint32(1))
  mix = jnp.where(tokens > 0, mix * jnp.uint32(2246822519), jnp.uint32(0))
  digest = jnp.bitwise_xor.reduce(mix, axis=1) + jnp.sum(mix, axis=1, dtype=jnp.uint32)
  digest = digest ^ (jnp.sum(tokens > 0, axis=1).astype(jnp.uint32) * jnp.uint32(374761393))
  return jax.vmap(lambda d: jax.random.fold_in(rng, d))(digest)
