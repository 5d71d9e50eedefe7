"""Tests for padir.refine_decoding with an oracle network and a tiny Transformer."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import refine_decoding as rd
from padir.network import T5Config, Transformer
from padir.remasking import RemaskConfig
from padir.special_ids import special_ids

IDS = special_ids(40, 40, 96, mask_range_length=12)
L = 12
VOCAB = 96


@dataclasses.dataclass(frozen=True)
class CopyOracle:
  """A network that 'knows' the reference: the source tokens followed by EOS.

  Logits at canvas position i are ``scale(i) * one_hot(reference[i])``; ``scale`` decreasing
  with i gives every position a distinct confidence (lower at the end), and a small scale
  keeps every confidence below a threshold.
  """
  base: float = 12.0
  slope: float = 0.5
  vocab_size: int = VOCAB

  def encode(self, params, encoder_tokens):
    del params
    n = jnp.sum(encoder_tokens > 0, axis=1)
    length_logits = 5.0 * jax.nn.one_hot(n, L)  # class n = length n + 1 (EOS included)
    return encoder_tokens[..., None].astype(jnp.float32), length_logits

  def logits(self, params, encoded, encoder_tokens, canvas, positions=None, cross_kv=None):
    del params, encoded, cross_kv
    n_rows, width = canvas.shape
    src = jnp.pad(encoder_tokens, ((0, 0), (0, max(0, width - encoder_tokens.shape[1]))))
    src = src[:, :width]
    n = jnp.sum(encoder_tokens > 0, axis=1, keepdims=True)
    pos = jnp.arange(width)[None, :]
    ref = jnp.where(pos < n, src, jnp.where(pos == n, IDS.eos, IDS.pad))
    scale = self.base - self.slope * pos.astype(jnp.float32)
    out = scale[..., None] * jax.nn.one_hot(ref, self.vocab_size)  # [N, W, V]
    if positions is not None:
      out = jnp.take_along_axis(out, positions[..., None], axis=1)
    return out


SOURCES = np.array([
    [5, 6, 7, 8, 9, 10, 11, 0, 0, 0],
    [12, 13, 14, 0, 0, 0, 0, 0, 0, 0],
    [15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
], np.int32)


def _reference(sources=SOURCES):
  out = np.zeros((len(sources), L), np.int32)
  for r, row in enumerate(sources):
    toks = [t for t in row if t > 0]
    out[r, :len(toks)] = toks
    out[r, len(toks)] = IDS.eos
  return out


def _decode(fns, config, sources=SOURCES, params=None, **kw):
  fn = jax.jit(lambda p, e: rd.refine_decode(fns, p, e, config=config, ids=IDS, max_length=L,
                                             **kw))
  return fn(params, jnp.asarray(sources))


@pytest.mark.parametrize('canvas_init', ['mask', 'random'])
def test_oracle_recovers_reference_in_one_iteration(canvas_init):
  config = rd.RefineConfig(num_iterations=1, canvas_init=canvas_init, length_beam=3,
                           return_all_candidates=True)
  tokens, aux = _decode(CopyOracle(), config)
  np.testing.assert_array_equal(tokens, _reference())
  np.testing.assert_array_equal(aux['iterations'], [1, 1, 1])
  assert aux['candidates'].shape == (3, 3, L)
  # With more iterations allowed, a fixed point is detected one pass later.
  config = dataclasses.replace(config, num_iterations=5, return_history=True)
  tokens, aux = _decode(CopyOracle(), config)
  np.testing.assert_array_equal(tokens, _reference())
  np.testing.assert_array_equal(aux['iterations'], [2, 2, 2])
  np.testing.assert_array_equal(aux['history_tokens'][:, 1, 0], _reference())
  assert aux['history_confidence'].shape == (3, 3, 5, L)


def _mask_counts(aux, n_rows):
  best = np.asarray(aux['best_candidate'])
  hist = np.asarray(aux['history_tokens'])[np.arange(n_rows), best]  # [B, T, L]
  return (hist == IDS.mask).sum(-1)  # [B, T]


def _mask_predict_counts(n, big_t):
  return [(n * (big_t - t)) // big_t for t in range(1, big_t + 1)]


def _cosine_counts(n, big_t):
  # floor(n cos(pi t / 2T)), at most m - 1 where m positions are still uncommitted.
  counts, uncommitted = [], n
  for t in range(1, big_t + 1):
    k = 0 if t >= big_t else math.floor(n * math.cos(math.pi / 2 * t / big_t) + 1e-9)
    k = max(0, min(k, uncommitted - 1))
    counts.append(k)
    uncommitted = k
  return counts


@pytest.mark.parametrize('remask, expected', [
    (RemaskConfig(rule='mask_predict', replacement='initial'), _mask_predict_counts),
    (RemaskConfig(rule='cosine', replacement='initial'), _cosine_counts),
])
def test_mask_counts_per_iteration_follow_schedule(remask, expected):
  big_t = 4
  config = rd.RefineConfig(num_iterations=big_t, canvas_init='mask', remask=remask,
                           return_history=True)
  tokens, aux = _decode(CopyOracle(), config)
  counts = _mask_counts(aux, len(SOURCES))
  for r, row in enumerate(SOURCES):
    n = int((row > 0).sum())  # editable positions: the EOS slot is fixed
    np.testing.assert_array_equal(counts[r], expected(n, big_t), err_msg=f'row {r}')
  np.testing.assert_array_equal(tokens, _reference())


def test_threshold_commits_one_per_iteration_and_terminates():
  # Scale 2 over 96 ids: confidence ~7% < tau, so exactly one commit per iteration.
  oracle = CopyOracle(base=2.0, slope=0.01)
  config = rd.RefineConfig(num_iterations=L, canvas_init='mask',
                           remask=RemaskConfig(rule='threshold', threshold=0.9),
                           return_history=True)
  tokens, aux = _decode(oracle, config)
  n_edit = (SOURCES > 0).sum(1)
  np.testing.assert_array_equal(aux['iterations'], n_edit)
  assert int(aux['iterations'].max()) <= L
  np.testing.assert_array_equal(tokens, _reference())
  counts = _mask_counts(aux, len(SOURCES))
  for r, n in enumerate(n_edit):
    np.testing.assert_array_equal(counts[r, :n], n - 1 - np.arange(n))


def test_reranker_and_sum_scoring_pick_candidates():
  config = rd.RefineConfig(num_iterations=1, canvas_init='mask', length_beam=3,
                           scoring='sum', clamp_eos=False, return_all_candidates=True)

  def prefer_short(params, enc, candidates):
    del params
    assert enc.shape[0] == candidates.shape[0] and candidates.ndim == 3  # [B, S], [B, N, W]
    return -jnp.sum(candidates > 0, axis=2).astype(jnp.float32)

  _, aux = _decode(CopyOracle(), config, reranker=prefer_short)
  lengths = (np.asarray(aux['candidates']) > 0).sum(-1)
  best = np.asarray(aux['best_candidate'])
  np.testing.assert_array_equal(lengths[np.arange(3), best], lengths.min(1))
  np.testing.assert_allclose(aux['scores'], -lengths.min(1))
  # One candidate per source: the reranker could not change the output and is not run.
  calls = []
  _, aux = _decode(CopyOracle(), dataclasses.replace(config, length_beam=1),
                   reranker=lambda *a: calls.append(1) or prefer_short(*a))
  assert not calls and np.all(np.asarray(aux['scores']) != -lengths.min(1))


def test_teacher_fix_replaces_confident_proposals_of_real_pieces_only():
  tokens = jnp.array([[5, 6, 7, 1, 0], [8, 9, 1, 0, 0]], jnp.int32)
  proposed = jnp.array([[30, 6, 50, 4, 4], [4, 3, 4, 4, 4]], jnp.int32)
  log_p = jnp.log(jnp.array([[0.9, 0.9, 0.9, 0.9, 0.9], [0.6, 0.8, 0.9, 0.9, 0.9]]))
  fixed, count = rd.teacher_fix(tokens, proposed, log_p, 0.7, IDS)
  # Row 0: 5 -> 30; 6 is proposed as it is; 50 is no real piece; EOS and pad stay.
  # Row 1: 0.6 is below the threshold; 9 -> 3; EOS and pad stay.
  np.testing.assert_array_equal(fixed, [[30, 6, 7, 1, 0], [8, 3, 1, 0, 0]])
  np.testing.assert_array_equal(count, [1, 1])


class ShiftingTeacher:
  """A fake AR re-ranker: prefers short candidates and proposes token + 1 at position 0 with
  probability 0.9 and at position 1 with probability 0.5 (and each token as it is elsewhere)."""

  def __init__(self):
    self.calls = []

  def __call__(self, params, enc, candidates, proposals=False):
    del params, enc
    self.calls.append((candidates.shape, proposals))
    scores = -jnp.sum(candidates > 0, axis=2).astype(jnp.float32)
    if not proposals:
      return scores
    pos = jnp.arange(candidates.shape[2])
    proposed = jnp.where(pos < 2, candidates + 1, candidates)
    prob = jnp.where(pos == 0, 0.9, jnp.where(pos == 1, 0.5, 0.99))
    return scores, proposed, jnp.log(jnp.broadcast_to(prob, candidates.shape))


class EncodingTeacher(ShiftingTeacher):
  """`ShiftingTeacher` with an ``encode`` of its own: records how often it encodes and which
  calls were given the encoded sources."""

  def __init__(self):
    super().__init__()
    self.encodes = 0
    self.encoded = []

  def encode(self, params, enc):
    del params
    self.encodes += 1
    return enc

  def __call__(self, params, enc, candidates, proposals=False, encoded=None):
    self.encoded.append(encoded is not None)
    return super().__call__(params, enc, candidates, proposals)


@pytest.mark.parametrize('length_beam', [1, 3])
def test_the_teacher_fixes_the_chosen_output_from_its_re_ranking_pass(length_beam):
  config = rd.RefineConfig(num_iterations=2, canvas_init='mask', length_beam=length_beam,
                           teacher_fix_threshold=0.7)
  plain, plain_aux = _decode(CopyOracle(), dataclasses.replace(config, teacher_fix_threshold=0),
                             reranker=ShiftingTeacher())
  teacher = ShiftingTeacher()
  tokens, aux = _decode(CopyOracle(), config, reranker=teacher)
  # One teacher-forced pass over every candidate; it re-ranks only when there are several.
  assert teacher.calls == [((3, length_beam, L), True)]
  np.testing.assert_allclose(aux['scores'], plain_aux['scores'])
  np.testing.assert_array_equal(aux['best_candidate'], plain_aux['best_candidate'])
  want = np.asarray(plain).copy()
  want[:, 0] += 1  # only position 0 is proposed above 0.7
  np.testing.assert_array_equal(tokens, want)
  np.testing.assert_array_equal(aux['teacher_fixes'], [1, 1, 1])
  # A second round reads the fixed output (one candidate per source) and fixes it again.
  teacher = ShiftingTeacher()
  again, aux = _decode(CopyOracle(), dataclasses.replace(config, teacher_fix_rounds=2),
                       reranker=teacher)
  assert teacher.calls[1] == ((3, 1, L), True)
  np.testing.assert_array_equal(np.asarray(again)[:, 0], np.asarray(tokens)[:, 0] + 1)
  np.testing.assert_array_equal(np.asarray(again)[:, 1:], np.asarray(tokens)[:, 1:])
  np.testing.assert_array_equal(aux['teacher_fixes'], [2, 2, 2])
  # A teacher that can encode the sources on its own does so once for all its passes.
  teacher = EncodingTeacher()
  once, _ = _decode(CopyOracle(), dataclasses.replace(config, teacher_fix_rounds=2),
                    reranker=teacher)
  np.testing.assert_array_equal(once, again)
  assert teacher.encodes == 1 and teacher.encoded == [True, True]
  with pytest.raises(ValueError, match='no re-ranker was given'):
    _decode(CopyOracle(), config)


def test_given_lengths_and_errors():
  config = rd.RefineConfig(num_iterations=1, canvas_init='mask')
  tokens, aux = _decode(CopyOracle(), config, lengths=jnp.array([3, 3, 3]))
  np.testing.assert_array_equal(aux['candidate_lengths'][:, 0], [3, 3, 3])
  assert tokens[0, 2] == IDS.eos and tokens[0, 3] == 0
  # length_offset moves the length head's predictions (clipped to the canvas), not given ones.
  predicted = (SOURCES > 0).sum(1) + 1
  for offset in (2, -1, 20):
    shifted = dataclasses.replace(config, length_offset=offset, length_beam=3)
    _, aux = _decode(CopyOracle(), shifted)
    np.testing.assert_array_equal(aux['candidate_lengths'],
                                  np.clip(predicted[:, None] + offset + np.arange(-1, 2), 1, L))
    _, aux = _decode(CopyOracle(), shifted, lengths=jnp.array([3, 3, 3]))
    np.testing.assert_array_equal(aux['candidate_lengths'], [[2, 3, 4]] * 3)
  with pytest.raises(ValueError, match='lengths must have shape'):
    _decode(CopyOracle(), config, lengths=jnp.ones((3, 2), jnp.int32))
  few = special_ids(40, 40, 96)
  with pytest.raises(ValueError, match='mask_range_length'):
    rd.RefineConfig(canvas_init='mask_range').check_width(L, few)


@pytest.mark.parametrize('kwargs, match', [
    (dict(length_beam=2), 'odd'),
    (dict(num_iterations=0), 'num_iterations'),
    (dict(canvas_init='zeros'), 'canvas_init'),
    (dict(restarts=2, canvas_init='mask'), 'restarts'),
    (dict(temperature=-1.0), 'temperature'),
    (dict(scoring='max'), 'scoring'),
    (dict(canvas_buckets=(0, 4)), 'canvas_buckets'),
    (dict(prune_after=-1), 'prune_after'),
    (dict(length_offset=0.5), 'length_offset'),
    (dict(teacher_fix_threshold=1.0), 'teacher_fix_threshold'),
    (dict(teacher_fix_threshold=-0.1), 'teacher_fix_threshold'),
    (dict(teacher_fix_rounds=0), 'teacher_fix_rounds'),
])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rd.RefineConfig(**kwargs)


# ---------------------------------------------------------------------------------------
# A tiny Transformer: batch invariance, determinism, the speed paths change nothing.


@pytest.fixture(scope='module')
def tiny():
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=VOCAB, decoder_mode='bidirectional',
                        length_id=IDS.length, max_target_length=L, dropout_rate=0.0)
  model = Transformer(cfg)
  enc = jnp.ones((1, 10), jnp.int32)
  params = jax.jit(lambda k: nn.unbox(model.init(
      {'params': k}, enc, jnp.ones((1, L), jnp.int32), enable_dropout=False)['params']))(
          jax.random.PRNGKey(0))
  rng = np.random.RandomState(0)
  sources = rng.randint(3, 40, (8, 10)).astype(np.int32)
  for r, n in enumerate([10, 3, 7, 1, 9, 5, 10, 2]):
    sources[r, n:] = 0
  return rd.TransformerFns(model), params, jnp.asarray(sources)


def test_transformer_fns_sparse_logits_and_cross_kv_match_full(tiny):
  fns, params, sources = tiny
  canvas = jax.random.randint(jax.random.PRNGKey(1), (8, L), 3, 40)
  positions = jnp.tile(jnp.array([[5, 0, 11]]), (8, 1))

  @jax.jit
  def both(params, sources, canvas):
    encoded, _ = fns.encode(params, sources)
    full = fns.logits(params, encoded, sources, canvas)
    part = fns.logits(params, encoded, sources, canvas, positions,
                      fns.cross_kv(params, encoded, sources))
    # Candidates (3 per source) share their source's keys/values.
    cache = rd.repeat_rows(fns.cross_kv(params, encoded[:2], sources[:2]), 3)
    enc_rep, src_rep = jnp.repeat(encoded[:2], 3, 0), jnp.repeat(sources[:2], 3, 0)
    rep = fns.logits(params, enc_rep, src_rep, canvas[:6], None, cache)
    rep_plain = fns.logits(params, enc_rep, src_rep, canvas[:6])
    return full, part, rep, rep_plain

  full, part, rep, rep_plain = both(params, sources, canvas)
  np.testing.assert_allclose(part, jnp.take_along_axis(full, positions[..., None], 1),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(rep, rep_plain, rtol=1e-5, atol=1e-5)


def test_batch_invariance_determinism_and_speed_paths(tiny):
  fns, params, sources = tiny
  config = rd.RefineConfig(num_iterations=3, canvas_init='random', length_beam=3, restarts=2,
                           temperature=0.8, top_k=20,
                           remask=RemaskConfig(rule='mask_predict', update='all'))
  fn = jax.jit(lambda p, e, r: rd.refine_decode(fns, p, e, config=config, ids=IDS,
                                                max_length=L, rng=r))
  tokens, aux = fn(params, sources, jax.random.PRNGKey(7))
  again, _ = fn(params, sources, jax.random.PRNGKey(7))
  np.testing.assert_array_equal(tokens, again)
  other, _ = fn(params, sources, jax.random.PRNGKey(8))
  assert not bool(jnp.array_equal(tokens, other))
  alone, alone_aux = fn(params, sources[3:4], jax.random.PRNGKey(7))
  np.testing.assert_array_equal(alone[0], tokens[3])
  np.testing.assert_allclose(alone_aux['candidate_scores'][0], aux['candidate_scores'][3],
                             rtol=1e-5, atol=1e-6)
  # Well-formed output: nothing after the first EOS, no special ids.
  toks = np.asarray(tokens)
  for row in toks:
    eos = np.nonzero(row == IDS.eos)[0]
    if len(eos):
      assert not row[eos[0] + 1:].any()
    assert not (row >= 40).any()


def test_sparse_logits_buckets_and_cross_kv_do_not_change_outputs(tiny):
  fns, params, sources = tiny
  base = rd.RefineConfig(num_iterations=4, canvas_init='mask', top_k_lengths=2,
                         remask=RemaskConfig(rule='mask_predict'), return_history=True)
  plain = dataclasses.replace(base, sparse_logits=False, reuse_cross_kv=False)
  fast = dataclasses.replace(base, canvas_buckets=(8,))
  assert rd.sparse_width(base, L) == 9
  outs = []
  for config in (plain, fast):
    tokens, aux = jax.jit(lambda p, e, c=config: rd.refine_decode(
        fns, p, e, config=c, ids=IDS, max_length=L))(params, sources[:4])
    outs.append((tokens, aux))
  np.testing.assert_array_equal(outs[0][0], outs[1][0])
  np.testing.assert_array_equal(outs[0][1]['history_tokens'], outs[1][1]['history_tokens'])
  np.testing.assert_allclose(outs[0][1]['candidate_scores'], outs[1][1]['candidate_scores'],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(outs[0][1]['candidate_iterations'],
                                outs[1][1]['candidate_iterations'])


def test_logits_sum_and_stutter_after_last_run(tiny):
  fns, params, sources = tiny
  config = rd.RefineConfig(
      num_iterations=3, canvas_init='mask_range',
      remask=RemaskConfig(rule='stutter', stutter_after_last=True, replacement='logits_sum'))
  tokens, aux = jax.jit(lambda p, e: rd.refine_decode(fns, p, e, config=config, ids=IDS,
                                                      max_length=L))(params, sources[:2])
  toks = np.asarray(tokens)
  assert toks.shape == (2, L) and not (toks >= 40).any()
  assert (np.asarray(aux['iterations']) <= 3).all()


def test_collapse_repeats_drops_tokens_equal_to_the_one_before():
  tokens = jnp.array([[5, 5, 6, 5, 5, 5, 1, 0],
                      [7, 8, 9, 1, 0, 0, 0, 0],
                      [4, 4, 4, 4, 4, 4, 4, 1]], jnp.int32)
  kept, removed = rd.collapse_repeats(tokens, IDS)
  np.testing.assert_array_equal(kept, [[5, 6, 5, 1, 0, 0, 0, 0],
                                       [7, 8, 9, 1, 0, 0, 0, 0],
                                       [4, 1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(removed, [3, 0, 6])


def test_collapse_repeats_merges_the_chosen_output_only(tiny):
  fns, params, sources = tiny
  base = rd.RefineConfig(num_iterations=2, canvas_init='mask_range', length_beam=3,
                         remask=RemaskConfig(rule='mask_predict'))
  decode = lambda c: jax.jit(lambda p, e: rd.refine_decode(
      fns, p, e, config=c, ids=IDS, max_length=L))(params, sources)
  plain, plain_aux = decode(base)
  merged, aux = decode(dataclasses.replace(base, collapse_repeats=True))
  expected, counts = [], []
  for row in np.asarray(plain):
    real = row[(row != IDS.pad) & (row != IDS.eos)]
    keep = np.concatenate([[True], real[1:] != real[:-1]]) if len(real) else np.zeros(0, bool)
    out = list(real[keep]) + [IDS.eos]
    expected.append(out + [0] * (L - len(out)))
    counts.append(int((~keep).sum()))
  assert sum(counts) > 0  # the untrained network repeats itself
  np.testing.assert_array_equal(merged, expected)
  np.testing.assert_array_equal(aux['repeats_removed'], counts)
  np.testing.assert_array_equal(aux['scores'], plain_aux['scores'])  # chosen before the merge


def test_repeat_losers_keep_kept_tokens_and_the_more_confident_proposal():
  f, t = False, True
  tokens = jnp.array([[5, 5, 6, 7, 7, 7, 1, 0],
                      [4, 4, 8, 8, 9, 1, 1, 0]], jnp.int32)
  conf = jnp.array([[-1., -2., -1., -3., -1., -2., 0., 0.],
                    [-1., -1., -2., -2., -1., -1., 0., 0.]])
  predicted = jnp.array([[t, t, t, t, t, t, f, f],
                         [t, t, f, t, t, t, f, f]])
  editable = jnp.array([[t, t, t, t, t, t, f, f],
                        [t, t, t, t, t, t, f, f]])
  lose = rd._repeat_losers(tokens, conf, predicted, editable)  # pylint: disable=protected-access
  np.testing.assert_array_equal(lose, [
      # 5 5: the less confident second; 7 7 7: the first and the last give way to the middle
      [f, t, f, t, f, t, f, f],
      # 4 4 tie: the left; 8 8: the kept 8 stays; EOS (not editable) repeats nothing
      [t, f, f, t, f, f, f, f]])


@dataclasses.dataclass(frozen=True)
class StutterOracle(CopyOracle):
  """The copy oracle, except that every third position (1, 4, ...) most likes its left
  neighbour's reference token, less confidently, with its own as the runner-up."""

  def logits(self, params, encoded, encoder_tokens, canvas, positions=None, cross_kv=None):
    full = super().logits(params, encoded, encoder_tokens, canvas, None, cross_kv)
    ref = jnp.argmax(full, axis=-1)  # [N, W]
    pos = jnp.arange(canvas.shape[1])[None, :]
    left = jnp.concatenate([ref[:, :1], ref[:, :-1]], axis=1)
    stutter = (pos % 3 == 1) & (left != IDS.eos) & (left != IDS.pad) & (ref != IDS.eos) & (
        ref != IDS.pad)
    out = jnp.where(stutter[..., None],
                    4.0 * jax.nn.one_hot(left, self.vocab_size) +
                    3.5 * jax.nn.one_hot(ref, self.vocab_size), full)
    if positions is not None:
      out = jnp.take_along_axis(out, positions[..., None], axis=1)
    return out


@pytest.mark.parametrize('remask,passes', [(RemaskConfig(), 1),
                                           (RemaskConfig(rule='mask_predict'), 3)])
def test_avoid_repeats_writes_the_runner_up_instead_of_a_repeat(remask, passes):
  config = rd.RefineConfig(num_iterations=passes, canvas_init='mask', remask=remask)
  stuttered, _ = _decode(StutterOracle(), config)
  assert not np.array_equal(stuttered, _reference())  # the oracle's own argmax repeats
  fixed, aux = _decode(StutterOracle(), dataclasses.replace(config, avoid_repeats=True))
  np.testing.assert_array_equal(fixed, _reference())
  assert np.isfinite(np.asarray(aux['scores'])).all()
  with pytest.raises(ValueError, match='avoid_repeats'):
    dataclasses.replace(config, avoid_repeats=True, temperature=1.0)


def test_prune_after_keeps_the_best_proposal_and_refines_it_alone(tiny):
  # Oracle: only the true length proposes EOS where it belongs, so its pass-1 proposal wins.
  remask = RemaskConfig(rule='mask_predict', replacement='initial')
  config = rd.RefineConfig(num_iterations=3, canvas_init='mask', length_beam=3, remask=remask,
                           prune_after=1, return_all_candidates=True)
  tokens, aux = _decode(CopyOracle(), config)
  np.testing.assert_array_equal(tokens, _reference())
  np.testing.assert_array_equal(aux['best_candidate'], [1, 1, 1])
  np.testing.assert_array_equal(aux['candidate_iterations'], [[1, 3, 1]] * 3)
  with pytest.raises(ValueError, match='prune_after=1 keeps one candidate'):
    _decode(CopyOracle(), config, reranker=lambda p, e, t: jnp.zeros(t.shape[:2]))
  # A tiny network: the kept candidate decodes exactly as it does without pruning, and
  # pruning at or after the last pass changes nothing.
  fns, params, sources = tiny
  base = rd.RefineConfig(num_iterations=4, canvas_init='mask', length_beam=3, remask=remask,
                         return_all_candidates=True, return_history=True)
  outs = {}
  for prune in (0, 2, 4):
    outs[prune] = jax.jit(lambda p, e, c=dataclasses.replace(base, prune_after=prune): (
        rd.refine_decode(fns, p, e, config=c, ids=IDS, max_length=L)))(params, sources)
  full, pruned, late = outs[0][1], outs[2][1], outs[4][1]
  np.testing.assert_array_equal(outs[0][0], outs[4][0])
  np.testing.assert_array_equal(full['candidate_iterations'], late['candidate_iterations'])
  rows = np.arange(len(sources))
  best = np.asarray(pruned['best_candidate'])
  np.testing.assert_array_equal(outs[2][0], np.asarray(full['candidates'])[rows, best])
  np.testing.assert_allclose(pruned['scores'], np.asarray(full['candidate_scores'])[rows, best],
                             rtol=1e-5, atol=1e-5)
  iters = np.asarray(pruned['candidate_iterations'])
  others = np.ones_like(iters, bool)
  others[rows, best] = False
  assert (iters[others] <= 2).all()
  # A pruned candidate's history repeats its canvas of pass 2 after that pass.
  hist = np.asarray(pruned['history_tokens'])
  np.testing.assert_array_equal(hist[others][:, 2], hist[others][:, 1])
  np.testing.assert_array_equal(hist[rows, best], np.asarray(full['history_tokens'])[rows, best])
