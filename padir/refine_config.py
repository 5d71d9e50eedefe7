"""The knobs of refinement decoding (`RefineConfig`), validated on construction.

`padir.refine_decoding` runs the decoder these knobs describe and re-exports both names; gin
binds them as ``padir.refine_decoding.RefineConfig``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from padir import gin_utils
from padir import sampling
from padir.remasking import RemaskConfig
from padir.special_ids import SpecialIds

CANVAS_INITS = ('mask', 'random', 'mask_range')
SCORINGS = ('mean', 'sum')


@dataclasses.dataclass(frozen=True)
class RefineConfig:
  """Knobs of refinement decoding. Validated on construction.

  Attributes:
    num_iterations: maximum number of decoder passes ``T``.
    top_k_lengths: decode the k most likely predicted lengths.
    length_beam: odd number of lengths around each predicted one (offsets -b//2..b//2).
    length_offset: tokens added to every length the length head predicts before the length
      beam is laid around it (lengths passed to the decoder are used as given). A student
      trained on short distilled targets predicts short lengths; a positive offset centres
      its candidates longer. Chosen on validation like the other knobs.
    restarts: parallel restarts per length (different random canvases / samples).
    canvas_init: 'mask' ([MASK] everywhere), 'random' (random real pieces) or 'mask_range'
      ([MASK_i] at position i; needs SpecialIds with mask_range_length >= the canvas width);
      None = the fill the model was trained with (``PadirModel.corruption``'s
      ``decoder_input_scheme`` in `padir.decoding.predict_refine`), 'mask' otherwise.
    remask: the rejection rule, replacement and update mode (`padir.remasking.RemaskConfig`).
    temperature: 0 = argmax; > 0 samples (precision-safe Gumbel-max).
    top_k: sample among the k most likely tokens (0 = all).
    top_p: nucleus sampling mass (1 = off).
    scoring: 'mean' (mean log-probability) or 'sum' (sum divided by the brevity penalty
      ((5 + len) / 6) ** brevity_alpha).
    brevity_alpha: exponent of the brevity penalty for 'sum' scoring (0 = raw sum).
    clamp_eos: keep the placed EOS fixed (it is never re-predicted); the model may still emit
      an earlier EOS, which ends the output.
    early_stop: stop a row at a fixed point / when nothing is left to predict.
    return_history: aux gets the canvas and confidences after every iteration.
    return_all_candidates: aux gets every candidate's tokens.
    canvas_buckets: canvas widths to compile; each call uses the smallest one that holds its
      longest candidate (the full width is always added). Empty = always the full width.
    sparse_logits: compute the output projection only where positions can change.
    reuse_cross_kv: compute the cross-attention keys/values once for all iterations.
    real_pieces_only: outputs hold only real pieces and EOS (never pad, [MASK], [LENGTH],
      [BOS], [MASK_i], other extra ids or the embedding's padding rows).
    prune_after: after this many passes keep only the best candidate of each source (by
      ``scoring`` over that pass's whole proposal, before re-masking) and refine it alone:
      the other length candidates cost only those passes; 0 = every candidate runs every
      pass. Not combined with an external re-ranker (it needs every candidate finished).
    allow_untrained_update: decode with an update mode the model's training does not support
      (`padir.models.PadirModel.check_decoding`; e.g. re-predicting visible tokens with a
      model whose loss covered masked positions only). Off: such a decode is refused.
    collapse_repeats: merge adjacent repeated tokens of the chosen output ("a a b" -> "a b"),
      the usual post-processing of non-autoregressive decoders; ``aux['repeats_removed']``
      counts them per row. Candidates are scored and chosen before the merge.
    avoid_repeats: no two neighbours propose the same token in a pass: of two adjacent equal
      proposals, a position predicted in this pass gives way to a neighbour kept from an
      earlier pass, and of two predicted in this pass the less confident one gives way; the
      position that gives way takes its second most likely token (with that token's
      confidence). Parallel passes otherwise write one word into several neighbouring
      positions ("the the"), which a merge of repeats can only delete, leaving the output
      short. Greedy decoding only (``temperature`` 0).
    teacher_fix_threshold: after the candidates are chosen, the AR re-ranker (the teacher)
      replaces each token of the output where its own most likely next piece, given the
      output's tokens before it, is another one with probability above this (0 = off). The
      re-ranker's teacher-forced pass over the candidates already holds those choices, so
      the first round costs no extra pass. Needs the re-ranker; EOS and pad are never
      replaced, and only real pieces are written.
    teacher_fix_rounds: rounds of such fixes; each round after the first is one more
      teacher-forced pass over the output (its earlier fixes change what the teacher reads).
  """

  num_iterations: int = 4
  top_k_lengths: int = 1
  length_beam: int = 1
  length_offset: int = 0
  restarts: int = 1
  canvas_init: str | None = None
  remask: RemaskConfig = dataclasses.field(default_factory=RemaskConfig)
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  scoring: str = 'mean'
  brevity_alpha: float = 0.0
  clamp_eos: bool = True
  early_stop: bool = True
  return_history: bool = False
  return_all_candidates: bool = False
  canvas_buckets: tuple[int, ...] = ()
  sparse_logits: bool = True
  reuse_cross_kv: bool = True
  real_pieces_only: bool = True
  prune_after: int = 0
  allow_untrained_update: bool = False
  collapse_repeats: bool = False
  avoid_repeats: bool = False
  teacher_fix_threshold: float = 0.0
  teacher_fix_rounds: int = 1

  def __post_init__(self):
    if isinstance(self.canvas_buckets, list):
      object.__setattr__(self, 'canvas_buckets', tuple(self.canvas_buckets))
    for name in ('num_iterations', 'top_k_lengths', 'length_beam', 'restarts',
                 'teacher_fix_rounds'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'RefineConfig.{name}={value!r} must be an integer >= 1.')
    if not isinstance(self.prune_after, int) or self.prune_after < 0:
      raise ValueError(f'RefineConfig.prune_after={self.prune_after!r} must be an integer >= 0 '
                       '(0 = no pruning).')
    if not isinstance(self.length_offset, int) or isinstance(self.length_offset, bool):
      raise ValueError(f'RefineConfig.length_offset={self.length_offset!r} must be an integer '
                       '(tokens added to each predicted length).')
    if self.length_beam % 2 == 0:
      raise ValueError(f'RefineConfig.length_beam={self.length_beam} must be odd (offsets '
                       '-b//2..b//2 around each predicted length).')
    if self.canvas_init is not None and self.canvas_init not in CANVAS_INITS:
      raise ValueError(f'RefineConfig.canvas_init={self.canvas_init!r} is not one of '
                       f'{CANVAS_INITS}.')
    if self.scoring not in SCORINGS:
      raise ValueError(f'RefineConfig.scoring={self.scoring!r} is not one of {SCORINGS}.')
    if self.brevity_alpha < 0:
      raise ValueError(f'RefineConfig.brevity_alpha={self.brevity_alpha} must be >= 0.')
    if not isinstance(self.remask, RemaskConfig):
      raise ValueError('RefineConfig.remask must be a padir.remasking.RemaskConfig.')
    sampling.check_sampling_args(self.temperature, self.top_k, self.top_p)
    if self.restarts > 1 and self.canvas_init is not None and not (
        self.canvas_init == 'random' or self.temperature > 0 or
        self.remask.choice_temperature > 0):
      raise ValueError(
          f'RefineConfig.restarts={self.restarts} would decode identical copies: restarts '
          "need canvas_init='random', temperature > 0 or remask.choice_temperature > 0.")
    if self.avoid_repeats and self.temperature > 0:
      raise ValueError(f'RefineConfig.avoid_repeats=True replaces a repeat by the second most '
                       f'likely token, which is defined for greedy decoding only; it cannot be '
                       f'combined with temperature={self.temperature} (set one of them off).')
    if (isinstance(self.teacher_fix_threshold, bool) or
        not isinstance(self.teacher_fix_threshold, (int, float)) or
        not 0.0 <= self.teacher_fix_threshold < 1.0):
      raise ValueError(f'RefineConfig.teacher_fix_threshold={self.teacher_fix_threshold!r} must '
                       'be a probability in [0, 1) (0 = the teacher fixes no token).')
    if any(not isinstance(b, int) or b < 1 for b in self.canvas_buckets):
      raise ValueError(f'RefineConfig.canvas_buckets={self.canvas_buckets} must hold '
                       'positive integers.')

  @property
  def num_candidates(self) -> int:
    """Candidates per source: top_k_lengths * length_beam * restarts."""
    return self.top_k_lengths * self.length_beam * self.restarts

  @property
  def teacher_fixes(self) -> bool:
    """Whether the AR re-ranker fixes tokens of the output (``teacher_fix_threshold`` > 0)."""
    return self.teacher_fix_threshold > 0

  def without_teacher_fixes(self) -> 'RefineConfig':
    """This config with the teacher's fixes off (threshold 0, one round)."""
    return dataclasses.replace(self, teacher_fix_threshold=0.0, teacher_fix_rounds=1)

  @property
  def prunes(self) -> bool:
    """Whether ``prune_after`` takes effect: several candidates and a pass after it."""
    return self.num_candidates > 1 and 0 < self.prune_after < self.num_iterations

  def check_width(self, max_length: int, ids: SpecialIds) -> None:
    """Host-side checks that depend on the canvas width and the vocabulary."""
    if max_length < 1:
      raise ValueError(f'max_length={max_length} must be >= 1.')
    if self.canvas_init == 'mask_range' and ids.mask_range_size < max_length:
      raise ValueError(
          f"canvas_init='mask_range' needs {max_length} [MASK_i] ids but the vocabulary "
          f'reserves {ids.mask_range_size}; build SpecialIds with '
          f'special_ids(..., mask_range_length={max_length}).')


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
  """A decode config (RefineConfig / ARConfig) with fields replaced; unknown names are refused."""
  names = [f.name for f in dataclasses.fields(config)]
  unknown = sorted(set(overrides) - set(names))
  if unknown:
    raise ValueError(f'Unknown decode option(s) {unknown} for {type(config).__name__}; '
                     f'valid ones: {names}.')
  return dataclasses.replace(config, **overrides) if overrides else config


gin_utils.configurable(RefineConfig, module='padir.refine_decoding')
