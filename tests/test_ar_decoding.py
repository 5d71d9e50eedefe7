"""Tests for padir.ar_decoding: KV-cache greedy, beam search, sampling, EOS and mixed lengths."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import ar_decoding as ad
from padir.network import T5Config, Transformer

L = 10
VOCAB = 64


@pytest.fixture(scope='module')
def tiny():
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=VOCAB, decoder_mode='causal', dropout_rate=0.0)
  model = Transformer(cfg)
  rng = np.random.RandomState(0)
  sources = rng.randint(3, VOCAB, (4, 9)).astype(np.int32)
  for r, n in enumerate([9, 4, 6, 2]):  # a batch of mixed source lengths
    sources[r, n:] = 0
  params = jax.jit(lambda k: nn.unbox(model.init(
      {'params': k}, jnp.ones((1, 9), jnp.int32), jnp.ones((1, L), jnp.int32),
      enable_dropout=False)['params']))(jax.random.PRNGKey(0))
  return ad.ARFns(model), params, jnp.asarray(sources)


@functools.lru_cache(maxsize=None)
def _jitted(fns, config):
  return jax.jit(lambda p, e, r: ad.ar_decode(fns, p, e, max_length=L, config=config, rng=r))


def _run(fns, params, sources, config, rng=None):
  return _jitted(fns, config)(params, sources,
                              rng if rng is not None else jax.random.PRNGKey(0))


_seq_log_prob = jax.jit(ad.sequence_log_prob, static_argnums=0)


def test_cache_greedy_equals_full_forward_greedy_and_beam_one(tiny):
  fns, params, sources = tiny
  greedy, aux = _run(fns, params, sources, ad.ARConfig())

  @jax.jit
  def full_forward_greedy(p, e):
    def body(i, out):
      logits = fns.full_logits(p, e, jnp.pad(out[:, :-1], ((0, 0), (1, 0))))
      return out.at[:, i].set(jnp.argmax(logits[:, i], -1).astype(jnp.int32))
    out = jax.lax.fori_loop(0, L, body, jnp.zeros((e.shape[0], L), jnp.int32))
    return ad._finish(out, 1)

  np.testing.assert_array_equal(greedy, full_forward_greedy(params, sources))
  np.testing.assert_allclose(aux['scores'], _seq_log_prob(fns, params, sources, greedy),
                             rtol=1e-4)
  beam1, baux = _run(fns, params, sources,
                     ad.ARConfig(method='beam', beam_size=1, length_penalty=0.0))
  np.testing.assert_array_equal(beam1, greedy)
  np.testing.assert_allclose(baux['scores'], aux['scores'], rtol=1e-4)
  # Without the score: the same tokens, no scores in aux.
  unscored, uaux = _run(fns, params, sources, ad.ARConfig(score=False))
  np.testing.assert_array_equal(unscored, greedy)
  assert 'scores' not in uaux
  np.testing.assert_array_equal(uaux['lengths'], aux['lengths'])
  # Low-temperature sampling is greedy; a fixed rng repeats itself.
  cold, _ = _run(fns, params, sources, ad.ARConfig(method='sample', temperature=1e-4))
  np.testing.assert_array_equal(cold, greedy)
  warm = ad.ARConfig(method='sample', temperature=1.5, top_p=0.95)
  s1, _ = _run(fns, params, sources, warm, jax.random.PRNGKey(5))
  s2, _ = _run(fns, params, sources, warm, jax.random.PRNGKey(5))
  s3, _ = _run(fns, params, sources, warm, jax.random.PRNGKey(6))
  np.testing.assert_array_equal(s1, s2)
  assert not bool(jnp.array_equal(s1, s3))


def test_candidate_log_probs_encode_once_and_ignore_the_width(tiny):
  """The reranker's [B, N, W] scores (and `sequence_log_prob`'s) equal a full forward pass."""
  fns, params, sources = tiny
  rng = np.random.RandomState(1)
  cands = rng.randint(3, VOCAB, (4, 3, L)).astype(np.int32)
  ends = rng.randint(2, 7, (4, 3))  # every candidate ends (EOS) within 7 positions
  for b in range(4):
    for n in range(3):
      cands[b, n, ends[b, n]] = 1
      cands[b, n, ends[b, n] + 1:] = 0
  def full_forward(targets):  # the whole network at full width, one candidate per source
    logits = fns.full_logits(params, sources, jnp.pad(targets[:, :-1], ((0, 0), (1, 0))))
    lp = jax.nn.log_softmax(logits, -1)
    picked = jnp.take_along_axis(lp, targets[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(targets > 0, picked, 0.0), axis=1)

  want = np.stack([full_forward(jnp.asarray(cands[:, n])) for n in range(3)], axis=1)  # [B, N]
  np.testing.assert_allclose(_seq_log_prob(fns, params, sources, jnp.asarray(cands[:, 0])),
                             want[:, 0], rtol=1e-5)
  score = jax.jit(ad.make_reranker(fns))
  np.testing.assert_allclose(score(params, sources, jnp.asarray(cands)), want, rtol=1e-5)
  # Cut to a narrower canvas that still holds every candidate: the same scores.
  np.testing.assert_allclose(score(params, sources, jnp.asarray(cands[:, :, :8])), want,
                             rtol=1e-5)
  # With proposals: the same scores, and at every position the full forward pass's own most
  # likely token given the candidate's tokens before it, with its log-probability.
  sums, proposed, proposed_lp = jax.jit(ad.make_reranker(fns), static_argnums=3)(
      params, sources, jnp.asarray(cands), True)
  np.testing.assert_allclose(sums, want, rtol=1e-5)
  # Encoder states computed once (reranker.encode) and passed in: the same scores.
  reranker = ad.make_reranker(fns)
  encoded = reranker.encode(params, sources)
  np.testing.assert_allclose(reranker(params, sources, jnp.asarray(cands), encoded=encoded),
                             want, rtol=1e-5)
  for n in range(3):
    targets = jnp.asarray(cands[:, n])
    lp = jax.nn.log_softmax(
        fns.full_logits(params, sources, jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))), -1)
    np.testing.assert_array_equal(proposed[:, n], jnp.argmax(lp, -1))
    np.testing.assert_allclose(proposed_lp[:, n], jnp.max(lp, -1), rtol=1e-5, atol=1e-6)


def test_beam_search_scores_are_consistent(tiny):
  fns, params, sources = tiny
  alpha = 0.6
  tokens, aux = _run(fns, params, sources, ad.ARConfig(method='beam', beam_size=4,
                                                       length_penalty=alpha))
  scores = np.asarray(aux['beam_scores'])
  assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
  beams = np.asarray(aux['beam_tokens'])
  for b in range(beams.shape[1]):
    lp = _seq_log_prob(fns, params, sources, jnp.asarray(beams[:, b]))
    n = (beams[:, b] > 0).sum(-1)
    has_eos = (beams[:, b] == 1).any(-1)
    penalty = ((5.0 + np.where(has_eos, n, L)) / 6.0)**alpha
    np.testing.assert_allclose(np.asarray(lp) / penalty, scores[:, b], rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(tokens, beams[:, 0])


@dataclasses.dataclass(frozen=True)
class ScriptedFns:
  """An AR 'network' whose step logits spell a fixed reference per source (its first token)."""
  refs: np.ndarray  # [R, L], row r is the reference of sources starting with token r

  def encode(self, params, encoder_tokens):
    return encoder_tokens[..., None].astype(jnp.float32)

  def init_cache(self, params, encoded, encoder_tokens, max_length):
    return {'index': jnp.zeros((), jnp.int32), 'row': encoder_tokens[:, 0]}

  def step(self, params, cache, encoded, encoder_tokens, tokens):
    ref = jnp.asarray(self.refs)[cache['row'], cache['index']]  # [B]
    logits = 8.0 * jax.nn.one_hot(ref, VOCAB) + 0.01 * jax.nn.one_hot(7, VOCAB)
    return logits, {'index': cache['index'] + 1, 'row': cache['row']}


def test_eos_handling_with_mixed_lengths():
  refs = np.zeros((4, L), np.int32)
  refs[1, :3] = [20, 21, 1]
  refs[2, :7] = [30, 31, 32, 33, 34, 35, 1]
  refs[3, :] = 40  # never ends: stops at max_length
  fns = ScriptedFns(refs)
  sources = jnp.array([[1, 5, 0], [2, 0, 0], [3, 9, 9]])
  expected = np.stack([refs[1], refs[2], refs[3]])
  for config in (ad.ARConfig(), ad.ARConfig(method='beam', beam_size=3)):
    tokens, aux = ad.ar_decode(fns, None, sources, max_length=L, config=config)
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(aux['lengths'], [3, 7, L])
  # min_length keeps EOS away: the scripted model's second choice (7) comes instead.
  tokens, _ = ad.ar_decode(fns, None, sources[:1], max_length=L, config=ad.ARConfig(
      method='beam', beam_size=2, min_length=5))
  np.testing.assert_array_equal(tokens[0, :3], [20, 21, 7])
  short = jnp.array([[1, 5], [2, 0]])
  tokens, aux = ad.ar_decode(fns, None, short, max_length=L)
  assert int(aux['steps']) == 7  # the loop stops once every row has its EOS


def test_reorder_cache_handles_scanned_layers_and_scalars():
  cache = {'decoder': {
      'index': jnp.array(3),
      'layers_0': {'self_attention': {'cached_key': jnp.arange(4)[:, None] * jnp.ones((4, 2))},
                   'encoder_decoder_attention': {'cached_key': jnp.arange(4.0)[:, None]}},
      'layers': {'self_attention': {'cached_key': jnp.arange(4.0)[None, :, None] *
                                    jnp.ones((2, 4, 3))}},
  }}
  out = ad.reorder_cache(cache, jnp.array([1, 1, 0, 3]))
  dec = out['decoder']
  assert int(dec['index']) == 3
  np.testing.assert_array_equal(dec['layers_0']['self_attention']['cached_key'][:, 0],
                                [1, 1, 0, 3])
  np.testing.assert_array_equal(dec['layers_0']['encoder_decoder_attention']['cached_key'][:, 0],
                                [0, 1, 2, 3])
  np.testing.assert_array_equal(dec['layers']['self_attention']['cached_key'][0, :, 0],
                                [1, 1, 0, 3])


@pytest.mark.parametrize('kwargs, match', [
    (dict(method='topk'), 'method'),
    (dict(beam_size=0), 'beam_size'),
    (dict(method='sample', temperature=0.0), 'temperature'),
    (dict(length_penalty=-1.0), 'length_penalty'),
    (dict(min_length=-1), 'min_length'),
    (dict(method='beam', score=False), 'score'),
    (dict(score=0), 'score'),
])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ad.ARConfig(**kwargs)


def test_repeat_ban_lists_the_ids_that_would_repeat_an_ngram():
  seqs = jnp.array([[5, 6, 7, 5, 6, 0, 0, 0],
                    [5, 5, 5, 0, 0, 0, 0, 0]], jnp.int32)
  # Row 0 at step 5: "5 6" ended at position 1 and was followed by 7: 7 is banned (3-grams).
  np.testing.assert_array_equal(ad.repeat_ban(seqs, jnp.int32(5), 3)[0], [0, 0, 7, 0, 0, 0, 0, 0])
  # Bigrams: after "6", position 2 followed a 6 with 7.
  np.testing.assert_array_equal(ad.repeat_ban(seqs, jnp.int32(5), 2)[0], [0, 0, 7, 0, 0, 0, 0, 0])
  # Unigrams: every id written so far.
  np.testing.assert_array_equal(ad.repeat_ban(seqs, jnp.int32(3), 1)[0], [5, 6, 7, 0, 0, 0, 0, 0])
  # Row 1 at step 3: "5 5" occurred before, followed by 5.
  np.testing.assert_array_equal(ad.repeat_ban(seqs, jnp.int32(3), 3)[1], [0, 0, 5, 0, 0, 0, 0, 0])
  # Too early for any complete n-gram.
  assert not np.asarray(ad.repeat_ban(seqs, jnp.int32(2), 3)).any()


def test_no_repeat_ngram_breaks_a_loop_greedy_and_beam():
  refs = np.zeros((2, L), np.int32)
  refs[1, :] = [20, 21, 22, 20, 21, 22, 20, 21, 22, 20]  # a model that loops
  fns = ScriptedFns(refs)
  sources = jnp.array([[1, 5]])
  for method in ('greedy', 'beam'):
    plain, _ = ad.ar_decode(fns, None, sources, max_length=L,
                            config=ad.ARConfig(method=method, beam_size=2))
    np.testing.assert_array_equal(plain[0], refs[1])
    tokens, aux = ad.ar_decode(fns, None, sources, max_length=L, config=ad.ARConfig(
        method=method, beam_size=2, no_repeat_ngram=3))
    out = np.asarray(tokens[0]).tolist()
    # "20 21" is followed by 22 once; the second time 22 would repeat "20 21 22", so the
    # scripted model's runner-up (7) is written instead.
    assert out[:6] == [20, 21, 22, 20, 21, 7], out
    grams = [tuple(out[i:i + 3]) for i in range(L - 2)]
    assert len(grams) == len(set(grams))
    if method == 'greedy':  # scores stay the model's own log-probabilities
      assert float(aux['scores'][0]) < 0.0
