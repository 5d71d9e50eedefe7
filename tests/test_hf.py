"""Parity of padir.hf.load_t5 with transformers' T5ForConditionalGeneration (PyTorch, CPU)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from padir import hf  # pylint: disable=g-import-not-at-top
from padir.network import Transformer

V = 64


def _save_random_t5(path, feed_forward_proj, tie, safe=True):
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      feed_forward_proj=feed_forward_proj, tie_word_embeddings=tie, dropout_rate=0.0,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.save_pretrained(path, safe_serialization=safe)
  return model


def _greedy(model, params, enc, max_len):
  """Greedy decoding with padir's KV cache (stops each row at EOS, pads after)."""
  encoded, _ = model.apply({'params': params}, enc, enable_dropout=False,
                           method=Transformer.encode)
  batch = enc.shape[0]
  _, mut = model.apply({'params': params}, encoded, enc, jnp.zeros((batch, max_len), jnp.int32),
                       enable_dropout=False, decode=True, mutable=['cache'],
                       method=Transformer.decode)

  @jax.jit
  def run(cache):
    def body(i, state):
      cache, tok, out, done = state
      logits, mut = model.apply({'params': params, 'cache': cache}, encoded, enc, tok[:, None],
                                enable_dropout=False, decode=True, mutable=['cache'],
                                method=Transformer.decode)
      nxt = jnp.where(done, 0, jnp.argmax(logits[:, 0], -1).astype(jnp.int32))
      out = out.at[:, i].set(nxt)
      return mut['cache'], nxt, out, done | (nxt == 1)
    init = (cache, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, max_len), jnp.int32),
            jnp.zeros((batch,), bool))
    return jax.lax.fori_loop(0, max_len, body, init)[2]

  return np.asarray(run(mut['cache']))


@pytest.mark.parametrize('proj, tie, safe', [
    ('relu', True, True),          # original T5
    ('gated-gelu', False, False),  # T5.1.1 / mT5, untied head, pytorch_model.bin
])
def test_logits_and_greedy_match_transformers(tmp_path, proj, tie, safe):
  hf_model = _save_random_t5(tmp_path, proj, tie, safe)
  cfg, params = hf.load_t5(tmp_path)
  assert cfg.logits_via_embedding == tie
  assert cfg.num_decoder_layers == 3 and cfg.decoder_mode == 'causal'
  rng = np.random.default_rng(0)
  enc = rng.integers(3, V, (3, 9)).astype(np.int32)
  enc[1, 6:] = 0
  enc[2, 3:] = 0
  dec = rng.integers(3, V, (3, 7)).astype(np.int32)
  dec[:, 0] = 0
  model = Transformer(cfg)
  ours = np.asarray(model.apply({'params': params}, enc, dec, enable_dropout=False))
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.tensor(enc, dtype=torch.long),
                      attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                      decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)

  max_len = 12
  ours_tokens = _greedy(model, params, enc, max_len)
  with torch.no_grad():
    gen = hf_model.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                            attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                            max_new_tokens=max_len, do_sample=False, num_beams=1,
                            use_cache=False).numpy()
  gen = gen[:, 1:]  # drop the decoder start token
  for row in range(enc.shape[0]):
    theirs_row = list(gen[row])
    ours_row = list(ours_tokens[row, :len(theirs_row)])
    if 1 in theirs_row:
      cut = theirs_row.index(1) + 1
      theirs_row, ours_row = theirs_row[:cut], ours_row[:cut]
    assert ours_row == [int(t) for t in theirs_row], row


def test_imported_params_initialise_a_padir_model(tmp_path):
  _save_random_t5(tmp_path, 'gated-gelu', False)
  cfg, params = hf.load_t5(tmp_path, scan_layers=True)
  assert params['decoder']['layers']['mlp']['wo']['kernel'].shape == (3, 48, 32)
  padir_cfg = cfg.replace(decoder_mode='bidirectional', length_id=V - 3, max_target_length=10,
                          use_length_head=True)
  padir_params = hf.adapt_params(params, padir_cfg, jax.random.key(0))
  assert padir_params['length_embedding'].shape == (10, 32)
  np.testing.assert_array_equal(padir_params['token_embedder']['embedding'],
                                params['token_embedder']['embedding'])
  enc = jnp.array([[5, 6, 7, 1]], jnp.int32)
  logits, length_logits = Transformer(padir_cfg).apply(
      {'params': padir_params}, enc, jnp.array([[9, 9, 9, 1]], jnp.int32), enable_dropout=False,
      method=Transformer.encode_and_decode)
  assert logits.shape == (1, 4, V) and length_logits.shape == (1, 10)
  bad_cfg = padir_cfg.replace(emb_dim=16, num_heads=2)
  with pytest.raises(ValueError, match='shape'):
    hf.adapt_params(params, bad_cfg, jax.random.key(0))


def test_bad_checkpoints_are_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match='local directory'):
    hf.load_t5('https://huggingface.co/google/t5-v1_1-small')
  with pytest.raises(FileNotFoundError, match='config.json'):
    hf.load_t5(tmp_path)
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(ValueError, match='not valid JSON'):
    hf.load_t5(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'d_model': 8}))
  with pytest.raises(ValueError, match='vocab_size'):
    hf.load_t5(tmp_path)
  _save_random_t5(tmp_path, 'relu', True)
  (tmp_path / 'model.safetensors').write_bytes(b'\x00\x01truncated')
  with pytest.raises(ValueError, match='Cannot read'):
    hf.load_t5(tmp_path)
  os.remove(tmp_path / 'model.safetensors')
  with pytest.raises(FileNotFoundError, match='No weights'):
    hf.load_t5(tmp_path)
