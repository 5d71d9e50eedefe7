"""Models in the T5X contract: the autoregressive baseline and the PaDIR GMLM.

A model wraps a `padir.network.Transformer` and turns feature batches (dicts of int32 arrays)
into losses and scores. It holds no optimizer (that belongs to the trainer) and no parameters:
every method takes ``params`` explicitly and is pure and jittable.

* `EncoderDecoderModel` (causal decoder, teacher forcing). Features:
  ``encoder_input_tokens`` [B, L_in], ``decoder_target_tokens`` [B, L],
  ``decoder_input_tokens`` [B, L] (the targets shifted right with 0 first; derived from the
  targets when absent), ``decoder_loss_weights`` [B, L] (optional; non-pad targets otherwise).
* `PadirModel` (bidirectional decoder). Features: ``encoder_input_tokens``,
  ``decoder_target_tokens``, ``decoder_loss_weights`` (optional). ``loss_fn`` corrupts the targets
  on device (`padir.objectives`), runs ``num_train_stages`` unrolled refinement stages (stage
  s + 1 reads stage s's argmax after the decoder's remasking rule, `padir.remasking`), and adds
  the length-head loss.

Both expose ``get_initial_variables``, ``get_logical_axes``, ``loss_fn``, ``eval_fn`` and
``score_batch``; ``predict_batch_with_aux`` is provided with `padir.decoding`.

Gin names: ``padir.models.EncoderDecoderModel`` and ``padir.models.PadirModel``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from padir import gin_utils
from padir import losses
from padir import objectives
from padir import refine_decoding
from padir import remasking
from padir import sampling
from padir.network import T5Config, Transformer
from padir.special_ids import SpecialIds

Array = jax.Array
Batch = Mapping[str, Array]
Params = Any

DEFAULT_LOSS_NORMALIZING_FACTOR = 'NUM_REAL_TARGET_TOKENS'


class InitialVariables(NamedTuple):
  """What `get_initial_variables` returns.

  Attributes:
    params: the unboxed parameter tree (plain arrays).
    logical_axes: the same tree with a logical ``PartitionSpec`` per parameter (names such as
      'embed', 'mlp', 'heads', 'vocab'), from ``flax.linen.get_partition_spec``.
  """
  params: Params
  logical_axes: Any


def shift_right(targets: Array) -> Array:
  """Teacher-forcing decoder inputs: [B, L] targets -> [0, y_0, ..., y_{L-2}] (T5X)."""
  shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  return jnp.where(shifted < 0, 0, shifted).astype(jnp.int32)


def _require(batch: Batch, names: tuple[str, ...], model: str) -> None:
  missing = [n for n in names if n not in batch]
  if missing:
    raise ValueError(f'{model} needs the batch features {names}; missing {missing} (got '
                     f'{sorted(batch)}). Use the feature converter of this model.')


def _dropout_args(rng: Array | None) -> dict[str, Any]:
  if rng is None:
    return dict(enable_dropout=False)
  return dict(enable_dropout=True, rngs={'dropout': rng})


class _BaseModel(abc.ABC):
  """Shared T5X-contract plumbing: network, initialisation, loss knobs."""

  _DECODER_MODE = ''
  _NAME = ''

  def __init__(self, network_config: T5Config, special_ids: SpecialIds | None,
               label_smoothing: float, z_loss: float, loss_normalizing_factor: Any):
    if network_config.decoder_mode != self._DECODER_MODE:
      raise ValueError(
          f'{self._NAME} needs T5Config.decoder_mode={self._DECODER_MODE!r}, got '
          f'{network_config.decoder_mode!r}.')
    losses.check_loss_options(label_smoothing, z_loss, loss_normalizing_factor,
                              owner=f'padir.models.{self._NAME}')
    if special_ids is not None and special_ids.model_vocab_size > network_config.vocab_size:
      raise ValueError(
          f'The vocabulary needs {special_ids.model_vocab_size} embedding rows but '
          f'T5Config.vocab_size={network_config.vocab_size}; raise T5Config.vocab_size.')
    self.network_config = network_config
    self.special_ids = special_ids
    self.label_smoothing = float(label_smoothing)
    self.z_loss = float(z_loss)
    self.loss_normalizing_factor = loss_normalizing_factor
    self.module = Transformer(network_config)

  # ------------------------------------------------------------------ initialisation

  def _init_inputs(self, input_shapes: Mapping[str, tuple[int, ...]]) -> tuple[Array, Array]:
    if 'encoder_input_tokens' not in input_shapes:
      raise ValueError(f'input_shapes needs encoder_input_tokens, got {sorted(input_shapes)}.')
    dec_key = next((k for k in ('decoder_input_tokens', 'decoder_target_tokens')
                    if k in input_shapes), None)
    if dec_key is None:
      raise ValueError('input_shapes needs decoder_input_tokens or decoder_target_tokens, got '
                       f'{sorted(input_shapes)}.')
    enc = jnp.ones(tuple(input_shapes['encoder_input_tokens']), jnp.int32)
    dec = jnp.ones(tuple(input_shapes[dec_key]), jnp.int32)
    return enc, dec

  def _boxed_variables(self, rng: Array, input_shapes: Mapping[str, tuple[int, ...]]):
    enc, dec = self._init_inputs(input_shapes)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.module.init({'params': params_rng, 'dropout': dropout_rng}, enc, dec,
                            enable_dropout=False)

  def get_initial_variables(self, rng: Array,
                            input_shapes: Mapping[str, tuple[int, ...]]) -> InitialVariables:
    """Initialises the parameters.

    Args:
      rng: PRNG key.
      input_shapes: feature name -> shape; needs ``encoder_input_tokens`` and
        ``decoder_input_tokens`` or ``decoder_target_tokens``.

    Returns:
      `InitialVariables` (unboxed params, logical PartitionSpecs of the same structure).
    """
    boxed = self._boxed_variables(rng, input_shapes)['params']
    return InitialVariables(nn.unbox(boxed), nn.get_partition_spec(boxed))

  def get_logical_axes(self, input_shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """Logical PartitionSpecs of the params, computed abstractly (nothing is allocated)."""
    boxed = jax.eval_shape(lambda r: self._boxed_variables(r, input_shapes),
                           jax.random.key(0))['params']
    return nn.get_partition_spec(boxed)

  # ------------------------------------------------------------------ helpers

  def _token_loss(self, logits: Array, targets: Array, weights: Array,
                  normalizing_weights: Array | None = None) -> tuple[Array, Array, Array]:
    return losses.weighted_cross_entropy(
        logits, targets, weights, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
        loss_normalizing_factor=self.loss_normalizing_factor,
        normalizing_weights=normalizing_weights)

  def eval_fn(self, params: Params, batch: Batch,
              rng: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """``loss_fn`` without dropout (PaDIR: corruption from ``rng`` or a fixed key)."""
    return self._loss(params, batch, rng, enable_dropout=False)

  def loss_fn(self, params: Params, batch: Batch,
              rng: Array | None) -> tuple[Array, dict[str, Array]]:
    """Training loss and metrics.

    Args:
      params: the parameter tree.
      batch: feature dict (see the class docstring).
      rng: PRNG key for dropout (and, for PaDIR, the corruption); None disables dropout.

    Returns:
      (scalar loss, dict of scalar float32 metrics; see the class docstring).
    """
    return self._loss(params, batch, rng, enable_dropout=rng is not None)

  @abc.abstractmethod
  def _loss(self, params, batch, rng, enable_dropout):
    """(loss, metrics) of one batch; each model defines its own."""


@gin_utils.configurable
class EncoderDecoderModel(_BaseModel):
  """Autoregressive encoder-decoder (the baseline and the distillation teacher).

  Metrics of ``loss_fn``: ``loss``, ``token_loss``, ``z_loss``, ``accuracy`` (teacher-forced
  argmax accuracy on positions with weight > 0), ``weight_sum``, ``num_tokens`` (non-pad
  targets), ``num_examples``.
  """

  _DECODER_MODE = 'causal'
  _NAME = 'EncoderDecoderModel'
  TRAIN_FEATURES = ('encoder_input_tokens', 'decoder_target_tokens')

  def __init__(self, network_config: T5Config, special_ids: SpecialIds | None = None,
               label_smoothing: float = 0.0, z_loss: float = 0.0,
               loss_normalizing_factor: Any = DEFAULT_LOSS_NORMALIZING_FACTOR):
    """Builds the model.

    Args:
      network_config: T5Config with ``decoder_mode='causal'``.
      special_ids: the vocabulary's special ids (used by decoding; optional for training).
      label_smoothing: see `padir.losses`.
      z_loss: see `padir.losses`.
      loss_normalizing_factor: None, a number or a T5X special name (see `padir.losses`).
    """
    super().__init__(network_config, special_ids, label_smoothing, z_loss,
                     loss_normalizing_factor)

  def _features(self, batch: Batch) -> tuple[Array, Array, Array, Array]:
    _require(batch, self.TRAIN_FEATURES, self._NAME)
    targets = batch['decoder_target_tokens'].astype(jnp.int32)
    inputs = batch.get('decoder_input_tokens')
    inputs = shift_right(targets) if inputs is None else inputs.astype(jnp.int32)
    weights = batch.get('decoder_loss_weights')
    weights = (targets > 0) if weights is None else weights
    return batch['encoder_input_tokens'].astype(jnp.int32), inputs, targets, \
        weights.astype(jnp.float32)

  def _loss(self, params, batch, rng, enable_dropout):
    enc, dec_in, targets, weights = self._features(batch)
    logits = self.module.apply({'params': params}, enc, dec_in,
                               **_dropout_args(rng if enable_dropout else None))  # [B, L, V]
    loss, z_part, weight_sum = self._token_loss(logits, targets, weights)
    correct, counted = losses.weighted_accuracy(logits, targets, weights)
    metrics = {
        'loss': loss,
        'token_loss': loss,
        'z_loss': z_part,
        'accuracy': correct / jnp.maximum(counted, 1.0),
        'weight_sum': weight_sum,
        'num_tokens': jnp.sum(targets > 0).astype(jnp.float32),
        'num_examples': jnp.float32(targets.shape[0]),
    }
    return loss, metrics

  def score_batch(self, params: Params, batch: Batch,
                  return_intermediates: bool = False) -> Array | tuple[Array, dict[str, Array]]:
    """Log-likelihood of the targets under teacher forcing: [B] float32.

    Sums ``log p(y_i | y_<i, x)`` over positions with ``decoder_loss_weights`` > 0 (non-pad
    targets when absent), EOS included. With ``return_intermediates`` also returns
    ``{'token_scores': [B, L]}``.
    """
    enc, dec_in, targets, weights = self._features(batch)
    logits = self.module.apply({'params': params}, enc, dec_in, enable_dropout=False)
    token_scores = losses.token_log_probs(logits, targets) * (weights > 0)
    scores = jnp.sum(token_scores, axis=-1)
    if return_intermediates:
      return scores, {'token_scores': token_scores}
    return scores

  def predict_batch_with_aux(self, params: Params, batch: Batch, rng: Array | None = None,
                             **decode_kwargs) -> tuple[Array, dict[str, Array]]:
    """AR decoding with the KV cache (`padir.decoding.predict_ar`): (tokens [B, L], aux).

    ``decode_kwargs``: ``decode_config`` (an `padir.ar_decoding.ARConfig`, gin-configurable)
    and/or its fields (``method='greedy'|'beam'|'sample'``, ``beam_size``, ...). L is the
    width of ``decoder_target_tokens`` when present, else ``max_target_length``.
    """
    from padir import decoding  # pylint: disable=g-import-not-at-top
    return decoding.predict_ar(self, params, batch, rng, **decode_kwargs)


class StageOutputs(NamedTuple):
  """Forward pass of the unrolled PaDIR training stages.

  Attributes:
    canvases: [S, B, L] int32 decoder inputs of each stage (stage 0 = the corrupted targets).
    logits: [S, B, L, V] float32 decoder logits of each stage.
    length_logits: [B, max_target_length] float32, or None without a length head.
    corruption: the `padir.objectives.Corruption` of stage 0.
  """
  canvases: Array
  logits: Array
  length_logits: Array | None
  corruption: objectives.Corruption


@gin_utils.configurable
class PadirModel(_BaseModel):
  """PaDIR: a GMLM with a bidirectional decoder trained to denoise corrupted targets.

  ``loss_fn`` = sum over stages s of the token loss of stage s (stage 0 weighted by the
  corruption's ``loss_weighting``, later stages on every non-pad target, as in the reference)
  + ``length_loss_weight`` * the length-head cross-entropy (per-example mean).

  Metrics: ``loss``, ``token_loss`` (all stages), ``z_loss``, ``accuracy`` (stage 0, on
  weighted positions), ``loss_stage_{s}`` / ``accuracy_stage_{s}`` for every stage,
  ``length_loss`` / ``length_accuracy`` (with a length head), ``noise_ratio`` (mean per-example
  ratio), ``masked_fraction`` (masked share of non-pad targets), ``weight_sum``, ``num_tokens``,
  ``num_examples``.
  """

  _DECODER_MODE = 'bidirectional'
  _NAME = 'PadirModel'
  TRAIN_FEATURES = ('encoder_input_tokens', 'decoder_target_tokens')

  def __init__(self, network_config: T5Config, special_ids: SpecialIds,
               corruption: objectives.CorruptionConfig | None = None,
               remask: remasking.RemaskConfig | None = None,
               num_train_stages: int = 1,
               clamp_eos: bool = True,
               joint_stage_gradients: bool = False,
               decoding: Any = None,
               length_loss_weight: float = 0.1,
               label_smoothing: float = 0.0, z_loss: float = 0.0,
               loss_normalizing_factor: Any = DEFAULT_LOSS_NORMALIZING_FACTOR):
    """Builds the model.

    Args:
      network_config: T5Config with ``decoder_mode='bidirectional'``.
      special_ids: the vocabulary's special ids ([MASK], [LENGTH], random-token range).
      corruption: target corruption knobs (default `CorruptionConfig()`).
      remask: the decoder's remasking rule used between unrolled stages (default
        `RemaskConfig()`: keep every prediction).
      num_train_stages: unrolled refinement stages per step (PaDIR; 1 = plain denoising).
      clamp_eos: between stages keep the gold EOS fixed and leave it out of the rule's counts,
        as the refinement decoder does with ``RefineConfig.clamp_eos`` (its default); False
        lets the argmax overwrite it (the reference).
      joint_stage_gradients: with several stages, first run the decoder without gradient on
        stages 0 .. S-2 to build every stage's canvas (a canvas carries no gradient), then run
        it once with gradient on all S canvases, each example's stages side by side in the
        batch. Every weight gradient is then one matmul over all stages, so a data-parallel
        step all-reduces each gradient once (the sequential stages give one partial gradient
        per stage, and a compiler that does not reassociate all-reduces, such as XLA:CPU,
        all-reduces each of them: S times the decoder's gradient bytes). Costs S - 1 more
        decoder forward passes; without dropout the logits and the loss are those of the
        sequential stages, with dropout the gradient pass draws its own dropout masks.
      decoding: the model's decoding defaults (a `padir.refine_decoding.RefineConfig`; each
        objective preset binds its own), used when no decode config is passed. None: the
        gin-configured ``RefineConfig()``, with the Mask-Predict rule when its update mode is
        one the training does not support (see `check_decoding`).
      length_loss_weight: weight of the length loss (fairseq CMLM uses 0.1).
      label_smoothing: see `padir.losses`.
      z_loss: see `padir.losses`.
      loss_normalizing_factor: None, a number or a T5X special name (see `padir.losses`).
    """
    if special_ids is None:
      raise ValueError('padir.models.PadirModel.special_ids is required (build it with '
                       'padir.special_ids.special_ids(...)).')
    super().__init__(network_config, special_ids, label_smoothing, z_loss,
                     loss_normalizing_factor)
    if not isinstance(num_train_stages, int) or num_train_stages < 1:
      raise ValueError(f'padir.models.PadirModel.num_train_stages={num_train_stages!r} must be '
                       'an integer >= 1.')
    if not isinstance(length_loss_weight, (int, float)) or length_loss_weight < 0:
      raise ValueError(f'padir.models.PadirModel.length_loss_weight={length_loss_weight!r} must '
                       'be >= 0.')
    if network_config.use_length_head and network_config.length_id != special_ids.length:
      raise ValueError(
          f'T5Config.length_id={network_config.length_id} is not the [LENGTH] id '
          f'{special_ids.length} of the vocabulary; pass length_id=special_ids.length.')
    self.corruption = corruption if corruption is not None else objectives.CorruptionConfig()
    self.remask = remask if remask is not None else remasking.RemaskConfig()
    self.num_train_stages = num_train_stages
    self.clamp_eos = bool(clamp_eos)
    self.joint_stage_gradients = bool(joint_stage_gradients)
    self.length_loss_weight = float(length_loss_weight)
    self._decoding = decoding
    if decoding is not None:
      self.check_decoding(decoding)

  # ------------------------------------------------------------------ decoding defaults

  @property
  def trained_updates(self) -> tuple[str, ...]:
    """Update modes of the refinement decoder that this model's training supports."""
    c = self.corruption
    return remasking.trained_updates(c.loss_weighting, c.keep_prob, c.random_prob,
                                     self.num_train_stages)

  def check_decoding(self, config: Any) -> None:
    """Refuses a decode config whose update mode the training never trained.

    Args:
      config: a `padir.refine_decoding.RefineConfig`.

    Raises:
      ValueError: the update mode re-predicts positions the loss never covered (and
        ``config.allow_untrained_update`` is off).
    """
    update = config.remask.effective_update
    if update in self.trained_updates or config.allow_untrained_update:
      return
    c = self.corruption
    raise ValueError(
        f"RemaskConfig(rule={config.remask.rule!r}) re-predicts every position (update "
        f"{update!r}), but this PadirModel's loss covers masked positions only "
        f"(CorruptionConfig.loss_weighting={c.loss_weighting!r}, keep_prob={c.keep_prob}, "
        f"random_prob={c.random_prob}, num_train_stages={self.num_train_stages}), so it never "
        f"learnt to re-predict a visible token. Decode with an update mode it supports "
        f"{self.trained_updates} (e.g. rule='mask_predict'), or set "
        'RefineConfig.allow_untrained_update=True to decode anyway.')

  def decoding_config(self, config: Any = None, **overrides: Any) -> Any:
    """The refinement config to decode with: ``config`` (or the model's defaults) + overrides.

    Fills ``canvas_init`` with the canvas the model was trained on when unset, and checks the
    update mode against the training (`check_decoding`).

    Args:
      config: a `padir.refine_decoding.RefineConfig`; None = the model's ``decoding`` defaults.
      **overrides: RefineConfig fields replacing those of the config.

    Returns:
      The checked `RefineConfig`.
    """
    if config is None:
      config = self._decoding
    if config is None:
      config = refine_decoding.RefineConfig()
      if config.remask.effective_update not in self.trained_updates:
        config = dataclasses.replace(config, remask=remasking.RemaskConfig(rule='mask_predict'))
    config = refine_decoding.with_overrides(config, overrides)
    if config.canvas_init is None:  # decode from the fill the model was trained with
      config = dataclasses.replace(config, canvas_init=self.corruption.decoder_input_scheme)
    self.check_decoding(config)
    return config

  def _boxed_variables(self, rng: Array, input_shapes: Mapping[str, tuple[int, ...]]):
    enc, dec = self._init_inputs(input_shapes)
    self.corruption.check_special_ids(self.special_ids, dec.shape[1])
    return super()._boxed_variables(rng, input_shapes)

  def _features(self, batch: Batch) -> tuple[Array, Array, Array]:
    _require(batch, self.TRAIN_FEATURES, self._NAME)
    targets = batch['decoder_target_tokens'].astype(jnp.int32)
    if self.network_config.use_length_head and \
        targets.shape[1] > self.network_config.max_target_length:
      raise ValueError(
          f'decoder_target_tokens has length {targets.shape[1]} but the length head has '
          f'T5Config.max_target_length={self.network_config.max_target_length} classes; set '
          'max_target_length to the target feature length.')
    weights = batch.get('decoder_loss_weights')
    weights = (targets > 0) if weights is None else weights
    return batch['encoder_input_tokens'].astype(jnp.int32), targets, weights.astype(jnp.float32)

  # ------------------------------------------------------------------ unrolled stages

  def _proposal_bias(self, vocab_size: int) -> Array:
    """[V] float32: 0 on the ids a stage may propose (real pieces, EOS), -1e9 elsewhere."""
    lo, hi = self.special_ids.random_token_range
    vocab = jnp.arange(vocab_size)
    allowed = ((vocab >= lo) & (vocab < hi)) | (vocab == self.special_ids.eos)
    return jnp.where(allowed, 0.0, -1e9).astype(jnp.float32)

  def _next_canvas(self, logits: Array, bias: Array, canvas: Array, confidence: Array,
                   open_: Array, initial: Array, editable: Array, stage: int,
                   logits_sum: Array | None, rng: Array) -> tuple[Array, Array, Array]:
    """Stage ``stage``'s argmax through the decoder's remasking rule (no gradient).

    Mirrors one iteration of `padir.refine_decoding`: proposals at the positions predicted in
    this update mode, `padir.remasking.remask` over the editable positions, confidences kept
    as the log-probability a token had when proposed, all under ``logits + bias`` (the
    decoder's ``real_pieces_only``). The choice reads the logits without writing a restricted
    [B, L, V] copy (`padir.sampling.greedy_choice`).

    Args:
      logits: [B, L, V] stage logits (gradients stopped here).
      bias: [V] `_proposal_bias`.
      canvas: [B, L] this stage's decoder input.
      confidence: [B, L] float32 carried confidences.
      open_: [B, L] bool positions still open (update modes 'masked' / 'commit').
      initial: [B, L] stage-0 canvas (replacement 'initial').
      editable: [B, L] bool positions a rule may touch (non-pad; without EOS if clamped).
      stage: 0-based stage index (iteration ``stage + 1`` of ``num_train_stages``).
      logits_sum: [B, L, V] summed restricted logits, for replacement 'logits_sum'.
      rng: key for annealed choice noise.

    Returns:
      (next canvas [B, L] int32, confidences [B, L], open positions [B, L]).
    """
    logits = jax.lax.stop_gradient(logits)
    argmax, log_z = sampling.greedy_choice(logits, bias)  # [B, L], [B, L]

    def log_prob(tokens: Array) -> Array:  # [B, L] -> [B, L] under logits + bias
      picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
      return picked.astype(jnp.float32) + bias[tokens] - log_z

    update = self.remask.effective_update
    new_lp = log_prob(argmax)
    predicted = editable if update == 'all' else open_
    proposed = jnp.where(predicted, argmax, canvas)
    conf_in = jnp.where(predicted, new_lp, confidence)
    eligible = open_ if update == 'commit' else editable
    tokens, rejected = remasking.remask(
        self.remask, proposed, conf_in, canvas, initial, editable, stage + 1,
        self.num_train_stages, eligible=eligible, logits_sum=logits_sum,
        rng=rng if self.remask.needs_rng else None)
    lp_now = log_prob(tokens)
    confidence = jnp.where(predicted & ~rejected, new_lp,
                           jnp.where(predicted & rejected, lp_now, confidence))
    if update == 'masked':
      next_open = rejected & editable
    elif update == 'commit':
      next_open = open_ & rejected
    else:
      next_open = editable
    tokens = jnp.where(canvas > 0, tokens, 0)  # padding re-zeroed
    return jax.lax.stop_gradient(tokens), confidence, next_open

  def compute_stage_logits(self, params: Params, batch: Batch, rng: Array | None,
                           enable_dropout: bool) -> StageOutputs:
    """Corrupts the targets and runs the unrolled refinement stages.

    See `_unrolled_stages`; this stacks its per-stage outputs into [S, ...] arrays.
    """
    out = self._unrolled_stages(params, batch, rng, enable_dropout)
    return out._replace(canvases=jnp.stack(out.canvases), logits=jnp.stack(out.logits))

  def _unrolled_stages(self, params: Params, batch: Batch, rng: Array | None,
                       enable_dropout: bool) -> StageOutputs:
    """Corrupts the targets and runs the unrolled refinement stages.

    The encoder (and length head) runs once; each stage runs the decoder with a fresh dropout
    key. Stage s + 1's canvas is stage s's argmax over real pieces and EOS after
    `padir.remasking.remask` (iteration s + 1 of ``num_train_stages``; replacement ``initial`` =
    the corrupted canvas; the gold EOS is fixed when ``clamp_eos``), with padding set back to 0
    and no gradient through the tokens.

    Args:
      params: the parameter tree.
      batch: features (see the class docstring).
      rng: PRNG key (None: a fixed key for the corruption).
      enable_dropout: apply dropout (needs ``rng``).

    Returns:
      `StageOutputs` whose ``canvases`` and ``logits`` are lists with one [B, L] / [B, L, V]
      array per stage (the loss reads them without copying them into one [S, B, L, V] array).
    """
    enc, targets, _ = self._features(batch)
    if rng is None:
      if enable_dropout:
        raise ValueError('enable_dropout=True needs an rng key.')
      rng = jax.random.key(0)
    k_corrupt, k_encoder, k_stages, k_remask = jax.random.split(rng, 4)
    corruption = objectives.corrupt_targets(self.corruption, self.special_ids, k_corrupt,
                                            targets)
    drop = lambda key: _dropout_args(key if enable_dropout else None)
    encoded, length_logits = self.module.apply({'params': params}, enc, method=Transformer.encode,
                                               **drop(k_encoder))
    editable = targets > 0
    if self.clamp_eos:
      editable = editable & (targets != self.special_ids.eos)
    initial = corruption.decoder_input_tokens
    canvas, confidence, open_ = initial, jnp.zeros(targets.shape, jnp.float32), editable
    need_sum = self.remask.replacement == 'logits_sum'
    logits_sum = None
    canvases, all_logits = [], []
    joint = self.joint_stage_gradients and self.num_train_stages > 1
    # Joint: the canvases come from a pass without gradient (see joint_stage_gradients).
    stage_params = jax.lax.stop_gradient(params) if joint else params
    stage_encoded = jax.lax.stop_gradient(encoded) if joint else encoded
    for stage in range(self.num_train_stages):
      canvases.append(canvas)
      if joint and stage + 1 == self.num_train_stages:
        break  # the last stage's logits only come from the joint pass
      logits = self.module.apply({'params': stage_params}, stage_encoded, enc, canvas,
                                 method=Transformer.decode,
                                 **drop(jax.random.fold_in(k_stages, stage)))  # [B, L, V]
      all_logits.append(logits)
      if stage + 1 < self.num_train_stages:
        bias = self._proposal_bias(logits.shape[-1])
        if need_sum:  # the only case that keeps a restricted [B, L, V] buffer
          restricted = jax.lax.stop_gradient(logits).astype(jnp.float32) + bias
          logits_sum = restricted if logits_sum is None else logits_sum + restricted
        canvas, confidence, open_ = self._next_canvas(
            logits, bias, canvas, confidence, open_, initial, editable, stage, logits_sum,
            jax.random.fold_in(k_remask, stage))
    if joint:
      # [B, S, L] -> [B * S, L]: an example's stages stay on its batch shard (no resharding).
      stages = self.num_train_stages
      stacked = jnp.stack(canvases, axis=1).reshape(-1, canvases[0].shape[-1])
      logits = self.module.apply({'params': params}, jnp.repeat(encoded, stages, axis=0),
                                 jnp.repeat(enc, stages, axis=0), stacked,
                                 method=Transformer.decode,
                                 **drop(jax.random.fold_in(k_stages, stages)))
      logits = logits.reshape(-1, stages, *logits.shape[1:])  # [B, S, L, V]
      all_logits = [logits[:, s] for s in range(stages)]
    return StageOutputs(canvases, all_logits, length_logits, corruption)

  def _loss(self, params, batch, rng, enable_dropout):
    _, targets, batch_weights = self._features(batch)
    out = self._unrolled_stages(params, batch, rng, enable_dropout)
    c = out.corruption
    nonpad = (targets > 0).astype(jnp.float32)
    metrics: dict[str, Array] = {}
    total = jnp.float32(0.0)
    token_total = jnp.float32(0.0)
    z_total = jnp.float32(0.0)
    for stage in range(self.num_train_stages):
      if stage == 0:
        weights = c.loss_weights * batch_weights
        norm_weights = c.normalizing_weights * batch_weights
      else:
        weights = norm_weights = nonpad * batch_weights
      loss, z_part, weight_sum = self._token_loss(out.logits[stage], targets, weights,
                                                  norm_weights)
      correct, counted = losses.weighted_accuracy(out.logits[stage], targets, weights)
      accuracy = correct / jnp.maximum(counted, 1.0)
      metrics[f'loss_stage_{stage}'] = loss
      metrics[f'accuracy_stage_{stage}'] = accuracy
      if stage == 0:
        metrics['accuracy'] = accuracy
        metrics['weight_sum'] = weight_sum
      token_total = token_total + loss
      z_total = z_total + z_part
    total = token_total
    if out.length_logits is not None:
      length_loss, length_accuracy = losses.length_loss(out.length_logits,
                                                        losses.target_lengths(targets))
      metrics['length_loss'] = length_loss
      metrics['length_accuracy'] = length_accuracy
      total = total + self.length_loss_weight * length_loss
    metrics.update({
        'loss': total,
        'token_loss': token_total,
        'z_loss': z_total,
        'noise_ratio': jnp.mean(c.noise_ratios),
        'masked_fraction': jnp.sum(c.masked) / jnp.maximum(jnp.sum(nonpad), 1.0),
        'num_tokens': jnp.sum(nonpad),
        'num_examples': jnp.float32(targets.shape[0]),
    })
    return total, metrics

  def score_batch(self, params: Params, batch: Batch, rng: Array | None = None,
                  return_intermediates: bool = False) -> Array | tuple[Array, dict[str, Array]]:
    """Pseudo-log-likelihood of the targets from a fully masked canvas: [B] float32.

    The decoder reads a canvas of the gold length where every non-pad, non-EOS position holds
    the mask fill of ``corruption.decoder_input_scheme`` (EOS in place; `masked_canvas`), and
    the score is ``sum_i log p(y_i | x, canvas)`` over positions with ``decoder_loss_weights``
    > 0 (non-pad targets when absent), EOS included. It is a one-pass product of per-position
    marginals, not the sequence likelihood (a bidirectional decoder has none), and it leaves
    out the length head. With ``return_intermediates`` also returns ``{'token_scores': [B, L],
    'length_log_prob': [B]}`` (``log p(len(y) | x)`` from the length head; zeros without one).

    Args:
      params: the parameter tree.
      batch: ``encoder_input_tokens``, ``decoder_target_tokens`` (+ ``decoder_loss_weights``).
      rng: key for the ``random`` canvas scheme (None: a fixed key).
      return_intermediates: also return per-token scores and the length log-probability.
    """
    enc, targets, weights = self._features(batch)
    rng = jax.random.key(0) if rng is None else rng
    canvas = objectives.masked_canvas(self.corruption.decoder_input_scheme, self.special_ids,
                                      rng, targets)
    logits, length_logits = self.module.apply({'params': params}, enc, canvas,
                                              enable_dropout=False,
                                              method=Transformer.encode_and_decode)
    token_scores = losses.token_log_probs(logits, targets) * (weights > 0)
    scores = jnp.sum(token_scores, axis=-1)
    if not return_intermediates:
      return scores
    if length_logits is None:
      length_log_prob = jnp.zeros(scores.shape, jnp.float32)
    else:
      classes = jnp.clip(losses.target_lengths(targets) - 1, 0, length_logits.shape[-1] - 1)
      length_log_prob = losses.token_log_probs(length_logits, classes)
    return scores, {'token_scores': token_scores, 'length_log_prob': length_log_prob}

  def predict_batch_with_aux(self, params: Params, batch: Batch, rng: Array | None = None,
                             **decode_kwargs) -> tuple[Array, dict[str, Array]]:
    """Refinement decoding (`padir.decoding.predict_refine`): (tokens [B, L], aux).

    ``decode_kwargs``: ``decode_config`` (a `padir.refine_decoding.RefineConfig`,
    gin-configurable) and/or its fields (``num_iterations``, ``length_beam``, ``remask``, ...),
    ``use_gold_lengths``, ``rerank_model`` / ``rerank_params`` (an EncoderDecoderModel whose
    ``score_batch`` re-ranks the candidates). L is the width of ``decoder_target_tokens`` when
    present, else ``max_target_length``.
    """
    from padir import decoding  # pylint: disable=g-import-not-at-top
    return decoding.predict_refine(self, params, batch, rng, **decode_kwargs)
