"""Tests for padir.decoding: sharded decoders (1 device vs an 8-device mesh) and predict fns."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import decoding
from padir.network import T5Config, Transformer
from padir.special_ids import special_ids

IDS = special_ids(40, 40, 96)
L = 12


def _init(model, width):
  return jax.jit(lambda k: nn.unbox(model.init(
      {'params': k}, jnp.ones((1, 9), jnp.int32), jnp.ones((1, width), jnp.int32),
      enable_dropout=False)['params']))(jax.random.PRNGKey(0))


@pytest.fixture(scope='module')
def sources():
  rng = np.random.RandomState(1)
  src = rng.randint(3, 40, (6, 9)).astype(np.int32)  # 6 rows: padded to 8 on the mesh
  for r, n in enumerate([9, 2, 5, 7, 1, 4]):
    src[r, n:] = 0
  return src


def test_refine_decoder_same_on_one_device_and_eight_device_mesh(sources):
  from padir.partitioning import Partitioner  # pylint: disable=g-import-not-at-top
  assert len(jax.devices()) == 8
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=96, decoder_mode='bidirectional',
                        length_id=IDS.length, max_target_length=L, dropout_rate=0.0)
  model = Transformer(cfg)
  params = _init(model, L)
  config = decoding.RefineConfig(num_iterations=3, length_beam=3, temperature=0.5)
  single = decoding.refine_decoder(model, config, IDS, L)
  # 4-way data x 2-way tensor parallel; parameters sharded by the logical axis rules.
  part = Partitioner(mesh_shape=(4, 1, 2))
  logical = nn.get_partition_spec(jax.eval_shape(lambda: model.init(
      {'params': jax.random.PRNGKey(0)}, jnp.ones((1, 9), jnp.int32),
      jnp.ones((1, L), jnp.int32), enable_dropout=False))['params'])
  sharded = decoding.refine_decoder(
      model, config, IDS, L, mesh=part.mesh, batch_axes=('data', 'fsdp'),
      param_shardings=part.param_shardings(logical, params), logical_axis_rules=part.rules)
  assert sharded.batch_shards == 4
  key = jax.random.PRNGKey(3)
  t1, a1 = single(params, sources, key)
  t8, a8 = sharded(params, sources, key)
  assert t8.shape == (6, L)
  np.testing.assert_array_equal(t1, t8)
  np.testing.assert_allclose(a1['candidate_scores'], a8['candidate_scores'], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(a1['iterations'], a8['iterations'])
  with pytest.raises(ValueError, match='integer'):
    single(params, sources.astype(np.float32), key)


def test_ar_decoder_same_on_one_device_and_eight_device_mesh(sources):
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=96, decoder_mode='causal', dropout_rate=0.0)
  model = Transformer(cfg)
  params = _init(model, L)
  config = decoding.ARConfig(method='beam', beam_size=2)
  t1, a1 = decoding.ar_decoder(model, config, L)(params, sources)
  t8, a8 = decoding.ar_decoder(model, config, L, mesh=decoding.data_mesh())(params, sources)
  np.testing.assert_array_equal(t1, t8)
  np.testing.assert_allclose(a1['scores'], a8['scores'], rtol=1e-5, atol=1e-6)


def test_models_predict_batch_with_aux(sources):
  from padir import models  # pylint: disable=g-import-not-at-top
  shapes = {'encoder_input_tokens': (1, 9), 'decoder_target_tokens': (1, L)}
  pcfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=96, decoder_mode='bidirectional',
                         length_id=IDS.length, max_target_length=L, dropout_rate=0.0)
  padir_model = models.PadirModel(pcfg, IDS)
  ar_model = models.EncoderDecoderModel(pcfg.replace(decoder_mode='causal',
                                                     use_length_head=False), IDS)
  init = jax.jit(lambda m, k: m.get_initial_variables(k, shapes).params, static_argnums=0)
  p_params = init(padir_model, jax.random.PRNGKey(0))
  a_params = init(ar_model, jax.random.PRNGKey(1))
  targets = np.zeros((6, L), np.int32)
  for r, n in enumerate([3, 5, 1, 7, 2, 4]):
    targets[r, :n] = 7
    targets[r, n] = IDS.eos
  batch = {'encoder_input_tokens': jnp.asarray(sources),
           'decoder_target_tokens': jnp.asarray(targets)}

  @jax.jit
  def predict(p_params, a_params, batch):
    gold = padir_model.predict_batch_with_aux(
        p_params, batch, num_iterations=2, canvas_init='mask', use_gold_lengths=True)
    reranked = padir_model.predict_batch_with_aux(
        p_params, batch, jax.random.PRNGKey(2), length_beam=3, num_iterations=2,
        rerank_model=ar_model, rerank_params=a_params, return_all_candidates=True)
    greedy = ar_model.predict_batch_with_aux(a_params, batch)
    ar_scores = ar_model.score_batch(a_params, {
        'encoder_input_tokens': jnp.repeat(batch['encoder_input_tokens'], 3, 0),
        'decoder_target_tokens': reranked[1]['candidates'].reshape(-1, L)})
    return gold, reranked, greedy, ar_scores

  (gold, gold_aux), (reranked, rr_aux), (greedy, _), ar_scores = predict(p_params, a_params,
                                                                         batch)
  out_len = (np.asarray(gold) > 0).sum(1)
  np.testing.assert_array_equal(gold_aux['candidate_lengths'][:, 0], (targets > 0).sum(1))
  assert (out_len <= (targets > 0).sum(1)).all()
  # The re-ranked choice is the candidate the AR model scores best (mean log-prob).
  cands = np.asarray(rr_aux['candidates'])  # [B, 3, L]
  mean = np.asarray(ar_scores).reshape(6, 3) / np.maximum((cands > 0).sum(-1), 1)
  np.testing.assert_array_equal(rr_aux['best_candidate'], mean.argmax(1))
  assert greedy.shape == (6, L)
  with pytest.raises(ValueError, match='Unknown decode option'):
    padir_model.predict_batch_with_aux(p_params, batch, iterations=3)


def test_compiler_options_reach_the_decoders_compiled_inside_the_block(sources):
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1,
                        vocab_size=96, decoder_mode='bidirectional',
                        length_id=IDS.length, max_target_length=L, dropout_rate=0.0)
  model = Transformer(cfg)
  params = _init(model, L)
  config = decoding.RefineConfig(num_iterations=2, length_beam=1)
  default, _ = decoding.refine_decoder(model, config, IDS, L)(params, sources)
  with decoding.compiler_options(xla_backend_optimization_level=1, unused=None) as options:
    assert options == {'xla_backend_optimization_level': 1}   # None values are left out
    assert decoding.jit_options() == {'compiler_options': options}
    lower, _ = decoding.refine_decoder(model, config, IDS, L)(params, sources)
    with decoding.compiler_options(xla_no_such_option=True):
      # The options really reach XLA, which refuses one it does not know.
      with pytest.raises(Exception, match='xla_no_such_option'):
        decoding.ar_decoder(model, decoding.ARConfig(), L)(params, sources)
    assert decoding.jit_options() == {'compiler_options': options}   # the outer block again
  assert decoding.jit_options() == {}
  # Less LLVM optimisation: the same program, the same tokens.
  np.testing.assert_array_equal(default, lower)
