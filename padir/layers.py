"""T5.1.1 building blocks in Flax Linen, with T5X logical axis names on every parameter.

Shapes: B batch, L query length, S key length, E embedding width, H heads, D head width,
F MLP width, V vocabulary.

Every parameter is created through ``nn.with_logical_partitioning`` so ``model.init`` returns
``nn.LogicallyPartitioned`` boxes; ``flax.linen.get_partition_spec`` turns them into logical
PartitionSpecs and ``flax.linen.unbox`` into plain arrays.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

NEG_INF = -1e9  # added to masked attention logits (float32).

default_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def param_with_axes(module: nn.Module, name: str, init_fn: Initializer,
                    shape: Sequence[int], axes: Sequence[str]) -> Array:
  """Creates a float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init_fn, tuple(axes)), tuple(shape),
                      jnp.float32)


def constrain(x: Array, axes: Sequence[str | None]) -> Array:
  """Logical sharding constraint on an activation (no-op outside a mesh)."""
  return nn.with_logical_constraint(x, tuple(axes))


def get_activation(name: str) -> Callable[[Array], Array]:
  """Maps an activation name of T5 configs to a function ('gelu' is the tanh approximation)."""
  table = {
      'relu': nn.relu,
      'gelu': functools.partial(nn.gelu, approximate=True),
      'gelu_exact': functools.partial(nn.gelu, approximate=False),
      'silu': nn.silu,
      'swish': nn.silu,
      'linear': lambda x: x,
  }
  if name not in table:
    raise ValueError(f'Unknown MLP activation {name!r}; choose from {sorted(table)}.')
  return table[name]


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no bias, no mean subtraction; statistics in float32."""
  epsilon: float = 1e-6
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.epsilon)
    scale = param_with_axes(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',))
    return (y * scale).astype(self.dtype)


class Dense(nn.Module):
  """Bias-free dense layer over the last axis with a 2-D logically named kernel."""
  features: int
  kernel_axes: tuple[str, str]
  dtype: DType = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = param_with_axes(self, 'kernel', self.kernel_init, (x.shape[-1], self.features),
                             self.kernel_axes)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class Embed(nn.Module):
  """Token embedding [V, E] shared by encoder and decoder; `attend` gives tied logits."""
  num_embeddings: int
  features: int
  dtype: DType = jnp.float32

  def setup(self):
    self.embedding = param_with_axes(self, 'embedding', nn.initializers.normal(stddev=1.0),
                                     (self.num_embeddings, self.features), ('vocab', 'embed'))

  def __call__(self, tokens: Array) -> Array:
    # tokens [B, L] int32 -> [B, L, E]
    return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

  def attend(self, query: Array) -> Array:
    # query [B, L, E] -> [B, L, V] float32
    return jnp.dot(query, self.embedding.astype(query.dtype).T,
                   preferred_element_type=jnp.float32)


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's bucketing of relative positions (memory position minus query position).

  Half of the buckets (all of them when unidirectional) hold exact small distances, the rest
  grow logarithmically up to ``max_distance``; in the bidirectional case the sign takes one bit.
  """
  bucket = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_safe = jnp.maximum(n, 1).astype(jnp.float32)
  val_if_large = max_exact + (
      jnp.log(n_safe / max_exact) / np.log(max_distance / max_exact) *
      (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return bucket + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """Learned relative position bias shared by all layers of one stack: [1, H, L, S]."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, qlen: int, klen: int, bidirectional: bool,
               query_offset: Array | int = 0) -> Array:
    context = jnp.arange(qlen, dtype=jnp.int32)[:, None] + query_offset  # [L, 1]
    memory = jnp.arange(klen, dtype=jnp.int32)[None, :]  # [1, S]
    buckets = relative_position_bucket(memory - context, bidirectional, self.num_buckets,
                                       self.max_distance)  # [L, S]
    table = param_with_axes(self, 'rel_embedding', nn.initializers.normal(stddev=0.1),
                            (self.num_heads, self.num_buckets), ('heads', 'relpos_buckets'))
    bias = jnp.take(table, buckets, axis=1)  # [H, L, S]
    return bias[None].astype(self.dtype)


# Logical axis names of the [B, T, H, D] ('bshd') and heads-first [B, H, T, D] ('bhsd') layouts.
_LAYOUT_AXES = {'bshd': ('batch', 'length', 'heads', 'kv'),
                'bhsd': ('batch', 'heads', 'length', 'kv')}


class MultiHeadAttention(nn.Module):
  """T5 multi-head dot-product attention (no 1/sqrt(D) at run time: it is in the query init).

  With ``decode=True`` the module keeps a cache:

  * self-attention (``cache_kind='self'``): the first call creates zero key/value buffers
    ([B, H, L, D]) of the call's length (the maximum decode length) and computes an ordinary
    forward pass; later calls write their keys/values at ``cache_index`` and attend to the
    whole buffer (the caller's mask hides future slots).
  * cross-attention (``cache_kind='cross'``): the first call projects the encoder states once and
    stores them ([B, H, S, D]); later calls reuse them.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  float32_logits: bool = True
  cache_kind: str | None = None  # 'self', 'cross' or None.

  @nn.compact
  def __call__(self,
               inputs_q: Array,
               inputs_kv: Array,
               mask: Array | None,
               bias: Array | None = None,
               *,
               inputs_v: Array | None = None,
               enable_dropout: bool = False,
               decode: bool = False,
               cache_index: Array | int = 0) -> Array:
    # inputs_q [B, L, E]; inputs_kv [B, S, E]; mask [B|1, 1, L, S] bool; bias [1, H, L, S].
    h, d = self.num_heads, self.head_dim
    emb = inputs_q.shape[-1]
    query_init = lambda *a: default_kernel_init(*a) / np.sqrt(d)
    dense = functools.partial(Dense, features=h * d, kernel_axes=('embed', 'joined_kv'),
                              dtype=self.dtype)
    split = lambda x: x.reshape(x.shape[:-1] + (h, d))  # [B, T, H*D] -> [B, T, H, D]

    query = split(dense(kernel_init=query_init, name='query')(inputs_q))
    values_src = inputs_kv if inputs_v is None else inputs_v
    key_proj = dense(name='key')
    value_proj = dense(name='value')

    # Cached keys/values are kept heads-first ([B, H, S, D]), the layout the score and value
    # matmuls read: stored [B, S, H, D], every decode step would transpose the whole cache of
    # every layer again (a fifth of AR beam search's time at batch 128 on a 2-core CPU).
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [B, T, H, D] <-> [B, H, T, D]
    kv = 'bshd'  # the layout of key and value below
    if decode and self.cache_kind == 'cross':
      initialized = self.has_variable('cache', 'cached_key')
      ck = self.variable('cache', 'cached_key',
                         lambda: heads_first(split(key_proj(inputs_kv))))
      cv = self.variable('cache', 'cached_value',
                         lambda: heads_first(split(value_proj(values_src))))
      if not initialized:
        key_proj(inputs_kv), value_proj(values_src)  # materialise params under init.
      key, value, kv = ck.value, cv.value, 'bhsd'
    else:
      key = split(key_proj(inputs_kv))
      value = split(value_proj(values_src))
      if decode and self.cache_kind == 'self':
        key, value, kv = heads_first(key), heads_first(value), 'bhsd'
        initialized = self.has_variable('cache', 'cached_key')
        ck = self.variable('cache', 'cached_key', jnp.zeros, key.shape, key.dtype)
        cv = self.variable('cache', 'cached_value', jnp.zeros, value.shape, value.dtype)
        if initialized:
          start = (0, 0, cache_index, 0)
          ck.value = jax.lax.dynamic_update_slice(ck.value, key.astype(ck.value.dtype), start)
          cv.value = jax.lax.dynamic_update_slice(cv.value, value.astype(cv.value.dtype), start)
          key, value = ck.value, cv.value

    query = constrain(query, _LAYOUT_AXES['bshd'])
    key = constrain(key, _LAYOUT_AXES[kv])
    value = constrain(value, _LAYOUT_AXES[kv])
    if self.float32_logits:
      query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    logits = jnp.einsum(f'blhd,{kv}->bhls', query, key)  # [B, H, L, S]
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    if enable_dropout and self.dropout_rate > 0:
      weights = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(weights, deterministic=False)
    out = jnp.einsum(f'bhls,{kv}->blhd', weights, value.astype(self.dtype))
    out = out.reshape(out.shape[:2] + (h * d,))  # [B, L, H*D]
    return Dense(emb, ('joined_kv', 'embed'), dtype=self.dtype, name='out')(out)


class MlpBlock(nn.Module):
  """T5 feed-forward block: activations applied to parallel projections and multiplied."""
  mlp_dim: int
  activations: tuple[str, ...] = ('gelu', 'linear')
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
    # x [B, L, E] -> [B, L, E]
    hidden = None
    for i, act in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{i}'
      h = get_activation(act)(Dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                                    name=name)(x))
      hidden = h if hidden is None else hidden * h
    hidden = constrain(hidden, ('batch', 'length', 'mlp'))
    if enable_dropout and self.dropout_rate > 0:
      hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=False)
    return Dense(x.shape[-1], ('mlp', 'embed'), dtype=self.dtype, name='wo')(hidden)


def dropout(module_rate: float, x: Array, enable_dropout: bool) -> Array:
  """Dropout broadcast over the length axis (T5X convention); identity when disabled."""
  if enable_dropout and module_rate > 0:
    return nn.Dropout(module_rate, broadcast_dims=(-2,))(x, deterministic=False)
  return x
