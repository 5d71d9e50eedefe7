"""Objective presets carry decoding defaults their training supports (gin/objectives)."""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import pytest

from padir import builders  # pylint: disable=unused-import  (gin registrations)
from padir import gin_utils
from padir import models
from padir import remasking
from padir.network import T5Config
from padir.refine_decoding import RefineConfig
from padir.remasking import RemaskConfig
from padir.special_ids import special_ids

from tests.test_models import _pairs, _train  # pylint: disable=unused-import

IDS = special_ids(num_real_pieces=24, extra_ids=8)
L = 8
PRESETS = {'padir': ('keep_all', 'all'), 'cmlm': ('mask_predict', 'masked'),
           'maskgit': ('cosine', 'commit'), 'mdlm': ('mask_predict', 'commit')}


def _preset_model(name: str) -> models.PadirModel:
  """A tiny PadirModel configured by ``gin/objectives/<name>.gin``."""
  gin.clear_config()
  gin_utils.parse_gin([f'gin/objectives/{name}.gin'],
                      ["VOCABULARY = 'byte'", "TASK_FEATURE_LENGTHS = {'inputs': 8, "
                       "'targets': 8}"], required=False, finalize=False)
  config = T5Config.preset('tiny', decoder_mode='bidirectional', max_target_length=L,
                           dropout_rate=0.0, vocab_size=IDS.model_vocab_size,
                           length_id=IDS.length, positional_attention=True)
  model = models.PadirModel(config, IDS)
  gin.clear_config()
  return model


def _accuracy(model, params, batch, iterations: int) -> float:
  config = dataclasses.replace(model.decoding_config(), num_iterations=iterations)
  tokens, _ = model.predict_batch_with_aux(params, batch, decode_config=config,
                                           use_gold_lengths=True)
  targets = batch['decoder_target_tokens']
  scored = (targets > 0) & (targets != IDS.eos)
  return float(jnp.sum((tokens == targets) & scored) / jnp.sum(scored))


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_preset_default_decoding_gains_from_more_passes(name):
  model = _preset_model(name)
  rule, update = PRESETS[name]
  default = model.decoding_config()
  assert default.remask.rule == rule and default.remask.effective_update == update
  assert default.num_iterations == 4
  batch = _pairs(16)
  params = _train(model, batch, steps=150)
  one, four = _accuracy(model, params, batch, 1), _accuracy(model, params, batch, 4)
  assert four >= one, (name, one, four)
  assert four >= 0.5, (name, one, four)


def test_masked_only_training_refuses_update_all():
  model = _preset_model('cmlm')
  keep_all = RefineConfig(remask=RemaskConfig(rule='keep_all'))
  with pytest.raises(ValueError, match="covers masked positions only.*mask_predict"):
    model.decoding_config(keep_all)
  batch = _pairs(2)
  params = model.get_initial_variables(jax.random.key(0),
                                       {k: v.shape for k, v in batch.items()}).params
  with pytest.raises(ValueError, match='allow_untrained_update'):
    model.predict_batch_with_aux(params, batch, decode_config=keep_all)
  tokens, _ = model.predict_batch_with_aux(
      params, batch, decode_config=dataclasses.replace(keep_all, allow_untrained_update=True))
  assert tokens.shape == batch['decoder_target_tokens'].shape
  # A mismatching default is refused when the model is built.
  with pytest.raises(ValueError, match='re-predicts every position'):
    models.PadirModel(model.network_config, IDS, corruption=model.corruption,
                      decoding=keep_all)


def test_default_decoding_without_a_preset_follows_the_training():
  config = T5Config.preset('tiny', decoder_mode='bidirectional', max_target_length=L,
                           vocab_size=IDS.model_vocab_size, length_id=IDS.length)
  from padir import objectives  # pylint: disable=g-import-not-at-top
  masked_only = models.PadirModel(config, IDS, corruption=objectives.CorruptionConfig())
  assert masked_only.decoding_config().remask.rule == 'mask_predict'
  assert masked_only.decoding_config().remask.replacement == 'initial'
  padir_like = models.PadirModel(config, IDS, corruption=objectives.CorruptionConfig(
      keep_prob=None, random_prob=None, loss_weighting='noise'))
  assert padir_like.decoding_config().remask.rule == 'keep_all'
  assert padir_like.decoding_config().canvas_init == 'mask'


@pytest.mark.parametrize('weighting,keep,rand,stages,expected', [
    ('mask', 0.0, 0.0, 1, ('masked', 'commit')),
    ('noise', 0.0, 0.0, 1, ('masked', 'commit')),
    ('noise', None, None, 1, remasking.UPDATES),
    ('noise', 0.0, 0.1, 1, remasking.UPDATES),
    ('all', 0.0, 0.0, 1, remasking.UPDATES),
    ('mask', 0.0, 0.0, 2, remasking.UPDATES),
    ('elbo', 0.0, 0.0, 1, ('masked', 'commit')),
])
def test_trained_updates(weighting, keep, rand, stages, expected):
  assert remasking.trained_updates(weighting, keep, rand, stages) == expected
