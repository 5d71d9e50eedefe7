"""Autoregressive decoding with the KV cache: greedy, temperature sampling and beam search.

All three run the encoder once, compute the cross-attention keys/values once (when the cache
is created) and loop in one ``lax.while_loop`` that ends as soon as every row has finished
(EOS) or ``max_length`` tokens were produced. Rows of different source lengths mix freely
(padding is masked by the network). Output: tokens up to and including EOS, pad (0) after;
the pad id itself is never generated.

Beam search follows T5X: the 2K best extensions of the K alive beams are split into finished
ones (ending in EOS, scored ``log p / ((5 + len) / 6) ** alpha``) and alive ones (the K best
without EOS); the search stops when no alive beam can beat the worst of K finished beams. As
in fairseq and Hugging Face, an EOS extension finishes only when it ranks within the top K
(so one beam without length penalty is greedy decoding).
The cache is reordered by gathering along its batch axis (cross-attention entries, which are
equal for all beams of a source, are left in place).

``ARConfig.no_repeat_ngram`` (fairseq's ``--no-repeat-ngram-size``) keeps any n-gram of token
ids from occurring twice in an output: at every step the ids that would complete an n-gram the
row (or beam) already holds are excluded from the choice, as ``min_length`` excludes EOS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from padir import gin_utils
from padir import sampling

Array = jax.Array
METHODS = ('greedy', 'sample', 'beam')
_NEG = -1.0e9


@dataclasses.dataclass(frozen=True)
class ARConfig:
  """Knobs of AR decoding. Validated on construction.

  Attributes:
    method: 'greedy', 'sample' (temperature / top-k / top-p) or 'beam'.
    beam_size: beams for 'beam'.
    length_penalty: alpha of the brevity penalty ((5 + len) / 6) ** alpha ('beam').
    temperature, top_k, top_p: sampling knobs ('sample').
    eos_id: the end-of-sequence id.
    min_length: outputs hold at least this many tokens, EOS included (EOS is masked at
      earlier positions; 0 = no limit).
    no_repeat_ngram: n > 0: no n-gram of token ids occurs twice in an output (the ids that
      would repeat one are never chosen; scores stay the model's log-probabilities). 0 = off.
      Weak teachers loop ("the light of the darkness, and the light of the darkness"); this
      keeps such loops out of distilled data.
    score: 'greedy' and 'sample' also return ``aux['scores']``, the sum of the chosen tokens'
      log-probabilities. It costs a log-softmax over the vocabulary at every step (about a
      tenth of batch-1 greedy time with an 8k vocabulary on CPU); False skips it and leaves
      ``scores`` out, for the fastest decode. Beam search always scores.
  """

  method: str = 'greedy'
  beam_size: int = 4
  length_penalty: float = 0.6
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  eos_id: int = 1
  min_length: int = 0
  no_repeat_ngram: int = 0
  score: bool = True

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'ARConfig.method={self.method!r} is not one of {METHODS}.')
    if not isinstance(self.beam_size, int) or self.beam_size < 1:
      raise ValueError(f'ARConfig.beam_size={self.beam_size!r} must be an integer >= 1.')
    if self.length_penalty < 0:
      raise ValueError(f'ARConfig.length_penalty={self.length_penalty} must be >= 0.')
    sampling.check_sampling_args(self.temperature, self.top_k, self.top_p)
    if not isinstance(self.min_length, int) or self.min_length < 0:
      raise ValueError(f'ARConfig.min_length={self.min_length!r} must be an integer >= 0.')
    if not isinstance(self.no_repeat_ngram, int) or self.no_repeat_ngram < 0:
      raise ValueError(f'ARConfig.no_repeat_ngram={self.no_repeat_ngram!r} must be an integer '
                       '>= 0 (0 = off; 3 forbids any repeated 3-gram).')
    if not isinstance(self.score, bool):
      raise ValueError(f'ARConfig.score={self.score!r} must be True or False.')
    if self.method == 'beam' and not self.score:
      raise ValueError("ARConfig.score=False is for 'greedy' and 'sample'; beam search ranks "
                       'its beams by their scores. Leave score=True.')
    if self.method == 'sample' and self.temperature == 0:
      raise ValueError("ARConfig.method='sample' needs temperature > 0 (use 'greedy').")


@dataclasses.dataclass(frozen=True)
class ARFns:
  """Incremental-decoding entry points of a causal `padir.network.Transformer`."""

  model: nn.Module

  def encode(self, params, encoder_tokens: Array) -> Array:
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    encoded, _ = self.model.apply({'params': params}, encoder_tokens, enable_dropout=False,
                                  method=Transformer.encode)
    return encoded

  def init_cache(self, params, encoded: Array, encoder_tokens: Array, max_length: int):
    """Zero self-attention cache of ``max_length`` and the cross-attention keys/values."""
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    batch = encoded.shape[0]
    # The logits of this call are discarded; under jit XLA removes the unused pass.
    _, mutated = self.model.apply({'params': params}, encoded, encoder_tokens,
                                  jnp.zeros((batch, max_length), jnp.int32),
                                  enable_dropout=False, decode=True, mutable=['cache'],
                                  method=Transformer.decode)
    return mutated['cache']

  def step(self, params, cache, encoded: Array, encoder_tokens: Array,
           tokens: Array) -> tuple[Array, Any]:
    """One decoding step: tokens [B] -> logits [B, V] float32 and the updated cache."""
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    logits, mutated = self.model.apply({'params': params, 'cache': cache}, encoded,
                                       encoder_tokens, tokens[:, None], enable_dropout=False,
                                       decode=True, mutable=['cache'],
                                       method=Transformer.decode)
    return logits[:, 0].astype(jnp.float32), mutated['cache']

  def decode_logits(self, params, encoded: Array, encoder_tokens: Array,
                    decoder_input_tokens: Array) -> Array:
    """Teacher-forced logits [B, L, V] from encoder states ``encoded`` [B, S, E] (no cache)."""
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    return self.model.apply({'params': params}, encoded, encoder_tokens, decoder_input_tokens,
                            enable_dropout=False, method=Transformer.decode)

  def full_logits(self, params, encoder_tokens: Array, decoder_input_tokens: Array) -> Array:
    """Teacher-forced logits [B, L, V] (no cache)."""
    return self.model.apply({'params': params}, encoder_tokens, decoder_input_tokens,
                            enable_dropout=False)


def reorder_cache(cache: Any, indices: Array) -> Any:
  """Gathers every per-row cache entry along its batch axis.

  Args:
    cache: the 'cache' collection of a causal Transformer.
    indices: [N] int32 rows to take (beam origins, flattened as source * K + beam).

  Returns:
    The reordered cache. Scalar indices are kept; cross-attention keys/values (equal for all
    beams of a source, and reordering never crosses sources) are not copied. With scanned
    layers the batch axis is the second one.
  """

  def gather(path, leaf):
    names = [getattr(p, 'key', getattr(p, 'name', '')) for p in path]
    if leaf.ndim == 0 or 'encoder_decoder_attention' in names:
      return leaf
    axis = 1 if 'layers' in names else 0
    return jnp.take(leaf, indices, axis=axis)

  return jax.tree_util.tree_map_with_path(gather, cache)


def _finish(tokens: Array, eos_id: int) -> Array:
  """Zeros everything after the first EOS of each row."""
  is_eos = tokens == eos_id
  after = jnp.cumsum(is_eos, axis=1) - is_eos.astype(jnp.int32) > 0
  return jnp.where(after, 0, tokens)


def _forbidden(vocab: int, step: Array, config: ARConfig) -> Array:
  """[V] additive mask: never the pad id (0); no EOS before ``config.min_length`` tokens.

  It steers the choice only; scores stay the model's own log-probabilities.
  """
  mask = jnp.zeros((vocab,), jnp.float32).at[0].set(_NEG)
  if config.min_length > 0:
    early = step < config.min_length - 1  # step i produces token i + 1
    mask = mask.at[config.eos_id].set(jnp.where(early, _NEG, 0.0))
  return mask


def repeat_ban(seqs: Array, step: Array, n: int) -> Array:
  """The ids that would repeat an n-gram if written at ``step``, one per earlier position.

  Args:
    seqs: [N, L] int32 outputs so far; positions < ``step`` are written.
    step: the position written next (scalar int32).
    n: the n-gram size (>= 1).

  Returns:
    [N, L] int32: at position j, the id ``seqs[:, j]`` when the n - 1 ids before j equal the
    n - 1 ids before ``step`` (so writing it at ``step`` would repeat the n-gram ending at j),
    else 0 (the pad id, never chosen anyway).
  """
  length = seqs.shape[1]
  pos = jnp.arange(length)
  match = (pos >= n - 1) & (pos < step)  # [L] n-grams that end before step
  match = jnp.broadcast_to(match, seqs.shape)
  for m in range(1, n):
    before = jnp.roll(seqs, m, axis=1)  # before[:, j] = seqs[:, j - m] (wrapped rows excluded)
    current = jax.lax.dynamic_slice_in_dim(seqs, jnp.maximum(step - m, 0), 1, axis=1)  # [N, 1]
    match &= before == current
  return jnp.where(match, seqs, 0)


def _ban_repeats(scores: Array, seqs: Array, step: Array, n: int) -> Array:
  """``scores`` [N, V] with the ids that would repeat an n-gram of ``seqs`` [N, L] set to
  a large negative value (no-op for n = 0)."""
  if n <= 0:
    return scores
  banned = repeat_ban(seqs, step, n)  # [N, L]
  rows = jnp.arange(seqs.shape[0])[:, None]
  return scores.at[rows, banned].set(_NEG)  # id 0 (pad) is forbidden already


def _greedy_or_sample(fns, params, encoder_tokens, max_length: int, config: ARConfig,
                      rng: Array | None) -> tuple[Array, dict[str, Array]]:
  batch = encoder_tokens.shape[0]
  encoded = fns.encode(params, encoder_tokens)
  cache = fns.init_cache(params, encoded, encoder_tokens, max_length)
  keys = sampling.source_keys(sampling.raw_key(rng), encoder_tokens)  # [B, 2]
  sample = config.method == 'sample'

  def body(s):
    i, cache, last, out, done, logp = s
    logits, cache = fns.step(params, cache, encoded, encoder_tokens, last)  # [B, V]
    vocab = logits.shape[-1]
    steer = _ban_repeats(logits, out, i, config.no_repeat_ngram)
    if sample:
      steered = steer + _forbidden(vocab, i, config)
      step_keys = sampling.fold_keys(keys, i)
      noise = jax.vmap(lambda k: sampling.gumbel_noise(k, (vocab,)))(step_keys)
      filtered = sampling.filter_logits(steered, config.top_k, config.top_p)
      tok = sampling.argmax(filtered.astype(noise.dtype) / config.temperature + noise)
    else:
      tok, _ = sampling.greedy_choice(steer, _forbidden(vocab, i, config))
    if config.score:  # otherwise logp stays 0 and the log-softmax is never computed
      logp = logp + jnp.where(done, 0.0, sampling.log_prob_of(logits, tok))
    tok = jnp.where(done, 0, tok)
    out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, i))
    done = done | (tok == config.eos_id)
    return i + 1, cache, tok, out, done, logp

  def cond(s):
    return (s[0] < max_length) & ~jnp.all(s[4])

  init = (jnp.zeros((), jnp.int32), cache, jnp.zeros((batch,), jnp.int32),
          jnp.zeros((batch, max_length), jnp.int32), jnp.zeros((batch,), bool),
          jnp.zeros((batch,), jnp.float32))
  steps, _, _, out, _, logp = jax.lax.while_loop(cond, body, init)
  lengths = jnp.sum(out > 0, axis=1).astype(jnp.int32)
  aux = dict(lengths=lengths, steps=steps)
  if config.score:
    aux['scores'] = logp
  return out, aux


def _penalty(length: Array | int, alpha: float) -> Array:
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0)**alpha


def _beam_search(fns, params, encoder_tokens, max_length: int,
                 config: ARConfig) -> tuple[Array, dict[str, Array]]:
  batch = encoder_tokens.shape[0]
  k = config.beam_size
  alpha = config.length_penalty
  eos = config.eos_id
  encoded = fns.encode(params, encoder_tokens)
  enc_rep = jnp.repeat(encoder_tokens, k, axis=0)  # [B*K, S]
  encoded_rep = jnp.repeat(encoded, k, axis=0)
  cache = fns.init_cache(params, encoded_rep, enc_rep, max_length)
  offsets = (jnp.arange(batch, dtype=jnp.int32) * k)[:, None]  # [B, 1]

  state = dict(
      i=jnp.zeros((), jnp.int32),
      cache=cache,
      last=jnp.zeros((batch, k), jnp.int32),
      alive_seq=jnp.zeros((batch, k, max_length), jnp.int32),
      alive_lp=jnp.tile(jnp.asarray([0.0] + [_NEG] * (k - 1), jnp.float32), (batch, 1)),
      fin_seq=jnp.zeros((batch, k, max_length), jnp.int32),
      fin_score=jnp.full((batch, k), _NEG, jnp.float32),
      fin_flag=jnp.zeros((batch, k), bool),
  )

  def body(s):
    i = s['i']
    logits, cache = fns.step(params, s['cache'], encoded_rep, enc_rep, s['last'].reshape(-1))
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits) + _forbidden(vocab, i, config)
    logp = _ban_repeats(logp, s['alive_seq'].reshape(batch * k, -1), i, config.no_repeat_ngram)
    logp = logp.reshape(batch, k, vocab)
    cand = (s['alive_lp'][..., None] + logp).reshape(batch, k * vocab)
    top_lp, top_idx = jax.lax.top_k(cand, 2 * k)  # [B, 2K]
    origin = top_idx // vocab
    tok = (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(s['alive_seq'], origin[..., None], axis=1)  # [B, 2K, L]
    seqs = jax.lax.dynamic_update_slice(seqs, tok[..., None], (0, 0, i))
    is_eos = tok == eos
    # Only EOS extensions ranked within the top K finish (as in fairseq / Hugging Face), so
    # one beam without length penalty is exactly greedy decoding.
    finishes = is_eos & (jnp.arange(2 * k) < k)[None, :]
    # Alive: the K best extensions that do not end in EOS.
    alive_lp, pick = jax.lax.top_k(jnp.where(is_eos, _NEG, top_lp), k)
    alive_seq = jnp.take_along_axis(seqs, pick[..., None], axis=1)
    last = jnp.take_along_axis(tok, pick, axis=1)
    cache = reorder_cache(cache, (offsets + jnp.take_along_axis(origin, pick, axis=1))
                          .reshape(-1))
    # Finished: merge the new EOS extensions with the K finished so far.
    new_score = jnp.where(finishes, top_lp / _penalty(i + 1, alpha), _NEG)
    all_score = jnp.concatenate([s['fin_score'], new_score], axis=1)
    all_seq = jnp.concatenate([s['fin_seq'], seqs], axis=1)
    all_flag = jnp.concatenate([s['fin_flag'], finishes], axis=1)
    fin_score, fpick = jax.lax.top_k(all_score, k)
    return dict(
        i=i + 1,
        cache=cache,
        last=last,
        alive_seq=alive_seq,
        alive_lp=alive_lp,
        fin_seq=jnp.take_along_axis(all_seq, fpick[..., None], axis=1),
        fin_score=fin_score,
        fin_flag=jnp.take_along_axis(all_flag, fpick, axis=1),
    )

  def cond(s):
    # The best an alive beam can still reach: its log-prob (it only decreases) under the
    # largest penalty; stop once every source has K finished beams that beat it.
    best_alive = s['alive_lp'][:, 0] / _penalty(max_length, alpha)
    worst_fin = jnp.where(s['fin_flag'], s['fin_score'], _NEG).min(axis=1)
    met = jnp.all(s['fin_flag'], axis=1) & (worst_fin > best_alive)
    return (s['i'] < max_length) & ~jnp.all(met)

  s = jax.lax.while_loop(cond, body, state)
  # Sources with fewer than K finished beams (the loop hit max_length) fill up with alive
  # beams, scored at max_length; after an early stop every alive beam ranks below them.
  alive_score = s['alive_lp'] / _penalty(max_length, alpha)
  fin_score = jnp.where(s['fin_flag'], s['fin_score'], 2 * _NEG)
  pool_score = jnp.concatenate([fin_score, alive_score], axis=1)  # [B, 2K]
  pool_seq = jnp.concatenate([s['fin_seq'], s['alive_seq']], axis=1)
  scores, pick = jax.lax.top_k(pool_score, k)
  beams = jnp.take_along_axis(pool_seq, pick[..., None], axis=1)
  beams = jax.vmap(lambda b: _finish(b, eos))(beams)
  tokens = beams[:, 0]
  lengths = jnp.sum(tokens > 0, axis=1).astype(jnp.int32)
  return tokens, dict(scores=scores[:, 0], lengths=lengths, steps=s['i'], beam_tokens=beams,
                      beam_scores=scores)


def ar_decode(fns: Any,
              params: Any,
              encoder_tokens: Array,
              *,
              max_length: int,
              config: ARConfig = ARConfig(),
              rng: Array | None = None) -> tuple[Array, dict[str, Array]]:
  """AR decoding of a batch (jittable; config and max_length static).

  Args:
    fns: `ARFns(model)` for a causal Transformer, or any object with ``encode``,
      ``init_cache`` and ``step`` of the same signatures.
    params: network parameters.
    encoder_tokens: [B, S] int32, 0 = pad.
    max_length: most output tokens (EOS included).
    config: method and knobs.
    rng: PRNG key for sampling (per-row keys derive from it and the source tokens).

  Returns:
    tokens [B, max_length] int32 (up to and including EOS, pad after) and aux: ``scores`` [B]
    (sum of log-probabilities; for beam search the length-penalised score; left out with
    ``config.score=False``), ``lengths`` [B],
    ``steps`` (loop iterations run); beam search adds ``beam_tokens`` [B, K, L] and
    ``beam_scores`` [B, K], best first.
  """
  if max_length < 1:
    raise ValueError(f'max_length={max_length} must be >= 1.')
  if config.method == 'beam':
    return _beam_search(fns, params, encoder_tokens, max_length, config)
  return _greedy_or_sample(fns, params, encoder_tokens, max_length, config, rng)


def sequence_log_prob(fns: Any, params: Any, encoder_tokens: Array, targets: Array) -> Array:
  """Sum of log p(target token) over the non-pad targets: [B] float32 (teacher forcing).

  ``targets`` [B, L] hold tokens up to EOS and pad after; the decoder input is the targets
  shifted right (first position 0), as in T5X. One candidate per source of
  `candidate_log_probs`.
  """
  return candidate_log_probs(fns, params, encoder_tokens, targets[:, None])[:, 0]


def candidate_log_probs(fns: Any, params: Any, encoder_tokens: Array,
                        candidates: Array, proposals: bool = False,
                        encoded: Array | None = None) -> Array | tuple[Array, Array, Array]:
  """Teacher-forced log-likelihood of N candidates per source: [B, N] float32.

  The sources are encoded once and their states shared by the candidates (scoring
  ``B * N`` repeated sources would run the encoder N times).

  Args:
    fns: `ARFns` of a causal Transformer (``encode`` and ``decode_logits``).
    params: its parameters.
    encoder_tokens: [B, S] int32 sources, 0 = pad.
    candidates: [B, N, W] int32 tokens up to EOS, pad after (any width W up to the
      network's longest target: a causal decoder scores position i from positions <= i, so
      the pad on the right changes nothing).
    proposals: also return, at every position, the AR model's own most likely token given
      the candidate's tokens before it, and that token's log-probability (read from the
      same logits: no extra pass).
    encoded: the sources' encoder states [B, S, E] (``fns.encode``) when the caller has
      them already; else they are computed here.

  Returns:
    [B, N] sums of log p(token) over the non-pad candidate tokens; with ``proposals`` the
    tuple (sums, proposed tokens [B, N, W] int32, their log-probabilities [B, N, W]).
  """
  batch, n, width = candidates.shape
  if encoded is None:
    encoded = fns.encode(params, encoder_tokens)  # [B, S, E]
  if n > 1:
    encoded = jnp.repeat(encoded, n, axis=0)
    encoder_tokens = jnp.repeat(encoder_tokens, n, axis=0)
  flat = candidates.reshape(batch * n, width)
  inputs = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))  # shifted right, as in training
  logits = fns.decode_logits(params, encoded, encoder_tokens, inputs)  # [B*N, W, V]
  if not proposals:
    lp = sampling.log_prob_of(logits, flat)  # [B*N, W]
    return jnp.sum(jnp.where(flat > 0, lp, 0.0), axis=1).reshape(batch, n)
  # The argmax and the log-normaliser from one chunked reduction; both log-probabilities
  # are a picked logit minus it.
  best, log_z = sampling.greedy_choice(logits)  # [B*N, W] each
  lp, best_lp = (jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0].astype(jnp.float32)
                 - log_z for t in (flat, best))
  scores = jnp.sum(jnp.where(flat > 0, lp, 0.0), axis=1).reshape(batch, n)
  return scores, best.reshape(batch, n, width), best_lp.reshape(batch, n, width)


def make_reranker(fns: Any):
  """``reranker(params, encoder_tokens [B, S], candidates [B, N, W], proposals=False,
  encoded=None)``.

  The AR model's teacher-forced log-likelihood [B, N] (`candidate_log_probs`; with
  ``proposals`` also its own next-token choices), for
  `padir.refine_decoding.refine_decode`'s ``reranker``. ``reranker.encode(params,
  encoder_tokens)`` gives the encoder states that ``encoded=`` takes, so that several passes
  over the same sources encode them once.
  """

  def reranker(params, encoder_tokens, candidates, proposals=False, encoded=None):
    return candidate_log_probs(fns, params, encoder_tokens, candidates, proposals, encoded)

  reranker.encode = fns.encode
  return reranker


gin_utils.configurable(ARConfig, module='padir.ar_decoding')
