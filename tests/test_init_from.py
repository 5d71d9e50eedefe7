"""Tests for padir.init_from: an AR checkpoint starts a PaDIR model (and back)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import checkpoints
from padir import init_from
from padir.network import T5Config, Transformer

ENC = jnp.array([[5, 6, 7, 1, 0, 0], [5, 1, 0, 0, 0, 0]], jnp.int32)
DEC = jnp.ones((2, 8), jnp.int32)


def _params(config: T5Config, seed: int):
  return nn.unbox(Transformer(config).init(jax.random.key(seed), ENC, DEC,
                                           enable_dropout=False)['params'])


def _configs(length_head: str = 'pooled'):
  base = T5Config.preset('tiny', vocab_size=300, max_target_length=8, dropout_rate=0.0,
                         length_id=299, length_head=length_head)
  return base.replace(decoder_mode='causal'), base.replace(decoder_mode='bidirectional')


@pytest.mark.parametrize('length_head', ['pooled', 'slot'])
def test_ar_params_start_a_padir_model(length_head):
  ar_cfg, padir_cfg = _configs(length_head)
  ar, fresh = _params(ar_cfg, 0), _params(padir_cfg, 1)
  merged, copied, new, dropped = init_from.merge_params(ar, fresh)
  heads = {'pooled': ('length_offset_embedding',),
           'slot': ('length_embedding',)}[length_head]
  assert new == heads and dropped == ()
  flat_ar = init_from._flat(ar)  # pylint: disable=protected-access
  flat_merged = init_from._flat(merged)  # pylint: disable=protected-access
  assert copied == len(flat_ar) == len(flat_merged) - len(heads)
  for key, value in flat_ar.items():
    np.testing.assert_array_equal(np.asarray(flat_merged[key]), np.asarray(value))
  # The pooled head leaves the encoder as the AR model runs it: same encoder outputs.
  if length_head == 'pooled':
    enc_ar, _ = Transformer(ar_cfg).apply({'params': ar}, ENC, enable_dropout=False,
                                         method=Transformer.encode)
    enc_padir, logits = Transformer(padir_cfg).apply({'params': merged}, ENC,
                                                     enable_dropout=False,
                                                     method=Transformer.encode)
    np.testing.assert_allclose(np.asarray(enc_ar), np.asarray(enc_padir), atol=1e-6)
    assert logits.shape == (2, 8)
  # PaDIR -> AR drops the length head.
  back, _, new, dropped = init_from.merge_params(merged, _params(ar_cfg, 2))
  assert new == () and dropped == heads


def test_shape_mismatch_names_the_parameter():
  ar_cfg, padir_cfg = _configs()
  other = _params(padir_cfg.replace(emb_dim=96, num_heads=3), 0)
  with pytest.raises(ValueError, match=r'53 parameter\(s\) differ in shape \(decoder/decoder_norm'
                     r'/scale: \(96,\) in the source vs \(64,\)'):
    init_from.merge_params(other, _params(padir_cfg, 1), where='init_from')
  with pytest.raises(ValueError, match='shares no parameter'):
    init_from.merge_params({'x': jnp.zeros(3)}, _params(ar_cfg, 0))


def test_missing_source_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='does not exist; give a padir MODEL_DIR'):
    init_from.read_source(str(tmp_path / 'nowhere'))
  assert not init_from.is_hf_directory(str(tmp_path))
  (tmp_path / 'config.json').write_text('{}')
  (tmp_path / 'model.safetensors').write_bytes(b'')
  assert init_from.is_hf_directory(str(tmp_path))


def test_init_params_from_a_saved_ar_checkpoint(tmp_path):
  ar_cfg, padir_cfg = _configs()
  ar = _params(ar_cfg, 0)
  mgr = checkpoints.CheckpointManager(str(tmp_path), keep=1, async_save=False)
  mgr.save(7, ar, {'count': jnp.zeros((), jnp.int32)}, None,
           metadata=checkpoints.make_metadata(7, None, ar))
  mgr.close()
  merged, summary = init_from.init_params(str(tmp_path), _params(padir_cfg, 1))
  assert summary.kind == 'padir' and summary.step == 7
  assert summary.fresh == ('length_offset_embedding',)
  assert 'step 7' in summary.describe() and '1 new' in summary.describe()
  np.testing.assert_array_equal(np.asarray(merged['token_embedder']['embedding']),
                                np.asarray(ar['token_embedder']['embedding']))
