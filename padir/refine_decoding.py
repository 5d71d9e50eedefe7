"""Refinement decoding (PaDIR, Mask-Predict, MaskGIT, confidence threshold) in one jitted loop.

`refine_decode` runs the encoder once, builds the candidate canvases (top-k predicted lengths
x an odd length beam x parallel restarts, flattened into the batch), refines every candidate
in a ``lax.while_loop`` and returns the best candidate per source with an aux dict. The
rejection rules and replacement tokens come from `padir.remasking`.

One iteration: a decoder pass over the canvas gives logits; tokens are chosen by argmax or by
precision-safe sampling (`padir.sampling`); with ``avoid_repeats`` a proposal equal to its
neighbour's takes its runner-up; the remasking rule rejects some proposals, which take their
replacement. A row stops when it reaches a fixed point (update mode ``all``: the
canvas did not change and nothing was rejected) or has no position left to predict (modes
``masked``/``commit``), or after ``num_iterations``; the loop ends when every row has stopped.
Stopped rows are frozen.

Speed: the encoder output is tiled to the candidates once; in ``masked``/``commit`` modes the
output projection runs only on the positions that can still change after the first iteration
(a static bound per rule, see `sparse_width`); the cross-attention keys/values are computed
once and reused by every iteration (`TransformerFns`); with ``canvas_buckets`` the canvas is cut
to the smallest bucket that holds the longest candidate (``lax.switch``, one compiled loop per
bucket); no [B, L, V] buffer survives an iteration unless ``replacement='logits_sum'``.

Output: tokens up to and including the first EOS, pad after. With a [MASK] or [MASK_i] canvas,
positions still holding their mask token (unresolved or rejected after the last iteration) are
dropped and the rest closes up. Randomness (random canvases, sampling, choice noise) is keyed
by each source's tokens, the candidate index, the iteration and the position, so a source
gives the same output alone or inside any batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from padir import remasking
from padir import sampling
# RefineConfig and with_overrides live in padir.refine_config; they are part of this module's API.
from padir.refine_config import CANVAS_INITS, SCORINGS  # pylint: disable=unused-import
from padir.refine_config import RefineConfig, with_overrides  # pylint: disable=unused-import
from padir.special_ids import SpecialIds

Array = jax.Array


# ----------------------------------------------------------------------------------------
# The network adapter.


@dataclasses.dataclass(frozen=True)
class TransformerFns:
  """Encoder and decoder entry points of a bidirectional `padir.network.Transformer`.

  ``cross_kv(params, encoded, encoder_tokens)`` returns the decoder's 'cache' collection: the
  cross-attention keys/values of every layer, computed once. ``logits(params, encoded,
  encoder_tokens, canvas, positions=None, cross_kv=None)`` returns [N, K, V] logits at
  ``positions`` [N, K] (all positions when None); only those rows of the final decoder states
  are projected to the vocabulary, and given ``cross_kv`` the keys/values are not recomputed.
  """

  model: nn.Module

  def encode(self, params, encoder_tokens: Array) -> tuple[Array, Array | None]:
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    return self.model.apply({'params': params}, encoder_tokens, enable_dropout=False,
                            method=Transformer.encode)

  def cross_kv(self, params, encoded: Array, encoder_tokens: Array) -> Any:
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    # The logits of this call are discarded (XLA removes them under jit).
    _, mutated = self.model.apply({'params': params}, encoded, encoder_tokens,
                                  jnp.ones((encoded.shape[0], 1), jnp.int32),
                                  enable_dropout=False, decode=True, mutable=['cache'],
                                  method=Transformer.decode)
    return mutated['cache']

  def logits(self, params, encoded: Array, encoder_tokens: Array, canvas: Array,
             positions: Array | None = None, cross_kv: Any = None) -> Array:
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    variables = {'params': params}
    if cross_kv is not None:
      variables['cache'] = cross_kv
    return self.model.apply(variables, encoded, encoder_tokens, canvas, enable_dropout=False,
                            decode=cross_kv is not None, logits_positions=positions,
                            method=Transformer.decode)


def _map_rows(tree: Any, fn: Callable[[Array, int], Array]) -> Any:
  """Applies ``fn(leaf, batch_axis)`` to every per-row leaf of a cache tree.

  The batch axis is the first one, or the second under a scanned 'layers' entry; scalars
  are kept.
  """

  def one(path, leaf):
    names = [getattr(p, 'key', getattr(p, 'name', '')) for p in path]
    if leaf.ndim == 0:
      return leaf
    return fn(leaf, 1 if 'layers' in names else 0)

  return jax.tree_util.tree_map_with_path(one, tree)


def repeat_rows(tree: Any, repeats: int) -> Any:
  """Repeats every per-row leaf of a cache tree ``repeats`` times along its batch axis."""
  if repeats == 1:
    return tree
  return _map_rows(tree, lambda leaf, axis: jnp.repeat(leaf, repeats, axis=axis))


def take_rows(tree: Any, rows: Array) -> Any:
  """Keeps the rows ``rows`` [M] of every per-row leaf of a cache tree (batch axis as above)."""
  return _map_rows(tree, lambda leaf, axis: jnp.take(leaf, rows, axis=axis))


# ----------------------------------------------------------------------------------------
# Helpers.


def _position_keys(row_keys: Array, positions: Array) -> Array:
  """[N, 2] row keys and [N, K] positions -> [N, K, 2] keys."""
  keys = jnp.broadcast_to(row_keys[:, None, :], positions.shape + (2,))
  return sampling.fold_keys(keys, positions)


def candidate_lengths(lengths: Array, config: RefineConfig, max_length: int) -> Array:
  """[B, k] predicted lengths -> [B, N] candidate lengths in (k, beam, restart) order."""
  b = config.length_beam
  offsets = jnp.arange(b, dtype=jnp.int32) - b // 2
  cand = lengths[:, :, None] + offsets[None, None, :]  # [B, k, b]
  cand = jnp.clip(cand, 1, max_length)
  cand = jnp.repeat(cand[..., None], config.restarts, axis=-1)  # [B, k, b, p]
  return cand.reshape(lengths.shape[0], -1).astype(jnp.int32)


def initial_canvas(lengths: Array, keys: Array, width: int, config: RefineConfig,
                   ids: SpecialIds) -> Array:
  """Initial canvases [N, width] for candidate lengths [N] (EOS at length - 1, pad after)."""
  pos = jnp.arange(width, dtype=jnp.int32)[None, :]
  if config.canvas_init == 'mask':
    fill = jnp.full((1, width), ids.mask, jnp.int32)
  elif config.canvas_init == 'mask_range':
    fill = (ids.mask_range_start + pos).astype(jnp.int32)
  else:
    lo, hi = ids.random_token_range
    pkeys = _position_keys(sampling.fold_keys(keys, 0x5eed),
                           jnp.broadcast_to(pos, (keys.shape[0], width)))  # [N, W, 2]
    fill = jax.vmap(jax.vmap(lambda k: jax.random.randint(k, (), lo, hi, jnp.int32)))(pkeys)
  canvas = jnp.where(pos < lengths[:, None] - 1, fill, ids.pad)
  return jnp.where(pos == lengths[:, None] - 1, ids.eos, canvas).astype(jnp.int32)


def sparse_width(config: RefineConfig, width: int) -> int:
  """Static bound on the positions a ``masked``/``commit`` iteration after the first predicts.

  ``mask_predict``: floor(W (T-1) / T); ``cosine``: floor(W cos(pi / 2T)) (+1e-4);
  ``constant``: the count or floor(fraction W); otherwise (threshold, keep_all, or when
  stutter rejections may add to the rule's) W.
  """
  rm = config.remask
  t = config.num_iterations
  if rm.effective_update == 'all' or rm.rejects_stutter or t == 1:
    return width
  if rm.rule == 'mask_predict':
    bound = (width * (t - 1)) // t
  elif rm.rule == 'cosine':
    bound = math.floor(width * math.cos(0.5 * math.pi / t) + 1e-4)
  elif rm.rule == 'constant':
    bound = rm.count if rm.count is not None else math.floor(rm.fraction * width + 1e-6)
  else:
    bound = width
  return int(max(1, min(width, bound)))


def _gather(x: Array, idx: Array) -> Array:
  return jnp.take_along_axis(x, idx, axis=1)


def _scatter(base: Array, idx: Array, values: Array) -> Array:
  rows = jnp.arange(base.shape[0])[:, None]
  return base.at[rows, idx].set(values)


def _compact(tokens: Array, conf: Array, keep: Array) -> tuple[Array, Array]:
  """Moves kept positions to the front (stable); the rest becomes pad / 0."""
  order = jnp.argsort(~keep, axis=1, stable=True)
  count = jnp.sum(keep, axis=1, keepdims=True)
  front = jnp.arange(tokens.shape[1])[None, :] < count
  return (jnp.where(front, _gather(tokens, order), 0),
          jnp.where(front, _gather(conf, order), 0.0))


# ----------------------------------------------------------------------------------------
# The loop.


def _refine_width(fns, params, encoded, encoder_tokens, cross_kv, lengths, keys, width: int,
                  config: RefineConfig, ids: SpecialIds) -> dict[str, Array]:
  """Refines N canvases of static ``width``; returns per-candidate results of that width.

  Each ``config.num_candidates`` consecutive rows are the candidates of one source: with
  ``config.prune_after`` only the row of each such group whose proposal at that pass scores
  best (``config.scoring`` over every position, before re-masking) is refined further, and
  ``alive`` [N] marks those rows (the others keep their canvas of that pass).
  """
  rm = config.remask
  mode = rm.effective_update
  big_t = config.num_iterations
  n_rows = lengths.shape[0]
  pos = jnp.arange(width, dtype=jnp.int32)[None, :]
  valid = pos < lengths[:, None]  # [N, W]
  editable = valid & (pos < lengths[:, None] - 1) if config.clamp_eos else valid
  keep_sum = rm.replacement == 'logits_sum'
  # What each row decodes against; pruning keeps the rows of the surviving candidates.
  rows = dict(encoded=encoded, encoder_tokens=encoder_tokens, cross_kv=cross_kv, keys=keys,
              valid=valid, editable=editable,
              x0=initial_canvas(lengths, keys, width, config, ids))

  state = dict(
      t=jnp.zeros((), jnp.int32),
      canvas=rows['x0'],
      conf=jnp.zeros((n_rows, width), jnp.float32),
      open=editable,
      committed=~editable,
      done=jnp.zeros((n_rows,), bool),
      iterations=jnp.zeros((n_rows,), jnp.int32),
  )
  if config.prunes:
    state['proposal_lp'] = jnp.zeros((n_rows,), jnp.float32)
  if keep_sum:
    state['logits_sum'] = jnp.zeros((n_rows, width, fns_vocab(fns)), jnp.float32)
  if config.return_history:
    state['hist_tokens'] = jnp.zeros((big_t, n_rows, width), jnp.int32)
    state['hist_conf'] = jnp.zeros((big_t, n_rows, width), jnp.float32)

  def body(r: dict[str, Any], k_width: int, s: dict[str, Array]) -> dict[str, Array]:
    valid, editable, x0, keys = r['valid'], r['editable'], r['x0'], r['keys']
    n_rows = valid.shape[0]
    t1 = s['t'] + 1
    canvas, conf, open_ = s['canvas'], s['conf'], s['open']
    if k_width < width:
      idx = jnp.argsort(~open_, axis=1, stable=True)[:, :k_width]  # open positions first
    else:
      idx = jnp.broadcast_to(pos, (n_rows, width))
    logits = fns.logits(params, r['encoded'], r['encoder_tokens'], canvas,
                        None if k_width == width else idx, r['cross_kv'])  # [N, K, V]
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    bias = output_bias(ids, vocab) if config.real_pieces_only else None
    step_keys = sampling.fold_keys(keys, t1)
    # Confidences are log-probabilities over the ids that may be proposed.
    if config.avoid_repeats:
      greedy_k, second_k, log_z = sampling.greedy_top2(logits, bias)  # [N, K] each
    else:
      greedy_k, log_z = sampling.greedy_choice(logits, bias)  # [N, K]
    if config.temperature > 0:
      noise_keys = _position_keys(step_keys, idx)  # [N, K, 2]
      noise = jax.vmap(jax.vmap(lambda k: sampling.gumbel_noise(k, (vocab,))))(noise_keys)
      allowed = logits if bias is None else logits + bias
      filtered = sampling.filter_logits(allowed, config.top_k, config.top_p)
      new_k = sampling.argmax(filtered.astype(noise.dtype) / config.temperature + noise)
    else:
      new_k = greedy_k
    lp_k = _gather_last(logits, new_k) - log_z  # [N, K]
    dense = k_width == width  # idx is the identity: no scatter / gather needed
    new_tok = new_k if dense else _scatter(canvas, idx, new_k)
    new_lp = lp_k if dense else _scatter(conf, idx, lp_k)
    predicted = editable if mode == 'all' else open_
    proposed = jnp.where(predicted, new_tok, canvas)
    conf_in = jnp.where(predicted, new_lp, conf)
    if config.avoid_repeats:  # a proposal equal to its neighbour's takes its runner-up
      lp2_k = _gather_last(logits, second_k) - log_z
      second = second_k if dense else _scatter(canvas, idx, second_k)
      lp2 = lp2_k if dense else _scatter(conf, idx, lp2_k)
      change = _repeat_losers(proposed, conf_in, predicted, editable)  # [N, W]
      proposed = jnp.where(change, second, proposed)
      conf_in = jnp.where(change, lp2, conf_in)
    eligible = open_ if mode == 'commit' else editable
    logits_sum = None
    if keep_sum:  # the ensemble also only ever picks ids that may be proposed
      logits_sum = s['logits_sum'] + (logits if bias is None else logits + bias)
    choice_keys = sampling.fold_keys(step_keys, 0xc401ce) if rm.needs_rng else None
    # The rules count n over the positions they may touch (a clamped EOS is not one).
    new_canvas, rejected = remasking.remask(rm, proposed, conf_in, canvas, x0, editable, t1,
                                            big_t, eligible=eligible, logits_sum=logits_sum,
                                            rng=choice_keys)
    # Confidence of each token: the log-probability it had when proposed. A replaced
    # position that was predicted gets the current log-probability of its replacement; the
    # fixed slots (EOS) are scored at the first iteration (every iteration in mode 'all').
    if dense:
      lp_cur = _gather_last(logits, new_canvas) - log_z
    else:
      lp_cur = _scatter(jnp.zeros_like(conf),
                        idx, _gather_last(logits, _gather(new_canvas, idx)) - log_z)
    fixed = valid & ~editable
    if mode != 'all':
      fixed = fixed & (t1 == 1)
    changed = new_canvas != canvas
    new_conf = jnp.where(
        predicted & ~rejected, new_lp,
        jnp.where((predicted & rejected) | fixed, lp_cur,
                  jnp.where(rejected & changed, 0.0, conf)))
    if mode == 'all':
      new_open = editable
      new_committed = s['committed']
      converged = ~jnp.any(changed, axis=1) & ~jnp.any(rejected, axis=1)
    elif mode == 'masked':
      new_open = rejected & editable
      new_committed = s['committed']
      converged = ~jnp.any(new_open, axis=1)
    else:
      new_committed = s['committed'] | (eligible & ~rejected)
      new_open = editable & ~new_committed
      converged = ~jnp.any(new_open, axis=1)
    done = s['done']
    frozen = done[:, None]
    out = dict(
        t=t1,
        canvas=jnp.where(frozen, canvas, new_canvas),
        conf=jnp.where(frozen, conf, new_conf),
        open=jnp.where(frozen, open_, new_open),
        committed=jnp.where(frozen, s['committed'], new_committed),
        iterations=s['iterations'] + (~done).astype(jnp.int32),
        done=done | (t1 >= big_t) | (config.early_stop & converged),
    )
    if keep_sum:
      out['logits_sum'] = logits_sum
    if config.prunes:
      # Log-probability of this pass's full proposal (before re-masking): what pruning ranks
      # the candidates by.
      proposal = jnp.sum(jnp.where(valid, jnp.where(fixed, lp_cur, conf_in), 0.0), axis=1)
      out['proposal_lp'] = jnp.where(done, s['proposal_lp'], proposal)
    if config.return_history:
      out['hist_tokens'] = s['hist_tokens'].at[t1 - 1].set(out['canvas'])
      out['hist_conf'] = s['hist_conf'].at[t1 - 1].set(out['conf'])
    return out

  k_sparse = sparse_width(config, width) if (config.sparse_logits and not keep_sum) else width

  def passes(r: dict[str, Any], s: dict[str, Array], stop: int) -> dict[str, Array]:
    """Runs passes until ``stop`` passes are done or every row is."""
    return jax.lax.while_loop(lambda s: (s['t'] < stop) & ~jnp.all(s['done']),
                              lambda s: body(r, k_sparse, s), s)

  def finish(r: dict[str, Any], s: dict[str, Array]) -> dict[str, Array]:
    if config.return_history:
      # Iterations a row did not run repeat its final canvas.
      ran = jnp.arange(big_t)[:, None] < s['t']
      s = dict(s, hist_tokens=jnp.where(ran[..., None], s['hist_tokens'], s['canvas'][None]),
               hist_conf=jnp.where(ran[..., None], s['hist_conf'], s['conf'][None]))
    return _finalize(s, r['x0'], r['valid'], config, ids)

  if k_sparse < width:
    state = body(rows, width, state)  # the first iteration predicts every position
  if not config.prunes:
    return dict(finish(rows, passes(rows, state, big_t)), alive=jnp.ones((n_rows,), bool))
  state = passes(rows, state, config.prune_after)
  early = finish(rows, state)
  group = config.num_candidates
  scores = normalized_score(state['proposal_lp'], lengths, config).reshape(-1, group)
  kept = jnp.arange(scores.shape[0]) * group + jnp.argmax(scores, axis=1)  # [B]
  rows = take_rows(rows, kept)
  state = {k: v if k == 't' else jnp.take(v, kept, axis=1 if k.startswith('hist') else 0)
           for k, v in state.items()}
  late = finish(rows, passes(rows, state, big_t))
  result = {k: early[k].at[kept].set(late[k]) for k in early}
  result['alive'] = jnp.zeros((n_rows,), bool).at[kept].set(True)
  return result


def output_bias(ids: SpecialIds, vocab_size: int) -> np.ndarray:
  """[V] float32: 0 for real pieces and EOS, -1e9 for every other id."""
  bias = np.full((vocab_size,), -1e9, np.float32)
  lo, hi = ids.random_token_range
  bias[lo:min(hi, vocab_size)] = 0.0
  bias[ids.eos] = 0.0
  return bias


def _neighbour(x: Array, side: int, fill: Any) -> Array:
  """[N, W] -> the value of each position's left (side -1) or right (+1) neighbour."""
  edge = jnp.full_like(x[:, :1], fill)
  if side < 0:
    return jnp.concatenate([edge, x[:, :-1]], axis=1)
  return jnp.concatenate([x[:, 1:], edge], axis=1)


def _repeat_losers(tokens: Array, conf: Array, predicted: Array, editable: Array) -> Array:
  """[N, W] positions that give up their token so that no two neighbours hold the same one.

  Only editable neighbours count (not EOS or pad). Of two adjacent equal tokens, a position
  predicted in this pass gives way to a neighbour that was not (a kept token stays), and of
  two predicted in this pass the less confident one gives way (the left one on a tie).

  Args:
    tokens: [N, W] proposed canvas.
    conf: [N, W] confidence of each token.
    predicted: [N, W] positions predicted in this pass.
    editable: [N, W] positions a pass may change.
  """
  same_left = remasking.stutter_mask(tokens, editable)  # [N, W]: equal to the left neighbour
  same_right = _neighbour(same_left, 1, False)  # the right neighbour equals this one
  lose_left = same_left & (~_neighbour(predicted, -1, False) |
                           (conf < _neighbour(conf, -1, 0.0)))
  lose_right = same_right & (~_neighbour(predicted, 1, False) |
                             (conf <= _neighbour(conf, 1, 0.0)))
  return predicted & (lose_left | lose_right)


def _gather_last(x: Array, idx: Array) -> Array:
  return jnp.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def fns_vocab(fns) -> int:
  """Output vocabulary size of the decoder (for the logits-sum buffer)."""
  if hasattr(fns, 'vocab_size'):
    return int(fns.vocab_size)
  return int(fns.model.config.vocab_size)


def _finalize(state, x0, valid, config: RefineConfig, ids: SpecialIds) -> dict[str, Array]:
  canvas, conf = state['canvas'], state['conf']
  width = canvas.shape[1]
  pos = jnp.arange(width, dtype=jnp.int32)[None, :]
  is_eos = (canvas == ids.eos) & valid
  first_eos = jnp.min(jnp.where(is_eos, pos, width), axis=1, keepdims=True)
  keep = valid & (pos <= first_eos) & (canvas != ids.pad)
  if config.canvas_init in ('mask', 'mask_range'):
    # Unresolved [MASK]/[MASK_i] holes are dropped (the placed EOS is no hole).
    keep = keep & ~((canvas == x0) & (x0 != ids.eos))
  tokens, tok_conf = _compact(canvas, conf, keep)
  result = dict(tokens=tokens, log_prob=jnp.sum(tok_conf, axis=1),
                length=jnp.sum(keep, axis=1).astype(jnp.int32),
                iterations=state['iterations'])
  if config.return_history:
    result['hist_tokens'] = jnp.moveaxis(state['hist_tokens'], 0, 1)  # [N, T, W]
    result['hist_conf'] = jnp.moveaxis(state['hist_conf'], 0, 1)
  return result


def collapse_repeats(tokens: Array, ids: SpecialIds) -> tuple[Array, Array]:
  """Drops every real token equal to the one before it ("a a a b" -> "a b").

  Args:
    tokens: [B, L] int32 outputs: pieces up to the first EOS, pad after.
    ids: special ids (pad, EOS).

  Returns:
    (tokens [B, L] without the repeats, pad after; removed [B] int32, tokens dropped per row).
  """
  real = (tokens != ids.pad) & (tokens != ids.eos)
  repeat = remasking.stutter_mask(tokens, real)  # [B, L]
  kept, _ = _compact(tokens, jnp.zeros(tokens.shape, jnp.float32),
                     (tokens != ids.pad) & ~repeat)
  return kept, jnp.sum(repeat, axis=1, dtype=jnp.int32)


def teacher_fix(tokens: Array, proposed: Array, proposed_log_prob: Array, threshold: float,
                ids: SpecialIds) -> tuple[Array, Array]:
  """Replaces output tokens where the AR teacher confidently proposes another real piece.

  Args:
    tokens: [B, L] int32 outputs: pieces up to the first EOS, pad after.
    proposed: [B, L] int32 the teacher's most likely token at each position, given the
      output's tokens before it (teacher forcing).
    proposed_log_prob: [B, L] float32 its log-probability.
    threshold: a proposal replaces the token when its probability exceeds this.
    ids: special ids (pad, EOS and the range of real pieces).

  Returns:
    (tokens [B, L], replaced [B] int32 tokens replaced per row). EOS and pad are never
    replaced, and only real pieces are written, so every output keeps its length.
  """
  lo, hi = ids.random_token_range
  real = (tokens != ids.pad) & (tokens != ids.eos)
  replace = (real & (proposed != tokens) & (proposed >= lo) & (proposed < hi) &
             (proposed_log_prob > math.log(threshold)))
  return (jnp.where(replace, proposed, tokens).astype(tokens.dtype),
          jnp.sum(replace, axis=1, dtype=jnp.int32))


def _pad_width(x: Array, width: int, axis: int) -> Array:
  extra = width - x.shape[axis]
  if extra == 0:
    return x
  cfg = [(0, 0)] * x.ndim
  cfg[axis] = (0, extra)
  return jnp.pad(x, cfg)


def normalized_score(log_prob: Array, length: Array, config: RefineConfig) -> Array:
  """Candidate score: mean log-prob, or sum / ((5 + len) / 6) ** alpha."""
  n = jnp.maximum(length, 1).astype(jnp.float32)
  if config.scoring == 'mean':
    return log_prob / n
  if config.brevity_alpha == 0:
    return log_prob
  return log_prob / ((5.0 + n) / 6.0)**config.brevity_alpha


def refine_decode(fns: Any,
                  params: Any,
                  encoder_tokens: Array,
                  *,
                  config: RefineConfig,
                  ids: SpecialIds,
                  max_length: int,
                  rng: Array | None = None,
                  lengths: Array | None = None,
                  reranker: Callable[..., Array] | None = None,
                  reranker_params: Any = None) -> tuple[Array, dict[str, Array]]:
  """Decodes a batch by iterative refinement (jittable; config, ids, max_length static).

  Args:
    fns: the network entry points: `TransformerFns(model)` or any object with
      ``encode(params, encoder_tokens) -> (encoded [B, S, E], length_logits [B, C] | None)``
      and ``logits(params, encoded, encoder_tokens, canvas [N, W], positions [N, K] | None,
      cross_kv) -> [N, K, V]`` (and ``cross_kv(...)`` when ``config.reuse_cross_kv``).
    params: network parameters.
    encoder_tokens: [B, S] int32 source tokens, 0 = pad.
    config: decoding knobs.
    ids: special ids of the vocabulary.
    max_length: canvas width L (longest output, EOS included).
    rng: PRNG key for random canvases and sampling (default PRNGKey(0)).
    lengths: [B] or [B, k] target lengths (EOS included) to use instead of the length head
      (``config.length_offset`` is not added to them).
    reranker: optional ``reranker(reranker_params, encoder_tokens [B, S], candidates
      [B, N, W]) -> [B, N]`` log-likelihoods (e.g. `padir.ar_decoding.make_reranker` of an
      AR model), used instead of the candidates' own log-probabilities (CMLM's external
      re-ranker). W is the canvas width the candidates were refined at (a
      ``canvas_buckets`` width or ``max_length``); they hold tokens up to EOS, pad after. Not
      run when there is one candidate per source (it could not change the output), unless
      ``config.teacher_fix_threshold`` > 0: then it is called with ``proposals=True`` and
      returns ``(log-likelihoods [B, N], its own most likely tokens [B, N, W], their
      log-probabilities [B, N, W])``, with which it fixes the output (`teacher_fix`). A
      reranker with an ``encode(reranker_params, encoder_tokens) -> states`` attribute (as
      `padir.ar_decoding.make_reranker`'s has) and an ``encoded=`` keyword encodes the
      sources once for every round of fixes.
    reranker_params: parameters passed to the reranker.

  Returns:
    tokens [B, L] int32 (best candidate: tokens up to the first EOS, pad after) and aux:
    ``scores`` [B], ``candidate_scores`` [B, N], ``iterations`` [B] (passes used by the best
    candidate), ``candidate_iterations`` [B, N], ``candidate_lengths`` [B, N] (canvas lengths),
    ``best_candidate`` [B] (with ``prune_after``, the candidate kept after that pass; the
    others' scores, iterations and tokens are those of that pass); with
    ``collapse_repeats``, ``repeats_removed`` [B]; with ``teacher_fix_threshold``,
    ``teacher_fixes`` [B] (tokens the teacher replaced); optionally ``candidates``
    [B, N, L], ``history_tokens`` and ``history_confidence`` [B, N, T, L].
  """
  if config.canvas_init is None:
    config = dataclasses.replace(config, canvas_init='mask')
  config.check_width(max_length, ids)
  batch = encoder_tokens.shape[0]
  n_cand = config.num_candidates
  if config.teacher_fixes and reranker is None:
    raise ValueError(f'RefineConfig.teacher_fix_threshold={config.teacher_fix_threshold} has '
                     'the AR teacher fix tokens, but no re-ranker was given: decode with the '
                     "teacher (a model dir's decoding.json rerank_model_dir, rerank_model=) or "
                     'set teacher_fix_threshold=0.')
  if reranker is not None and config.prunes:
    raise ValueError(f'RefineConfig.prune_after={config.prune_after} keeps one candidate per '
                     'source before the end, so a re-ranker would have nothing to choose '
                     'from: set prune_after=0 to re-rank, or drop the re-ranker.')
  rng = sampling.raw_key(rng)
  encoded, length_logits = fns.encode(params, encoder_tokens)
  if lengths is None:
    if length_logits is None:
      raise ValueError('The network has no length head: pass lengths=[B] target lengths or '
                       'build the model with use_length_head=True.')
    if config.top_k_lengths > length_logits.shape[-1]:
      raise ValueError(f'top_k_lengths={config.top_k_lengths} exceeds the '
                       f'{length_logits.shape[-1]} length classes.')
    _, classes = jax.lax.top_k(length_logits, config.top_k_lengths)
    lengths = classes + 1 + config.length_offset  # clipped to [1, max_length] below
  else:
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.ndim == 1:
      lengths = lengths[:, None]
    if lengths.shape != (batch, config.top_k_lengths):
      raise ValueError(f'lengths must have shape [{batch}] or [{batch}, '
                       f'{config.top_k_lengths}] (top_k_lengths), got {lengths.shape}.')
  cand_len = candidate_lengths(lengths.astype(jnp.int32), config, max_length)  # [B, N]
  row_keys = sampling.source_keys(rng, encoder_tokens)  # [B, 2]
  cand_keys = sampling.fold_keys(jnp.repeat(row_keys[:, None], n_cand, axis=1),
                    jnp.arange(n_cand)[None, :])  # [B, N, 2]

  enc_rep = jnp.repeat(encoder_tokens, n_cand, axis=0) if n_cand > 1 else encoder_tokens
  encoded_rep = jnp.repeat(encoded, n_cand, axis=0) if n_cand > 1 else encoded
  cross_kv = None
  if config.reuse_cross_kv and hasattr(fns, 'cross_kv'):
    cross_kv = repeat_rows(fns.cross_kv(params, encoded, encoder_tokens), n_cand)
  flat_len = cand_len.reshape(-1)
  flat_keys = cand_keys.reshape(-1, 2)

  rerank = reranker is not None and n_cand > 1  # one candidate: nothing to re-rank
  fix = config.teacher_fixes
  # With rounds of fixes the teacher's encoder states serve every one of its passes.
  teacher_kw: dict[str, Any] = {}
  if fix and config.teacher_fix_rounds > 1 and hasattr(reranker, 'encode'):
    teacher_kw['encoded'] = reranker.encode(reranker_params, encoder_tokens)  # [B, S, E]

  def run(width: int) -> dict[str, Array]:
    res = _refine_width(fns, params, encoded_rep, enc_rep, cross_kv, flat_len, flat_keys,
                        width, config, ids)
    cands = res['tokens'].reshape(batch, n_cand, width)
    if fix:  # one teacher-forced pass scores the candidates and proposes its own tokens
      log_prob, proposed, proposed_lp = reranker(reranker_params, encoder_tokens, cands,
                                                 proposals=True, **teacher_kw)
      res['proposed'] = _pad_width(proposed.reshape(-1, width), max_length, 1)
      res['proposed_lp'] = _pad_width(proposed_lp.reshape(-1, width), max_length, 1)
    elif rerank:  # at the canvas width: the candidates end within it
      log_prob = reranker(reranker_params, encoder_tokens, cands)
    if rerank:
      res['log_prob'] = log_prob.reshape(-1).astype(jnp.float32)
    for name in ('tokens',):
      res[name] = _pad_width(res[name], max_length, 1)
    for name in ('hist_tokens', 'hist_conf'):
      if name in res:
        res[name] = _pad_width(res[name], max_length, 2)
    return res

  buckets = sorted({b for b in config.canvas_buckets if b < max_length} | {max_length})
  if len(buckets) == 1:
    res = run(max_length)
  else:
    longest = jnp.max(flat_len)
    index = jnp.sum(jnp.asarray(buckets, jnp.int32) < longest).astype(jnp.int32)
    res = jax.lax.switch(index, [lambda w=w: run(w) for w in buckets])

  scores = normalized_score(res['log_prob'], res['length'], config).reshape(batch, n_cand)
  # First best on ties, among the candidates that ran to the end (all without pruning).
  alive = res['alive'].reshape(batch, n_cand)
  best = jnp.argmax(jnp.where(alive, scores, -jnp.inf), axis=1)
  cands = res['tokens'].reshape(batch, n_cand, max_length)
  tokens = jnp.take_along_axis(cands, best[:, None, None], axis=1)[:, 0]
  iters = res['iterations'].reshape(batch, n_cand)
  aux = dict(
      scores=jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0],
      candidate_scores=scores,
      iterations=jnp.take_along_axis(iters, best[:, None], axis=1)[:, 0],
      candidate_iterations=iters,
      candidate_lengths=cand_len,
      best_candidate=best.astype(jnp.int32),
  )
  if fix:
    def pick(x: Array) -> Array:  # [B * N, L] -> the best candidate's row [B, L]
      return jnp.take_along_axis(x.reshape(batch, n_cand, max_length), best[:, None, None],
                                 axis=1)[:, 0]

    tokens, fixed = teacher_fix(tokens, pick(res['proposed']), pick(res['proposed_lp']),
                                config.teacher_fix_threshold, ids)
    for _ in range(config.teacher_fix_rounds - 1):
      _, proposed, proposed_lp = reranker(reranker_params, encoder_tokens, tokens[:, None],
                                          proposals=True, **teacher_kw)
      tokens, more = teacher_fix(tokens, proposed[:, 0], proposed_lp[:, 0],
                                 config.teacher_fix_threshold, ids)
      fixed = fixed + more
    aux['teacher_fixes'] = fixed
  if config.collapse_repeats:
    tokens, aux['repeats_removed'] = collapse_repeats(tokens, ids)
  if config.return_all_candidates:
    aux['candidates'] = cands
  if config.return_history:
    t = config.num_iterations
    aux['history_tokens'] = res['hist_tokens'].reshape(batch, n_cand, t, max_length)
    aux['history_confidence'] = res['hist_conf'].reshape(batch, n_cand, t, max_length)
  return tokens, aux

