"""Decoding entry points: model-level predict functions and sharded, jitted decoders.

The algorithms live in `padir.refine_decoding` (PaDIR / Mask-Predict / MaskGIT / threshold
refinement), `padir.ar_decoding` (greedy, beam search, sampling with the KV cache),
`padir.remasking` (rejection rules) and `padir.sampling` (token choice). This module ties
them to the models and to a device mesh:

* `predict_refine` / `predict_ar`: the bodies of ``PadirModel.predict_batch_with_aux`` and
  ``EncoderDecoderModel.predict_batch_with_aux`` (T5X contract; pure and jittable).
* `refine_decoder` / `ar_decoder`: a decode function jitted with NamedShardings (batch rows
  over the mesh's batch axes, parameters per the partitioner's logical rules or replicated)
  that pads the batch to a multiple of the batch shards and strips the padding again.
* `compiler_options`: XLA options for the decoders jitted inside a ``with`` block (e.g. a lower
  LLVM optimisation level, which compiles a job's many one-off decoders faster).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from padir.ar_decoding import ARConfig, ARFns, ar_decode, candidate_log_probs, make_reranker
from padir.ar_decoding import sequence_log_prob
from padir.refine_decoding import RefineConfig, TransformerFns, refine_decode, with_overrides
from padir.remasking import RemaskConfig
from padir.special_ids import SpecialIds

__all__ = [
    'ARConfig', 'ARFns', 'RefineConfig', 'RemaskConfig', 'TransformerFns', 'ar_decode',
    'ar_decoder', 'candidate_log_probs', 'make_reranker', 'predict_ar', 'predict_refine',
    'refine_decode', 'refine_decoder', 'sequence_log_prob', 'ShardedDecoder',
]

Array = jax.Array
Batch = Mapping[str, Array]




def _decode_length(model, batch: Batch) -> int:
  targets = batch.get('decoder_target_tokens')
  if targets is not None:
    return int(targets.shape[1])
  return int(model.network_config.max_target_length)


def predict_refine(model,
                   params: Any,
                   batch: Batch,
                   rng: Array | None = None,
                   *,
                   decode_config: RefineConfig | None = None,
                   use_gold_lengths: bool = False,
                   rerank_model=None,
                   rerank_params: Any = None,
                   **decode_kwargs) -> tuple[Array, dict[str, Array]]:
  """Refinement decoding for a `padir.models.PadirModel` (its predict_batch_with_aux).

  Args:
    model: the PadirModel (``module``, ``special_ids``, ``network_config``).
    params: its parameters.
    batch: ``encoder_input_tokens`` [B, S]; ``decoder_target_tokens`` [B, L] sets the canvas
      width L (else ``max_target_length``) and gives the gold lengths.
    rng: PRNG key (random canvases, sampling); None = PRNGKey(0).
    decode_config: the knobs; default the model's decoding defaults
      (`padir.models.PadirModel.decoding_config`), refused when the model's training does not
      support its update mode.
    use_gold_lengths: decode at the gold target lengths (an oracle length) instead of the
      length head's top-k.
    rerank_model: an `EncoderDecoderModel` whose ``score_batch`` re-ranks the candidates
      (CMLM's external re-ranker); ``rerank_params`` are its parameters.
    rerank_params: parameters of ``rerank_model``.
    **decode_kwargs: RefineConfig fields overriding ``decode_config``.

  Returns:
    tokens [B, L] and the aux dict of `padir.refine_decoding.refine_decode`.
  """
  if hasattr(model, 'decoding_config'):  # the model's defaults, checked against its training
    config = model.decoding_config(decode_config, **decode_kwargs)
  else:
    config = with_overrides(decode_config or RefineConfig(), decode_kwargs)
    if config.canvas_init is None:
      config = dataclasses.replace(config, canvas_init='mask')
  ids: SpecialIds = model.special_ids
  max_length = _decode_length(model, batch)
  lengths = None
  if use_gold_lengths:
    if 'decoder_target_tokens' not in batch:
      raise ValueError('use_gold_lengths=True decodes at the lengths of the batch\'s '
                       'decoder_target_tokens, and this batch has none: decode a split with '
                       'references, or drop use_gold_lengths.')
    targets = batch['decoder_target_tokens']
    lengths = jnp.maximum(jnp.sum(targets > 0, axis=1), 1).astype(jnp.int32)
    lengths = jnp.repeat(lengths[:, None], config.top_k_lengths, axis=1)
  reranker = None
  if rerank_model is not None:
    reranker = make_reranker(ARFns(rerank_model.module))
  return refine_decode(TransformerFns(model.module), params,
                       batch['encoder_input_tokens'].astype(jnp.int32), config=config, ids=ids,
                       max_length=max_length, rng=rng, lengths=lengths, reranker=reranker,
                       reranker_params=rerank_params)


def predict_ar(model,
               params: Any,
               batch: Batch,
               rng: Array | None = None,
               *,
               decode_config: ARConfig | None = None,
               **decode_kwargs) -> tuple[Array, dict[str, Array]]:
  """AR decoding for a `padir.models.EncoderDecoderModel` (its predict_batch_with_aux).

  Args:
    model: the EncoderDecoderModel (``module``, ``network_config``, ``special_ids``).
    params: its parameters.
    batch: ``encoder_input_tokens`` [B, S]; ``decoder_target_tokens`` [B, L] sets the
      maximum output length L (else ``max_target_length``).
    rng: PRNG key for sampling.
    decode_config: the knobs; default ``ARConfig()`` (gin-configurable).
    **decode_kwargs: ARConfig fields overriding ``decode_config``.

  Returns:
    tokens [B, L] and the aux dict of `padir.ar_decoding.ar_decode`.
  """
  config = with_overrides(decode_config or ARConfig(), decode_kwargs)
  ids = getattr(model, 'special_ids', None)
  if ids is not None and config.eos_id != ids.eos:
    config = dataclasses.replace(config, eos_id=ids.eos)
  return ar_decode(ARFns(model.module), params,
                   batch['encoder_input_tokens'].astype(jnp.int32),
                   max_length=_decode_length(model, batch), config=config, rng=rng)


# ---------------------------------------------------------------------------------------
# Sharded, jitted decoders.

# XLA compiler options of the decoders jitted now (`compiler_options`); empty: XLA's defaults.
_COMPILER_OPTIONS: dict[str, Any] = {}


@contextlib.contextmanager
def compiler_options(**options: Any) -> Iterator[dict[str, Any]]:
  """XLA compiler options for every decoder jitted inside the block.

  They reach ``jax.jit(..., compiler_options=...)`` of a `ShardedDecoder` first called, or a
  `padir.evaluation.Predictor` built, inside the block; the decoder keeps them for every
  input shape it compiles later. Options whose value is None are left out. For example
  ``compiler_options(xla_backend_optimization_level=1)`` has LLVM optimise the generated
  kernels less: on a 2-core CPU each of the quickstart's decoders compiled about a third
  faster, at the same speed and with the same outputs (docs/decoding.md, "Compilation").

  Args:
    **options: XLA debug options by name (``xla_backend_optimization_level``, ...).

  Yields:
    the options in force inside the block.
  """
  previous = dict(_COMPILER_OPTIONS)
  _COMPILER_OPTIONS.update({k: v for k, v in options.items() if v is not None})
  try:
    yield dict(_COMPILER_OPTIONS)
  finally:
    _COMPILER_OPTIONS.clear()
    _COMPILER_OPTIONS.update(previous)


def jit_options() -> dict[str, Any]:
  """``jax.jit`` keyword arguments for a decoder compiled now: the `compiler_options` in force."""
  return {'compiler_options': dict(_COMPILER_OPTIONS)} if _COMPILER_OPTIONS else {}


@dataclasses.dataclass
class ShardedDecoder:
  """A decode function jitted with NamedShardings on a mesh.

  Call it as ``decoder(params, encoder_tokens, rng=None, lengths=None)``. Rows are split over
  the batch mesh axes; the batch is padded with empty rows to a multiple of the batch shards
  and the outputs are cut back. Parameters are sharded by ``param_shardings`` (e.g.
  ``Partitioner.param_shardings(model.get_logical_axes(...), params)``) or replicated.
  """

  decode_fn: Callable[..., tuple[Array, dict[str, Array]]]
  mesh: jax.sharding.Mesh | None = None
  batch_axes: tuple[str, ...] = ('data',)
  param_shardings: Any = None
  logical_axis_rules: Any = None
  _jitted: dict = dataclasses.field(default_factory=dict)

  @property
  def batch_shards(self) -> int:
    if self.mesh is None:
      return 1
    return int(np.prod([self.mesh.shape[a] for a in self.batch_axes]))

  def jitted(self, with_lengths: bool = False):
    """The jitted ``fn(params, tokens, rng[, lengths])`` this decoder calls (for profiling)."""
    return self._fn(with_lengths)

  def _fn(self, with_lengths: bool):
    if with_lengths in self._jitted:
      return self._jitted[with_lengths]
    decode_fn = self.decode_fn
    if with_lengths:
      def run(params, tokens, rng, lengths):
        return decode_fn(params, tokens, rng=rng, lengths=lengths)
    else:
      def run(params, tokens, rng):
        return decode_fn(params, tokens, rng=rng)
    if self.mesh is None:
      jitted = jax.jit(run, **jit_options())
    else:
      rows = NamedSharding(self.mesh, P(self.batch_axes))
      replicated = NamedSharding(self.mesh, P())
      params_sh = self.param_shardings if self.param_shardings is not None else replicated
      in_sh = (params_sh, rows, replicated) + ((rows,) if with_lengths else ())
      jitted = jax.jit(run, in_shardings=in_sh, **jit_options())
    self._jitted[with_lengths] = jitted
    return jitted

  def __call__(self, params, encoder_tokens, rng: Array | None = None,
               lengths: Array | None = None) -> tuple[Array, dict[str, Array]]:
    tokens = np.asarray(encoder_tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f'encoder_tokens must be a [batch, length] integer array, got shape '
                       f'{tokens.shape} and dtype {tokens.dtype}.')
    batch = tokens.shape[0]
    pad = (-batch) % self.batch_shards
    if pad:
      tokens = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), tokens.dtype)])
      if lengths is not None:
        lengths = np.asarray(lengths)
        lengths = np.concatenate([lengths, np.ones((pad,) + lengths.shape[1:], lengths.dtype)])
    rng = jax.random.PRNGKey(0) if rng is None else rng
    args = (params, jnp.asarray(tokens, jnp.int32), rng)
    if lengths is not None:
      args += (jnp.asarray(lengths, jnp.int32),)
    fn = self._fn(lengths is not None)
    if self.mesh is None:
      out = fn(*args)
    else:
      import flax.linen as nn  # pylint: disable=g-import-not-at-top
      rules = self.logical_axis_rules
      if rules is None:  # activations: rows over the batch axes, the rest replicated
        rules = (('batch', self.batch_axes),)
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(rules):
        out = fn(*args)
    if not pad:
      return out
    return jax.tree_util.tree_map(
        lambda x: x[:batch] if getattr(x, 'ndim', 0) and x.shape[0] == batch + pad else x,
        out)


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(np.asarray(devices), ('data',))


def refine_decoder(model,
                   config: RefineConfig,
                   ids: SpecialIds,
                   max_length: int,
                   mesh: jax.sharding.Mesh | None = None,
                   **sharding_kwargs) -> ShardedDecoder:
  """A sharded, jitted refinement decoder for a bidirectional Transformer ``model``.

  ``sharding_kwargs`` go to `ShardedDecoder` (batch_axes, param_shardings,
  logical_axis_rules); with a `padir.partitioning.Partitioner` pass
  ``mesh=p.mesh, batch_axes=('data', 'fsdp'), logical_axis_rules=p.rules``.
  """
  config.check_width(max_length, ids)
  fns = TransformerFns(model)

  def decode_fn(params, tokens, rng=None, lengths=None):
    return refine_decode(fns, params, tokens, config=config, ids=ids, max_length=max_length,
                         rng=rng, lengths=lengths)

  return ShardedDecoder(decode_fn, mesh, **sharding_kwargs)


def ar_decoder(model,
               config: ARConfig,
               max_length: int,
               mesh: jax.sharding.Mesh | None = None,
               **sharding_kwargs) -> ShardedDecoder:
  """A sharded, jitted AR decoder (greedy / beam / sampling) for a causal Transformer."""
  fns = ARFns(model)

  def decode_fn(params, tokens, rng=None, lengths=None):
    if lengths is not None:
      raise ValueError('AR decoding takes no lengths.')
    return ar_decode(fns, params, tokens, max_length=max_length, config=config, rng=rng)

  return ShardedDecoder(decode_fn, mesh, **sharding_kwargs)
