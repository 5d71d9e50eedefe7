"""Tests for padir.init_from: an AR checkpoint starts a PaDIR model (and back)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import checkpoints
from padir import init_from
from padir import layers
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


def _save_random_hf_t5(path):
  """A small random T5.1.1-style HF checkpoint (gated-GELU, untied head), as test_hf does."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      feed_forward_proj='gated-gelu', tie_word_embeddings=False, dropout_rate=0.0,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.save_pretrained(path)
  return model


def test_hf_initialised_padir_encoder_equals_the_hf_encoder(tmp_path):
  """Before training, a PaDIR model started from a HF T5 computes the HF encoder's outputs."""
  torch = pytest.importorskip('torch')
  from padir import hf  # pylint: disable=g-import-not-at-top
  hf_model = _save_random_hf_t5(tmp_path)
  causal, _ = hf.load_t5(tmp_path, dropout_rate=0.0)
  padir_cfg = causal.replace(decoder_mode='bidirectional', length_head='pooled', length_id=127,
                             max_target_length=8)
  enc = np.array([[5, 6, 7, 8, 9, 1], [10, 11, 1, 0, 0, 0]], np.int32)
  fresh = nn.unbox(Transformer(padir_cfg).init(jax.random.key(3), enc, DEC,
                                               enable_dropout=False)['params'])
  params, summary = init_from.init_params(str(tmp_path), fresh, network_config=padir_cfg)
  assert summary.kind == 'huggingface' and summary.fresh == ('length_offset_embedding',)
  ours, length_logits = Transformer(padir_cfg).apply({'params': params}, enc,
                                                     enable_dropout=False,
                                                     method=Transformer.encode)
  with torch.no_grad():
    theirs = hf_model.encoder(input_ids=torch.tensor(enc, dtype=torch.long),
                              attention_mask=torch.tensor(enc > 0, dtype=torch.long)
                              ).last_hidden_state.numpy()
  real = enc > 0
  np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-4, rtol=1e-4)
  assert length_logits.shape == (2, 8)
  # Another architecture or vocabulary is refused before anything is copied.
  with pytest.raises(ValueError, match=r'mlp_dim: 48 in the checkpoint, 64 in the model'):
    init_from.init_params(str(tmp_path), fresh, network_config=padir_cfg.replace(mlp_dim=64))


def test_hf_vocabulary_must_be_the_checkpoints(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  bible = vocab.load_tokenizer('bible')
  shutil.copy(bible.spec.path, tmp_path / 'spiece.model')
  init_from.check_hf_vocabulary(str(tmp_path), bible)  # the same file: accepted
  with pytest.raises(ValueError, match=r'is not the checkpoint\'s .*spiece.model.*VOCABULARY'):
    init_from.check_hf_vocabulary(str(tmp_path), vocab.load_tokenizer('byte'))


def test_relative_positions_are_reread_for_the_decoder_mode():
  n, max_distance = 32, 128
  causal = np.random.default_rng(0).normal(size=(4, n))
  both = init_from.adapt_relative_positions(causal, False, True, max_distance)
  # The bucket of a relative position in each mode: the bias a decoder adds at that position.
  rel = np.arange(-40, 41)
  bucket_c = np.asarray(layers.relative_position_bucket(-np.abs(rel), False, n, max_distance))
  bucket_b = np.asarray(layers.relative_position_bucket(rel, True, n, max_distance))
  exact = np.abs(rel) < n // 4  # the bidirectional buckets that hold single distances
  # Past and future at distance d both get the causal decoder's bias for d in the past.
  np.testing.assert_array_equal(both[:, bucket_b[exact]], causal[:, bucket_c[exact]])
  # Further out every bucket takes the bias of the nearest distance it holds.
  assert both[0, bucket_b[rel == 12][0]] == causal[0, bucket_c[rel == 12][0]]
  # Back to causal: the exact past buckets come back unchanged.
  back = init_from.adapt_relative_positions(both, True, False, max_distance)
  np.testing.assert_array_equal(back[:, :n // 4], causal[:, :n // 4])


def test_init_params_rereads_the_decoder_positions_of_a_causal_source(tmp_path):
  ar_cfg, padir_cfg = _configs()
  ar = _params(ar_cfg, 0)
  mgr = checkpoints.CheckpointManager(str(tmp_path), keep=1, async_save=False)
  meta = checkpoints.make_metadata(3, None, ar, extra={'network_config': {'decoder_mode': 'causal'}})
  mgr.save(3, ar, {'count': jnp.zeros((), jnp.int32)}, None, metadata=meta)
  mgr.close()
  merged, summary = init_from.init_params(str(tmp_path), _params(padir_cfg, 1),
                                          network_config=padir_cfg)
  key = 'decoder/relpos_bias/rel_embedding'
  assert summary.adapted == (key,) and 'relative positions re-read' in summary.describe()
  expected = init_from.adapt_relative_positions(
      ar['decoder']['relpos_bias']['rel_embedding'], False, True,
      padir_cfg.relative_attention_max_distance)
  np.testing.assert_allclose(np.asarray(merged['decoder']['relpos_bias']['rel_embedding']),
                             expected)
  # The encoder's table is the same in both modes: copied as is.
  np.testing.assert_array_equal(np.asarray(merged['encoder']['relpos_bias']['rel_embedding']),
                                np.asarray(ar['encoder']['relpos_bias']['rel_embedding']))
  # Into a causal model nothing is re-read.
  _, same = init_from.init_params(str(tmp_path), _params(ar_cfg, 1), network_config=ar_cfg)
  assert same.adapted == ()
