"""Tests for padir.models: T5X contract, unrolled PaDIR stages, scoring, memorisation."""

import importlib
import sys

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from padir import losses
from padir import models
from padir import objectives
from padir import remasking
from padir import sampling
from padir.network import T5Config, Transformer
from padir.special_ids import special_ids

IDS = special_ids(num_real_pieces=24, extra_ids=8)
L_IN, L = 8, 8


def _pairs(n: int = 16, seed: int = 0, reverse: bool = True) -> dict[str, jnp.ndarray]:
  """Synthetic memorisation pairs: target = a permutation of the (reversed) source + EOS."""
  rng = np.random.default_rng(seed)
  lo, hi = IDS.random_token_range
  enc = np.zeros((n, L_IN), np.int32)
  tgt = np.zeros((n, L), np.int32)
  for i in range(n):
    length = rng.integers(3, L)
    src = rng.integers(lo, hi, length)
    enc[i, :length] = src
    out = src[::-1] if reverse else src
    tgt[i, :length] = lo + (out * 5 + 3) % (hi - lo)
    tgt[i, length] = IDS.eos
  return {'encoder_input_tokens': jnp.asarray(enc), 'decoder_target_tokens': jnp.asarray(tgt)}


def _padir_config(**kw) -> T5Config:
  kw = {'dropout_rate': 0.0, 'vocab_size': IDS.model_vocab_size, 'length_id': IDS.length, **kw}
  return T5Config.preset('tiny', decoder_mode='bidirectional', max_target_length=L, **kw)


def _ar_config(**kw) -> T5Config:
  kw = {'dropout_rate': 0.0, 'vocab_size': IDS.model_vocab_size, **kw}
  return T5Config.preset('tiny', decoder_mode='causal', **kw)


def _shapes(batch):
  return {k: v.shape for k, v in batch.items()}


BATCH = _pairs(4, seed=1)


@pytest.fixture(scope='module')
def padir2():
  """A 2-stage PaDIR model with the Mask-Predict rule between stages, and its params."""
  model = models.PadirModel(_padir_config(), IDS, num_train_stages=2,
                            remask=remasking.RemaskConfig(rule='mask_predict',
                                                          replacement='initial'),
                            corruption=objectives.CorruptionConfig(keep_prob=0.1,
                                                                   random_prob=0.1))
  params = model.get_initial_variables(jax.random.key(0), _shapes(BATCH)).params
  return model, params


# ----------------------------------------------------------------------------- contract


def test_initial_variables_are_unboxed_with_logical_axes():
  model = models.PadirModel(_padir_config(), IDS)
  params, axes = model.get_initial_variables(jax.random.key(0), _shapes(BATCH))
  leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(
      x, nn.LogicallyPartitioned))
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      jax.tree_util.tree_map(lambda _: 0, axes, is_leaf=lambda x: isinstance(x, jax.P)))
  assert tuple(axes['decoder']['logits_dense']) == ('embed', 'vocab')
  assert tuple(axes['length_embedding']) == ('length', 'embed')
  abstract = model.get_logical_axes(_shapes(BATCH))
  assert jax.tree_util.tree_leaves(abstract, is_leaf=lambda x: isinstance(x, jax.P)) == \
      jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, jax.P))


def test_ar_loss_and_score_batch_agree():
  model = models.EncoderDecoderModel(_ar_config(), IDS)
  params = model.get_initial_variables(jax.random.key(0), _shapes(BATCH)).params
  batch = dict(BATCH)
  loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
  targets = batch['decoder_target_tokens']
  logits = model.module.apply({'params': params}, batch['encoder_input_tokens'],
                              models.shift_right(targets), enable_dropout=False)
  expected = -jnp.sum(losses.token_log_probs(logits, targets) * (targets > 0)) / jnp.sum(
      targets > 0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  scores = jax.jit(model.score_batch)(params, batch)
  np.testing.assert_allclose(-jnp.sum(scores) / metrics['num_tokens'], loss, rtol=1e-5)
  # Explicit shifted inputs give the same loss as the derived ones.
  batch['decoder_input_tokens'] = models.shift_right(targets)
  np.testing.assert_allclose(jax.jit(model.loss_fn)(params, batch, None)[0], loss, rtol=1e-6)
  np.testing.assert_array_equal(models.shift_right(jnp.array([[4, 5, 1, 0]])), [[0, 4, 5, 1]])


def test_unrolled_stages(padir2):
  model, params = padir2
  rng = jax.random.key(7)
  out = jax.jit(lambda p, b, k: model.compute_stage_logits(p, b, k, False))(params, BATCH, rng)
  targets = np.asarray(BATCH['decoder_target_tokens'])
  assert out.canvases.shape == (2, 4, L)
  assert out.logits.shape == (2, 4, L, IDS.model_vocab_size)
  assert out.length_logits.shape == (4, L)
  np.testing.assert_array_equal(out.canvases[0], out.corruption.decoder_input_tokens)
  assert (np.asarray(out.canvases)[:, targets == 0] == 0).all()  # padding re-zeroed
  # Stage 1 = stage 0's argmax over real pieces + EOS through the decoder's rule (iteration 1
  # of 2), the gold EOS clamped as in refinement decoding.
  lo, hi = IDS.random_token_range
  vocab = np.arange(IDS.model_vocab_size)
  allowed = ((vocab >= lo) & (vocab < hi)) | (vocab == IDS.eos)
  restricted = jnp.where(allowed, out.logits[0], -1e9)
  proposed = jnp.argmax(restricted, -1)
  conf = sampling.log_prob_of(restricted, proposed)
  editable = (targets > 0) & (targets != IDS.eos)
  expected, rejected = remasking.remask(model.remask, proposed, conf, out.canvases[0],
                                        out.canvases[0], editable, 1, 2)
  np.testing.assert_array_equal(out.canvases[1], np.where(targets > 0, expected, 0))
  rejected = np.asarray(rejected)
  assert rejected.sum() > 0  # mask_predict rejects floor(n / 2) at t = 1
  np.testing.assert_array_equal(np.asarray(out.canvases[1])[rejected],
                                np.asarray(out.canvases[0])[rejected])
  assert (np.asarray(out.canvases)[:, targets == IDS.eos] == IDS.eos).all()


def test_commit_mode_keeps_committed_positions():
  # MaskGIT cosine rule (update 'commit') over 3 stages with a pure [MASK] corruption: a masked
  # position that took a real piece at stage 1 is committed and must not change at stage 2.
  model = models.PadirModel(_padir_config(), IDS, num_train_stages=3,
                            remask=remasking.RemaskConfig(rule='cosine', replacement='initial'),
                            corruption=objectives.CorruptionConfig(
                                noise_ratio_schedule='fixed', noise_ratio=1.0))
  params = model.get_initial_variables(jax.random.key(0), _shapes(BATCH)).params
  out = jax.jit(lambda p: model.compute_stage_logits(p, BATCH, jax.random.key(4), False))(params)
  c0, c1, c2 = (np.asarray(c) for c in out.canvases)
  masked = c0 == IDS.mask
  committed = masked & (c1 != IDS.mask)
  assert committed.any() and (masked & ~committed).any()  # cosine keeps some masked at t=1
  np.testing.assert_array_equal(c2[committed], c1[committed])


def test_stop_gradient_between_stages(padir2):
  model, params = padir2
  targets = BATCH['decoder_target_tokens']
  # loss_fn(rng=None) corrupts with a fixed key; record that corruption's stage canvases.
  out = jax.jit(lambda p: model.compute_stage_logits(p, BATCH, None, False))(params)
  assert (np.asarray(out.canvases[1]) != np.asarray(out.canvases[0])).any()

  def manual(p):
    """Per-stage losses on the recorded canvases, fed as constants."""
    enc = BATCH['encoder_input_tokens']
    total = 0.0
    for s in range(2):
      logits, length_logits = model.module.apply({'params': p}, enc, out.canvases[s],
                                                 enable_dropout=False,
                                                 method=Transformer.encode_and_decode)
      w = out.corruption.loss_weights if s == 0 else (targets > 0).astype(jnp.float32)
      total += model._token_loss(logits, targets, w)[0]
    return total + 0.1 * losses.length_loss(length_logits, losses.target_lengths(targets))[0]

  loss, grads = jax.jit(jax.value_and_grad(lambda p: model.loss_fn(p, BATCH, None)[0]))(params)
  loss_m, grads_m = jax.jit(jax.value_and_grad(manual))(params)
  np.testing.assert_allclose(loss, loss_m, rtol=1e-5)
  for g, gm in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_m)):
    np.testing.assert_allclose(g, gm, rtol=2e-4, atol=1e-6)


def test_loss_metrics(padir2):
  model, params = padir2
  loss, m = jax.jit(model.loss_fn)(params, BATCH, jax.random.key(2))
  for s in range(2):
    assert f'loss_stage_{s}' in m and f'accuracy_stage_{s}' in m
  np.testing.assert_allclose(m['token_loss'], sum(m[f'loss_stage_{s}'] for s in range(2)),
                             rtol=1e-5)
  np.testing.assert_allclose(loss, m['token_loss'] + 0.1 * m['length_loss'], rtol=1e-5)
  assert 0.0 <= float(m['noise_ratio']) <= 1.0 and float(m['num_examples']) == 4.0


def test_fresh_dropout_key_per_stage():
  # Reject every position and replace it by the initial canvas: all stages read the same canvas,
  # so only the dropout key can make their logits differ.
  remask = remasking.RemaskConfig(rule='constant', count=L, replacement='initial')
  model = models.PadirModel(_padir_config(dropout_rate=0.3), IDS, num_train_stages=2,
                            remask=remask)
  params = model.get_initial_variables(jax.random.key(0), _shapes(BATCH)).params
  run = jax.jit(lambda p, k, drop: model.compute_stage_logits(p, BATCH, k, drop),
                static_argnums=2)
  out = run(params, jax.random.key(1), True)
  np.testing.assert_array_equal(out.canvases[0], out.canvases[1])
  assert not np.allclose(out.logits[0], out.logits[1])
  out = run(params, jax.random.key(1), False)
  np.testing.assert_allclose(out.logits[0], out.logits[1], rtol=1e-6)


def test_padir_score_batch_is_masked_canvas_pll(padir2):
  model, params = padir2
  scores, inter = jax.jit(lambda p, b: model.score_batch(p, b, return_intermediates=True))(
      params, BATCH)
  targets = BATCH['decoder_target_tokens']
  canvas = objectives.masked_canvas('mask', IDS, jax.random.key(0), targets)
  logits, length_logits = model.module.apply({'params': params}, BATCH['encoder_input_tokens'],
                                             canvas, enable_dropout=False,
                                             method=Transformer.encode_and_decode)
  expected = jnp.sum(losses.token_log_probs(logits, targets) * (targets > 0), -1)
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  assert inter['token_scores'].shape == targets.shape
  lengths = losses.target_lengths(targets)
  np.testing.assert_allclose(inter['length_log_prob'],
                             jax.nn.log_softmax(length_logits)[jnp.arange(4), lengths - 1],
                             rtol=1e-5)


# ----------------------------------------------------------------------------- configuration


def test_bad_model_configuration():
  with pytest.raises(ValueError, match='decoder_mode'):
    models.PadirModel(_ar_config(), IDS)
  with pytest.raises(ValueError, match='decoder_mode'):
    models.EncoderDecoderModel(_padir_config(), IDS)
  with pytest.raises(ValueError, match='num_train_stages'):
    models.PadirModel(_padir_config(), IDS, num_train_stages=0)
  with pytest.raises(ValueError, match='loss_normalizing_factor'):
    models.PadirModel(_padir_config(), IDS, loss_normalizing_factor='per_token')
  with pytest.raises(ValueError, match='label_smoothing'):
    models.EncoderDecoderModel(_ar_config(), IDS, label_smoothing=1.5)
  with pytest.raises(ValueError, match='length_id'):
    models.PadirModel(_padir_config(length_id=IDS.mask), IDS)
  with pytest.raises(ValueError, match='vocab_size'):
    models.PadirModel(_padir_config(vocab_size=16, length_id=3), IDS)
  model = models.PadirModel(_padir_config(), IDS)
  with pytest.raises(ValueError, match='decoder_target_tokens'):
    model.loss_fn({}, {'encoder_input_tokens': BATCH['encoder_input_tokens']}, None)
  with pytest.raises(ValueError, match='max_target_length'):
    model.loss_fn({}, {'encoder_input_tokens': BATCH['encoder_input_tokens'],
                       'decoder_target_tokens': jnp.ones((4, L + 2), jnp.int32)}, None)
  masked_range = models.PadirModel(
      _padir_config(), IDS,
      corruption=objectives.CorruptionConfig(decoder_input_scheme='mask_range'))
  with pytest.raises(ValueError, match='mask_range_length'):
    masked_range.get_initial_variables(jax.random.key(0), _shapes(BATCH))


def test_gin_configures_models_and_survives_reimport():
  gin.clear_config()
  try:
    gin.parse_config(['padir.models.PadirModel.num_train_stages = 2',
                      'PadirModel.length_loss_weight = 0.5',
                      'padir.objectives.CorruptionConfig.noise_ratio_schedule = "cosine"'])
    model = models.PadirModel(_padir_config(), IDS)
    assert model.num_train_stages == 2 and model.length_loss_weight == 0.5
    assert model.corruption.noise_ratio_schedule == 'cosine'
    saved = sys.modules.pop('padir.models')
    try:
      fresh = importlib.import_module('padir.models')
      assert fresh.PadirModel(_padir_config(), IDS).num_train_stages == 2
    finally:
      sys.modules['padir.models'] = saved
  finally:
    gin.clear_config()


# ----------------------------------------------------------------------------- learning


def _train(model, batch, steps: int, lr: float = 3e-3):
  params = model.get_initial_variables(jax.random.key(0), _shapes(batch)).params
  tx = optax.adam(lr)

  @jax.jit
  def train_steps(params, opt_state, key):
    def body(i, carry):
      params, opt_state = carry
      grads, _ = jax.grad(model.loss_fn, has_aux=True)(params, batch,
                                                       jax.random.fold_in(key, i))
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    return jax.lax.fori_loop(0, steps, body, (params, opt_state))

  params, _ = train_steps(params, tx.init(params), jax.random.key(1))
  return params


def test_ar_memorises_16_pairs():
  batch = _pairs(16)
  model = models.EncoderDecoderModel(_ar_config(), IDS)
  params = _train(model, batch, steps=200)
  targets = batch['decoder_target_tokens']
  logits = model.module.apply({'params': params}, batch['encoder_input_tokens'],
                              models.shift_right(targets), enable_dropout=False)
  correct = (jnp.argmax(logits, -1) == targets) & (targets > 0)
  accuracy = float(jnp.sum(correct) / jnp.sum(targets > 0))
  assert accuracy >= 0.95, accuracy


def test_padir_memorises_16_pairs_from_masked_canvas():
  batch = _pairs(16)
  # Positional attention gives the bidirectional decoder absolute positions; with relative
  # biases only, a canvas of identical [MASK] tokens takes several times more steps.
  model = models.PadirModel(_padir_config(positional_attention=True), IDS, num_train_stages=2)
  params = _train(model, batch, steps=200)
  targets = batch['decoder_target_tokens']
  canvas = objectives.masked_canvas('mask', IDS, jax.random.key(0), targets)
  logits = model.module.apply({'params': params}, batch['encoder_input_tokens'], canvas,
                              enable_dropout=False)
  scored = (targets > 0) & (targets != IDS.eos)  # EOS is given by the canvas
  correct = (jnp.argmax(logits, -1) == targets) & scored
  accuracy = float(jnp.sum(correct) / jnp.sum(scored))
  assert accuracy >= 0.95, accuracy
