"""Choosing a PaDIR decoding setting on the validation split, by quality and batch-1 speed.

A *setting* is what the decoder is asked to do beyond the trained weights: the remasking rule,
the number of passes, the length beam, whether the AR teacher re-ranks the candidates, after
which pass the length candidates are pruned to the best one, stutter removal, merging of
adjacent repeats and avoiding them in each pass (`DecodeSetting`). `decode_interleaved`
decodes every source row at batch 1 with every setting (and the AR teacher) in turn, so each
setting gets its outputs and its per-sentence latency from the same run, on the same machine
state. `choose` then applies the rule the quickstart reports: the fastest setting whose BLEU is
within ``margin`` of the teacher's, else the best BLEU.

`TeacherReranked` wraps a PaDIR model and its AR teacher as one model for the T5X-style
`padir.evaluation.Predictor`: its params are the pair ``(student, teacher)``, and the teacher's
mean log-probability picks among the length candidates (CMLM's re-ranking). Scoring a candidate
is one teacher-forced pass over all candidates in parallel, not an AR decode.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from padir import decoding
from padir.ar_decoding import ARFns, make_reranker
from padir.refine_decoding import RefineConfig, TransformerFns, refine_decode
from padir.remasking import RemaskConfig


@dataclasses.dataclass(frozen=True)
class DecodeSetting:
  """One candidate PaDIR decoding.

  Attributes:
    rule: `padir.remasking.RemaskConfig.rule`.
    iterations: decoder passes.
    length_beam: lengths tried around the predicted one.
    rerank: the AR teacher re-ranks the candidates (else the student's mean log-probability).
    stutter: reject adjacent repeated tokens before the last pass.
    prune: after this pass only the best length candidate is refined further
      (`RefineConfig.prune_after`; 0 = every candidate runs every pass).
    collapse_repeats: merge adjacent repeated tokens of the output
      (`RefineConfig.collapse_repeats`).
    avoid_repeats: a proposal equal to its neighbour's takes its runner-up in every pass
      (`RefineConfig.avoid_repeats`).
    length_offset: tokens added to each length the length head predicts
      (`RefineConfig.length_offset`).
    teacher_fix: the re-ranking teacher replaces output tokens where it proposes another
      piece with a probability above this (`RefineConfig.teacher_fix_threshold`; 0 = off).
      Needs ``rerank``.
    teacher_fix_rounds: rounds of those fixes (`RefineConfig.teacher_fix_rounds`); each
      round after the first is one more teacher-forced pass over the output. Needs
      ``teacher_fix`` when above 1.
  """
  rule: str = 'mask_predict'
  iterations: int = 4
  length_beam: int = 3
  rerank: bool = False
  stutter: bool = False
  prune: int = 0
  collapse_repeats: bool = False
  avoid_repeats: bool = False
  length_offset: int = 0
  teacher_fix: float = 0.0
  teacher_fix_rounds: int = 1

  def __post_init__(self):
    if self.rerank and self.prune:
      raise ValueError(f'DecodeSetting(rerank=True, prune={self.prune}): the re-ranker needs '
                       'every length candidate finished; use one or the other.')
    if self.teacher_fix and not self.rerank:
      raise ValueError(f'DecodeSetting(teacher_fix={self.teacher_fix}) needs the teacher in '
                       'the decoder: set rerank=True, or teacher_fix=0.')
    if (isinstance(self.teacher_fix_rounds, bool) or not isinstance(self.teacher_fix_rounds, int)
        or self.teacher_fix_rounds < 1):
      raise ValueError(f'DecodeSetting(teacher_fix_rounds={self.teacher_fix_rounds!r}) must be '
                       'an integer >= 1.')
    if self.teacher_fix_rounds > 1 and not self.teacher_fix:
      raise ValueError(f'DecodeSetting(teacher_fix_rounds={self.teacher_fix_rounds}) repeats '
                       'the teacher\'s fixes, but teacher_fix=0 turns them off: set teacher_fix '
                       '(e.g. 0.7) or teacher_fix_rounds=1.')

  @property
  def name(self) -> str:
    return (f'{self.rule}_t{self.iterations}_lb{self.length_beam}'
            f'{"_rerank" if self.rerank else ""}{"_stutter" if self.stutter else ""}'
            f'{f"_prune{self.prune}" if self.prune else ""}'
            f'{"_collapse" if self.collapse_repeats else ""}'
            f'{"_norepeat" if self.avoid_repeats else ""}'
            f'{f"_len{self.length_offset:+d}" if self.length_offset else ""}'
            f'{f"_fix{self.teacher_fix:g}" if self.teacher_fix else ""}'
            f'{f"x{self.teacher_fix_rounds}" if self.teacher_fix_rounds > 1 else ""}')

  @property
  def label(self) -> str:
    extras = [e for e, on in (('teacher re-ranks', self.rerank), ('stutter removal',
                                                                 self.stutter),
                              (f'best length kept after pass {self.prune}', self.prune),
                              ('repeats avoided', self.avoid_repeats),
                              ('repeats merged', self.collapse_repeats),
                              (f'lengths {self.length_offset:+d}', self.length_offset),
                              (f'teacher fixes tokens (p > {self.teacher_fix:g}'
                               + (f', {self.teacher_fix_rounds} rounds'
                                  if self.teacher_fix_rounds > 1 else '') + ')',
                               self.teacher_fix)) if on]
    return (f'{self.rule}, {self.iterations} it., length beam {self.length_beam}' +
            ''.join(f', {e}' for e in extras))

  def without_teacher_fixes(self) -> 'DecodeSetting':
    """This setting with the teacher's fixes off (threshold 0, one round)."""
    return dataclasses.replace(self, teacher_fix=0.0, teacher_fix_rounds=1)

  def refine_config(self, base: RefineConfig) -> RefineConfig:
    """``base`` with this setting's rule, passes, length beam, pruning, stutter removal,
    merging of repeats, avoiding them, length offset and the teacher's fixes."""
    remask = RemaskConfig(rule=self.rule, stutter=self.stutter)
    return dataclasses.replace(base, num_iterations=self.iterations,
                               length_beam=self.length_beam, remask=remask,
                               prune_after=self.prune, collapse_repeats=self.collapse_repeats,
                               avoid_repeats=self.avoid_repeats,
                               length_offset=self.length_offset,
                               teacher_fix_threshold=self.teacher_fix,
                               teacher_fix_rounds=self.teacher_fix_rounds)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: Mapping[str, Any]) -> 'DecodeSetting':
    return cls(**value)


def grid(rules: Sequence[str], iterations: Sequence[int], length_beams: Sequence[int],
         rerank: Sequence[bool], stutter: Sequence[bool], prune: Sequence[int] = (0,),
         candidates_per_length: int = 1,
         collapse: Sequence[bool] = (False,),
         avoid: Sequence[bool] = (False,),
         length_offsets: Sequence[int] = (0,),
         teacher_fix: Sequence[float] = (0.0,),
         teacher_fix_rounds: Sequence[int] = (1,)) -> list[DecodeSetting]:
  """Every combination, without duplicates.

  One pass is the same under every rule, so it is kept once; re-ranking and pruning need two
  candidates or more (``length_beam * candidates_per_length``, the latter = top-k lengths x
  restarts), so a single-candidate setting is kept without them; pruning needs a pass after
  it and is not combined with re-ranking (which needs every candidate finished). The
  teacher's fixes come with re-ranking (the same teacher-forced pass), so a setting without
  re-ranking is kept without them, and rounds of fixes come only with the fixes.
  """
  out, seen = [], set()
  for rule, t, b, r, p, s, c, a, o, f, n in itertools.product(
      rules, iterations, length_beams, rerank, prune, stutter, collapse, avoid, length_offsets,
      teacher_fix, teacher_fix_rounds):
    many = b * candidates_per_length > 1
    if p and not (many and not r and p < t):
      continue
    fix = f if r and many else 0.0
    setting = DecodeSetting(rules[0] if t == 1 else rule, t, b, r and many, s and t > 1, p, c,
                            a, o, fix, n if fix else 1)
    key = dataclasses.replace(setting, rule='*') if t == 1 else setting
    if key not in seen:
      seen.add(key)
      out.append(setting)
  return out


class TeacherReranked:
  """A PaDIR model whose length candidates the AR teacher re-ranks; params = (student, teacher).

  Exposes what `padir.evaluation.Predictor` needs (``predict_batch_with_aux``).
  """

  def __init__(self, student: Any, teacher: Any):
    self.student = student
    self.teacher = teacher

  def predict_batch_with_aux(self, params: tuple[Any, Any], batch: Mapping[str, Any],
                             rng: Any = None, **decode_kwargs: Any):
    student_params, teacher_params = params
    return self.student.predict_batch_with_aux(student_params, batch, rng,
                                               rerank_model=self.teacher,
                                               rerank_params=teacher_params, **decode_kwargs)


def batch1_decoder(student: Any, config: RefineConfig, max_length: int,
                   teacher: Any = None) -> decoding.ShardedDecoder:
  """A jitted refinement decoder (no mesh); with ``teacher`` its params are (student, teacher).

  The config is checked against the student's training (`PadirModel.decoding_config`).
  """
  config = student.decoding_config(config)
  config.check_width(max_length, student.special_ids)
  fns = TransformerFns(student.module)
  rerank = make_reranker(ARFns(teacher.module)) if teacher is not None else None

  def decode_fn(params, tokens, rng=None, lengths=None):
    student_params, teacher_params = params if teacher is not None else (params, None)
    return refine_decode(fns, student_params, tokens, config=config, ids=student.special_ids,
                         max_length=max_length, rng=rng, lengths=lengths, reranker=rerank,
                         reranker_params=teacher_params)

  return decoding.ShardedDecoder(decode_fn, None)


def decode_interleaved(decoders: Mapping[str, Callable[[np.ndarray], Any]],
                       sources: np.ndarray, *, warmup: int = 2, progress: Any = None
                       ) -> tuple[dict[str, np.ndarray], dict[str, list[float]],
                                  dict[str, np.ndarray]]:
  """Decodes each source row at batch 1 with every decoder in turn.

  Each row takes the decoders in a new order (a permutation drawn from a fixed seed), so no
  decoder always runs right after the same other one: on a 2-core CPU, a PaDIR decoder that
  always ran right after the AR teacher measured 2-5% slower than copies of itself that ran
  later (150 validation verses, two rounds).

  Args:
    decoders: name -> ``fn(tokens [1, S]) -> (tokens [1, L], aux)`` (jitted).
    sources: [N, S] int32 rows.
    warmup: untimed calls per decoder first (compilation).
    progress: a tqdm bar advanced once per row (or None).

  Returns:
    (name -> output tokens [N, L], name -> per-row seconds, name -> repeats merged per row [N]
    for the decoders that report them, ``aux['repeats_removed']``).
  """
  if len(sources) == 0:
    raise ValueError('decode_interleaved needs at least one source row.')
  for fn in decoders.values():
    for i in range(warmup):
      jax.block_until_ready(fn(sources[i % len(sources)][None]))
  outputs: dict[str, list[np.ndarray]] = {name: [] for name in decoders}
  times: dict[str, list[float]] = {name: [] for name in decoders}
  removed: dict[str, list[int]] = {}
  names = list(decoders)
  order_rng = np.random.default_rng(0)
  for row in sources:
    for name in (names[i] for i in order_rng.permutation(len(names))):
      start = time.perf_counter()
      out = jax.block_until_ready(decoders[name](row[None]))
      times[name].append(time.perf_counter() - start)
      tokens, aux = out if isinstance(out, tuple) else (out, {})
      outputs[name].append(np.asarray(tokens)[0])
      if 'repeats_removed' in aux:
        removed.setdefault(name, []).append(int(np.asarray(aux['repeats_removed'])[0]))
    if progress is not None:
      progress.update(1)
  width = max(max(len(o) for o in rows) for rows in outputs.values())
  padded = {name: np.stack([np.pad(o, (0, width - len(o))) for o in rows])
            for name, rows in outputs.items()}
  return padded, times, {name: np.asarray(counts) for name, counts in removed.items()}


def choose(rows: Sequence[Mapping[str, Any]], teacher_bleu: float,
           margin: float = 1.0) -> tuple[Mapping[str, Any], str]:
  """The quickstart's rule: the fastest row within ``margin`` BLEU of the teacher, else the best.

  Args:
    rows: candidates with ``bleu`` and ``median_ms``.
    teacher_bleu: the teacher's BLEU on the same rows.
    margin: allowed BLEU gap.

  Returns:
    (the chosen row, a sentence saying why).
  """
  if not rows:
    raise ValueError('choose needs at least one candidate.')
  close = [r for r in rows if r['bleu'] >= teacher_bleu - margin]
  if close:
    best = min(close, key=lambda r: (r['median_ms'], -r['bleu']))
    return best, (f'the fastest of the {len(close)} setting(s) within {margin:g} BLEU of the '
                  f'teacher ({teacher_bleu:.2f})')
  best = max(rows, key=lambda r: (r['bleu'], -r['median_ms']))
  return best, (f'no setting came within {margin:g} BLEU of the teacher ({teacher_bleu:.2f}); '
                'the best BLEU')
