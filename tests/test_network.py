"""Tests for padir.network and padir.layers: masks, cache, padding, axes, options."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir import network
from padir.network import T5Config, Transformer, top_k_lengths

V = 50
LOGICAL_AXES = {'batch', 'length', 'embed', 'heads', 'kv', 'joined_kv', 'mlp', 'vocab',
                'relpos_buckets', 'layers'}


def _tokens(rng, batch, length, lo=3):
  return jnp.asarray(rng.integers(lo, V, (batch, length)), jnp.int32)


def _init(cfg, enc, dec):
  model = Transformer(cfg)
  variables = model.init({'params': jax.random.key(0)}, enc, dec, enable_dropout=False)
  return model, variables


def _cfg(**kw):
  base = dict(vocab_size=V, dropout_rate=0.0)
  base.update(kw)
  return T5Config.preset('tiny', **base)


@pytest.mark.parametrize('kw', [
    dict(decoder_mode='causal', mlp_activations=('relu',), logits_via_embedding=True),
    dict(decoder_mode='bidirectional', length_id=V - 3, max_target_length=8,
         positional_attention=True, scan_layers=True),
])
def test_every_parameter_has_logical_axes(kw):
  rng = np.random.default_rng(0)
  enc, dec = _tokens(rng, 2, 5), _tokens(rng, 2, 6)
  _, variables = _init(_cfg(**kw), enc, dec)
  leaves = jax.tree_util.tree_leaves_with_path(
      variables['params'], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.LogicallyPartitioned), f'{name} has no logical axis names'
    assert len(leaf.names) == leaf.value.ndim, name
    assert set(leaf.names) <= LOGICAL_AXES, (name, leaf.names)
    assert leaf.value.dtype == jnp.float32, name
  if kw.get('scan_layers'):
    specs = nn.get_partition_spec(variables['params'])
    kernel = specs['decoder']['layers']['mlp']['wo']['kernel']
    assert tuple(kernel) == ('layers', 'mlp', 'embed')


def test_decoder_visibility_bidirectional_vs_causal():
  rng = np.random.default_rng(1)
  enc, dec = _tokens(rng, 1, 5), _tokens(rng, 1, 6)
  changed = dec.at[0, 4].set((dec[0, 4] + 1 - 3) % (V - 3) + 3)  # perturb position 4
  for mode, kw in (('causal', {}), ('bidirectional', dict(length_id=V - 3, max_target_length=8))):
    model, variables = _init(_cfg(decoder_mode=mode, **kw), enc, dec)
    params = nn.unbox(variables['params'])
    fwd = jax.jit(lambda p, d: model.apply({'params': p}, enc, d, enable_dropout=False))
    delta = jnp.abs(fwd(params, dec) - fwd(params, changed)).max(axis=-1)[0]  # [L]
    if mode == 'causal':
      np.testing.assert_array_equal(np.asarray(delta[:4]), 0.0)
      assert float(delta[4]) > 0
    else:
      assert bool(jnp.all(delta[:4] > 1e-6)), 'earlier positions must see later tokens'


def test_shifted_decoder_input_reads_the_previous_canvas_token():
  rng = np.random.default_rng(5)
  enc = _tokens(rng, 1, 5)
  canvas = jnp.pad(_tokens(rng, 1, 5), ((0, 0), (0, 3)))  # [1, 8]: 5 tokens, then padding
  kw = dict(decoder_mode='bidirectional', length_id=V - 3, max_target_length=8)
  shifted_model, variables = _init(_cfg(shift_decoder_input=True, **kw), enc, canvas)
  params = nn.unbox(variables['params'])
  # The plain decoder fed [s, canvas] where id s embeds as T5's start id 0 computes the same:
  # position i reads canvas token i-1, and the key after the last token stays visible.
  start = V - 1
  table = params['token_embedder']['embedding']
  params_s = jax.tree_util.tree_map(lambda x: x, params)
  params_s['token_embedder']['embedding'] = table.at[start].set(table[0])
  plain = Transformer(_cfg(**kw))
  fed = jnp.concatenate([jnp.full((1, 1), start, jnp.int32), canvas[:, :-1]], axis=1)
  out_shifted = shifted_model.apply({'params': params_s}, enc, canvas, enable_dropout=False)
  out_plain = plain.apply({'params': params_s}, enc, fed, enable_dropout=False)
  np.testing.assert_allclose(np.asarray(out_shifted[0, :6]), np.asarray(out_plain[0, :6]),
                             atol=1e-5)
  # Without the shift the same canvas computes something else.
  out_unshifted = plain.apply({'params': params_s}, enc, canvas, enable_dropout=False)
  assert float(jnp.abs(out_unshifted[0, :5] - out_shifted[0, :5]).max()) > 1e-3


@pytest.mark.parametrize('scan', [False, True])
def test_kv_cache_matches_full_forward(scan):
  rng = np.random.default_rng(2)
  enc = _tokens(rng, 2, 7).at[1, 4:].set(0)
  dec = _tokens(rng, 2, 6).at[:, 0].set(0)
  cfg = _cfg(scan_layers=scan)
  model, variables = _init(cfg, enc, dec)
  params = nn.unbox(variables['params'])
  full = model.apply({'params': params}, enc, dec, enable_dropout=False)
  encoded, length_logits = model.apply({'params': params}, enc, enable_dropout=False,
                                       method=Transformer.encode)
  assert length_logits is None
  _, mut = model.apply({'params': params}, encoded, enc, jnp.zeros_like(dec),
                       enable_dropout=False, decode=True, mutable=['cache'],
                       method=Transformer.decode)
  cache = mut['cache']

  @jax.jit
  def step(cache, tok):
    logits, mut = model.apply({'params': params, 'cache': cache}, encoded, enc, tok,
                              enable_dropout=False, decode=True, mutable=['cache'],
                              method=Transformer.decode)
    return logits, mut['cache']

  outs = []
  for i in range(dec.shape[1]):
    logits, cache = step(cache, dec[:, i:i + 1])
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
  # Two tokens at a time (prompt prefill) gives the same logits too.
  _, mut = model.apply({'params': params}, encoded, enc, jnp.zeros_like(dec),
                       enable_dropout=False, decode=True, mutable=['cache'],
                       method=Transformer.decode)
  cache, outs = mut['cache'], []
  for i in range(0, dec.shape[1], 2):
    logits, cache = step(cache, dec[:, i:i + 2])
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)


def test_padding_does_not_change_real_positions():
  rng = np.random.default_rng(3)
  enc, dec = _tokens(rng, 1, 5), _tokens(rng, 1, 6)
  enc_pad = jnp.pad(enc, ((0, 0), (0, 3)))
  dec_pad = jnp.pad(dec, ((0, 0), (0, 2)))
  for mode, kw in (('causal', {}), ('bidirectional', dict(length_id=V - 3, max_target_length=8))):
    model, variables = _init(_cfg(decoder_mode=mode, **kw), enc, dec)
    params = nn.unbox(variables['params'])
    ref = model.apply({'params': params}, enc, dec, enable_dropout=False)
    padded = model.apply({'params': params}, enc_pad, dec_pad, enable_dropout=False)
    np.testing.assert_allclose(padded[:, :6], ref, atol=1e-5)
    if mode == 'bidirectional':
      _, l1 = model.apply({'params': params}, enc, enable_dropout=False,
                          method=Transformer.encode)
      _, l2 = model.apply({'params': params}, enc_pad, enable_dropout=False,
                          method=Transformer.encode)
      np.testing.assert_allclose(l1, l2, atol=1e-5)


def test_length_head_and_top_k():
  rng = np.random.default_rng(4)
  enc, dec = _tokens(rng, 3, 5), _tokens(rng, 3, 6)
  cfg = _cfg(decoder_mode='bidirectional', length_id=V - 3, max_target_length=8)
  model, variables = _init(cfg, enc, dec)
  params = nn.unbox(variables['params'])
  assert params['length_embedding'].shape == (8, cfg.emb_dim)
  encoded, length_logits = model.apply({'params': params}, enc, enable_dropout=False,
                                       method=Transformer.encode)
  assert encoded.shape == (3, 5, cfg.emb_dim)
  assert length_logits.shape == (3, 8) and length_logits.dtype == jnp.float32
  top = top_k_lengths(length_logits, 3)
  assert top.shape == (3, 3)
  np.testing.assert_array_equal(top[:, 0], jnp.argmax(length_logits, -1) + 1)
  fixed = jnp.array([[0., 5., 1., 9., 0., 0., 0., 0.]])
  np.testing.assert_array_equal(top_k_lengths(fixed, 2), [[4, 2]])
  with pytest.raises(ValueError, match='exceeds'):
    top_k_lengths(fixed, 9)


def test_remat_and_scan_give_the_same_gradients():
  rng = np.random.default_rng(5)
  enc, dec = _tokens(rng, 2, 5), _tokens(rng, 2, 6)
  targets = _tokens(rng, 2, 6)
  base_cfg = _cfg(decoder_mode='bidirectional', length_id=V - 3, max_target_length=8)
  model, variables = _init(base_cfg, enc, dec)
  params = nn.unbox(variables['params'])

  def grads(cfg, p):
    m = Transformer(cfg)
    def loss(p):
      logits = m.apply({'params': p}, enc, dec, enable_dropout=False)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))
    return jax.jit(jax.value_and_grad(loss))(p)

  loss0, g0 = grads(base_cfg, params)
  loss1, g1 = grads(base_cfg.replace(remat_policy='dots'), params)
  np.testing.assert_allclose(loss0, loss1, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Scanned layers: stack the per-layer params along a leading axis.
  stacked = jax.tree_util.tree_map(lambda x: x, params)
  for part, n in (('encoder', 2), ('decoder', 2)):
    layers_ = [stacked[part].pop(f'layers_{i}') for i in range(n)]
    stacked[part]['layers'] = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *layers_)
  loss2, _ = grads(base_cfg.replace(scan_layers=True, remat_policy='full'), stacked)
  np.testing.assert_allclose(loss0, loss2, rtol=1e-5)


def test_bfloat16_activations_give_float32_logits():
  rng = np.random.default_rng(6)
  enc, dec = _tokens(rng, 2, 5), _tokens(rng, 2, 6)
  cfg = _cfg(dtype='bfloat16')
  model, variables = _init(cfg, enc, dec)
  params = nn.unbox(variables['params'])
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  logits = model.apply({'params': params}, enc, dec, enable_dropout=False)
  ref = Transformer(cfg.replace(dtype='float32')).apply({'params': params}, enc, dec,
                                                       enable_dropout=False)
  assert logits.dtype == jnp.float32
  assert float(jnp.mean(jnp.abs(logits - ref))) < 0.05 * float(jnp.mean(jnp.abs(ref))) + 0.05


def test_dropout_needs_rng_and_changes_outputs():
  rng = np.random.default_rng(7)
  enc, dec = _tokens(rng, 2, 5), _tokens(rng, 2, 6)
  cfg = _cfg(dropout_rate=0.3)
  model, variables = _init(cfg, enc, dec)
  params = nn.unbox(variables['params'])
  a = model.apply({'params': params}, enc, dec, rngs={'dropout': jax.random.key(1)})
  b = model.apply({'params': params}, enc, dec, rngs={'dropout': jax.random.key(2)})
  assert float(jnp.abs(a - b).max()) > 0


def test_presets_match_published_t5_1_1_sizes():
  small = T5Config.preset('small')
  assert (small.emb_dim, small.mlp_dim, small.num_heads, small.num_encoder_layers) == (
      512, 1024, 6, 8)
  base = T5Config.preset('base')
  assert (base.emb_dim, base.mlp_dim, base.num_heads, base.num_encoder_layers) == (
      768, 2048, 12, 12)
  large = T5Config.preset('large')
  assert (large.emb_dim, large.mlp_dim, large.num_heads, large.num_encoder_layers) == (
      1024, 2816, 16, 24)
  xl = T5Config.preset('xl')
  assert (xl.emb_dim, xl.mlp_dim, xl.num_heads, xl.num_encoder_layers) == (2048, 5120, 32, 24)
  assert base.mlp_activations == ('gelu', 'linear')


@pytest.mark.parametrize('kw, match', [
    (dict(decoder_mode='sideways'), 'decoder_mode'),
    (dict(emb_dim=0), 'emb_dim'),
    (dict(dtype='float8'), 'dtype'),
    (dict(mlp_activations=('tanhh',)), 'activation'),
    (dict(decoder_mode='bidirectional'), 'length_id'),
    (dict(remat_policy='sometimes'), 'remat_policy'),
    (dict(positional_attention=True), 'positional_attention'),
    (dict(shift_decoder_input=True), 'shift_decoder_input'),
    (dict(dropout_rate=1.5), 'dropout_rate'),
])
def test_invalid_config_is_reported(kw, match):
  with pytest.raises(ValueError, match=match):
    T5Config.preset('tiny', vocab_size=V, **kw)
  with pytest.raises(ValueError, match='preset'):
    T5Config.preset('huge')


def test_check_tokens_reports_bad_input():
  network.check_tokens('encoder_input_tokens', np.ones((2, 3), np.int32), V)
  with pytest.raises(ValueError, match='2-D'):
    network.check_tokens('encoder_input_tokens', np.ones((3,), np.int32), V)
  with pytest.raises(ValueError, match='integer'):
    network.check_tokens('encoder_input_tokens', np.ones((2, 3), np.float32), V)
  with pytest.raises(ValueError, match='outside'):
    network.check_tokens('decoder_input_tokens', np.full((2, 3), V), V)


def test_bidirectional_cross_cache_and_logits_positions():
  rng = np.random.default_rng(8)
  enc = _tokens(rng, 2, 5).at[1, 3:].set(0)
  canvas = _tokens(rng, 2, 6)
  cfg = _cfg(decoder_mode='bidirectional', length_id=V - 3, max_target_length=8)
  model, variables = _init(cfg, enc, canvas)
  params = nn.unbox(variables['params'])
  encoded, _ = model.apply({'params': params}, enc, enable_dropout=False,
                           method=Transformer.encode)
  full = model.apply({'params': params}, encoded, enc, canvas, enable_dropout=False,
                     method=Transformer.decode)
  first, mut = model.apply({'params': params}, encoded, enc, canvas, enable_dropout=False,
                           decode=True, mutable=['cache'], method=Transformer.decode)
  # Two orders of the same float32 sums (the cached keys/values are laid out heads-first):
  # equal to about 1e-6, so the tolerance leaves room for a few more roundings.
  np.testing.assert_allclose(first, full, atol=1e-5)
  assert 'index' not in mut['cache']['decoder']  # no self-attention cache for PaDIR
  # A later iteration on a new canvas reads the cached cross-attention keys/values only.
  canvas2 = _tokens(rng, 2, 6)
  poisoned = jnp.zeros_like(encoded)  # would change the output if keys/values were recomputed
  again = model.apply({'params': params, 'cache': mut['cache']}, poisoned, enc, canvas2,
                      enable_dropout=False, decode=True, method=Transformer.decode)
  ref = model.apply({'params': params}, encoded, enc, canvas2, enable_dropout=False,
                    method=Transformer.decode)
  np.testing.assert_allclose(again, ref, atol=1e-5)
  positions = jnp.array([[0, 5], [2, 3]], jnp.int32)
  some = model.apply({'params': params}, encoded, enc, canvas2, enable_dropout=False,
                     logits_positions=positions, method=Transformer.decode)
  assert some.shape == (2, 2, V)
  np.testing.assert_allclose(some, jnp.take_along_axis(ref, positions[..., None], 1), atol=1e-5)
