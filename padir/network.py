"""The T5.1.1 encoder-decoder with a causal (AR) or bidirectional (PaDIR) decoder.

`T5Config` holds every architectural knob (presets tiny/small/base/large/xl match the published
T5.1.1 sizes); `Transformer(config)` is the Flax Linen module:

* ``__call__(encoder_input_tokens, decoder_input_tokens, ...)`` -> logits [B, L, V] float32;
* ``encode(encoder_input_tokens)`` -> (encoded [B, L_in, E], length_logits [B, Lmax] or None);
* ``decode(encoded, encoder_input_tokens, decoder_input_tokens, decode=False)`` -> logits;
  with ``decode=True`` (causal decoder) it runs incrementally on a key/value cache.

The length head (PaDIR) prepends a [LENGTH] token to the encoder input; the encoder output at
that slot is scored against a learned table of ``max_target_length`` length embeddings. Length
class c means a target of c + 1 tokens, EOS included.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from padir import layers

Array = jax.Array

DECODER_MODES = ('causal', 'bidirectional')
REMAT_POLICIES = ('none', 'full', 'dots', 'dots_with_no_batch_dims')
LENGTH_HEADS = ('slot', 'pooled')
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}

# Published T5.1.1 sizes (Raffel et al. 2020; google-research/text-to-text-transfer-transformer
# released_checkpoints.md). 'tiny' is for tests and CPU runs.
_PRESETS: dict[str, dict[str, Any]] = {
    'tiny': dict(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128, num_encoder_layers=2,
                 num_decoder_layers=2),
    'small': dict(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8,
                  num_decoder_layers=8),
    'base': dict(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                 num_decoder_layers=12),
    'large': dict(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, num_encoder_layers=24,
                  num_decoder_layers=24),
    'xl': dict(emb_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120, num_encoder_layers=24,
               num_decoder_layers=24),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture of a T5(.1.1) encoder-decoder. Validated on construction.

  Attributes:
    vocab_size: embedding rows (T5 pads its 32100 ids to 32128).
    emb_dim, num_heads, head_dim, mlp_dim: widths.
    num_encoder_layers, num_decoder_layers: depths.
    mlp_activations: ('gelu', 'linear') gated for T5.1.1, ('relu',) for the original T5.
    dropout_rate: dropout on embeddings, sublayer outputs, attention weights and the MLP.
    logits_via_embedding: tie the output projection to the embedding (scaled by 1/sqrt(E)).
    dtype: activation dtype ('float32' or 'bfloat16'); parameters stay float32.
    float32_attention_logits: compute attention logits and softmax in float32.
    relative_attention_num_buckets, relative_attention_max_distance: T5 relative positions.
    layer_norm_epsilon: RMSNorm epsilon.
    decoder_mode: 'causal' (AR, KV cache) or 'bidirectional' (PaDIR, padding-only mask).
    use_length_head: add a length classifier (default: bidirectional only).
    length_head: 'slot' (a [LENGTH] token prepended to the encoder input; its output is
      scored against a table of length embeddings, Mask-Predict's head) or 'pooled' (the mean
      of the encoder outputs over the source scores offsets from the source length: the
      encoder runs exactly as in an AR model, so a student started
      from its teacher keeps the teacher's encoder, and the prior over target-minus-source
      length is learnt in a few steps, as in fairseq's length-offset prediction).
    length_id: the [LENGTH] token id (from padir.special_ids), required by the 'slot' head.
    max_target_length: number of length classes (and the positional-attention table size).
    positional_attention: PaDIR/NAT positional attention block in every decoder layer.
    shift_decoder_input: (bidirectional only) position i of the decoder reads the canvas token
      of position i-1 (position 0 reads id 0, T5's decoder start), as a causal decoder reads
      its shifted targets; the key at position L (one past the last canvas token, EOS) stays
      visible, so the canvas length is still seen. A student started from its AR teacher then
      finds every known token where the teacher's layers look for it.
    remat_policy: 'none', 'full', 'dots' or 'dots_with_no_batch_dims' (jax.checkpoint policy).
    scan_layers: nn.scan over layers (one compiled layer; params get a leading 'layers' axis).
  """
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  mlp_activations: tuple[str, ...] = ('gelu', 'linear')
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False
  dtype: str = 'float32'
  float32_attention_logits: bool = True
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  decoder_mode: str = 'causal'
  use_length_head: bool | None = None
  length_head: str = 'slot'
  length_id: int | None = None
  max_target_length: int = 128
  positional_attention: bool = False
  shift_decoder_input: bool = False
  remat_policy: str = 'none'
  scan_layers: bool = False

  def __post_init__(self):
    if isinstance(self.mlp_activations, list):
      object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    if self.use_length_head is None:
      object.__setattr__(self, 'use_length_head', self.decoder_mode == 'bidirectional')
    self.validate()

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> 'T5Config':
    """A published size ('tiny', 'small', 'base', 'large', 'xl') with field overrides."""
    if name not in _PRESETS:
      raise ValueError(f'Unknown T5Config preset {name!r}; choose from {sorted(_PRESETS)}.')
    return cls(**{**_PRESETS[name], **overrides})

  def replace(self, **changes: Any) -> 'T5Config':
    """A copy with ``changes``; a new ``decoder_mode`` re-derives ``use_length_head``."""
    if 'decoder_mode' in changes and changes['decoder_mode'] != self.decoder_mode:
      changes.setdefault('use_length_head', None)
    return dataclasses.replace(self, **changes)

  @property
  def activation_dtype(self) -> Any:
    return _DTYPES[self.dtype]

  def validate(self) -> None:
    """Raises ValueError naming the inconsistent field and how to fix it."""
    def need(cond: bool, msg: str):
      if not cond:
        raise ValueError(f'Invalid T5Config: {msg}')
    for name in ('vocab_size', 'emb_dim', 'num_heads', 'head_dim', 'mlp_dim',
                 'num_encoder_layers', 'num_decoder_layers', 'relative_attention_num_buckets',
                 'relative_attention_max_distance', 'max_target_length'):
      value = getattr(self, name)
      need(isinstance(value, int) and value > 0, f'{name}={value!r} must be a positive integer.')
    need(self.decoder_mode in DECODER_MODES,
         f'decoder_mode={self.decoder_mode!r}; choose from {DECODER_MODES}.')
    need(self.dtype in _DTYPES, f'dtype={self.dtype!r}; choose from {sorted(_DTYPES)}.')
    need(0.0 <= self.dropout_rate < 1.0, f'dropout_rate={self.dropout_rate} must be in [0, 1).')
    need(self.remat_policy in REMAT_POLICIES,
         f'remat_policy={self.remat_policy!r}; choose from {REMAT_POLICIES}.')
    need(len(self.mlp_activations) >= 1, 'mlp_activations must name at least one activation.')
    for act in self.mlp_activations:
      layers.get_activation(act)  # raises for unknown names
    need(self.relative_attention_num_buckets >= 2 and
         (self.relative_attention_num_buckets % 2 == 0),
         f'relative_attention_num_buckets={self.relative_attention_num_buckets} must be even.')
    need(self.relative_attention_max_distance > self.relative_attention_num_buckets // 4,
         'relative_attention_max_distance must exceed relative_attention_num_buckets / 4.')
    need(self.length_head in LENGTH_HEADS,
         f'length_head={self.length_head!r} is not one of {LENGTH_HEADS}.')
    if self.use_length_head and self.length_head == 'slot':
      need(self.length_id is not None and 0 <= self.length_id < self.vocab_size,
           f'use_length_head needs length_id in [0, vocab_size={self.vocab_size}), got '
           f'{self.length_id!r}; pass length_id=padir.special_ids.special_ids(...).length.')
    if self.positional_attention:
      need(self.decoder_mode == 'bidirectional',
           'positional_attention is a PaDIR decoder option: set decoder_mode="bidirectional".')
    if self.shift_decoder_input:
      need(self.decoder_mode == 'bidirectional',
           'shift_decoder_input is a PaDIR decoder option (a causal decoder is fed shifted '
           'targets already): set decoder_mode="bidirectional" or shift_decoder_input=False.')


def _layer_cls(cls: type[nn.Module], config: T5Config, static_argnums: tuple[int, ...]):
  """Wraps a layer class with rematerialisation as configured."""
  if config.remat_policy == 'none':
    return cls
  policy = {
      'full': None,
      'dots': jax.checkpoint_policies.checkpoint_dots,
      'dots_with_no_batch_dims': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  }[config.remat_policy]
  return nn.remat(cls, policy=policy, static_argnums=static_argnums,
                  prevent_cse=not config.scan_layers)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block. Call signature is scan-compatible."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Array, enable_dropout: bool):
    # x [B, L, E]; mask [B, 1, L, L]; bias [1, H, L, L]
    cfg = self.config
    dt = cfg.activation_dtype
    y = layers.RMSNorm(cfg.layer_norm_epsilon, dt, name='pre_attention_layer_norm')(x)
    y = layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dt,
                                  cfg.float32_attention_logits, name='attention')(
                                      y, y, mask, bias, enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg.dropout_rate, y, enable_dropout)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, dt, name='pre_mlp_layer_norm')(x)
    y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dt,
                        name='mlp')(y, enable_dropout)
    x = x + layers.dropout(cfg.dropout_rate, y, enable_dropout)
    x = layers.constrain(x, ('batch', 'length', 'embed'))
    return (x, None) if cfg.scan_layers else x


class DecoderLayer(nn.Module):
  """Pre-norm self-attention, optional positional attention, cross-attention and MLP."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               bias: Array, positions: Array | None, cache_index: Array,
               enable_dropout: bool, decode: bool):
    # x [B, L, E]; encoded [B, S, E]; self_mask [B|1, 1, L, L']; cross_mask [B, 1, L, S]
    cfg = self.config
    dt = cfg.activation_dtype
    attn = lambda name, kind: layers.MultiHeadAttention(
        cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dt, cfg.float32_attention_logits,
        cache_kind=kind, name=name)
    norm = lambda name: layers.RMSNorm(cfg.layer_norm_epsilon, dt, name=name)
    y = norm('pre_self_attention_layer_norm')(x)
    self_cache = 'self' if cfg.decoder_mode == 'causal' else None
    y = attn('self_attention', self_cache)(y, y, self_mask, bias, enable_dropout=enable_dropout,
                                       decode=decode, cache_index=cache_index)
    x = x + layers.dropout(cfg.dropout_rate, y, enable_dropout)
    if positions is not None:
      # PaDIR positional attention: queries/keys are position vectors, values the states.
      p = norm('pre_positional_attention_layer_norm_pos')(positions)
      v = norm('pre_positional_attention_layer_norm')(x)
      y = attn('positional_attention', None)(p, p, self_mask, None, inputs_v=v,
                                             enable_dropout=enable_dropout)
      x = x + y
    y = norm('pre_cross_attention_layer_norm')(x)
    y = attn('encoder_decoder_attention', 'cross')(y, encoded, cross_mask, None,
                                                   enable_dropout=enable_dropout, decode=decode)
    x = x + layers.dropout(cfg.dropout_rate, y, enable_dropout)
    y = norm('pre_mlp_layer_norm')(x)
    y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dt,
                        name='mlp')(y, enable_dropout)
    x = x + layers.dropout(cfg.dropout_rate, y, enable_dropout)
    x = layers.constrain(x, ('batch', 'length', 'embed'))
    return (x, None) if cfg.scan_layers else x


def _stack(cls, config: T5Config, num_layers: int, n_broadcast: int, static_argnums, name: str):
  """Either a scanned stack (one module) or None (the caller builds a Python loop)."""
  layer_cls = _layer_cls(cls, config, static_argnums)
  if not config.scan_layers:
    return layer_cls
  return nn.scan(layer_cls,
                 variable_axes={'params': 0, 'cache': 0},
                 split_rngs={'params': True, 'dropout': True},
                 in_axes=(nn.broadcast,) * n_broadcast,
                 length=num_layers,
                 metadata_params={nn.PARTITION_NAME: 'layers'})(config, name=name)


class Encoder(nn.Module):
  """Embedding -> N encoder layers -> final RMSNorm. Bidirectional relative positions."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, enable_dropout: bool) -> Array:
    # tokens [B, L] -> [B, L, E]
    cfg = self.config
    x = self.shared_embedding(tokens)
    x = layers.dropout(cfg.dropout_rate, x, enable_dropout)
    mask = (tokens > 0)[:, None, None, :]  # [B, 1, 1, L]: hide padded keys
    length = tokens.shape[1]
    bias = layers.RelativePositionBiases(cfg.relative_attention_num_buckets,
                                         cfg.relative_attention_max_distance, cfg.num_heads,
                                         cfg.activation_dtype, name='relpos_bias')(
                                             length, length, True)
    # static_argnums count `self` as 0: (x=1, mask=2, bias=3, enable_dropout=4).
    stack = _stack(EncoderLayer, cfg, cfg.num_encoder_layers, 3, (4,), 'layers')
    if cfg.scan_layers:
      x, _ = stack(x, mask, bias, enable_dropout)
    else:
      for i in range(cfg.num_encoder_layers):
        x = stack(cfg, name=f'layers_{i}')(x, mask, bias, enable_dropout)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name='encoder_norm')(x)
    return layers.dropout(cfg.dropout_rate, x, enable_dropout)


class Decoder(nn.Module):
  """Embedding -> N decoder layers -> final RMSNorm -> logits [B, L, V] float32."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array, encoder_tokens: Array, tokens: Array,
               enable_dropout: bool, decode: bool,
               logits_positions: Array | None = None) -> Array:
    cfg = self.config
    causal = cfg.decoder_mode == 'causal'
    batch, length = tokens.shape
    cache_index = jnp.zeros((), jnp.int32)
    stepping = False
    if decode and causal:
      stepping = self.has_variable('cache', 'index')
      index = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
      if stepping:
        cache_index = index.value
        index.value = cache_index + length
    key_length = length
    if stepping:
      key_length = self._cache_length()
    query_pos = jnp.arange(length, dtype=jnp.int32)[:, None] + cache_index  # [L, 1]
    key_pos = jnp.arange(key_length, dtype=jnp.int32)[None, :]  # [1, L']
    if causal:
      self_mask = (key_pos <= query_pos)[None, None]  # [1, 1, L, L']
    elif cfg.shift_decoder_input:
      shifted = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :length]  # [B, L]: start id 0, canvas
      self_mask = ((tokens > 0) | (shifted > 0))[:, None, None, :]  # canvas and the EOS key
      tokens = shifted
    else:
      self_mask = (tokens > 0)[:, None, None, :]  # [B, 1, 1, L]: padding only
    cross_mask = (encoder_tokens > 0)[:, None, None, :]  # [B, 1, 1, S]
    bias = layers.RelativePositionBiases(cfg.relative_attention_num_buckets,
                                         cfg.relative_attention_max_distance, cfg.num_heads,
                                         cfg.activation_dtype, name='relpos_bias')(
                                             length, key_length, not causal, cache_index)
    positions = None
    if cfg.positional_attention:
      if length > cfg.max_target_length:
        raise ValueError(f'positional_attention supports decoder lengths up to '
                         f'max_target_length={cfg.max_target_length}, got {length}.')
      table = layers.param_with_axes(self, 'position_embedding', nn.initializers.normal(1.0),
                                     (cfg.max_target_length, cfg.emb_dim), ('length', 'embed'))
      positions = jnp.broadcast_to(table[:length].astype(cfg.activation_dtype)[None],
                                   (batch, length, cfg.emb_dim))

    x = self.shared_embedding(tokens)
    x = layers.dropout(cfg.dropout_rate, x, enable_dropout)
    # static_argnums count `self`: enable_dropout=8, decode=9.
    stack = _stack(DecoderLayer, cfg, cfg.num_decoder_layers, 8, (8, 9), 'layers')
    args = (encoded, self_mask, cross_mask, bias, positions, cache_index, enable_dropout, decode)
    if cfg.scan_layers:
      x, _ = stack(x, *args)
    else:
      for i in range(cfg.num_decoder_layers):
        x = stack(cfg, name=f'layers_{i}')(x, *args)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name='decoder_norm')(x)
    x = layers.dropout(cfg.dropout_rate, x, enable_dropout)
    if logits_positions is not None:  # project only the requested rows: [B, K, E]
      x = jnp.take_along_axis(x, logits_positions[..., None].astype(jnp.int32), axis=1)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / jnp.sqrt(jnp.float32(cfg.emb_dim))
    else:
      kernel = layers.param_with_axes(self, 'logits_dense', layers.default_kernel_init,
                                      (cfg.emb_dim, cfg.vocab_size), ('embed', 'vocab'))
      logits = jnp.dot(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32)
    return layers.constrain(logits, ('batch', 'length', 'vocab'))

  def _cache_length(self) -> int:
    """Maximum decode length, read from the first self-attention key cache."""
    cache = self.variables['cache']
    first = cache['layers'] if self.config.scan_layers else cache['layers_0']
    key = first['self_attention']['cached_key']
    return key.shape[-2]  # [(layers,) B, H, L', D]


class Transformer(nn.Module):
  """T5.1.1 encoder-decoder; see the module docstring for the three entry points."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.shared_embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype,
                                         name='token_embedder')
    self.encoder = Encoder(cfg, self.shared_embedding)
    self.decoder = Decoder(cfg, self.shared_embedding)
    if cfg.use_length_head and cfg.length_head == 'slot':
      self.length_embedding = self.param(
          'length_embedding',
          nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.emb_dim**-0.5),
                                       ('length', 'embed')),
          (cfg.max_target_length, cfg.emb_dim), jnp.float32)
    elif cfg.use_length_head:
      offsets = 2 * cfg.max_target_length - 1  # target minus source length, -(M-1)..M-1
      # Not zero-initialised: Adafactor scales each update by the parameter's RMS, so a zero
      # table would barely move.
      self.length_offset_embedding = self.param(
          'length_offset_embedding',
          nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.emb_dim**-0.5),
                                       ('length', 'embed')),
          (offsets, cfg.emb_dim), jnp.float32)

  def encode(self, encoder_input_tokens: Array,
             enable_dropout: bool = True) -> tuple[Array, Array | None]:
    """Runs the encoder (and the length head when configured).

    Args:
      encoder_input_tokens: [B, L_in] int32, 0 = padding.
      enable_dropout: apply dropout (needs a 'dropout' rng).

    Returns:
      encoded [B, L_in, E] aligned with the input, and length logits [B, max_target_length]
      float32 (class c = length c + 1) or None without a length head.
    """
    cfg = self.config
    tokens = encoder_input_tokens
    if not cfg.use_length_head:
      return self.encoder(tokens, enable_dropout), None
    if cfg.length_head == 'pooled':
      encoded = self.encoder(tokens, enable_dropout)  # [B, L_in, E]
      return encoded, self._pooled_length_logits(encoded, tokens)
    slot = jnp.full((tokens.shape[0], 1), cfg.length_id, tokens.dtype)
    out = self.encoder(jnp.concatenate([slot, tokens], axis=1), enable_dropout)  # [B, 1+L, E]
    length_state = out[:, 0].astype(jnp.float32)  # [B, E]
    length_logits = jnp.dot(length_state, self.length_embedding.T,
                            preferred_element_type=jnp.float32)  # [B, Lmax]
    return out[:, 1:], length_logits

  def _pooled_length_logits(self, encoded: Array, tokens: Array) -> Array:
    """The 'pooled' length head: [B, max_target_length] float32 logits (class c = length c+1).

    Scores every offset ``d = target length - source length`` from the mean encoder state of
    the source ([2M-1] logits), then reads each absolute length's offset; lengths whose offset
    is out of range get -1e9.
    """
    cfg = self.config
    valid = (tokens > 0).astype(jnp.float32)  # [B, L_in]
    src_len = jnp.sum(valid, axis=1)  # [B]
    pooled = jnp.sum(encoded.astype(jnp.float32) * valid[..., None], axis=1) / \
        jnp.maximum(src_len, 1.0)[:, None]  # [B, E]
    offset_logits = jnp.dot(pooled, self.length_offset_embedding.T,
                            preferred_element_type=jnp.float32)  # [B, 2M-1]
    m = cfg.max_target_length
    lengths = jnp.arange(1, m + 1, dtype=jnp.int32)  # [M]
    index = lengths[None, :] - src_len.astype(jnp.int32)[:, None] + (m - 1)  # [B, M]
    inside = (index >= 0) & (index < 2 * m - 1)
    picked = jnp.take_along_axis(offset_logits, jnp.clip(index, 0, 2 * m - 2), axis=1)
    return jnp.where(inside, picked, -1e9)

  def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
             enable_dropout: bool = True, decode: bool = False,
             logits_positions: Array | None = None) -> Array:
    """Runs the decoder: logits [B, L, V] float32 (or [B, K, V] at ``logits_positions``).

    Args:
      encoded: [B, L_in, E] from `encode`.
      encoder_input_tokens: [B, L_in] (for the cross-attention padding mask).
      decoder_input_tokens: [B, L]: shifted targets (causal) or the canvas (bidirectional).
      enable_dropout: apply dropout.
      decode: use the 'cache' collection (pass mutable=['cache'] on the first call). The first
        call computes the cross-attention keys/values once and stores them; later calls reuse
        them. For the causal decoder the first call also creates the self-attention KV cache
        with length L, and each later call appends its tokens at the cache index. For the
        bidirectional decoder only the cross-attention keys/values are cached (every
        refinement iteration re-reads them; the canvas changes, so self-attention does not).
      logits_positions: optional [B, K] int positions; only those rows of the final decoder
        states are projected to the vocabulary (the refinement decoder asks only for positions
        that can still change).
    """
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, enable_dropout,
                        decode, logits_positions)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None, enable_dropout: bool = True,
               decode: bool = False) -> Array:
    """Full forward pass: logits [B, L, V] float32 (decoder_target_tokens is unused)."""
    del decoder_target_tokens  # the padding mask comes from the inputs
    encoded, _ = self.encode(encoder_input_tokens, enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, enable_dropout,
                       decode)

  def encode_and_decode(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                        enable_dropout: bool = True) -> tuple[Array, Array | None]:
    """Logits [B, L, V] and length logits [B, Lmax] (or None) from one encoder pass."""
    encoded, length_logits = self.encode(encoder_input_tokens, enable_dropout)
    logits = self.decode(encoded, encoder_input_tokens, decoder_input_tokens, enable_dropout)
    return logits, length_logits


def top_k_lengths(length_logits: Array, k: int) -> Array:
  """The k most likely target lengths (EOS included), best first: [B, k] int32 >= 1."""
  if k > length_logits.shape[-1]:
    raise ValueError(f'k={k} exceeds the number of length classes {length_logits.shape[-1]}.')
  _, classes = jax.lax.top_k(length_logits, k)
  return (classes + 1).astype(jnp.int32)


def check_tokens(name: str, tokens: Any, vocab_size: int) -> None:
  """Host-side check of a token batch before it reaches jit: 2-D integer ids in the vocabulary.

  Raises:
    ValueError: naming the argument, what is wrong and what was expected.
  """
  arr = np.asarray(tokens)
  if arr.ndim != 2:
    raise ValueError(f'{name} must be a 2-D [batch, length] array of token ids, got shape '
                     f'{arr.shape}.')
  if not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f'{name} must hold integer token ids, got dtype {arr.dtype}; convert with '
                     '.astype(np.int32).')
  if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
    raise ValueError(f'{name} holds ids outside [0, vocab_size={vocab_size}): min {arr.min()}, '
                     f'max {arr.max()}. Is the vocabulary the one the model was built for?')
